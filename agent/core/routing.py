"""Desired routing for one choice of carriers: routes per remote prefix, announcements per neighbor.

Pure functions of the config's index, the roles and the learned prefixes. Routes are kept
per prefix, so one learned prefix costs the routes of that prefix and a change of roles
costs one pass over the table, never more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from agent.config import Config, PolicyMode
from agent.core.actions import AnnouncePrefix, NextHop, Route
from agent.core.index import CoreIndex, version_of

__all__ = [
    "Desired",
    "Roles",
    "all_routes",
    "announcements",
    "group_id",
    "groups",
    "has_routes",
    "live_tables",
    "partly_held",
    "prefix_routes",
    "slot_metric",
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
    # Nexthop group number -> (IP version, next hops), with netlink.nexthop_groups.
    groups: Mapping[int, tuple[int, tuple[NextHop, ...]]] = field(default_factory=dict)
    announcements: Mapping[tuple[str, str], AnnouncePrefix] = field(default_factory=dict)

    @property
    def routes(self) -> frozenset[Route]:
        return frozenset(r for rs in self.by_prefix.values() for r in rs)


def _group(
    ix: CoreIndex, metric: Mapping[str, int], prefix: str, table: int, names: Iterable[str]
) -> frozenset[Route]:
    """The routes of one prefix via these tunnels: those sharing a metric become one ECMP route."""
    hops: dict[int, list[NextHop]] = {}
    version = version_of(prefix)
    for name in names:
        hops.setdefault(metric[name], []).append(ix.hop[(name, version)])
    return frozenset(Route(prefix, table, m, tuple(sorted(hs))) for m, hs in hops.items())


def slot_metric(cfg: Config, slot: int) -> int:
    """Slot 0 carries (active metric); slot k is the k-th standby's."""
    return cfg.policy.active_metric if slot == 0 else cfg.policy.standby_metric + slot - 1


def _slots(cfg: Config, ix: CoreIndex, table: int) -> int:
    return min(1 + cfg.policy.standby_routes, len(ix.table_tunnels[table]))


def group_id(ix: CoreIndex, table: int, version: int, slot: int) -> int:
    """The core's number for a table's slot group: stable for a config, so a restarted agent
    finds its groups again."""
    return 1 + slot + (128 if version == 6 else 0) + 256 * ix.tables.index(table)


def prefix_routes(
    cfg: Config,
    ix: CoreIndex,
    roles: Roles,
    learned: Mapping[str, frozenset[str]],
    prefix: str,
) -> frozenset[Route]:
    """The routes one remote prefix should have now.

    With nexthop groups, a slot whose group holds only tunnels that have the prefix routes
    it via the group. A prefix every tunnel of its table has (static, or learned over all
    of them) is then on the groups whoever carries, so a failover rewrites groups, never
    routes. A slot with someone who lacks it routes by the holders in it.
    """
    metric = roles.metrics(cfg)
    static = prefix in ix.static_set
    # Learned sets hold only what the import policy let in (agent.core.imports).
    learnable = not static and cfg.remote_prefixes.learned_from_bgp
    version = version_of(prefix)
    out: frozenset[Route] = frozenset()
    for table in ix.tables:
        members = ix.table_tunnels[table]
        has = [u for u in members if static or (learnable and prefix in learned.get(u, ()))]
        holders = [u for u in has if u in metric]
        if not ix.groups:
            out |= _group(ix, metric, prefix, table, holders)
            continue
        for slot, inside in enumerate(_slot_members(cfg, ix, metric, table)):
            m = slot_metric(cfg, slot)
            if set(inside) <= set(has):
                out |= {Route(prefix, table, m, (), group_id(ix, table, version, slot))}
            else:
                out |= _group(ix, metric, prefix, table, [u for u in holders if metric[u] == m])
    return out


