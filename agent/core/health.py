"""Per-tunnel health: signals in, one of INIT/UP/DEGRADED/DOWN/ADMIN_DOWN out.

Two steps, both pure. `observe` folds an event into the tunnel's signals (SA view per
source, link, probe window, streaks). `judge` reduces the signals to a verdict and looks
the next state up in TRANSITIONS, the one table that says how health moves.
"""

from __future__ import annotations

import enum
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from agent.config import Source
from agent.core import events as ev

__all__ = [
    "TRANSITIONS",
    "Health",
    "HealthRules",
    "SaView",
    "TunnelHealth",
    "Verdict",
    "grace_deadlines",
    "judge",
    "observe",
    "verdict_of",
]


class Health(enum.StrEnum):
    INIT = "INIT"
    UP = "UP"
    DEGRADED = "DEGRADED"
    DOWN = "DOWN"
    ADMIN_DOWN = "ADMIN_DOWN"


class SaView(enum.StrEnum):
    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"


class Verdict(enum.StrEnum):
    """What the signals say right now, before history (the current state) is applied."""

    DEAD = "dead"  # SA gone, link gone, or probes failed past fall / loss_down
    ALIVE_GOOD = "alive-good"  # fresh proof of life and nothing degraded
    ALIVE_POOR = "alive-poor"  # fresh proof of life, but loss or RTT over threshold
    POOR = "poor"  # no fresh proof, and loss or RTT over threshold
    QUIET = "quiet"  # nothing conclusive: keep what we had


H = Health
V = Verdict
# state x verdict -> next state. ADMIN_DOWN is left only by AdminEnabled (see observe).
TRANSITIONS: Mapping[tuple[Health, Verdict], Health] = {
    (H.INIT, V.DEAD): H.DOWN,
    (H.INIT, V.ALIVE_GOOD): H.UP,
    (H.INIT, V.ALIVE_POOR): H.DEGRADED,
    (H.INIT, V.POOR): H.INIT,
    (H.INIT, V.QUIET): H.INIT,
    (H.UP, V.DEAD): H.DOWN,
    (H.UP, V.ALIVE_GOOD): H.UP,
    (H.UP, V.ALIVE_POOR): H.DEGRADED,
    (H.UP, V.POOR): H.DEGRADED,
    (H.UP, V.QUIET): H.UP,
    (H.DEGRADED, V.DEAD): H.DOWN,
    (H.DEGRADED, V.ALIVE_GOOD): H.UP,
    (H.DEGRADED, V.ALIVE_POOR): H.DEGRADED,
    (H.DEGRADED, V.POOR): H.DEGRADED,
    (H.DEGRADED, V.QUIET): H.DEGRADED,
    # Leaving DOWN is probation: only fresh proof of life (rise good probes) counts.
    (H.DOWN, V.DEAD): H.DOWN,
    (H.DOWN, V.ALIVE_GOOD): H.UP,
    (H.DOWN, V.ALIVE_POOR): H.DEGRADED,
    (H.DOWN, V.POOR): H.DOWN,
    (H.DOWN, V.QUIET): H.DOWN,
    **{(H.ADMIN_DOWN, v): H.ADMIN_DOWN for v in Verdict},
}


@dataclass(frozen=True)
class HealthRules:
    """The thresholds one tunnel is judged by (from the policy and its sources)."""

    rise: int = 3
    fall: int = 5
    loss_window: int = 10
    loss_down: int = 6
    loss_degraded: int = 3
    rtt_degraded_ms: float | None = 250.0
    rtt_samples: int = 5
    uses_probes: bool = True
    uses_sa: bool = True
    uses_link: bool = True
    traffic_counts_as_life: bool = False
    # After charon comes back (vici recovered), how long a missing SA is awaited before it
    # counts as down: a restarted charon has no SAs until it has negotiated them again.
    sa_return_grace_s: float = 0.0
    # The tunnel's liveness sources by name: only their loss blinds it (not exabgp's,
    # the control socket's or another tunnel's source).
    sources: frozenset[str] = frozenset({"vici", "xfrm", "probe", "link"})


@dataclass(frozen=True)
class TunnelHealth:
    state: Health = Health.INIT
    since: float = 0.0
    reason: str = "starting"
    # SA view per source ("vici", "xfrm"): several sources may watch one tunnel.
    sa_by_source: tuple[tuple[str, SaView], ...] = ()
    link_present: bool = True
    link_oper_up: bool = True
    # Probe results, oldest first, True = answered; at most loss_window long.
    window: tuple[bool, ...] = ()
    ok_streak: int = 0
    fail_streak: int = 0
    # The RTTs of the last rtt_samples answers, oldest first: RTT is judged on their median.
    rtts: tuple[float, ...] = ()
    # When the current run of failures began: what "detected after" is measured from.
    trouble_since: float | None = None
    bgp_up: bool = False
    # The SA view "unknown" because a source went blind; remembered so reports say why.
    blind_sources: frozenset[str] = field(default_factory=frozenset)
    # Sources back from blindness, and until when a missing SA is awaited from them.
    sa_grace_until: tuple[tuple[str, float], ...] = ()
    # Sources that said "no SA" within their grace: down once it ends, unless it came back.
    sa_awaited: frozenset[str] = field(default_factory=frozenset)

    @property
    def sa(self) -> SaView:
        views = [v for _, v in self.sa_by_source]
        if SaView.DOWN in views:
            return SaView.DOWN
        if SaView.UP in views:
            return SaView.UP
        return SaView.UNKNOWN

    @property
    def losses(self) -> int:
        return sum(1 for ok in self.window if not ok)

    @property
    def rtt_median_ms(self) -> float | None:
        return statistics.median(self.rtts) if self.rtts else None

    @property
    def eligible(self) -> bool:
        return self.state in (Health.UP, Health.DEGRADED)


