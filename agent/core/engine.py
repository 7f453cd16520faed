"""The core's one entry point: step(state, event, now) -> (state, actions).

It folds the event into the tunnel's health. Only when a verdict changed, a table changed
or a deadline came does the site policy pick carriers again; then only the difference
between the new desired routing and what was asked for last is emitted, make-before-break.
An event that changes no verdict costs its own tunnel, whatever the number of tunnels; a
learned prefix costs the routes of that prefix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from agent.config import BothDown, Config
from agent.core import actions as act
from agent.core import dampening as damp
from agent.core import events as ev
from agent.core import health as hl
from agent.core import imports as imp
from agent.core import policy as pol
from agent.core import routing, stale, startup
from agent.core.diff import diff, route_actions
from agent.core.index import index_of, rules_for
from agent.core.kernel import forget_link, lose_nexthops
from agent.core.learning import fold
from agent.core.reports import (
    alert,
    carrier_alert,
    changed_health,
    component_alert,
    last_move,
    session_alert,
    touched,
    tunnel_reports,
)
from agent.core.routing import Desired, Roles
from agent.core.startup import learning, settle_grace
from agent.core.state import CoreState
from agent.core.timing import (
    next_deadline,
    quiet,
    suppressed_tunnels,
    usable_tunnels,
    with_deadlines,
)

__all__ = [
    "CoreState",
    "decide",
    "initial_state",
    "next_deadline",
    "reconfigure",
    "rules_for",
    "step",
]


def initial_state(cfg: Config, now: float) -> CoreState:
    grace = settle_grace(cfg)
    sweep_wait = startup.sweep_wait(cfg)
    state = CoreState(
        cfg=cfg,
        ix=index_of(cfg),
        started_at=now,
        settle_by=now + grace,
        sweep_by=now + grace + sweep_wait,
        health={t.name: hl.TunnelHealth(since=now) for t in cfg.tunnels},
        damping={t.name: damp.DampState(updated_at=now) for t in cfg.tunnels},
        decided_at=now,
    )
    return with_deadlines(state, now)


def reconfigure(state: CoreState, cfg: Config, now: float) -> tuple[CoreState, list[act.Action]]:
    """Adopt a new config: tunnels kept by name keep their health; the diff does the rest."""
    health = {t.name: state.health.get(t.name, hl.TunnelHealth(since=now)) for t in cfg.tunnels}
    damping = {
        t.name: state.damping.get(t.name, damp.DampState(updated_at=now)) for t in cfg.tunnels
    }
    ix = index_of(cfg)
    # The new policy judges again what each neighbor taught (and what it was refused).
    admitted = {
        n: imp.readmit(
            ix.imports, state.imports.get(n, imp.Ledger()), state.learned.get(n, frozenset())
        )
        for n in health
        if n in state.learned or n in state.imports
    }
    new = replace(
        state,
        cfg=cfg,
        ix=ix,
        health=health,
        damping=damping,
        usable_since={n: s for n, s in state.usable_since.items() if n in health},
        learned={n: a.learned for n, a in admitted.items()},
        imports={n: a.ledger for n, a in admitted.items()},
        carriers=tuple(c for c in state.carriers if c in health),
        standbys=tuple(s for s in state.standbys if s in health),
        reported={n: r for n, r in state.reported.items() if n in health},
        bgp_lost_at={n: t for n, t in state.bgp_lost_at.items() if n in health},
        # Tunnels that vanished from the config must still be undone: `asked` stays as it
        # was, so the diff removes their routes and gives back the links held down.
        routes_for=None,
        announced_for=None,
    )
    return _decide(new, now, old_cfg=state.cfg)


def _tunnel_of(event: ev.Event) -> str | None:
    tunnel = getattr(event, "tunnel", None)
    return tunnel if isinstance(tunnel, str) else None


def _echo(state: CoreState, event: ev.LinkChanged) -> bool:
    """The link went admin-down because the core asked for it: our own doing, not evidence."""
    return (
        event.present
        and not event.admin_up
        and state.asked.links.get(event.tunnel) is False
        and state.health[event.tunnel].link_present
    )


def _same_view(a: hl.TunnelHealth, b: hl.TunnelHealth) -> bool:
    """Nothing any decision or report reads has changed (probe counters may have)."""
    return (
        a.state is b.state
        and a.since == b.since
        and a.reason == b.reason
        and a.sa is b.sa
        and a.bgp_up == b.bgp_up
        # An SA now awaited brings a deadline the next decision must know of.
        and a.sa_awaited == b.sa_awaited
    )


def step(state: CoreState, event: ev.Event, now: float) -> tuple[CoreState, list[act.Action]]:
    """Apply one event; return the new state and the actions to carry out, in order."""
    if state.stale_learned:
        state = stale.expire(state, now)
    name = _tunnel_of(event)
    if name is not None and name not in state.health:
        # An adapter can report a tunnel removed by a reload a moment ago: not ours now.
        return state, []
    if isinstance(event, ev.BgpRouteLearned | ev.BgpRouteWithdrawn | ev.BgpRoutesChanged):
        return _learn(state, event, now)
    if isinstance(event, ev.ReportIntervalElapsed):
        # Loss and RTT change with every probe: told at the shell's pace, all at once.
        if not state.settled:
            return state, []
        return tunnel_reports(state, state.routes_for, quality=True)
    if name is None:
        # About every tunnel (a source went blind or came back) or about time itself.
        told: list[act.Action] = []
        if isinstance(event, ev.SourceLost | ev.SourceRecovered | ev.ComponentRestarted):
            state, told = component_alert(state, event, now)
        health = dict(state.health)
        for n, h in state.health.items():
            rules = state.ix.rules[n]
            health[n] = hl.judge(hl.observe(h, event, rules, now), rules, now)
        state, actions = _decide(replace(state, health=health), now, before=state.health)
        return state, [*actions, *told]
    return _observe(state, name, event, now)


def _observe(
    state: CoreState, name: str, event: ev.Event, now: float
) -> tuple[CoreState, list[act.Action]]:
    was = state.health[name]
    rules = state.ix.rules[name]
    said: list[act.Action] = []
    if isinstance(event, ev.BgpNeighborUp | ev.BgpNeighborDown):
        state, said = session_alert(state, event, was.bgp_up, now)
    tables = state
    rethink = False
    if isinstance(event, ev.AdminDisabled) and not event.force:
        refusal = pol.drain_refusal(state.health, usable_tunnels(state), name)
        if refusal is not None:
            told = act.PublishAlert(
                kind="drain-refused", at=now, from_tunnels=(name,), to_tunnels=(), reason=refusal
            )
            return state, [told]
    if isinstance(event, ev.AdminDisabled | ev.AdminEnabled):
        h = hl.judge(hl.admin(was, event, now), rules, now)
    elif isinstance(event, ev.LinkChanged) and _echo(state, event):
        h = was
    else:
        restart = (
            isinstance(event, ev.BgpNeighborDown)
            and event.speaker_lost
            and state.cfg.bgp is not None
            and state.cfg.bgp.graceful_restart_s > 0
        )
        if restart:
            # Our own speaker restarts; the neighbor still announces what it taught us.
            tables = stale.keep(tables, name, now)
        elif isinstance(event, ev.BgpNeighborDown) and state.learned.get(name):
            # A lost session takes everything it taught us with it.
            learned = {**state.learned, name: frozenset[str]()}
            tables = replace(stale.forget(tables, name), learned=learned, routes_for=None)
        ledger = state.imports.get(name)
        if (
            isinstance(event, ev.BgpNeighborDown)
            and not restart
            and ledger
            and (ledger.refused or ledger.over_limit)
        ):
            # ... and what it was refused: its next session is judged afresh.
            fresh = replace(ledger, refused={}, over_limit=False)
            tables = replace(tables, imports={**state.imports, name: fresh})
        if isinstance(event, ev.BgpEndOfRib):
            eor = state.end_of_rib.get(name, frozenset())
            tables = replace(tables, end_of_rib={**state.end_of_rib, name: eor | {event.family}})
            tables = stale.end_of_rib(tables, name, event.family)
            # The last End-of-RIB of a family is what lets its stale routes be swept.
            rethink = event.family not in state.swept
        if isinstance(event, ev.LinkChanged) and event.present and not was.link_present:
            tables = replace(
                tables, asked=forget_link(state.asked, state.cfg, name), routes_for=None
            )
        elif isinstance(event, ev.LinkChanged) and not (
            event.present and event.admin_up and event.oper_up
        ):
            asked = lose_nexthops(state.asked, state.cfg.tunnel(name).interface)
            if asked is not state.asked:
                tables = replace(tables, asked=asked, routes_for=None)
        h = hl.judge(hl.observe(was, event, rules, now), rules, now)
    new = replace(tables, health={**state.health, name: h})
    if tables is state and not rethink and _same_view(was, h) and quiet(state, now):
        return new, said
    new, actions = _decide(new, now, before=state.health)
    return new, [*actions, *said]


def _learn(
    state: CoreState,
    event: ev.BgpRouteLearned | ev.BgpRouteWithdrawn | ev.BgpRoutesChanged,
    now: float,
) -> tuple[CoreState, list[act.Action]]:
    """Fold a neighbor's announcements in through the import policy; only the routes of the
    prefixes it changed move."""
    name = event.tunnel
    if not learning(state.cfg):
        return state, []
    if not isinstance(event, ev.BgpRouteWithdrawn):
        state = stale.refreshed(state, event)
    ledger = state.imports.get(name)
    state, changed, told = fold(state, event, now)
    if not quiet(state, now) or (state.settled and state.routes_for is None):
        # A decision is due anyway: it rebuilds the tables with what was just learned.
        rebuilt = replace(state, routes_for=None) if changed else state
        state, actions = _decide(rebuilt, now, before=state.health)
        state, reports = tunnel_reports(state, state.routes_for, [name])
        return state, [*actions, *told, *reports]
    if not changed or state.routes_for is None:
        # Before the first decision nothing is routed yet: the tables only fill.
        if state.imports.get(name) is ledger:
            return state, [*told]
        state, reports = tunnel_reports(state, state.routes_for, [name])
        return state, [*told, *reports]
    roles = state.routes_for
    old = state.asked.by_prefix
    by_prefix = dict(old)
    for prefix in changed:
        routes = routing.prefix_routes(state.cfg, state.ix, roles, state.learned, prefix)
        if routes:
            by_prefix[prefix] = routes
        else:
            by_prefix.pop(prefix, None)
    installs, removes = route_actions(old, by_prefix, changed)
    state = replace(state, asked=replace(state.asked, by_prefix=by_prefix))
    state, reports = tunnel_reports(state, roles, [name])
    return state, [*installs, *removes, *told, *reports]


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


def decide(state: CoreState, now: float) -> tuple[CoreState, list[act.Action]]:
    """Decide from scratch as after a change of verdict (what a skipped step must agree with)."""
    return _decide(replace(state, routes_for=None, announced_for=None), now)


def _decide(
    state: CoreState,
    now: float,
    before: Mapping[str, hl.TunnelHealth] | None = None,
    old_cfg: Config | None = None,
) -> tuple[CoreState, list[act.Action]]:
    cfg = state.cfg
    imports, summed = imp.summaries(state.imports, now)
    prior = state = replace(state, imports=imports) if summed else state
    state = replace(state, damping=_update_damping(state, before or state.health, now))
    usable = usable_tunnels(state)
    usable_since = {n: state.usable_since.get(n, now) for n in usable}
    state = replace(state, usable_since=usable_since, decided_at=now)
    if not state.settled:
        if now < state.settle_by and any(h.state is hl.Health.INIT for h in state.health.values()):
            # Before first evidence, say nothing: the kernel keeps what it has (no restart flap).
            state, reports = tunnel_reports(state, None, changed_health(prior, state, before))
            return with_deadlines(state, now, usable), [*summed, *reports]
        state = replace(state, settled=True, settled_at=now)
    pool = pol.ranked(cfg, usable, state.health)
    seasoned = pol.proven(cfg, usable, usable_since, state.settled_at, now)
    chosen = pol.choose_carriers(
        cfg, pool, state.health, usable_since, seasoned, state.carriers, now
    )
    both_down = not chosen
    carriers = chosen
    if both_down and cfg.policy.both_down is BothDown.KEEP_LAST:
        # Drain means take traffic off: a drained tunnel is never the one kept.
        carriers = tuple(
            c for c in state.carriers if state.health[c].state is not hl.Health.ADMIN_DOWN
        )
    alerts = _alerts(state, usable, chosen, both_down, before, now)
    standbys = (
        ()
        if both_down
        else pol.choose_standbys(pool, carriers, seasoned, state.health, state.standbys)
    )
    roles = Roles(carriers, standbys[: cfg.policy.standby_routes])
    announce = Roles(carriers, standbys)
    by_prefix, prefixes = _routes(state, roles)
    announcements = (
        state.asked.announcements
        if announce == state.announced_for
        else routing.announcements(cfg, carriers, standbys)
    )
    desired = Desired(
        links=pol.desired_links(cfg, state.health, now, carriers, suppressed_tunnels(state)),
        by_prefix=by_prefix,
        groups=routing.groups(cfg, state.ix, roles),
        announcements=announcements,
    )
    actions = diff(old_cfg or cfg, cfg, state.asked, desired, prefixes)
    state = replace(
        state,
        carriers=carriers,
        standbys=standbys,
        both_down=both_down,
        asked=desired,
        routes_for=roles,
        announced_for=announce,
        last_move=last_move(alerts, state.last_move),
    )
    sweeps = startup.sweeps(state, now)
    if sweeps:
        state = replace(state, swept=state.swept | {s.family for s in sweeps})
    state, reports = tunnel_reports(state, roles, touched(prior, state, before))
    return with_deadlines(state, now, usable), [*actions, *sweeps, *alerts, *summed, *reports]


def _routes(
    state: CoreState, roles: Roles
) -> tuple[Mapping[str, frozenset[act.Route]], Iterable[str] | None]:
    """The routes for these roles, and which prefixes' routes may differ (None: any).

    Unchanged roles reuse the table. With nexthop groups, new roles leave every grouped
    route as it is (its groups move instead): only prefixes routed by holder are redone.
    """
    old = state.asked.by_prefix
    if roles == state.routes_for:
        return old, ()
    ix = state.ix
    if (
        ix.groups
        and state.routes_for is not None
        and routing.live_tables(ix, roles) == routing.live_tables(ix, state.routes_for)
    ):
        partly = routing.partly_held(ix, state.learned)
        if not partly:
            return old, ()
        by_prefix = dict(old)
        for prefix in partly:
            routes = routing.prefix_routes(state.cfg, ix, roles, state.learned, prefix)
            if routes:
                by_prefix[prefix] = routes
            else:
                by_prefix.pop(prefix, None)
        return by_prefix, partly
    return routing.all_routes(state.cfg, ix, roles, state.learned), None


def _alerts(
    state: CoreState,
    usable: Iterable[str],
    chosen: tuple[str, ...],
    both_down: bool,
    before: Mapping[str, hl.TunnelHealth] | None,
    now: float,
) -> list[act.Action]:
    out: list[act.Action] = []
    if chosen and state.both_down:
        # One alert for the way out of both-down, whichever tunnel keep-last had kept.
        why = "; ".join(f"{n} {state.health[n].reason}" for n in chosen)
        out.append(alert(state, "recovered", (), chosen, now, reason=why))
    elif chosen and set(chosen) != set(state.carriers) and state.carriers:
        out.append(carrier_alert(state, usable, chosen, now))
    elif both_down and not state.both_down:
        out.append(alert(state, "both-down", state.carriers, (), now))
    if before is not None:
        for n in chosen:
            if (
                state.health[n].state is hl.Health.DEGRADED
                and before[n].state is not hl.Health.DEGRADED
            ):
                out.append(alert(state, "degraded", (n,), (n,), now))
    return out