def _slot_members(
    cfg: Config, ix: CoreIndex, metric: Mapping[str, int], table: int
) -> list[list[str]]:
    """Each slot's tunnels in a table (none at all when nobody there routes).

    An empty slot (fewer routed standbys than slots) holds the best routed tunnels of its
    table, so its routes stay and only ever lead somewhere alive.
    """
    routed = [u for u in ix.table_tunnels[table] if u in metric]
    if not routed:
        return []
    best = min(metric[u] for u in routed)
    return [
        [u for u in routed if metric[u] == slot_metric(cfg, slot)]
        or [u for u in routed if metric[u] == best]
        for slot in range(_slots(cfg, ix, table))
    ]


def all_routes(
    cfg: Config, ix: CoreIndex, roles: Roles, learned: Mapping[str, frozenset[str]]
) -> dict[str, frozenset[Route]]:
    """Every remote prefix's routes for these roles: one pass over the static and learned tables."""
    by_prefix: dict[str, frozenset[Route]] = {}
    # Static prefixes share one shape per IP version: build it once, not per prefix.
    shapes: dict[int, frozenset[Route]] = {}
    for prefix in ix.static:
        version = version_of(prefix)
        if version not in shapes:
            shapes[version] = prefix_routes(cfg, ix, roles, learned, prefix)
        by_prefix[prefix] = frozenset(replace(r, prefix=prefix) for r in shapes[version])
    if cfg.remote_prefixes.learned_from_bgp:
        seen: set[str] = set()
        for name in roles.metrics(cfg):
            seen |= learned.get(name, frozenset())
        for prefix in seen - ix.static_set:
            by_prefix[prefix] = prefix_routes(cfg, ix, roles, learned, prefix)
    return {p: rs for p, rs in by_prefix.items() if rs}


def live_tables(ix: CoreIndex, roles: Roles) -> frozenset[int]:
    """Tables with a tunnel in a routing role: where grouped routes exist at all."""
    return frozenset(ix.table[n] for n in (*roles.carriers, *roles.standbys))


def partly_held(ix: CoreIndex, learned: Mapping[str, frozenset[str]]) -> set[str]:
    """Learned prefixes some but not all tunnels of a table have: those route by holder."""
    out: set[str] = set()
    for members in ix.table_tunnels.values():
        sets = [learned.get(u, frozenset()) for u in members]
        out |= frozenset[str]().union(*sets) - frozenset.intersection(*sets)
    return out - ix.static_set


def groups(cfg: Config, ix: CoreIndex, roles: Roles) -> dict[int, tuple[int, tuple[NextHop, ...]]]:
    """Every slot group of a live table: number -> (IP version, next hops)."""
    if not ix.groups:
        return {}
    metric = roles.metrics(cfg)
    versions = {version_of(p) for p in ix.static}
    if cfg.remote_prefixes.learned_from_bgp:
        versions |= {4, 6}
    out: dict[int, tuple[int, tuple[NextHop, ...]]] = {}
    for table in ix.tables:
        for slot, members in enumerate(_slot_members(cfg, ix, metric, table)):
            for version in sorted(versions):
                hops = tuple(sorted(ix.hop[(u, version)] for u in members))
                out[group_id(ix, table, version, slot)] = (version, hops)
    return out


def has_routes(
    cfg: Config, ix: CoreIndex, learned: Mapping[str, frozenset[str]], name: str
) -> bool:
    """Whether the tunnel would route any remote prefix in a routing role."""
    if ix.static:
        return True
    if not cfg.remote_prefixes.learned_from_bgp:
        return False
    return bool(learned.get(name))


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
        neighbor = str(cfg.neighbor_of(t))
        # With next-hop self a session carries only its own address family; the other
        # one needs a next hop of that family on the tunnel (inner6), else it is skipped.
        hops = cfg.session_next_hops(t)
        for net in (n for n in cfg.site_prefixes if n.version in hops):
            out[(neighbor, str(net))] = AnnouncePrefix(
                neighbor=neighbor,
                tunnel=name,
                prefix=str(net),
                med=med,
                as_path_prepend=attrs.as_path_prepend,
                communities=attrs.communities,
                next_hop=hops[net.version],
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
