"""One running agent per agent_id: an flock'd file that dies with the process.

Two agents on one config fight over the MQTT client id, the ExaBGP session and the routes
they own. The lock is a file in the lock directory (/run/vti-failover, or
$VTI_FAILOVER_LOCK_DIR), named after the agent_id and held with flock for the life of the
process: the kernel releases it however the process ends, kill -9 included, so a stale file
never blocks a restart. The file holds the pid, to name the agent already running.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path

__all__ = ["DEFAULT_DIR", "ENV_DIR", "InstanceLock", "LockError", "lock_dir"]

DEFAULT_DIR = Path("/run/vti-failover")
ENV_DIR = "VTI_FAILOVER_LOCK_DIR"


class LockError(Exception):
    """Another agent holds the lock, or the lock cannot be taken; the message says which."""


def lock_dir() -> Path:
    override = os.environ.get(ENV_DIR)
    return Path(override) if override else DEFAULT_DIR


class InstanceLock:
    """Held from `acquire` until `release` or the process ends."""

    def __init__(self, agent_id: str, directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else lock_dir()
        self.path = self.directory / f"{agent_id}.lock"
        self.agent_id = agent_id
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            # O_NOFOLLOW: a symlink planted in the directory never redirects our write.
            fd = os.open(
                self.path,
                os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                0o600,
            )
        except OSError as exc:
            raise LockError(
                f"cannot take the lock {self.path}: {exc.strerror or exc} (set {ENV_DIR} to "
                "a directory this user may write)"
            ) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise LockError(f"{self.path} is not a regular file")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise LockError(f"cannot lock {self.path}: {exc.strerror}") from None
                raise LockError(self._held_by(fd)) from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _held_by(self, fd: int) -> str:
        pid = ""
        with contextlib.suppress(OSError, ValueError):
            pid = os.pread(fd, 32, 0).decode("ascii").strip()
        running = f"pid {pid}" if pid.isdigit() else "another process"
        return (
            f"agent {self.agent_id} is already running ({running}, lock {self.path}): "
            "one agent per agent_id"
        )

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
