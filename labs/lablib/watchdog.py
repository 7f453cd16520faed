"""Notices when a long lab run stops making progress and records what the machine is doing.

A bench run lasts most of an hour under emulation; when it stalls, the VM is powered off
before anyone can look inside. The watchdog writes a snapshot (processes by CPU, load,
kernel messages, softirq counts, the lab's daemon logs) next to the results instead, and
touches a heartbeat file there while the run makes progress.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from lablib.topology import STATE_ROOT

__all__ = ["HEARTBEAT", "Watchdog", "beat_while_alive"]

HEARTBEAT = "heartbeat"

SNAPSHOT = (
    ("load", ["cat", "/proc/loadavg"]),
    ("processes by CPU", ["ps", "-eo", "pid,ppid,stat,pcpu,etime,args", "--sort=-pcpu"]),
    ("kernel messages", ["dmesg", "--ctime"]),
    ("softirqs", ["cat", "/proc/softirqs"]),
)


class Watchdog(threading.Thread):
    def __init__(self, out_dir: Path, stall_s: float = 150.0) -> None:
        super().__init__(name="watchdog", daemon=True)
        self.out_dir = out_dir
        self.stall_s = stall_s
        self.step = "starting"
        self.poked = time.monotonic()
        self.reported_for = -1.0

    def poke(self, step: str | None = None) -> None:
        """The run made progress (and is now at `step`)."""
        if step is not None:
            self.step = step
        self.poked = time.monotonic()

    def run(self) -> None:
        while True:
            time.sleep(10)
            quiet = time.monotonic() - self.poked
            if quiet <= self.stall_s:
                # Seen by the host (labs/lab), which powers off a VM whose beat stops.
                (self.out_dir / HEARTBEAT).touch()
            elif self.reported_for != self.poked:
                self.reported_for = self.poked
                self.snapshot(quiet)

    def snapshot(self, quiet: float) -> None:
        parts = [f"no progress for {quiet:.0f}s; last step: {self.step}"]
        for title, cmd in SNAPSHOT:
            try:
                res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
                text = res.stdout[-6000:]
            except (OSError, subprocess.TimeoutExpired) as exc:
                text = f"({exc})"
            parts.append(f"=== {title}\n{text}")
        for log in sorted(STATE_ROOT.glob("*/*.log")):
            tail = log.read_text(errors="replace").splitlines()[-40:]
            parts.append(f"=== {log.relative_to(STATE_ROOT)}\n" + "\n".join(tail))
        out = self.out_dir / f"stall-{time.strftime('%H%M%S')}.txt"
        out.write_text("\n".join(parts) + "\n")
        print(f"watchdog: no progress for {quiet:.0f}s, wrote {out}", flush=True)


def beat_while_alive(heartbeat: Path, every_s: float = 10.0) -> threading.Thread:
    """Touch `heartbeat` every `every_s` for as long as this process runs: the beat of a
    guest whose progress is judged elsewhere (a test's own timeout), so only a VM that has
    stopped running anything at all goes quiet."""

    def beat() -> None:
        while True:
            heartbeat.touch()
            time.sleep(every_s)

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    return thread
