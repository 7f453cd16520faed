"""What the core knows right now, as plain JSON-able data: the answer to `status`.

A read-only query of the state at `now` (the same monotonic clock as every time in it). It
decides nothing: every value is read from the state or from the rule that owns it (roles
from the last reports, deadlines from the site policy, penalties from dampening).
"""

from __future__ import annotations

from typing import TypeAlias

from agent.core import actions as act
from agent.core import dampening as damp
from agent.core import health as hl
from agent.core import policy as pol
from agent.core.state import CoreState

__all__ = ["Json", "snapshot"]

Json: TypeAlias = (
    bool | int | float | str | tuple["Json", ...] | list["Json"] | dict[str, "Json"] | None
)

_FAMILIES = 2


def snapshot(state: CoreState, now: float) -> dict[str, Json]:
    """The site and every tunnel (in config order) as the core sees them at `now`."""
    cfg = state.cfg
    deadlines: dict[str, Json] = {}
    if not state.settled:
        deadlines["settles_at"] = state.settle_by
    if len(state.swept) < _FAMILIES:
        deadlines["sweeps_at"] = state.sweep_by
    upcoming = [t for t in state.deadlines if t > now]
    return {
        "agent_id": cfg.agent_id,
        "now": now,
        "started_at": state.started_at,
        "settled": state.settled,
        "settled_at": state.settled_at if state.settled else None,
        "policy": {
            "mode": cfg.policy.mode.value,
            "preempt": cfg.policy.preempt,
            "preempt_hold_down_s": cfg.policy.preempt_hold_down_s,
            "both_down": cfg.policy.both_down.value,
        },
        "carriers": state.carriers,
        "standbys": state.standbys,
        "both_down": state.both_down,
        "last_move": _move(state.last_move),
        "components_lost": dict(state.components_lost),
        "deadlines": deadlines,
        "next_deadline": min(upcoming, default=None),
        "tunnels": tuple(_tunnel(state, t.name, now) for t in cfg.tunnels),
    }


def _move(alert: act.PublishAlert | None) -> Json:
    if alert is None:
        return None
    return {
        "kind": alert.kind,
        "at": alert.at,
        "from": alert.from_tunnels,
        "to": alert.to_tunnels,
        "reason": alert.reason,
        "detected_after_s": alert.detected_after_s,
    }


def _tunnel(state: CoreState, name: str, now: float) -> dict[str, Json]:
    cfg = state.cfg
    t = cfg.tunnel(name)
    h = state.health[name]
    report = state.reported.get(name)
    carrying = report is not None and report.carrying
    if carrying:
        role = "carrying"
    elif name in state.standbys:
        role = "standby"
    elif h.state is hl.Health.ADMIN_DOWN:
        role = "drained"
    else:
        role = "idle"
    return {
        "name": name,
        "interface": t.interface,
        "kind": t.kind.value,
        "priority": t.effective_priority,
        "health": h.state.value,
        "since": h.since,
        "reason": h.reason,
        "sa": h.sa.value,
        "sa_by_source": {source: view.value for source, view in h.sa_by_source},
        "blind_sources": tuple(sorted(h.blind_sources)),
        "link": {
            "present": h.link_present,
            "oper_up": h.link_oper_up,
            # What the core asked for; None where it does not control the link.
            "admin_up": state.asked.links.get(name),
        },
        "probes": _probes(state, name),
        "role": role,
        "carrying": carrying,
        "metric": None if report is None else report.metric,
        "dampening": _dampening(state, name, now),
        "bgp": _bgp(state, name),
        "announced": tuple(
            _announcement(a) for a in state.asked.announcements.values() if a.tunnel == name
        ),
        "learned": _learned(state, name),
        "deadlines": _deadlines(state, name, now),
    }


def _probes(state: CoreState, name: str) -> Json:
    if not state.ix.rules[name].uses_probes:
        return None
    h = state.health[name]
    return {
        "lost": h.losses,
        "of": len(h.window),
        "window": state.ix.rules[name].loss_window,
        "rtt_median_ms": h.rtt_median_ms,
        "answered_in_a_row": h.ok_streak,
        "lost_in_a_row": h.fail_streak,
    }


def _dampening(state: CoreState, name: str, now: float) -> Json:
    rules = state.cfg.policy.dampening
    d = state.damping[name]
    return {
        "penalty": damp.penalty_at(d, rules, now),
        "suppressed": damp.is_suppressed(d),
        "suppressed_until": damp.reuse_at(d, rules),
    }


def _bgp(state: CoreState, name: str) -> Json:
    cfg = state.cfg
    if cfg.bgp is None:
        return None
    return {
        "neighbor": str(cfg.neighbor_of(cfg.tunnel(name))),
        "state": "up" if state.health[name].bgp_up else "down",
        "lost_at": state.bgp_lost_at.get(name),
    }


def _announcement(a: act.AnnouncePrefix) -> Json:
    return {
        "prefix": a.prefix,
        "neighbor": a.neighbor,
        "med": a.med,
        "as_path_prepend": a.as_path_prepend,
        "communities": a.communities,
    }


def _learned(state: CoreState, name: str) -> Json:
    ledger = state.imports.get(name)
    counts = {} if ledger is None else {why.value: n for why, n in ledger.counts.items()}
    return {
        "count": len(state.learned.get(name, ())),
        "rejected": sum(counts.values()),
        "rejected_by_reason": dict(sorted(counts.items())),
        "over_limit": ledger is not None and ledger.over_limit,
    }


def _deadlines(state: CoreState, name: str, now: float) -> dict[str, Json]:
    """This tunnel's pending moments, by what happens then (none that have passed)."""
    cfg = state.cfg
    usable = list(state.usable_since)
    suppressed = frozenset(n for n, d in state.damping.items() if damp.is_suppressed(d))
    proving = (
        pol.proving_times(cfg, usable, state.usable_since, state.settled_at, now)
        if state.settled
        else {}
    )
    found = {
        "preempts_at": pol.preemption_times(
            cfg, usable, state.health, state.usable_since, state.carriers
        ).get(name),
        "proven_at": proving.get(name),
        "probation_at": pol.probation_times(cfg, state.health, now, suppressed).get(name),
        "reuse_at": damp.reuse_at(state.damping[name], cfg.policy.dampening),
    }
    return {what: at for what, at in found.items() if at is not None and at > now}
