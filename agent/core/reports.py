"""What operators are told: alerts for decisions, for BGP sessions and components lost or back,
and each tunnel's summary when it changed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from agent.config import BothDown
from agent.core import actions as act
from agent.core import events as ev
from agent.core import health as hl
from agent.core.routing import Roles, has_routes
from agent.core.state import CoreState

__all__ = [
    "MOVES",
    "alert",
    "carrier_alert",
    "component_alert",
    "last_move",
    "session_alert",
    "touched",
    "tunnel_reports",
]

# The alerts that say traffic moved, or has nowhere to go.
MOVES = frozenset({"failover", "failback", "both-down", "recovered"})


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


def last_move(
    alerts: Iterable[act.Action], previous: act.PublishAlert | None
) -> act.PublishAlert | None:
    """The last of these alerts that moved traffic; `previous` when none did."""
    moved = [a for a in alerts if isinstance(a, act.PublishAlert) and a.kind in MOVES]
    return moved[-1] if moved else previous


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


def _rejected(state: CoreState, name: str) -> tuple[tuple[str, int], ...]:
    ledger = state.imports.get(name)
    if ledger is None:
        return ()
    return tuple(sorted((why.value, n) for why, n in ledger.counts.items()))


def _lag(event: ev.Event, now: float) -> float | None:
    return None if not event.at else round(max(0.0, now - event.at), 6)


def session_alert(
    state: CoreState, event: ev.BgpNeighborUp | ev.BgpNeighborDown, was_up: bool, now: float
) -> tuple[CoreState, list[act.Action]]:
    """One alert per change of the tunnel's BGP session.

    A session that never came up is not lost (a peer still booting says nothing new), and a
    repeated down (ExaBGP's own report after the link to it closed) says nothing twice.
    """
    name = event.tunnel
    neighbor = str(state.cfg.neighbor_of(state.cfg.tunnel(name)))
    at = event.at or now
    src: tuple[str, ...]
    dst: tuple[str, ...]
    if isinstance(event, ev.BgpNeighborDown):
        if not was_up:
            return state, []
        lost = {**state.bgp_lost_at, name: at}
        kind, reason, down_for = "bgp-session-lost", event.reason or "session down", None
        src, dst = (name,), ()
    else:
        since = state.bgp_lost_at.get(name)
        if was_up or since is None:
            return state, []
        lost = {n: t for n, t in state.bgp_lost_at.items() if n != name}
        kind, reason, down_for = "bgp-session-restored", "session up", round(at - since, 6)
        src, dst = (), (name,)
    told = act.PublishAlert(
        kind=kind,
        at=now,
        from_tunnels=src,
        to_tunnels=dst,
        reason=reason,
        detected_after_s=_lag(event, now),
        tunnel=name,
        neighbor=neighbor,
        down_for_s=down_for,
    )
    return replace(state, bgp_lost_at=lost), [told]


def component_alert(
    state: CoreState,
    event: ev.SourceLost | ev.SourceRecovered | ev.ComponentRestarted,
    now: float,
) -> tuple[CoreState, list[act.Action]]:
    """One alert when a component is lost, and one when it is back (reachable or restarted)."""
    at = event.at or now
    if isinstance(event, ev.SourceLost):
        if event.source in state.components_lost:
            return state, []
        name, kind, reason, down_for = event.source, "component-lost", event.detail, None
        lost = {**state.components_lost, name: at}
    else:
        if isinstance(event, ev.SourceRecovered):
            name, kind, reason = event.source, "component-restored", "reachable again"
            if name not in state.components_lost:
                return state, []
        else:
            # Every restart is news, also one whose exit was not reported first.
            name, kind, reason = event.component, "component-restarted", event.reason
        since = state.components_lost.get(name)
        down_for = None if since is None else round(at - since, 6)
        lost = {n: t for n, t in state.components_lost.items() if n != name}
    told = act.PublishAlert(
        kind=kind,
        at=now,
        from_tunnels=(),
        to_tunnels=(),
        reason=reason or kind,
        detected_after_s=_lag(event, now),
        component=name,
        down_for_s=down_for,
    )
    return replace(state, components_lost=lost), [told]


def _quality(h: hl.TunnelHealth) -> tuple[str, float | None]:
    """Loss as "lost/window" of the probe window, and the median RTT (ms)."""
    loss = f"{h.losses}/{len(h.window)}" if h.window else ""
    rtt = h.rtt_median_ms
    return loss, None if rtt is None else round(rtt, 1)


def tunnel_reports(
    state: CoreState,
    roles: Roles | None,
    names: Iterable[str] | None = None,
    *,
    quality: bool = False,
) -> tuple[CoreState, list[act.Action]]:
    """Summaries of these tunnels (None: all) that changed since last reported.

    `roles` are those routes were asked for (None: no routes yet). Loss and RTT are
    measured afresh only with `quality`; otherwise a report keeps the last ones told.
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
        last = reported.get(name)
        if quality:
            loss, rtt = _quality(h)
        else:
            loss, rtt = ("", None) if last is None else (last.loss, last.rtt_ms)
        report = act.PublishTunnelState(
            tunnel=name,
            health=h.state.value,
            sa=h.sa.value,
            carrying=name in state.carriers and carrying_any,
            announced=name in announced_by,
            metric=metric,
            since=h.since,
            reason=h.reason,
            bgp=None if cfg.bgp is None else ("up" if h.bgp_up else "down"),
            learned_rejected=_rejected(state, name),
            loss=loss,
            rtt_ms=rtt,
        )
        if last != report:
            reported[name] = report
            out.append(report)
    return replace(state, reported=reported), out


def changed_health(
    prior: CoreState, state: CoreState, before: Mapping[str, hl.TunnelHealth] | None
) -> set[str] | None:
    """Tunnels whose health this step changed; None when every report must be looked at."""
    if before is None or len(prior.reported) != len(state.health) or prior.cfg is not state.cfg:
        return None
    return {n for n, h in state.health.items() if before.get(n) is not h}


def touched(
    prior: CoreState, state: CoreState, before: Mapping[str, hl.TunnelHealth] | None
) -> set[str] | None:
    """The tunnels whose report may have changed in this decision (None: any of them).

    A change of tables (learned prefixes, a forgotten link) clears routes_for, so it
    always looks at every report.
    """
    names = changed_health(prior, state, before)
    old_routes, old_announce = prior.routes_for, prior.announced_for
    new_routes, new_announce = state.routes_for, state.announced_for
    if (
        names is None
        or old_routes is None
        or old_announce is None
        or new_routes is None
        or new_announce is None
        or prior.both_down != state.both_down
    ):
        return None
    old_metric, new_metric = old_routes.metrics(state.cfg), new_routes.metrics(state.cfg)
    names |= {
        n for n in old_metric.keys() | new_metric.keys() if old_metric.get(n) != new_metric.get(n)
    }
    names |= set(prior.carriers) ^ set(state.carriers)
    names |= set(old_announce.carriers + old_announce.standbys) ^ set(
        new_announce.carriers + new_announce.standbys
    )
    return names
