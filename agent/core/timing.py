"""When the core must look again: every deadline of a state, and whether an event that
changes no verdict can be skipped until the next of them."""

from __future__ import annotations

import bisect
from dataclasses import replace

from agent.core import dampening as damp
from agent.core import health as hl
from agent.core import policy as pol
from agent.core import stale
from agent.core.state import CoreState

__all__ = [
    "FAMILIES",
    "next_deadline",
    "quiet",
    "suppressed_tunnels",
    "usable_tunnels",
    "with_deadlines",
]

FAMILIES = ("ipv4", "ipv6")


def usable_tunnels(state: CoreState) -> list[str]:
    return [
        n
        for n, h in state.health.items()
        if h.eligible and not damp.is_suppressed(state.damping[n])
    ]


def suppressed_tunnels(state: CoreState) -> frozenset[str]:
    return frozenset(n for n, d in state.damping.items() if damp.is_suppressed(d))


def quiet(state: CoreState, now: float) -> bool:
    """No deadline has come since the last decision, and every tunnel has been reported."""
    if len(state.reported) != len(state.health):
        return False
    i = bisect.bisect_right(state.deadlines, state.decided_at)
    return i == len(state.deadlines) or state.deadlines[i] > now


def with_deadlines(state: CoreState, now: float, usable: list[str] | None = None) -> CoreState:
    """Remember every moment the core must look again even if nothing happens."""
    cfg = state.cfg
    times: list[float] = []
    if not state.settled:
        times.append(state.settle_by)
    if len(state.swept) < len(FAMILIES):
        times.append(state.sweep_by)
    if usable is None:
        usable = usable_tunnels(state)
    times += pol.pending_preemptions(cfg, usable, state.health, state.usable_since, state.carriers)
    if state.settled:
        times += pol.proving_deadlines(cfg, usable, state.usable_since, state.settled_at, now)
    times += pol.probation_deadlines(cfg, state.health, now, suppressed_tunnels(state))
    times += stale.deadlines(state)
    times += [at for h in state.health.values() if h.sa_awaited for at in hl.grace_deadlines(h)]
    for d in state.damping.values():
        at = damp.reuse_at(d, cfg.policy.dampening)
        if at is not None:
            times.append(at)
    # Refusals no alert mentioned are summed up when their window ends.
    times += [at for led in state.imports.values() if (at := led.summary_due()) is not None]
    return replace(state, deadlines=tuple(sorted(times)))


def next_deadline(state: CoreState, now: float) -> float | None:
    """The next moment the core must look again even if nothing happens (or None)."""
    i = bisect.bisect_right(state.deadlines, now)
    return state.deadlines[i] if i < len(state.deadlines) else None
