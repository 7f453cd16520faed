"""The supervised ExaBGP: one at a time, restarted when it dies, never outliving the agent.

Two ExaBGPs for one site would both dial the same peers: the far side rejects the
duplicate's sessions and two relays take turns on the agent's API. So the child gets
PR_SET_PDEATHSIG (SIGTERM when the agent dies, even by kill -9) and a pid file in the
workdir; a start first ends whatever exabgp that file names, if /proc shows it really is
one running our exabgp.conf (a pid reused by an unrelated process is left alone).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import logging
import os
import shlex
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from agent.adapters.exabgp_workdir import read_private, remove_private, write_private
from agent.core.events import ComponentRestarted, Event, SourceLost
from agent.ports import AdapterError

__all__ = ["CONF_NAME", "PID_NAME", "ExaBgpSupervisor", "end_leftover"]

log = logging.getLogger("vti_failover.exabgp")

CONF_NAME = "exabgp.conf"
PID_NAME = "exabgp.pid"

_RESTART_MIN_S = 0.5
_RESTART_MAX_S = 30.0
_STOP_WAIT_S = 5.0
# A leftover gets this long to go after SIGTERM, then SIGKILL (exabgp exits in ~0.1 s).
_LEFTOVER_TERM_S = 5.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None]:
    """A preexec_fn that ties the child to this process: SIGTERM when we die.

    Everything is looked up before the fork; the child only makes two system calls.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            os._exit(126)
        # We may have died between fork and prctl; no signal would ever come then.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def _runs_our_conf(pid: int, conf: Path) -> bool:
    """True if pid is an exabgp whose arguments name our conf file (not merely any process)."""
    args = _cmdline(pid)
    conf_arg = str(conf)
    return conf_arg in args and any("exabgp" in os.path.basename(a) for a in args if a != conf_arg)


async def _exited(pidfd: int, timeout: float) -> bool:
    """Wait until the process behind pidfd has exited (a pidfd polls readable then)."""
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        async with asyncio.timeout(timeout):
            await gone
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(pidfd)


async def end_leftover(workdir: Path, conf: Path) -> int | None:
    """End the exabgp our pid file names if it still runs our conf; its pid, or None."""
    text = read_private(workdir, PID_NAME)
    if text is None:
        return None
    try:
        pid = int(text.split()[0])
    except (ValueError, IndexError):
        log.warning("exabgp: %s holds no pid (%r); ignored", workdir / PID_NAME, text[:40])
        remove_private(workdir, PID_NAME)
        return None
    if pid <= 1 or pid == os.getpid():
        remove_private(workdir, PID_NAME)
        return None
    try:
        # A pidfd names this very process: if it dies and its pid is reused, signals fail
        # instead of reaching the newcomer.
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        remove_private(workdir, PID_NAME)
        return None
    except OSError as exc:
        log.warning("exabgp: cannot check pid %d from %s: %s", pid, PID_NAME, exc.strerror)
        return None
    try:
        if not _runs_our_conf(pid, conf):
            log.info(
                "exabgp: %s names pid %d, which is not an exabgp running %s; left alone",
                PID_NAME,
                pid,
                conf,
            )
            remove_private(workdir, PID_NAME)
            return None
        log.warning("exabgp: ending a leftover exabgp (pid %d) still running %s", pid, conf)
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        if not await _exited(pidfd, _LEFTOVER_TERM_S):
            log.warning("exabgp: leftover pid %d ignored SIGTERM; killing it", pid)
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            if not await _exited(pidfd, _STOP_WAIT_S):
                raise AdapterError(f"a leftover exabgp (pid {pid}) survived SIGKILL")
        remove_private(workdir, PID_NAME)
        return pid
    finally:
        os.close(pidfd)


def _status(rc: int) -> str:
    """The exit status as a person reads it: a signal by name."""
    if rc < 0:
        try:
            return f"status {rc} ({signal.Signals(-rc).name})"
        except ValueError:
            return f"status {rc}"
    return f"status {rc}"


