"""The core's one entry point: step(state, event, now) -> (state, actions).

It folds the event into the tunnel's health, lets the site policy pick carriers, and
emits only the difference between the new desired routing and what it asked for last
time, make-before-break: links up, routes in, announcements, withdrawals, routes out,
links down, then alerts and state reports.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from agent.config import BothDown, Config, Source
from agent.core import actions as act
from agent.core import dampening as damp
from agent.core import events as ev
from agent.core import health as hl
from agent.core import policy as pol

__all__ = ["CoreState", "initial_state", "next_deadline", "reconfigure", "rules_for", "step"]


@dataclass(frozen=True)
class CoreState:
    cfg: Config
    started_at: float
    settle_by: float
    settled: bool = False
    health: Mapping[str, hl.TunnelHealth] = field(default_factory=dict)
    damping: Mapping[str, damp.DampState] = field(default_factory=dict)
    # When each tunnel last became usable (eligible and not suppressed).
    usable_since: Mapping[str, float] = field(default_factory=dict)
    carriers: tuple[str, ...] = ()
    both_down: bool = False
    learned: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # What the core last asked the actuators for: the base of every diff.
    asked: pol.Desired = field(default_factory=pol.Desired)
    reported: Mapping[str, act.PublishTunnelState] = field(default_factory=dict)
    # Routes left by a previous run are swept once the desired set is complete: per family
    # when every BGP neighbor sent End-of-RIB for it, or at sweep_by at the latest.
    sweep_by: float = 0.0
    end_of_rib: Mapping[str, frozenset[str]] = field(default_factory=dict)
    swept: frozenset[str] = frozenset()


def rules_for(cfg: Config, tunnel: str) -> hl.HealthRules:
    t = cfg.tunnel(tunnel)
    p = cfg.policy
    return hl.HealthRules(
        rise=p.rise,
        fall=p.fall,
        loss_window=p.loss_window,
        loss_down=p.loss_down,
        loss_degraded=p.loss_degraded,
        rtt_degraded_ms=p.rtt_degraded_ms,
        rtt_samples=p.rtt_samples,
        uses_probes=Source.PROBE in t.sources,
        uses_sa=Source.VICI in t.sources or Source.XFRM in t.sources,
        uses_link=Source.LINK in t.sources,
        traffic_counts_as_life=p.traffic_counts_as_life,
    )


def _settle_grace(cfg: Config) -> float:
    """How long to wait for first evidence before deciding anything (no flap on restart)."""
    waits = [2.0 * cfg.vici.poll_interval_s]
    for t in cfg.tunnels:
        if Source.PROBE in t.sources:
            waits.append(cfg.policy.rise * t.probe.interval_s + t.probe.timeout_s)
    return max(waits) + 1.0


FAMILIES = ("ipv4", "ipv6")


def _learning(cfg: Config) -> bool:
    return cfg.bgp is not None and cfg.remote_prefixes.learned_from_bgp


def initial_state(cfg: Config, now: float) -> CoreState:
    grace = _settle_grace(cfg)
    # Sessions need a few hold times at most to come up and send their tables.
    sweep_wait = 3.0 * cfg.bgp.hold_time_s if cfg.bgp is not None and _learning(cfg) else 0.0
    return CoreState(
        cfg=cfg,
        started_at=now,
        settle_by=now + grace,
        sweep_by=now + grace + sweep_wait,
        health={t.name: hl.TunnelHealth(since=now) for t in cfg.tunnels},
        damping={t.name: damp.DampState(updated_at=now) for t in cfg.tunnels},
    )


def reconfigure(state: CoreState, cfg: Config, now: float) -> tuple[CoreState, list[act.Action]]:
    """Adopt a new config: tunnels kept by name keep their health; the diff does the rest."""
    health = {t.name: state.health.get(t.name, hl.TunnelHealth(since=now)) for t in cfg.tunnels}
    damping = {
        t.name: state.damping.get(t.name, damp.DampState(updated_at=now)) for t in cfg.tunnels
    }
    usable_since = {n: s for n, s in state.usable_since.items() if n in health}
    learned = {n: p for n, p in state.learned.items() if n in health}
    carriers = tuple(c for c in state.carriers if c in health)
    reported = {n: r for n, r in state.reported.items() if n in health}
    new = replace(
        state,
        cfg=cfg,
        health=health,
        damping=damping,
        usable_since=usable_since,
        learned=learned,
        carriers=carriers,
        reported=reported,
        # Tunnels that vanished from the config must still be undone: `asked` stays as it
        # was, so the diff removes their routes and gives back the links held down.
    )
    return _decide(new, now, old_cfg=state.cfg)


def _tunnel_of(event: ev.Event) -> str | None:
    tunnel = getattr(event, "tunnel", None)
    return tunnel if isinstance(tunnel, str) else None


def _prefix(text: str) -> str | None:
    """A peer's prefix in canonical form, or None when it is not a prefix at all."""
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        return None


