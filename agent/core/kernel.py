"""What the kernel does on its own to what the core asked for, as the core models it.

A device that goes down or away takes its nexthop objects with it, and a group left empty
takes every route on it; what was lost is dropped from `asked`, so the next diff asks for
it again.
"""

from __future__ import annotations

from dataclasses import replace

from agent.config import Config
from agent.core.routing import Desired

__all__ = ["forget_link", "lose_nexthops"]


def forget_link(asked: Desired, cfg: Config, name: str) -> Desired:
    """An interface that reappeared lost its routes, nexthops and admin state: ask again.

    The kernel deletes a vanished device's nexthop objects, and a group left empty goes
    with every route on it: such groups and their routes are asked for again too.
    """
    iface = cfg.tunnel(name).interface
    lost = {g for g, (_, hops) in asked.groups.items() if any(h.interface == iface for h in hops)}
    by_prefix = {}
    for prefix, routes in asked.by_prefix.items():
        kept = frozenset(
            r
            for r in routes
            if r.group not in lost and all(h.interface != iface for h in r.nexthops)
        )
        if kept:
            by_prefix[prefix] = kept
    return replace(
        asked,
        links={n: up for n, up in asked.links.items() if n != name},
        by_prefix=by_prefix,
        groups={g: v for g, v in asked.groups.items() if g not in lost},
    )


def lose_nexthops(asked: Desired, iface: str) -> Desired:
    """What the kernel did to our groups when a device went down or away.

    It deletes the device's nexthop objects: each group loses that member, and a group
    left empty is deleted with every route on it. Those are asked for again.
    """
    groups = {}
    for g, (version, hops) in asked.groups.items():
        kept = tuple(h for h in hops if h.interface != iface)
        if kept:
            groups[g] = (version, kept)
    if len(groups) == len(asked.groups) and all(groups[g] == v for g, v in asked.groups.items()):
        return asked
    by_prefix = {}
    for prefix, routes in asked.by_prefix.items():
        kept_routes = frozenset(r for r in routes if not r.group or r.group in groups)
        if kept_routes:
            by_prefix[prefix] = kept_routes
    return replace(asked, by_prefix=by_prefix, groups=groups)
