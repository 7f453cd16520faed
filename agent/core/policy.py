"""Site policy: from every tunnel's health to who carries traffic and what routing should be.

Pure functions of the config, the tunnels' health and `now`. The output is a complete
desired picture (links, routes, announcements); the engine diffs it against what it
asked for before, so an unchanged picture produces no actions.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agent.config import Config, LinkControl, PolicyMode, Tunnel, TunnelKind
from agent.core.actions import AnnouncePrefix, NextHop, Route
from agent.core.health import Health, SaView, TunnelHealth

__all__ = [
    "Desired",
    "choose_carriers",
    "desired_links",
    "desired_routing",
    "pending_preemptions",
    "preference",
    "probation_deadlines",
    "ready_at",
    "remote_prefixes",
]

# Kinds whose interface the agent may set down: a mark tunnel rides a shared interface.
_TOGGLEABLE = {TunnelKind.VTI, TunnelKind.XFRM, TunnelKind.GRE, TunnelKind.TAP}
# Point-to-point kinds route by device; the others need the peer as gateway.
_BY_DEVICE = {TunnelKind.VTI, TunnelKind.XFRM}


@dataclass(frozen=True)
class Desired:
    links: Mapping[str, bool] = field(default_factory=dict)  # tunnel name -> admin up
    routes: frozenset[Route] = frozenset()
    announcements: Mapping[tuple[str, str], AnnouncePrefix] = field(default_factory=dict)


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
    usable: Iterable[str],
    health: Mapping[str, TunnelHealth],
    usable_since: Mapping[str, float],
    current: tuple[str, ...],
    now: float,
) -> tuple[str, ...]:
    """Which usable tunnels carry traffic now; () when none is usable."""
    pool = sorted(usable, key=lambda n: preference(cfg.tunnel(n), health[n]))
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


def _hop(t: Tunnel, prefix: ipaddress.IPv4Network | ipaddress.IPv6Network) -> NextHop:
    if t.kind in _BY_DEVICE or t.inner.peer.version != prefix.version:
        return NextHop(t.interface)
    return NextHop(t.interface, str(t.inner.peer))


def _inside_site(cfg: Config, prefix: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    return any(
        prefix.version == site.version and prefix.subnet_of(site)  # type: ignore[arg-type]
        for site in cfg.site_prefixes
    )


def remote_prefixes(
    cfg: Config, tunnel: str, learned: Mapping[str, frozenset[str]]
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    nets = list(cfg.remote_prefixes.static)
    if cfg.remote_prefixes.learned_from_bgp:
        for text in sorted(learned.get(tunnel, frozenset())):
            net = ipaddress.ip_network(text, strict=False)
            # Never route our own site into a tunnel because the peer reflected it back.
            if net not in nets and not _inside_site(cfg, net):
                nets.append(net)
    return nets


def desired_routing(
    cfg: Config,
    carriers: tuple[str, ...],
    standbys: tuple[str, ...],
    learned: Mapping[str, frozenset[str]],
) -> tuple[frozenset[Route], dict[tuple[str, str], AnnouncePrefix]]:
    """Routes to remote prefixes and announcements of site prefixes, for one carrier choice."""
    metric: dict[str, int] = dict.fromkeys(carriers, cfg.policy.active_metric)
    for rank, name in enumerate(standbys):
        metric[name] = cfg.policy.standby_metric + rank
    # (prefix, table, metric) -> next hops: carriers sharing a metric become one ECMP route.
    grouped: dict[tuple[str, int, int], list[NextHop]] = {}
    for name in (*carriers, *standbys):
        t = cfg.tunnel(name)
        table = t.table if t.table is not None else cfg.policy.table
        for net in remote_prefixes(cfg, name, learned):
            grouped.setdefault((str(net), table, metric[name]), []).append(_hop(t, net))
    routes = frozenset(
        Route(prefix, table, m, tuple(sorted(hops))) for (prefix, table, m), hops in grouped.items()
    )
    announcements: dict[tuple[str, str], AnnouncePrefix] = {}
    if cfg.bgp is not None:
        for name in (*carriers, *standbys):
            t = cfg.tunnel(name)
            attrs = cfg.bgp.active if name in carriers else cfg.bgp.standby
            med = attrs.med
            if name in carriers:
                med = max(0, med - _takeover_discount(cfg, name, carriers))
            address = cfg.neighbor_of(t)
            neighbor = str(address)
            # With next-hop self a session carries only its own address family: an IPv6
            # prefix over an IPv4 session would need an IPv6 next hop we do not have.
            for net in (n for n in cfg.site_prefixes if n.version == address.version):
                announcements[(neighbor, str(net))] = AnnouncePrefix(
                    neighbor=neighbor,
                    tunnel=name,
                    prefix=str(net),
                    med=med,
                    as_path_prepend=attrs.as_path_prepend,
                    communities=attrs.communities,
                )
    return routes, announcements


def _takeover_discount(cfg: Config, name: str, carriers: tuple[str, ...]) -> int:
    """How much lower than `bgp.active.med` a carrier announces.

    The far side keeps what a dead tunnel's session announced until its hold timer runs
    out: our withdrawal cannot cross the dead tunnel. A carrier standing in for tunnels
    that would otherwise carry (more preferred ones in active-standby, any idle one in
    active-active) therefore announces a MED lower by one for each of them, so it beats
    those stale routes at once. With every preferred tunnel carrying, the discount is 0.
    """
    if cfg.bgp is None or not cfg.bgp.takeover_med:
        return 0
    if cfg.policy.mode is PolicyMode.ACTIVE_ACTIVE:
        return sum(1 for t in cfg.tunnels if t.name not in carriers)
    me = cfg.tunnel(name)
    mine = (me.effective_priority, me.name)
    return sum(1 for t in cfg.tunnels if (t.effective_priority, t.name) < mine)
