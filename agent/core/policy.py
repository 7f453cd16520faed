"""Site policy: from every tunnel's health to who carries traffic and which links are up.

Pure functions of the config, the tunnels' health and `now`; agent.core.routing turns the
choice into routes and announcements.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from agent.config import Config, LinkControl, PolicyMode, Tunnel, TunnelKind
from agent.core.health import Health, SaView, TunnelHealth

__all__ = [
    "choose_carriers",
    "choose_standbys",
    "desired_links",
    "drain_refusal",
    "pending_preemptions",
    "preemption_times",
    "preference",
    "probation_deadlines",
    "probation_times",
    "proven",
    "proven_at",
    "proving_deadlines",
    "proving_times",
    "ranked",
    "ready_at",
]

# Kinds whose interface the agent may set down: a mark tunnel rides a shared interface.
_TOGGLEABLE = {TunnelKind.VTI, TunnelKind.XFRM, TunnelKind.GRE, TunnelKind.TAP}


def ranked(cfg: Config, usable: Iterable[str], health: Mapping[str, TunnelHealth]) -> list[str]:
    """Usable tunnels, best first (see preference)."""
    return sorted(usable, key=lambda n: preference(cfg.tunnel(n), health[n]))


def preference(t: Tunnel, h: TunnelHealth) -> tuple[int, int, str]:
    """Sort key, best first: a clean tunnel before a degraded one, then priority, then name."""
    return (0 if h.state is Health.UP else 1, t.effective_priority, t.name)


def ready_at(
    cfg: Config, name: str, health: Mapping[str, TunnelHealth], usable_since: Mapping[str, float]
) -> float:
    """When a tunnel will have been usable, in its present health, for the preempt hold-down.

    A tunnel that was DEGRADED a moment ago has not been healthy for the hold-down, however
    long it has been usable: its clock restarts with every change of health.
    """
    return max(usable_since[name], health[name].since) + cfg.policy.preempt_hold_down_s


def proven_at(
    cfg: Config, name: str, usable_since: Mapping[str, float], settled_at: float
) -> float:
    """When a usable tunnel has earned a role besides stand-in: usable without a break for
    the preempt hold-down.

    A tunnel usable at the agent's first decision lost nothing since it started, so it
    counts as proven from then (a restart must not strip every standby of its routes).
    """
    since = usable_since[name]
    return since if since <= settled_at else since + cfg.policy.preempt_hold_down_s


def proven(
    cfg: Config,
    usable: Iterable[str],
    usable_since: Mapping[str, float],
    settled_at: float,
    now: float,
) -> frozenset[str]:
    """Usable tunnels past their proving time (see proven_at)."""
    return frozenset(n for n in usable if now >= proven_at(cfg, n, usable_since, settled_at))


def proving_deadlines(
    cfg: Config,
    usable: Iterable[str],
    usable_since: Mapping[str, float],
    settled_at: float,
    now: float,
) -> list[float]:
    """When a tunnel on its way back becomes proven (it may take a standby role then)."""
    return list(proving_times(cfg, usable, usable_since, settled_at, now).values())


def proving_times(
    cfg: Config,
    usable: Iterable[str],
    usable_since: Mapping[str, float],
    settled_at: float,
    now: float,
) -> dict[str, float]:
    """proving_deadlines by tunnel."""
    times = {n: proven_at(cfg, n, usable_since, settled_at) for n in usable}
    return {n: t for n, t in times.items() if t > now}


def choose_carriers(
    cfg: Config,
    pool: Sequence[str],
    health: Mapping[str, TunnelHealth],
    usable_since: Mapping[str, float],
    seasoned: Collection[str],
    current: tuple[str, ...],
    now: float,
) -> tuple[str, ...]:
    """Which usable tunnels (`pool`, best first) carry traffic now; () when none is usable.

    `seasoned`: the proven tunnels of the pool. A tunnel back from DOWN carries only as a
    stand-in (nothing proven is usable) until it is proven: flapping evidence must not move
    traffic, and a tunnel that keeps failing never is.
    """
    if not pool:
        return ()

    def held(name: str) -> bool:
        # The same sum as the deadline in pending_preemptions, so the timer that fires at
        # that deadline always finds the hold-down over (no float rounding gap).
        return now >= ready_at(cfg, name, health, usable_since)

    def target(names: Sequence[str]) -> str:
        # Where a failover goes: the best proven tunnel, else the best at all (an unproven
        # tunnel beats no tunnel; a preemption to a proven one follows after its hold-down).
        return next((n for n in names if n in seasoned), names[0])

    if cfg.policy.mode is PolicyMode.ACTIVE_ACTIVE:
        clean = [n for n in pool if health[n].state is Health.UP]
        tier = clean or pool
        staying = [n for n in tier if n in current or held(n)]
        return tuple(sorted(staying or [n for n in tier if n in seasoned] or tier))
    keep = current[0] if current and current[0] in pool else None
    if keep is None:
        return (target(pool),)
    if health[keep].state is Health.DEGRADED and health[pool[0]].state is Health.UP:
        # Leaving a lossy carrier for a clean one is a failover, not a preemption.
        return (target([n for n in pool if health[n].state is Health.UP]),)
    if cfg.policy.preempt:
        # Preempt to the best tunnel better than the carrier that is past its hold-down,
        # not only to the best one: with tun1 > tun2 > tun3 and traffic on tun3, tun2
        # takes it once its hold-down ends, and tun1 takes it from tun2 after its own.
        better = pool[: pool.index(keep)]
        return (next((n for n in better if held(n)), keep),)
    return (keep,)


def choose_standbys(
    pool: Sequence[str],
    carriers: tuple[str, ...],
    seasoned: Collection[str],
    health: Mapping[str, TunnelHealth],
    standing: Collection[str],
) -> tuple[str, ...]:
    """The usable tunnels that stand by (best first): proven ones that are clean, or that
    stood by already (`standing`).

    A tunnel back from DOWN gets no route and no announcement at all, not even standby
    ones, until it is proven: at 0.5 Hz flapping a standby role given on every rise and
    taken on every fall cost four route and BGP changes a cycle for no traffic at all.
    A lossy tunnel gains no role either (a carrier that degrades is not made a standby, as
    it would lose that role again when its loss takes it DOWN), but a standby that turns
    lossy keeps its routes, ranked last, rather than churn them on every RTT blip.
    """
    return tuple(
        n
        for n in pool
        if n not in carriers and n in seasoned and (health[n].state is Health.UP or n in standing)
    )


def pending_preemptions(
    cfg: Config,
    usable: Iterable[str],
    health: Mapping[str, TunnelHealth],
    usable_since: Mapping[str, float],
    current: tuple[str, ...],
) -> list[float]:
    """When a better tunnel's hold-down ends (the engine wakes up then)."""
    return list(preemption_times(cfg, usable, health, usable_since, current).values())


