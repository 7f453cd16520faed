"""The guest's heartbeat (labs/lablib/watchdog.py): what the host watches to tell a VM that
stopped running anything from one that is merely slow."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "labs"))
from lablib.watchdog import beat_while_alive


def test_the_beat_touches_its_file_again_and_again(tmp_path: Path) -> None:
    heartbeat = tmp_path / "heartbeat"
    beat_while_alive(heartbeat, every_s=0.05)
    deadline = time.monotonic() + 30
    while not heartbeat.exists():
        assert time.monotonic() < deadline, "no first beat"
        time.sleep(0.01)
    first = heartbeat.stat().st_mtime_ns
    # Touched again: the host judges the file's age, so one touch would not do.
    while heartbeat.stat().st_mtime_ns == first:
        assert time.monotonic() < deadline, "no second beat"
        time.sleep(0.01)
