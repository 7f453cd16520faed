"""The bench's and demo's outage measure, on made-up receiver logs."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "labs"))
from lablib.stream import longest_gap, read_stream

RATE = 200.0


def stream(first: int, last: int, t0: float = 100.0) -> list[tuple[int, float]]:
    return [(i, t0 + i / RATE) for i in range(first, last)]


def test_an_unbroken_stream_has_no_gap() -> None:
    assert longest_gap(stream(0, 400), 100.5, 101.5, RATE) == 0.0


def test_a_hole_is_measured_in_send_time() -> None:
    rows = [r for r in stream(0, 400) if not 200 <= r[0] < 260]
    assert longest_gap(rows, 100.5, 101.8, RATE) == 0.3


def test_the_longest_of_several_holes_counts() -> None:
    rows = [r for r in stream(0, 400) if not (120 <= r[0] < 130 or 200 <= r[0] < 300)]
    assert longest_gap(rows, 100.0, 102.0, RATE) == 0.5


def test_a_stream_that_stops_in_the_window_counts_up_to_its_end() -> None:
    # Nothing after 100.995: the outage runs to the window's end, not "no gap".
    assert longest_gap(stream(0, 200), 100.5, 102.0, RATE) == 1.0


def test_nothing_received_at_all_is_the_whole_window() -> None:
    # The edges count as datagrams: 3 s between them, less one interval.
    assert longest_gap([], 100.0, 103.0, RATE) == 2.995


def test_read_stream_skips_torn_lines_and_duplicates(tmp_path: Path) -> None:
    log = tmp_path / "stream.rx"
    log.write_text("1 100.005 100.006\n0 100.000 100.001\n1 100.005 100.006\n2 100.0")
    assert read_stream(log) == [(0, 100.0), (1, 100.005)]
