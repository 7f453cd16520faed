"""From what the core asked for last to what it wants now: only the difference, make-before-break.

Order: links up, nexthop groups set (a failover's move), routes in, announcements (better
attributes first), withdrawals, routes out, groups removed, links down. Nothing changed ->
nothing emitted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from agent.config import Config
from agent.core import actions as act
from agent.core.routing import Desired

__all__ = ["diff", "group_actions", "link_actions", "route_actions"]


def _route_id(r: act.Route) -> tuple[str, int, int]:
    return (r.prefix, r.table, r.metric)


def link_actions(
    old_cfg: Config, cfg: Config, old: Mapping[str, bool], new: Mapping[str, bool]
) -> tuple[list[act.Action], list[act.Action]]:
    """(links to raise, links to lower)."""
    was_iface = {t.name: t.interface for t in old_cfg.tunnels}
    iface = {t.name: t.interface for t in cfg.tunnels}
    ups: list[act.Action] = []
    downs: list[act.Action] = []
    for n, up in new.items():
        was = old.get(n) if was_iface.get(n) == iface[n] else None
        if up and was is not True:
            ups.append(act.SetLinkUp(iface[n], n))
        elif not up and was is not False:
            downs.append(act.SetLinkDown(iface[n], n))
    for n, up in old.items():
        if not up and (n not in new or iface.get(n) != was_iface[n]):
            # No longer ours to hold down (tunnel removed, renamed or link_control none).
            ups.append(act.SetLinkUp(was_iface[n], n))
    return ups, downs


def route_actions(
    old: Mapping[str, frozenset[act.Route]],
    new: Mapping[str, frozenset[act.Route]],
    prefixes: Iterable[str],
) -> tuple[list[act.InstallRoute], list[act.RemoveRoute]]:
    """(installs, removals) for these prefixes, each sorted."""
    installs: list[act.Route] = []
    removes: list[act.Route] = []
    empty: frozenset[act.Route] = frozenset()
    for prefix in prefixes:
        was = old.get(prefix, empty)
        now = new.get(prefix, empty)
        if was is now or was == now:
            continue
        installs += now - was
        # An install replaces the route of its identity; removing that identity after it
        # would delete the route just installed.
        kept = {_route_id(r) for r in now}
        removes += (r for r in was - now if _route_id(r) not in kept)
    return (
        [act.InstallRoute(r) for r in sorted(installs)],
        [act.RemoveRoute(r) for r in sorted(removes)],
    )


def group_actions(
    old: Mapping[int, tuple[int, tuple[act.NextHop, ...]]],
    new: Mapping[int, tuple[int, tuple[act.NextHop, ...]]],
) -> tuple[list[act.SetNexthopGroup], list[act.RemoveNexthopGroup]]:
    """(groups to set, groups to remove): set before any route uses them, removed after."""
    sets = [
        act.SetNexthopGroup(g, version, hops)
        for g, (version, hops) in sorted(new.items())
        if old.get(g) != (version, hops)
    ]
    return sets, [act.RemoveNexthopGroup(g) for g in sorted(old.keys() - new.keys())]


def diff(
    old_cfg: Config,
    cfg: Config,
    old: Desired,
    new: Desired,
    prefixes: Iterable[str] | None = None,
) -> list[act.Action]:
    """`prefixes`: the only ones whose routes may differ (None: any of them)."""
    ups, downs = link_actions(old_cfg, cfg, old.links, new.links)
    if prefixes is None:
        prefixes = (
            old.by_prefix.keys() | new.by_prefix.keys()
            if old.by_prefix is not new.by_prefix
            else ()
        )
    installs, removes = route_actions(old.by_prefix, new.by_prefix, prefixes)
    group_sets, group_removes = group_actions(old.groups, new.groups)
    announces: list[act.AnnouncePrefix] = []
    withdraws: list[act.WithdrawPrefix] = []
    if old.announcements is not new.announcements:
        announces = [
            a for key, a in sorted(new.announcements.items()) if old.announcements.get(key) != a
        ]
        withdraws = [
            act.WithdrawPrefix(
                neighbor=a.neighbor, tunnel=a.tunnel, prefix=a.prefix, next_hop=a.next_hop
            )
            for key, a in sorted(old.announcements.items())
            if key not in new.announcements
        ]
        # Better attributes first, so the far side always has a path while we change them.
        announces.sort(key=lambda a: (a.med, a.as_path_prepend))
    return [
        *ups,
        *group_sets,
        *installs,
        *announces,
        *withdraws,
        *removes,
        *group_removes,
        *downs,
    ]