def _echo(state: CoreState, event: ev.LinkChanged) -> bool:
    """The link went admin-down because the core asked for it: our own doing, not evidence."""
    return (
        event.present
        and not event.admin_up
        and state.asked.links.get(event.tunnel) is False
        and state.health[event.tunnel].link_present
    )


def _forget_link(asked: pol.Desired, cfg: Config, name: str) -> pol.Desired:
    """An interface that reappeared lost its routes and admin state: ask for them again."""
    iface = cfg.tunnel(name).interface
    return replace(
        asked,
        links={n: up for n, up in asked.links.items() if n != name},
        routes=frozenset(r for r in asked.routes if all(h.interface != iface for h in r.nexthops)),
    )


def step(state: CoreState, event: ev.Event, now: float) -> tuple[CoreState, list[act.Action]]:
    """Apply one event; return the new state and the actions to carry out, in order."""
    cfg = state.cfg
    name = _tunnel_of(event)
    if name is not None and name not in state.health:
        # An adapter can report a tunnel removed by a reload a moment ago: not ours now.
        return state, []
    health = dict(state.health)
    learned = dict(state.learned)
    asked = state.asked
    if isinstance(event, ev.SourceLost | ev.SourceRecovered):
        for n, h in state.health.items():
            health[n] = hl.observe(h, event, rules_for(cfg, n), now)
    elif isinstance(event, ev.AdminDisabled | ev.AdminEnabled):
        assert name is not None
        health[name] = hl.admin(health[name], event, now)
    elif name is not None:
        if isinstance(event, ev.BgpRouteLearned | ev.BgpRouteWithdrawn):
            prefix = _prefix(event.prefix)
            if prefix is None:
                # A malformed prefix from a peer changes nothing (the adapter logs it).
                return state, []
            known = learned.get(name, frozenset())
            learned[name] = (
                known | {prefix} if isinstance(event, ev.BgpRouteLearned) else known - {prefix}
            )
        if isinstance(event, ev.BgpNeighborDown):
            # A lost session takes everything it taught us with it.
            learned[name] = frozenset()
        if isinstance(event, ev.BgpEndOfRib):
            eor = dict(state.end_of_rib)
            eor[name] = eor.get(name, frozenset()) | {event.family}
            state = replace(state, end_of_rib=eor)
        if isinstance(event, ev.LinkChanged):
            if _echo(state, event):
                return _decide(state, now, before=state.health)
            if event.present and not state.health[name].link_present:
                asked = _forget_link(asked, cfg, name)
        health[name] = hl.observe(health[name], event, rules_for(cfg, name), now)
    judged = {n: h for n, h in health.items() if n == name or name is None}
    for n, h in judged.items():
        health[n] = hl.judge(h, rules_for(cfg, n), now)
    new = replace(state, health=health, learned=learned, asked=asked)
    return _decide(new, now, before=state.health)


def _usable(state: CoreState) -> list[str]:
    return [
        n
        for n, h in state.health.items()
        if h.eligible and not damp.is_suppressed(state.damping[n])
    ]


