"""The benchmarks' one percentile: nearest rank, so a reported p99 is a value that was measured."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["pct"]


def pct(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) of values, nearest rank; raises on no values."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]
