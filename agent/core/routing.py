"""Desired routing for one choice of carriers: routes per remote prefix, announcements per neighbor.

Pure functions of the config's index, the roles and the learned prefixes. Routes are kept
per prefix, so one learned prefix costs the routes of that prefix and a change of roles
costs one pass over the table, never more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agent.config import Config, PolicyMode
from agent.core.actions import AnnouncePrefix, NextHop, Route
from agent.core.index import CoreIndex, network_of, version_of

__all__ = [
    "Desired",
    "Roles",
    "all_routes",
    "announcements",
    "has_routes",
    "prefix_routes",
    "routable",
]


@dataclass(frozen=True)
class Roles:
    """Who routes traffic: carriers (active metric) and routed standbys, best first."""

    carriers: tuple[str, ...] = ()
    standbys: tuple[str, ...] = ()

    def metrics(self, cfg: Config) -> dict[str, int]:
        metric = dict.fromkeys(self.carriers, cfg.policy.active_metric)
        for rank, name in enumerate(self.standbys):
            metric[name] = cfg.policy.standby_metric + rank
        return metric


@dataclass(frozen=True)
class Desired:
    links: Mapping[str, bool] = field(default_factory=dict)  # tunnel name -> admin up
    # Remote prefix -> its routes (one per metric); a prefix without routes has no entry.
    by_prefix: Mapping[str, frozenset[Route]] = field(default_factory=dict)
    announcements: Mapping[tuple[str, str], AnnouncePrefix] = field(default_factory=dict)

    @property
    def routes(self) -> frozenset[Route]:
        return frozenset(r for rs in self.by_prefix.values() for r in rs)


def routable(ix: CoreIndex, prefix: str) -> bool:
    """A learned prefix may be routed into a tunnel: not our own site reflected back."""
    net = network_of(prefix)
    return not any(
        net.version == site.version and net.subnet_of(site)  # type: ignore[arg-type]
        for site in ix.site
    )


def _group(
    ix: CoreIndex, metric: Mapping[str, int], prefix: str, table: int, names: Iterable[str]
) -> frozenset[Route]:
    """The routes of one prefix via these tunnels: those sharing a metric become one ECMP route."""
    hops: dict[int, list[NextHop]] = {}
    version = version_of(prefix)
    for name in names:
        hops.setdefault(metric[name], []).append(ix.hop[(name, version)])
    return frozenset(Route(prefix, table, m, tuple(sorted(hs))) for m, hs in hops.items())


def prefix_routes(
    cfg: Config,
    ix: CoreIndex,
    roles: Roles,
    learned: Mapping[str, frozenset[str]],
    prefix: str,
) -> frozenset[Route]:
    """The routes one remote prefix should have now."""
    metric = roles.metrics(cfg)
    if prefix in ix.static_set:
        holders = list(metric)
    elif cfg.remote_prefixes.learned_from_bgp and routable(ix, prefix):
        holders = [n for n in metric if prefix in learned.get(n, frozenset())]
    else:
        holders = []
    return _by_table(ix, metric, prefix, holders)


def _by_table(
    ix: CoreIndex, metric: Mapping[str, int], prefix: str, holders: list[str]
) -> frozenset[Route]:
    tables = sorted({ix.table[n] for n in holders})
    if len(tables) == 1:
        return _group(ix, metric, prefix, tables[0], holders)
    # Tunnels in different tables never share a route (and none at all: no route).
    out: frozenset[Route] = frozenset()
    for table in tables:
        out |= _group(ix, metric, prefix, table, [n for n in holders if ix.table[n] == table])
    return out


def all_routes(
    cfg: Config, ix: CoreIndex, roles: Roles, learned: Mapping[str, frozenset[str]]
) -> dict[str, frozenset[Route]]:
    """Every remote prefix's routes for these roles: one pass over the static and learned tables."""
    metric = roles.metrics(cfg)
    holders: dict[str, list[str]] = {}
    for name in metric:
        for prefix in ix.static:
            holders.setdefault(prefix, []).append(name)
        if cfg.remote_prefixes.learned_from_bgp:
            for prefix in learned.get(name, frozenset()):
                # A learned copy of a static prefix adds nothing: static already routes it.
                if prefix not in ix.static_set and routable(ix, prefix):
                    holders.setdefault(prefix, []).append(name)
    return {prefix: _by_table(ix, metric, prefix, names) for prefix, names in holders.items()}


def has_routes(
    cfg: Config, ix: CoreIndex, learned: Mapping[str, frozenset[str]], name: str
) -> bool:
    """Whether the tunnel would route any remote prefix in a routing role."""
    if ix.static:
        return True
    if not cfg.remote_prefixes.learned_from_bgp:
        return False
    return any(routable(ix, p) for p in learned.get(name, frozenset()))


def announcements(
    cfg: Config, carriers: tuple[str, ...], standbys: tuple[str, ...]
) -> dict[tuple[str, str], AnnouncePrefix]:
    """Our site prefixes to each usable tunnel's neighbor, with attributes by role."""
    out: dict[tuple[str, str], AnnouncePrefix] = {}
    if cfg.bgp is None:
        return out
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
            out[(neighbor, str(net))] = AnnouncePrefix(
                neighbor=neighbor,
                tunnel=name,
                prefix=str(net),
                med=med,
                as_path_prepend=attrs.as_path_prepend,
                communities=attrs.communities,
            )
    return out


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
