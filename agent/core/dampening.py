"""Flap dampening: each fall to DOWN adds a penalty that halves every half-life.

A tunnel whose penalty passes `suppress_above` may not carry traffic until the penalty
decays below `reuse_below` (or `max_suppress_s` has passed), as in RFC 2439. Timing is
computed from `now`, never slept on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from agent.config import Dampening

__all__ = ["DampState", "flapped", "is_suppressed", "penalty_at", "reuse_at", "settle"]


@dataclass(frozen=True)
class DampState:
    penalty: float = 0.0
    updated_at: float = 0.0
    suppressed_since: float | None = None


def penalty_at(d: DampState, rules: Dampening, now: float) -> float:
    elapsed = max(0.0, now - d.updated_at)
    return d.penalty * math.pow(0.5, elapsed / rules.half_life_s)


def flapped(d: DampState, rules: Dampening, now: float) -> DampState:
    """Charge one flap and suppress if the penalty crossed the threshold."""
    if not rules.enabled:
        return d
    penalty = penalty_at(d, rules, now) + rules.penalty_per_flap
    suppressed = d.suppressed_since
    if suppressed is None and penalty > rules.suppress_above:
        suppressed = now
    return DampState(penalty=penalty, updated_at=now, suppressed_since=suppressed)


def settle(d: DampState, rules: Dampening, now: float) -> DampState:
    """Release the suppression once the penalty decayed enough or the cap passed."""
    if d.suppressed_since is None:
        return d
    # The tolerance keeps a timer set for exactly reuse_at from missing by a rounding error.
    if (
        penalty_at(d, rules, now) <= rules.reuse_below * (1 + 1e-9)
        # The same sum as reuse_at, so a timer set for the cap finds it passed.
        or now >= d.suppressed_since + rules.max_suppress_s
    ):
        return DampState(penalty=penalty_at(d, rules, now), updated_at=now, suppressed_since=None)
    return d


def is_suppressed(d: DampState) -> bool:
    return d.suppressed_since is not None


def reuse_at(d: DampState, rules: Dampening) -> float | None:
    """When a suppressed tunnel becomes usable again if it stops flapping."""
    if d.suppressed_since is None:
        return None
    decay = d.updated_at + rules.half_life_s * math.log2(d.penalty / rules.reuse_below)
    return min(decay, d.suppressed_since + rules.max_suppress_s)
