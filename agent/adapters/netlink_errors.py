"""Netlink failures as our exceptions: ENODEV -> InterfaceNotFound, EPERM -> PermissionDenied."""

from __future__ import annotations

import errno

from pyroute2.netlink.exceptions import NetlinkError

from agent.ports import AdapterError, InterfaceNotFoundError, PermissionDeniedError

__all__ = ["error_code", "mapped"]


def mapped(exc: BaseException, what: str) -> AdapterError:
    code = getattr(exc, "code", None) if isinstance(exc, NetlinkError) else None
    if code is None and isinstance(exc, OSError):
        code = exc.errno
    text = f"{what}: {exc}"
    if code == errno.ENODEV:
        return InterfaceNotFoundError(text)
    if code in (errno.EPERM, errno.EACCES):
        return PermissionDeniedError(text)
    return AdapterError(text)


def error_code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) else None