def _set_sa(h: TunnelHealth, source: str, view: SaView) -> TunnelHealth:
    views = dict(h.sa_by_source)
    views[source] = view
    return replace(h, sa_by_source=tuple(sorted(views.items())))


def _push(h: TunnelHealth, ok: bool, rules: HealthRules, at: float) -> TunnelHealth:
    window = (*h.window, ok)[-rules.loss_window :]
    if h.state is Health.DOWN:
        # Losses while DOWN are the outage itself, not the quality of the repaired path:
        # in probation the window holds only the current run of answers, so a repaired
        # tunnel is judged on what it does now (fail_streak still keeps it DOWN meanwhile).
        window = window if ok else ()
    if ok:
        # An answer ends a run of lost probes; a dead SA or link is still trouble.
        still = h.sa is SaView.DOWN or not (h.link_present and h.link_oper_up)
        return replace(
            h,
            window=window,
            ok_streak=h.ok_streak + 1,
            fail_streak=0,
            trouble_since=h.trouble_since if still else None,
        )
    trouble = h.trouble_since if h.trouble_since is not None else at
    return replace(
        h, window=window, ok_streak=0, fail_streak=h.fail_streak + 1, trouble_since=trouble
    )


def _in_grace(h: TunnelHealth, source: str, at: float) -> bool:
    return any(s == source and at < until for s, until in h.sa_grace_until)


def _end_grace(h: TunnelHealth, source: str) -> TunnelHealth:
    return replace(
        h,
        sa_grace_until=tuple((s, u) for s, u in h.sa_grace_until if s != source),
        sa_awaited=h.sa_awaited - {source},
    )


def _expire_graces(h: TunnelHealth, now: float) -> TunnelHealth:
    """An SA awaited past its grace is down: charon came back without it."""
    for source, until in h.sa_grace_until:
        if until <= now:
            awaited = source in h.sa_awaited
            h = _end_grace(h, source)
            if awaited:
                h = _set_sa(h, source, SaView.DOWN)
                since = h.trouble_since if h.trouble_since is not None else until
                h = replace(h, trouble_since=since)
    return h


def grace_deadlines(h: TunnelHealth) -> list[float]:
    """When an awaited SA's grace ends (the core must look again then)."""
    return [until for s, until in h.sa_grace_until if s in h.sa_awaited]


def observe(h: TunnelHealth, event: ev.Event, rules: HealthRules, now: float) -> TunnelHealth:
    """Fold one event about this tunnel into its signals (not yet its state)."""
    at = event.at or now
    if h.sa_grace_until:
        h = _expire_graces(h, max(at, now))
    match event:
        case ev.ChildSaUp(source=source):
            was_up = h.sa is SaView.UP
            h = _end_grace(_set_sa(h, source, SaView.UP), source)
            if not was_up:
                # A new SA starts probation afresh: only probes after it count.
                h = replace(h, ok_streak=0)
            return replace(h, blind_sources=h.blind_sources - {source})
        case ev.ChildSaDown(source=source) if _in_grace(h, source, at):
            # Not yet: a charon just back may still be negotiating it.
            h = _set_sa(h, source, SaView.UNKNOWN)
            return replace(h, sa_awaited=h.sa_awaited | {source})
        case ev.ChildSaDown(source=source):
            h = _set_sa(h, source, SaView.DOWN)
            trouble = h.trouble_since if h.trouble_since is not None else at
            return replace(h, trouble_since=trouble, blind_sources=h.blind_sources - {source})
        case ev.ChildSaRekeyed(source=source):
            # A rekey is proof the SA is alive, never a failure.
            h = _end_grace(_set_sa(h, source, SaView.UP), source)
            return replace(h, blind_sources=h.blind_sources - {source})
        case ev.ProbeSucceeded(rtt_ms=rtt):
            rtts = (*h.rtts, rtt)[-rules.rtt_samples :]
            return replace(_push(h, True, rules, at), rtts=rtts)
        case ev.ProbeLost():
            return _push(h, False, rules, at)
        case ev.InboundTrafficSeen():
            if rules.traffic_counts_as_life:
                return _push(h, True, rules, at)
            return h
        case ev.LinkChanged(present=present, oper_up=oper_up):
            if not (present and oper_up) and h.trouble_since is None:
                h = replace(h, trouble_since=at)
            return replace(h, link_present=present, link_oper_up=oper_up)
        case ev.BgpNeighborUp():
            return replace(h, bgp_up=True)
        case ev.BgpNeighborDown():
            return replace(h, bgp_up=False)
        case ev.SourceLost(source=source) if source not in rules.sources:
            return h
        case ev.SourceLost(source=source):
            if any(s == source for s, _ in h.sa_by_source):
                h = _set_sa(h, source, SaView.UNKNOWN)
            return replace(h, blind_sources=h.blind_sources | {source})
        case ev.SourceRecovered(source=source):
            h = replace(h, blind_sources=h.blind_sources - {source})
            # Only charon forgets its SAs when it restarts; the kernel's XFRM view does not.
            known = any(s == source for s, _ in h.sa_by_source)
            if source == Source.VICI and rules.sa_return_grace_s > 0 and known:
                h = _end_grace(h, source)
                until = at + rules.sa_return_grace_s
                h = replace(h, sa_grace_until=(*h.sa_grace_until, (source, until)))
            return h
        case ev.ComponentRestarted(component=source):
            return replace(h, blind_sources=h.blind_sources - {source})
        case _:
            return h


