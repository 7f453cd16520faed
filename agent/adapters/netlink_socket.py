"""NETLINK_ROUTE sockets in our own network namespace or, for tests and labs, in a named one."""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from typing import Any

from pyroute2 import AsyncIPRoute

__all__ = ["netlink_fd_in", "rtnl_socket"]

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000


def netlink_fd_in(netns: str) -> int:
    """A NETLINK_ROUTE socket opened inside the named namespace, as a file descriptor.

    pyroute2's own netns= forks a child and SIGTERMs it; the child shares asyncio's signal
    wake-up socket, so the running loop can receive that SIGTERM as its own and stop the
    agent. A thread that enters the namespace just to open the socket has no such effect.
    """
    result: list[int | BaseException] = []

    def enter_and_open() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(os.path.join(NETNS_RUN_DIR, netns), os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, os.strerror(code), netns)
            finally:
                os.close(fd)
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)
            result.append(sock.detach())
        except BaseException as exc:  # handed to the caller's thread below
            result.append(exc)

    thread = threading.Thread(target=enter_and_open, name=f"netns:{netns}")
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def rtnl_socket(netns: str | None = None, **kwargs: Any) -> Any:
    """An AsyncIPRoute in our own namespace, or (for tests and labs) in a named one."""
    if netns is None:
        return AsyncIPRoute(**kwargs)
    return AsyncIPRoute(fileno=netlink_fd_in(netns), **kwargs)
