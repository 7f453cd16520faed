"""What operators are told: alerts for decisions, and each tunnel's summary when it changed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from agent.config import BothDown
from agent.core import actions as act
from agent.core import health as hl
from agent.core.routing import Roles, has_routes
from agent.core.state import CoreState

__all__ = ["alert", "carrier_alert", "tunnel_reports"]


def alert(
    state: CoreState,
    kind: str,
    src: tuple[str, ...],
    dst: tuple[str, ...],
    now: float,
    reason: str | None = None,
) -> act.PublishAlert:
    troubles = [state.health[n].trouble_since for n in src if n in state.health]
    started = min((t for t in troubles if t is not None), default=None)
    if reason is None:
        reason = "; ".join(f"{n} {state.health[n].reason}" for n in src if n in state.health)
    return act.PublishAlert(
        kind=kind,
        at=now,
        from_tunnels=src,
        to_tunnels=dst,
        reason=reason or kind,
        detected_after_s=None if started is None else round(now - started, 6),
    )


def carrier_alert(
    state: CoreState, usable: Iterable[str], chosen: tuple[str, ...], now: float
) -> act.PublishAlert:
    ok = set(usable)
    lost = tuple(c for c in state.carriers if c not in chosen)
    if any(c not in ok or state.health[c].state is hl.Health.DEGRADED for c in lost):
        return alert(state, "failover", lost, chosen, now)
    gained = ",".join(c for c in chosen if c not in state.carriers)
    hold = state.cfg.policy.preempt_hold_down_s
    return alert(
        state,
        "failback",
        state.carriers,
        chosen,
        now,
        reason=f"{gained} healthy for {hold:g}s (preempt hold-down)",
    )


def tunnel_reports(
    state: CoreState, roles: Roles | None, names: Iterable[str] | None = None
) -> tuple[CoreState, list[act.Action]]:
    """Summaries of these tunnels (None: all) that changed since last reported.

    `roles` are those routes were asked for (None: no routes yet).
    """
    out: list[act.Action] = []
    reported = dict(state.reported)
    cfg = state.cfg
    metrics = roles.metrics(cfg) if roles is not None else {}
    announced_by = {a.tunnel for a in state.asked.announcements.values()}
    carrying_any = not (state.both_down and cfg.policy.both_down is BothDown.WITHDRAW)
    for name in (t.name for t in cfg.tunnels) if names is None else names:
        h = state.health[name]
        metric = metrics.get(name)
        if metric is not None and not has_routes(cfg, state.ix, state.learned, name):
            metric = None
        report = act.PublishTunnelState(
            tunnel=name,
            health=h.state.value,
            sa=h.sa.value,
            carrying=name in state.carriers and carrying_any,
            announced=name in announced_by,
            metric=metric,
            since=h.since,
            reason=h.reason,
        )
        if reported.get(name) != report:
            reported[name] = report
            out.append(report)
    return replace(state, reported=reported), out