def verdict_of(h: TunnelHealth, rules: HealthRules) -> tuple[Verdict, str]:
    """Reduce signals to a verdict and the reason a person would give for it."""
    if rules.uses_sa and h.sa is SaView.DOWN:
        return Verdict.DEAD, "child-sa-down"
    if rules.uses_link and not h.link_present:
        return Verdict.DEAD, "link-removed"
    if rules.uses_link and not h.link_oper_up:
        return Verdict.DEAD, "link-down"
    if rules.uses_probes:
        if h.fail_streak >= rules.fall:
            return Verdict.DEAD, f"probe-loss {h.fail_streak} in a row"
        if h.losses >= rules.loss_down:
            return Verdict.DEAD, f"probe-loss {h.losses}/{len(h.window)}"
    poor = ""
    if rules.uses_probes and h.losses >= rules.loss_degraded:
        poor = f"probe-loss {h.losses}/{len(h.window)}"
    elif (
        rules.uses_probes
        and rules.rtt_degraded_ms is not None
        and (rtt := h.rtt_median_ms) is not None
        and rtt > rules.rtt_degraded_ms
    ):
        poor = f"rtt {rtt:.0f}ms > {rules.rtt_degraded_ms:.0f}ms"
    if rules.uses_probes:
        alive = h.ok_streak >= rules.rise
        proof = f"{h.ok_streak} probes answered"
    elif rules.uses_sa:
        alive = h.sa is SaView.UP
        proof = "child-sa-up"
    else:
        alive = h.link_present and h.link_oper_up
        proof = "link-up"
    if alive:
        return (Verdict.ALIVE_POOR, poor) if poor else (Verdict.ALIVE_GOOD, proof)
    return (Verdict.POOR, poor) if poor else (Verdict.QUIET, "")


# Causes that are facts about the tunnel rather than counts of probes.
_HARD_CAUSES = frozenset({"child-sa-down", "link-removed", "link-down"})


def judge(h: TunnelHealth, rules: HealthRules, now: float) -> TunnelHealth:
    """Apply the verdict to the current state through TRANSITIONS."""
    verdict, why = verdict_of(h, rules)
    nxt = TRANSITIONS[(h.state, verdict)]
    if nxt is h.state:
        if (
            nxt is Health.DOWN
            and verdict is Verdict.DEAD
            and why in _HARD_CAUSES
            and why != h.reason
        ):
            # The hard cause changed (a deleted link first shows as down): say the latest one.
            return replace(h, reason=why)
        if nxt in (Health.UP, Health.INIT) and verdict is Verdict.ALIVE_GOOD:
            # Fully healthy again: the next failure run starts its own clock.
            return replace(h, trouble_since=None) if h.trouble_since is not None else h
        return h
    if nxt is Health.DOWN:
        # Old evidence must not carry a tunnel through probation: start counting afresh.
        return replace(h, state=nxt, since=now, reason=why, ok_streak=0, window=())
    if nxt is Health.UP:
        return replace(h, state=nxt, since=now, reason=why, trouble_since=None)
    return replace(h, state=nxt, since=now, reason=why)


def admin(h: TunnelHealth, event: ev.AdminDisabled | ev.AdminEnabled, now: float) -> TunnelHealth:
    """Operator drain/undrain: the only way into and out of ADMIN_DOWN."""
    if isinstance(event, ev.AdminDisabled):
        if h.state is Health.ADMIN_DOWN:
            return h
        return replace(h, state=Health.ADMIN_DOWN, since=now, reason=event.reason)
    if h.state is not Health.ADMIN_DOWN:
        return h
    # Probes lost while drained (the link was held down) say nothing about the tunnel now.
    return replace(
        h,
        state=Health.INIT,
        since=now,
        reason="admin-enabled",
        ok_streak=0,
        fail_streak=0,
        window=(),
        trouble_since=None,
    )
