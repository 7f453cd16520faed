"""The agent as an operator runs it: a `vti-failover run` process in a namespace, its log tailed.

The process is the CLI of the tree this file is in (`python -m agent`, the same `main` as
the `vti-failover` script), unless a command is given. Its stderr goes to a file, not a
pipe, so a slow reader can never block the agent; a thread reads the file as it grows and
keeps each line with the wall-clock time of its `asctime` stamp. Stopping is by pid only:
the agent, then whatever it started (a supervised exabgp) if it left any behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from lablib.topology import TOP

__all__ = ["AgentProcess", "LogLine", "descendants", "running_agent", "standby_routes"]

DEFAULT_COMMAND = (sys.executable, "-m", "agent")
# `%(asctime)s` of the CLI's log format: local time, milliseconds.
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


@dataclass(frozen=True)
class LogLine:
    at: float | None  # wall clock (time.time()) of the line's own stamp; None if it has none
    text: str


def descendants(pid: int) -> list[int]:
    """Every live process below pid (children first), from /proc."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


def standby_routes(command: Sequence[str] = DEFAULT_COMMAND) -> int | None:
    """How many standbys get routes by default, from the agent's own `schema`; None when its
    config has no `policy.standby_routes` (agents before it routed via every standby)."""
    out = subprocess.run(
        [*command, "schema"], cwd=TOP, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    field = json.loads(out)["$defs"]["Policy"]["properties"].get("standby_routes")
    return None if field is None else int(field["default"])


def _kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


class AgentProcess:
    def __init__(
        self,
        ns: str,
        config: Path,
        log: Path,
        command: Sequence[str] = DEFAULT_COMMAND,
        log_level: str = "info",
    ) -> None:
        self.ns = ns
        self.config = config
        self.log_path = log
        self.command = tuple(command)
        self.log_level = log_level
        self.lines: list[LogLine] = []
        self._cond = threading.Condition()
        self._stop_reading = threading.Event()
        self._reader: threading.Thread | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.exit_status: int | None = None
        # Processes it started that were still there when it had exited (then stopped by us).
        self.left_behind: list[int] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as err:
            self.started_at = time.time()
            # `ip netns exec` execs the command: the pid is the agent's own.
            argv = ["ip", "netns", "exec", self.ns, *self.command, "run", str(self.config)]
            self.proc = subprocess.Popen(
                [*argv, "--log-level", self.log_level],
                cwd=TOP,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                # Its own session: a Ctrl-C at the terminal reaches us, and we stop it.
                start_new_session=True,
            )
        self._reader = threading.Thread(target=self._read, name="agent-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with self.log_path.open("rb") as f:
            partial = b""
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    if self._stop_reading.is_set():
                        return
                    time.sleep(0.005)
                    continue
                partial += chunk
                *complete, partial = partial.split(b"\n")
                got = [self._parse(raw.decode(errors="replace")) for raw in complete]
                with self._cond:
                    self.lines += got
                    self._cond.notify_all()

    @staticmethod
    def _parse(text: str) -> LogLine:
        m = _STAMP.match(text)
        if m is None:
            return LogLine(None, text)
        at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
        return LogLine(at + int(m.group(2)) / 1000, text)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_for(
        self, pattern: re.Pattern[str], timeout: float, start: int = 0
    ) -> tuple[int, LogLine] | None:
        """The first line from index `start` on matching pattern, within timeout; else None.

        Returns (index, line); None also when the agent exited without writing it.
        """
        deadline = time.monotonic() + timeout
        i = start
        with self._cond:
            while True:
                while i < len(self.lines):
                    if pattern.search(self.lines[i].text):
                        return i, self.lines[i]
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or not self.alive():
                    return None
                self._cond.wait(min(left, 0.1))

    def mark(self) -> int:
        """The index the next line will have: wait_for(..., start=mark()) sees only new lines."""
        with self._cond:
            return len(self.lines)

    def tail(self, n: int = 20) -> list[str]:
        with self._cond:
            return [line.text for line in self.lines[-n:]]

    def stop(self, grace: float = 10.0) -> float | None:
        """SIGTERM, then seconds until it exited; None if it did not within grace (killed)."""
        if self.proc is None:
            return None
        left_behind = descendants(self.proc.pid)
        took: float | None = None
        if self.proc.poll() is None:
            t0 = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.exit_status = self.proc.wait(timeout=grace)
                took = time.monotonic() - t0
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.exit_status = self.proc.wait()
        else:
            self.exit_status = self.proc.returncode
        # A supervised exabgp is stopped by the agent; one left behind (agent killed) is ours.
        self.left_behind = [p for p in left_behind if Path(f"/proc/{p}").exists()]
        for pid in left_behind:
            _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        while any(Path(f"/proc/{p}").exists() for p in left_behind) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in left_behind:
            _kill(pid, signal.SIGKILL)
        self._stop_reading.set()
        if self._reader is not None:
            self._reader.join(timeout=5)
        return took


@contextlib.contextmanager
def running_agent(
    ns: str,
    config: Path,
    log: Path,
    command: Sequence[str] = DEFAULT_COMMAND,
) -> Iterator[AgentProcess]:
    """A started agent, stopped (by pid) when the block ends, however it ends."""
    agent = AgentProcess(ns, config, log, command)
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()
