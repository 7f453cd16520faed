"""Root, network namespaces and free ports for tests that use the real kernel and daemons."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator

import pytest

__all__ = ["free_port", "netns", "require_root", "require_tool", "run", "sh_in"]


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


def require_tool(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/lib/ipsec/{name}") if os.path.exists(p)), None
    )
    if path is None:
        pytest.skip(f"needs {name} (bash labs/install.sh installs it)")
    return path


def run(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)


def sh_in(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("ip", "netns", "exec", ns, *cmd, check=check)


@contextlib.contextmanager
def netns(prefix: str = "vtf") -> Iterator[str]:
    """A fresh network namespace with lo up, deleted afterwards."""
    require_root()
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    run("ip", "netns", "add", name)
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        run("ip", "netns", "del", name, check=False)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port
