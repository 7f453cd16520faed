"""The supervised ExaBGP's workdir is ours alone: a 0700 directory, files written whole at 0600.

What lands there (exabgp.conf, the pid file) decides which program runs as root and which
process the agent signals, so a directory someone else can write, or a symlink planted
in it, is refused rather than used. Files are written to a fresh temporary name
(O_EXCL | O_NOFOLLOW) and renamed into place, so a reader never sees half a file and a
crash never leaves one; every name is resolved relative to the checked directory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from agent.ports import AdapterError

__all__ = ["WorkdirError", "prepare_workdir", "read_private", "remove_private", "write_private"]

_DIR_MODE = 0o700
_FILE_MODE = 0o600
# Parents we create on the way (e.g. /run/vti-failover): readable, writable only by us.
_PARENT_MODE = 0o755
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class WorkdirError(AdapterError):
    """The workdir or a file in it is not safe to use; the message is one line for the operator."""


def prepare_workdir(path: Path) -> None:
    """Create `path` (0700, ours) if missing; refuse it if it is a symlink, not ours or shared."""
    field = f"exabgp.workdir {path}"
    created = False
    if not os.path.lexists(path):
        _make_parents(path.parent, field)
        try:
            os.mkdir(path, _DIR_MODE)
            created = True
        except FileExistsError:
            pass  # made by someone else meanwhile: checked below like any existing one
        except OSError as exc:
            raise WorkdirError(f"{field}: cannot create it: {exc.strerror}") from exc
    try:
        fd = os.open(path, _OPEN_DIR)
    except OSError as exc:
        if os.path.islink(path):
            raise WorkdirError(f"{field}: is a symlink; refusing it (use a directory)") from exc
        raise WorkdirError(f"{field}: cannot open it: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise WorkdirError(
                f"{field}: owned by uid {st.st_uid}, not by this agent (uid {os.geteuid()}); "
                "refusing it"
            )
        if created:
            # The umask may have taken bits off (or left them on): set exactly rwx------.
            os.fchmod(fd, _DIR_MODE)
        elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise WorkdirError(
                f"{field}: writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                "refusing it (chmod 0700)"
            )
    finally:
        os.close(fd)


def _make_parents(parent: Path, field: str) -> None:
    missing: list[Path] = []
    p = parent
    while not os.path.lexists(p):
        missing.append(p)
        p = p.parent
    for p in reversed(missing):
        try:
            os.mkdir(p, _PARENT_MODE)
            os.chmod(p, _PARENT_MODE, follow_symlinks=False)
        except FileExistsError:
            pass
        except OSError as exc:
            raise WorkdirError(f"{field}: cannot create {p}: {exc.strerror}") from exc


def write_private(workdir: Path, name: str, text: str) -> None:
    """Replace workdir/name with `text`, mode 0600 whatever the umask; never through a symlink."""
    where = workdir / name
    with _dir(workdir) as dfd:
        _refuse_non_file(dfd, name, where)
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                _FILE_MODE,
                dir_fd=dfd,
            )
        except OSError as exc:
            raise WorkdirError(f"cannot write {where}: {exc.strerror}") from exc
        try:
            try:
                os.fchmod(fd, _FILE_MODE)
                data = text.encode()
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            # rename() replaces the name itself, never what a link there would point to.
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise WorkdirError(f"cannot write {where}: {exc.strerror}") from exc


def read_private(workdir: Path, name: str) -> str | None:
    """workdir/name's text, None if there is none; a symlink there is refused, not followed."""
    where = workdir / name
    try:
        with _dir(workdir) as dfd:
            _refuse_non_file(dfd, name, where)
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            with os.fdopen(fd, "rb") as f:
                return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise WorkdirError(f"cannot read {where}: {exc.strerror}") from exc


def remove_private(workdir: Path, name: str) -> None:
    with contextlib.suppress(FileNotFoundError), _dir(workdir) as dfd:
        os.unlink(name, dir_fd=dfd)


@contextlib.contextmanager
def _dir(workdir: Path) -> Iterator[int]:
    try:
        dfd = os.open(workdir, _OPEN_DIR)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise WorkdirError(f"exabgp.workdir {workdir}: cannot open it: {exc.strerror}") from exc
    try:
        yield dfd
    finally:
        os.close(dfd)


def _refuse_non_file(dfd: int, name: str, where: Path) -> None:
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise WorkdirError(f"{where}: is a symlink; refusing to write or read through it")
    if not stat.S_ISREG(st.st_mode):
        raise WorkdirError(f"{where}: is not a regular file; refusing it")
