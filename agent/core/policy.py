"""Site policy: from every tunnel's health to who carries traffic and which links are up.

Pure functions of the config, the tunnels' health and `now`; agent.core.routing turns the
choice into routes and announcements.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from agent.config import Config, LinkControl, PolicyMode, Tunnel, TunnelKind
from agent.core.health import Health, SaView, TunnelHealth

__all__ = [
    "choose_carriers",
    "desired_links",
    "pending_preemptions",
    "preference",
    "probation_deadlines",
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


def choose_carriers(
    cfg: Config,
    pool: Sequence[str],
    health: Mapping[str, TunnelHealth],
    usable_since: Mapping[str, float],
    current: tuple[str, ...],
    now: float,
) -> tuple[str, ...]:
    """Which usable tunnels (`pool`, best first) carry traffic now; () when none is usable."""
    if not pool:
        return ()

    def held(name: str) -> bool:
        # The same sum as the deadline in pending_preemptions, so the timer that fires at
        # that deadline always finds the hold-down over (no float rounding gap).
        return now >= ready_at(cfg, name, health, usable_since)

    if cfg.policy.mode is PolicyMode.ACTIVE_ACTIVE:
        clean = [n for n in pool if health[n].state is Health.UP]
        tier = clean or pool
        staying = [n for n in tier if n in current or held(n)]
        return tuple(sorted(staying or tier))
    best = pool[0]
    keep = current[0] if current and current[0] in pool else None
    if keep is None or keep == best:
        return (best,)
    if health[keep].state is Health.DEGRADED and health[best].state is Health.UP:
        # Leaving a lossy carrier for a clean one is a failover, not a preemption.
        return (best,)
    if cfg.policy.preempt and held(best):
        return (best,)
    return (keep,)


def pending_preemptions(
    cfg: Config,
    usable: Iterable[str],
    health: Mapping[str, TunnelHealth],
    usable_since: Mapping[str, float],
    current: tuple[str, ...],
) -> list[float]:
    """When a better tunnel's hold-down ends (the engine wakes up then)."""
    if cfg.policy.mode is PolicyMode.ACTIVE_ACTIVE:
        return [ready_at(cfg, n, health, usable_since) for n in usable if n not in current]
    if not current or not cfg.policy.preempt:
        return []
    worst = max(preference(cfg.tunnel(c), health[c]) for c in current)
    return [
        ready_at(cfg, n, health, usable_since)
        for n in usable
        if n not in current and preference(cfg.tunnel(n), health[n]) < worst
    ]


def desired_links(
    cfg: Config,
    health: Mapping[str, TunnelHealth],
    now: float,
    carrying: Iterable[str] = (),
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
            links[t.name] = now >= h.since + cfg.policy.probation_after_s
        else:
            links[t.name] = True
    return links


def probation_deadlines(cfg: Config, health: Mapping[str, TunnelHealth], now: float) -> list[float]:
    if cfg.policy.link_control is not LinkControl.DOWN:
        return []
    out = []
    for t in cfg.tunnels:
        h = health[t.name]
        if h.state is Health.DOWN and h.sa is not SaView.DOWN:
            deadline = h.since + cfg.policy.probation_after_s
            if deadline > now:
                out.append(deadline)
    return out