class ExaBgpSupervisor:
    """Runs `executable conf` in a loop with backoff; restart() and stop() act on it."""

    def __init__(
        self,
        workdir: Path,
        executable: Sequence[str],
        env: Mapping[str, str],
        clock: Callable[[], float] = time.monotonic,
        emit: Callable[[Event], None] | None = None,
    ) -> None:
        # Absolute: the pid check matches the conf path exabgp was given, word for word.
        self.workdir = workdir.absolute()
        self.executable = list(executable)
        self._env = dict(env)
        self._clock = clock
        self._process: asyncio.subprocess.Process | None = None
        self._restart_now = False
        # Set by stop(): exabgp ending now is our doing, not a crash to restart from.
        self._closing = False
        # Operators hear of each exit and restart: why the last one ended, and when.
        self._emit = emit
        self._ended: tuple[str, float] | None = None

    @property
    def conf_path(self) -> Path:
        return self.workdir / CONF_NAME

    @property
    def pid(self) -> int | None:
        proc = self._process
        return proc.pid if proc is not None and proc.returncode is None else None

    def restart(self) -> None:
        """End the running exabgp and start the next one at once (no backoff)."""
        if self._process is not None:
            self._restart_now = True
            self._terminate()

    async def run(self, conf_text: Callable[[], str]) -> None:
        """Start exabgp, and again each time it exits, until stop(); conf_text() each start."""
        delay = _RESTART_MIN_S
        try:
            while not self._closing:
                started = self._clock()
                rc = await self._run_once(conf_text())
                if self._closing:
                    return
                if self._restart_now:
                    self._restart_now = False
                    delay = _RESTART_MIN_S
                    self._ended = ("its config changed", self._clock())
                    continue
                if self._clock() - started > _RESTART_MAX_S:
                    delay = _RESTART_MIN_S
                log.warning("exabgp exited with status %s; restarting in %.1fs", rc, delay)
                why = f"exited with {_status(rc)}"
                self._ended = (why, self._clock())
                self._tell(SourceLost(source="exabgp", detail=f"{why}; restarting in {delay:.1f}s"))
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RESTART_MAX_S)
        finally:
            await self._stop_process()

    async def stop(self) -> None:
        self._closing = True
        await self._stop_process()

    async def _run_once(self, text: str) -> int:
        write_private(self.workdir, CONF_NAME, text)
        await end_leftover(self.workdir, self.conf_path)
        cmd = [*self.executable, str(self.conf_path)]
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                env=self._env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                # Its own group: a Ctrl-C on our terminal is ours to handle, not exabgp's.
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        except OSError as exc:
            raise AdapterError(f"cannot start exabgp ({shlex.join(cmd)}): {exc}") from exc
        self._process = proc
        try:
            write_private(self.workdir, PID_NAME, f"{proc.pid}\n")
            log.info("started exabgp (pid %d): %s", proc.pid, shlex.join(cmd))
            if self._ended is not None:
                why, at = self._ended
                self._ended = None
                waited = self._clock() - at
                self._tell(
                    ComponentRestarted(
                        component="exabgp", reason=f"{why}; restarted after {waited:.1f}s"
                    )
                )
            tail: collections.deque[str] = collections.deque(maxlen=20)
            assert proc.stdout is not None
            async for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                tail.append(line)
                log.debug("exabgp: %s", line)
            rc = await proc.wait()
        finally:
            if proc.returncode is None:
                await self._stop_process()
        self._process = None
        remove_private(self.workdir, PID_NAME)
        if rc != 0 and not self._restart_now and not self._closing:
            for line in tail:
                log.warning("exabgp output: %s", line)
        return rc

    def _tell(self, event: Event) -> None:
        if self._emit is not None:
            self._emit(replace(event, at=self._clock()))

    def _terminate(self) -> None:
        proc = self._process
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)

    async def _stop_process(self) -> None:
        proc = self._process
        if proc is None or proc.returncode is not None:
            return
        self._terminate()
        try:
            async with asyncio.timeout(_STOP_WAIT_S):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        remove_private(self.workdir, PID_NAME)