def preemption_times(
    cfg: Config,
    usable: Iterable[str],
    health: Mapping[str, TunnelHealth],
    usable_since: Mapping[str, float],
    current: tuple[str, ...],
) -> dict[str, float]:
    """pending_preemptions by tunnel: when each one that would take traffic (or, active-active,
    join the carriers) ends its hold-down."""
    if cfg.policy.mode is PolicyMode.ACTIVE_ACTIVE:
        return {n: ready_at(cfg, n, health, usable_since) for n in usable if n not in current}
    if not current or not cfg.policy.preempt:
        return {}
    worst = max(preference(cfg.tunnel(c), health[c]) for c in current)
    return {
        n: ready_at(cfg, n, health, usable_since)
        for n in usable
        if n not in current and preference(cfg.tunnel(n), health[n]) < worst
    }


def desired_links(
    cfg: Config,
    health: Mapping[str, TunnelHealth],
    now: float,
    carrying: Iterable[str] = (),
    suppressed: Collection[str] = (),
) -> dict[str, bool]:
    """Admin state per toggleable tunnel; a tunnel whose routes are kept stays up.

    Setting a link down makes the kernel drop its routes, so a carrier kept by
    both_down=keep-last must keep its link up or keep-last would keep nothing.
    """
    mode = cfg.policy.link_control
    keep = set(carrying)
    links: dict[str, bool] = {}
    if mode is LinkControl.NONE:
        return links
    for t in cfg.tunnels:
        if t.kind not in _TOGGLEABLE:
            continue
        h = health[t.name]
        if h.state is Health.ADMIN_DOWN:
            links[t.name] = False
        elif h.state is not Health.DOWN or t.name in keep:
            links[t.name] = True
        elif h.sa is SaView.DOWN:
            links[t.name] = False
        elif mode is LinkControl.DOWN:
            # SA still there (or unknown): hold the link down, then raise it for probation.
            # A tunnel dampening suppresses is raised only once it is reusable: testing it
            # sooner cannot give it traffic, and each test of a flapping path took its link
            # and its BGP session down again (10 s probation > a 9 s hold time).
            links[t.name] = t.name not in suppressed and now >= _probation_at(cfg, h)
        else:
            links[t.name] = True
    return links


def _probation_at(cfg: Config, h: TunnelHealth) -> float:
    return h.since + cfg.policy.probation_after_s


def probation_deadlines(
    cfg: Config,
    health: Mapping[str, TunnelHealth],
    now: float,
    suppressed: Collection[str] = (),
) -> list[float]:
    """When a held-down link is raised for probation (a suppressed one: at its reuse time,
    which dampening asks for)."""
    return list(probation_times(cfg, health, now, suppressed).values())


def probation_times(
    cfg: Config,
    health: Mapping[str, TunnelHealth],
    now: float,
    suppressed: Collection[str] = (),
) -> dict[str, float]:
    """probation_deadlines by tunnel."""
    if cfg.policy.link_control is not LinkControl.DOWN:
        return {}
    out = {}
    for t in cfg.tunnels:
        h = health[t.name]
        if h.state is Health.DOWN and h.sa is not SaView.DOWN and t.name not in suppressed:
            deadline = _probation_at(cfg, h)
            if deadline > now:
                out[t.name] = deadline
    return out


def drain_refusal(
    health: Mapping[str, TunnelHealth], usable: Collection[str], name: str
) -> str | None:
    """Why an operator's drain of `name` is refused unless forced (None: it is not).

    A drain takes traffic off a tunnel for maintenance; one that leaves no tunnel to carry
    it is an outage, more likely a slip than meant.
    """
    if health[name].state is Health.ADMIN_DOWN:
        return None
    if name in usable and not any(n != name for n in usable):
        return f"refused: {name} is the last usable tunnel; use force"
    if all(h.state is Health.ADMIN_DOWN for n, h in health.items() if n != name):
        return f"refused: every other tunnel is drained, {name} is the last in service; use force"
    return None
