"""Reads what udp_stream.py's receiver logged and measures outages from it."""

from __future__ import annotations

import itertools
from pathlib import Path

__all__ = ["longest_gap", "read_stream"]


def read_stream(path: Path) -> list[tuple[int, float]]:
    """(seq, send_time) of every datagram received, in sequence order."""
    rows = set()
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            rows.add((int(parts[0]), float(parts[1])))
    return sorted(rows)


def longest_gap(rows: list[tuple[int, float]], start: float, end: float, rate: float) -> float:
    """Longest time, in send time, with nothing received between `start` and `end`.

    The window's edges count as received, so a stream that stopped in the window and
    never came back shows the whole remaining time as outage, not as no gap at all.
    """
    times = [t for _, t in rows if start <= t <= end]
    gap = 0.0
    for t0, t1 in itertools.pairwise([start, *times, end]):
        # One missing datagram is 2/rate between neighbours: count only real holes.
        if t1 - t0 > 1.5 / rate:
            gap = max(gap, t1 - t0 - 1.0 / rate)
    return round(gap, 3)
