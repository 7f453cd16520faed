"""A real `vti-failover run` process (optionally in a network namespace), read as an operator
reads it: its log on stderr, its dry-run actions on stdout, signals by pid."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["COMMAND", "AgentProcess"]

COMMAND = Path(sys.prefix) / "bin" / "vti-failover"
REPO = Path(__file__).resolve().parents[2]


class AgentProcess:
    """Started at construction; stopped by pid (SIGTERM, then SIGKILL) by stop()."""

    def __init__(
        self,
        config: Path,
        workdir: Path,
        *args: str,
        netns: str | None = None,
        name: str = "agent",
        env: dict[str, str] | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.log"
        self._out = self.out_path.open("wb")
        self._err = self.err_path.open("wb")
        cmd = [str(COMMAND), "run", str(config), *args]
        if netns is not None:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        self.started = time.monotonic()
        # `env` adds to this process's environment (NOTIFY_SOCKET, as systemd sets it).
        environ = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=self._err, cwd=REPO, env=environ)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.err_path.read_text(errors="replace")

    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    def lines(self, pattern: str) -> list[str]:
        """Log lines matching the regular expression."""
        rx = re.compile(pattern)
        return [line for line in self.log().splitlines() if rx.search(line)]

    def wait_for(
        self, what: str, check: Callable[[], object], timeout: float = 30.0, every: float = 0.05
    ) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                raise AssertionError(
                    f"agent exited ({rc}) waiting for {what}:\n{self.log()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}:\n{self.log()[-4000:]}"
                )
            time.sleep(every)

    def wait_log(self, pattern: str, count: int = 1, timeout: float = 30.0) -> list[str]:
        self.wait_for(repr(pattern), lambda: len(self.lines(pattern)) >= count, timeout)
        return self.lines(pattern)

    def send(self, sig: signal.Signals) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._out.close()
        self._err.close()
        return self.proc.returncode