def _update_damping(
    state: CoreState, before: Mapping[str, hl.TunnelHealth], now: float
) -> dict[str, damp.DampState]:
    rules = state.cfg.policy.dampening
    out = {}
    for n, d in state.damping.items():
        was = before.get(n)
        if was is not None and was.eligible and state.health[n].state is hl.Health.DOWN:
            d = damp.flapped(d, rules, now)
        out[n] = damp.settle(d, rules, now)
    return out


def _decide(
    state: CoreState,
    now: float,
    before: Mapping[str, hl.TunnelHealth] | None = None,
    old_cfg: Config | None = None,
) -> tuple[CoreState, list[act.Action]]:
    cfg = state.cfg
    state = replace(state, damping=_update_damping(state, before or state.health, now))
    usable = _usable(state)
    usable_since = {n: state.usable_since.get(n, now) for n in usable}
    state = replace(state, usable_since=usable_since)
    if not state.settled:
        if now < state.settle_by and any(h.state is hl.Health.INIT for h in state.health.values()):
            # Before first evidence, say nothing: the kernel keeps what it has (no restart flap).
            return _reports(state, frozenset())
        state = replace(state, settled=True)
    chosen = pol.choose_carriers(cfg, usable, state.health, usable_since, state.carriers, now)
    alerts: list[act.Action] = []
    both_down = not chosen
    carriers = chosen
    if both_down and cfg.policy.both_down is BothDown.KEEP_LAST:
        # Drain means take traffic off: a drained tunnel is never the one kept.
        carriers = tuple(
            c for c in state.carriers if state.health[c].state is not hl.Health.ADMIN_DOWN
        )
    if chosen and state.both_down:
        # One alert for the way out of both-down, whichever tunnel keep-last had kept.
        why = "; ".join(f"{n} {state.health[n].reason}" for n in chosen)
        alerts.append(_alert(state, "recovered", (), chosen, now, reason=why))
    elif chosen and set(chosen) != set(state.carriers) and state.carriers:
        alerts.append(_carrier_alert(state, chosen, now))
    elif both_down and not state.both_down:
        alerts.append(_alert(state, "both-down", state.carriers, (), now))
    if before is not None:
        for n in chosen:
            if (
                state.health[n].state is hl.Health.DEGRADED
                and before[n].state is not hl.Health.DEGRADED
            ):
                alerts.append(_alert(state, "degraded", (n,), (n,), now))
    standbys = tuple(
        n
        for n in sorted(usable, key=lambda n: pol.preference(cfg.tunnel(n), state.health[n]))
        if n not in carriers
    )
    if both_down:
        standbys = ()
    routes, announcements = pol.desired_routing(cfg, carriers, standbys, state.learned)
    desired = pol.Desired(
        links=pol.desired_links(cfg, state.health, now, carriers),
        routes=routes,
        announcements=announcements,
    )
    actions = _diff(old_cfg or cfg, cfg, state.asked, desired)
    state = replace(state, carriers=carriers, both_down=both_down, asked=desired)
    sweeps = _sweeps(state, now)
    if sweeps:
        state = replace(state, swept=state.swept | {s.family for s in sweeps})
    state, reports = _reports(state, routes)
    return state, [*actions, *sweeps, *alerts, *reports]


def _sweeps(state: CoreState, now: float) -> list[act.SweepRoutes]:
    """Sweep a family once nothing more of it can be on its way (see CoreState.sweep_by)."""
    neighbors = [t.name for t in state.cfg.tunnels] if _learning(state.cfg) else []
    return [
        act.SweepRoutes(family)
        for family in FAMILIES
        if family not in state.swept
        and (
            now >= state.sweep_by
            or all(family in state.end_of_rib.get(n, frozenset()) for n in neighbors)
        )
    ]


def _alert(
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


def _carrier_alert(state: CoreState, chosen: tuple[str, ...], now: float) -> act.PublishAlert:
    usable = set(_usable(state))
    lost = tuple(c for c in state.carriers if c not in chosen)
    if any(c not in usable or state.health[c].state is hl.Health.DEGRADED for c in lost):
        return _alert(state, "failover", lost, chosen, now)
    gained = ",".join(c for c in chosen if c not in state.carriers)
    hold = state.cfg.policy.preempt_hold_down_s
    return _alert(
        state,
        "failback",
        state.carriers,
        chosen,
        now,
        reason=f"{gained} healthy for {hold:g}s (preempt hold-down)",
    )


def _route_id(r: act.Route) -> tuple[str, int, int]:
    return (r.prefix, r.table, r.metric)


def _diff(old_cfg: Config, cfg: Config, old: pol.Desired, new: pol.Desired) -> list[act.Action]:
    """Make-before-break order; nothing changed -> nothing emitted."""
    was_iface = {t.name: t.interface for t in old_cfg.tunnels}
    iface = {t.name: t.interface for t in cfg.tunnels}
    ups: list[act.Action] = []
    downs: list[act.Action] = []
    for n, up in new.links.items():
        was = old.links.get(n) if was_iface.get(n) == iface[n] else None
        if up and was is not True:
            ups.append(act.SetLinkUp(iface[n], n))
        elif not up and was is not False:
            downs.append(act.SetLinkDown(iface[n], n))
    for n, up in old.links.items():
        if not up and (n not in new.links or iface.get(n) != was_iface[n]):
            # No longer ours to hold down (tunnel removed, renamed or link_control none).
            ups.append(act.SetLinkUp(was_iface[n], n))
    installs = [act.InstallRoute(r) for r in sorted(new.routes - old.routes)]
    # An install replaces the route of its identity; removing that identity after it
    # would delete the route just installed.
    kept = {_route_id(r) for r in new.routes}
    removes = [
        act.RemoveRoute(r) for r in sorted(old.routes - new.routes) if _route_id(r) not in kept
    ]
    announces = [
        a for key, a in sorted(new.announcements.items()) if old.announcements.get(key) != a
    ]
    withdraws = [
        act.WithdrawPrefix(neighbor=a.neighbor, tunnel=a.tunnel, prefix=a.prefix)
        for key, a in sorted(old.announcements.items())
        if key not in new.announcements
    ]
    # Better attributes first, so the far side always has a path while we change them.
    announces.sort(key=lambda a: (a.med, a.as_path_prepend))
    return [*ups, *installs, *announces, *withdraws, *removes, *downs]


def _reports(state: CoreState, routes: frozenset[act.Route]) -> tuple[CoreState, list[act.Action]]:
    """Tunnel summaries that changed since last reported (for retained MQTT state)."""
    out: list[act.Action] = []
    reported = dict(state.reported)
    tunnel_on = {t.interface: t.name for t in state.cfg.tunnels}
    metric_of: dict[str, int] = {}
    for r in routes:
        for hop in r.nexthops:
            name = tunnel_on[hop.interface]  # desired routes only use current tunnels
            metric_of[name] = min(r.metric, metric_of.get(name, r.metric))
    announced_by = {a.tunnel for a in state.asked.announcements.values()}
    for t in state.cfg.tunnels:
        h = state.health[t.name]
        report = act.PublishTunnelState(
            tunnel=t.name,
            health=h.state.value,
            sa=h.sa.value,
            carrying=t.name in state.carriers
            and not (state.both_down and state.cfg.policy.both_down is BothDown.WITHDRAW),
            announced=t.name in announced_by,
            metric=metric_of.get(t.name),
            since=h.since,
            reason=h.reason,
        )
        if reported.get(t.name) != report:
            reported[t.name] = report
            out.append(report)
    return replace(state, reported=reported), out


def next_deadline(state: CoreState, now: float) -> float | None:
    """The next moment the core must look again even if nothing happens (or None)."""
    cfg = state.cfg
    times: list[float] = []
    if not state.settled:
        times.append(state.settle_by)
    if len(state.swept) < len(FAMILIES):
        times.append(state.sweep_by)
    usable = _usable(state)
    times += pol.pending_preemptions(cfg, usable, state.health, state.usable_since, state.carriers)
    times += pol.probation_deadlines(cfg, state.health, now)
    for d in state.damping.values():
        at = damp.reuse_at(d, cfg.policy.dampening)
        if at is not None:
            times.append(at)
    future = [t for t in times if t > now]
    return min(future) if future else None
