"""Our routes in the kernel: what it holds under our protocol id, and the writes that change it.

Only ours, checked by the kernel at the moment of each write: a route is deleted with our
protocol id (and its next hops) in the request, so the kernel deletes nothing else; a new
route goes in with NLM_F_EXCL, so it never lands on a foreign one; and a route moves by
appending its new version beside the old and then deleting the old, never by a replace
(the kernel's replace ignores the protocol, and would overwrite a route someone planted at
our prefix and metric since we last looked). The old version carries traffic until the new
one is in: no gap, even for the instant of a move.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from agent.adapters.netlink_errors import error_code, mapped
from agent.core.actions import Route
from agent.ports import AdapterError

__all__ = ["Hop", "Key", "RouteEntry", "RouteWriter", "parse_route", "route_key"]

log = logging.getLogger("vti_failover.netlink")

RTN_UNICAST = 1
# The kernel stores an IPv6 route given metric 0 as 1024 (IP6_RT_PRIO_USER).
IPV6_DEFAULT_METRIC = 1024
# Up to this many route changes in one apply are logged one per line.
_LOGGED_ONE_BY_ONE = 8

# (family, table, prefix, metric): a route's identity in the kernel.
Key = tuple[int, int, str, int]
# (ifindex, gateway or None)
Hop = tuple[int, str | None]


@dataclass(frozen=True)
class RouteEntry:
    """One kernel route message of ours: its next hops, and whether it is one multipath route."""

    hops: frozenset[Hop]
    multipath: bool
    # The nexthop object the route points at (RTA_NH_ID), if it is one of those.
    nhid: int | None = None
    # A multipath route's hops in the kernel's order: a delete names them in that order.
    order: tuple[Hop, ...] = ()

    def first_hop(self) -> Hop | None:
        if self.nhid:
            return None
        if self.order:
            return self.order[0]
        return min(self.hops, key=_hop_sort) if self.hops else None


def route_key(route: Route) -> Key:
    net = ipaddress.ip_network(route.prefix, strict=False)
    family = socket.AF_INET if net.version == 4 else socket.AF_INET6
    metric = route.metric
    if family == socket.AF_INET6 and metric == 0:
        metric = IPV6_DEFAULT_METRIC
    return (family, route.table, str(net), metric)


def parse_route(msg: Any, family: int) -> tuple[Key, RouteEntry]:
    dst = msg.get("dst") or ("0.0.0.0" if family == socket.AF_INET else "::")
    prefix = str(ipaddress.ip_network(f"{dst}/{msg.get('dst_len', 0)}", strict=False))
    table = int(msg.get("table") or msg.get("RTA_TABLE") or 0)
    metric = int(msg.get("priority") or 0)
    multipath = msg.get("multipath")
    order: tuple[Hop, ...] = ()
    if multipath:
        order = tuple((int(nh["oif"]), nh.get("gateway")) for nh in multipath)
        hops = frozenset(order)
    else:
        hops = frozenset({(int(msg.get("oif") or 0), msg.get("gateway"))})
    nhid = msg.get("nh_id")
    return (family, table, prefix, metric), RouteEntry(
        hops, bool(multipath), int(nhid) if nhid else None, order
    )


def _hop_sort(hop: Hop) -> tuple[int, str]:
    return (hop[0], hop[1] or "")


def _not_ours(route: Route, key: Key) -> AdapterError:
    return AdapterError(
        f"route {route}: the kernel already has a route to {key[2]} metric "
        f"{key[3]} table {key[1]} that is not ours; left untouched"
    )


def _hop_args(hop: Hop) -> dict[str, Any]:
    oif, gateway = hop
    return {"oif": oif, "gateway": gateway} if gateway else {"oif": oif}


def _spec(hops: list[Hop]) -> dict[str, Any]:
    if len(hops) == 1:
        return _hop_args(hops[0])
    return {"multipath": [_hop_args(h) for h in hops]}


def _has_gateway(entries: list[RouteEntry]) -> bool:
    return any(gateway for e in entries if not e.nhid for _, gateway in e.hops)


def _entry_args(entry: RouteEntry) -> dict[str, Any]:
    """What names exactly this kernel route in a delete, beside its key."""
    if entry.nhid:
        return {"nh_id": entry.nhid}
    ordered = list(entry.order) or sorted(entry.hops, key=_hop_sort)
    if entry.multipath:
        return {"multipath": [_hop_args(h) for h in ordered]}
    return _hop_args(ordered[0]) if ordered else {}


class RouteWriter:
    """The kernel's routes of our protocol id as last read or written, and the writes."""

    def __init__(self, protocol: int) -> None:
        self.protocol = protocol
        self.ipr: Any = None
        self.owned: dict[Key, list[RouteEntry]] = {}
        # Netlink writes so far: for tests and the benchmark, not for decisions.
        self.writes = 0
        # Route changes of the apply under way, logged together at its end.
        self.changes: list[str] = []
        # Keys written while a resync's dump runs (None: no dump running).
        self.written: set[Key] | None = None

    def base(self, key: Key) -> dict[str, Any]:
        family, table, prefix, metric = key
        return {
            "family": family,
            "dst": prefix,
            "table": table,
            "priority": metric,
            "proto": self.protocol,
        }

    async def _route(self, command: str, route: str, **kwargs: Any) -> None:
        self.writes += 1
        try:
            await self.ipr.route(command, **kwargs)
        except (NetlinkError, OSError) as exc:
            raise mapped(exc, f"{command} route {route}") from exc

    async def write(self, key: Key, route: Route, hops: frozenset[Hop]) -> None:
        """The route via these next hops (plain, multipath or split IPv6 device routes)."""
        family = key[0]
        ordered = sorted(hops, key=_hop_sort)
        # IPv6 takes multipath only with a gateway on every hop; device-only hops (VTI,
        # XFRM) go in as separate routes of the same metric.
        split = family == socket.AF_INET6 and len(ordered) > 1 and not all(g for _, g in ordered)
        have = self.owned.get(key)
        old_first = have[0].first_hop() if have and len(have) == 1 else None
        if family == socket.AF_INET and len(ordered) > 1 and ordered[0] == old_first:
            # The kernel matches a delete's next hops against a route's first one(s): a new
            # version that starts where the old one does could be taken for it. Start it
            # elsewhere, so deleting the old can only ever hit the old.
            ordered = ordered[1:] + ordered[:1]
        try:
            if split:
                # Siblings of one key: the old set goes, then the new set goes in. Only
                # IPv6 ECMP over device next hops without nexthop objects comes here.
                if have:
                    await self.delete(key)
                for n, hop in enumerate(ordered):
                    await self._route(
                        "add" if n == 0 else "append",
                        str(route),
                        **self.base(key),
                        **_hop_args(hop),
                    )
                entries = [RouteEntry(frozenset({h}), False) for h in ordered]
            elif (
                family == socket.AF_INET
                and len(ordered) == 1
                and have
                and have[0].multipath
                and ordered[0] == old_first
            ):
                # One hop left of an ECMP set, the one it starts with: no delete could tell
                # the two versions apart, so this one move is a replace. It is the only write
                # that trusts our last view of the key.
                await self._route("replace", str(route), **self.base(key), **_spec(ordered))
                entries = [RouteEntry(hops, False)]
            else:
                await self._install(key, route, _spec(ordered), have)
                multipath = len(ordered) > 1
                entries = [RouteEntry(hops, multipath, order=tuple(ordered) if multipath else ())]
        except AdapterError as exc:
            code = error_code(exc.__cause__) if exc.__cause__ is not None else None
            if code == errno.ENETDOWN:
                # The link is admin-down: the route goes in when it comes up (resync).
                log.info("route %s waits for its link: %s", route, exc)
                self.owned.pop(key, None)
                self.note_written(key)
                return
            raise
        self._installed(key, route, entries)

    async def write_via_group(self, key: Key, route: Route, nhid: int) -> None:
        """Point the route at a nexthop group (moved beside the old version, so no gap)."""
        have = self.owned.get(key)
        if have and len(have) > 1:
            # Split IPv6 device routes are siblings: they go, then the group route comes.
            await self.delete(key)
            have = None
        await self._install(key, route, {"nh_id": nhid}, have)
        self._installed(key, route, [RouteEntry(frozenset(), False, nhid)])

    async def _install(
        self, key: Key, route: Route, spec: dict[str, Any], have: list[RouteEntry] | None
    ) -> None:
        """Add the route, or move ours to it: append the new version, then delete the old."""
        if not have:
            await self._add_exclusive(key, route, spec)
            return
        if key[0] == socket.AF_INET6 and spec.get("gateway") and _has_gateway(have):
            # Two IPv6 gateway routes of one key and metric are ECMP siblings: appended, the
            # new would join the old. Such a route is rewritten, out and in.
            await self.delete(key)
            await self._add_exclusive(key, route, spec)
            return
        try:
            await self._route("append", str(route), **self.base(key), **spec)
        except AdapterError as exc:
            if exc.__cause__ is not None and error_code(exc.__cause__) == errno.EEXIST:
                # That very next hop is there already, and not as ours.
                raise _not_ours(route, key) from exc
            raise
        gone = 0
        for entry in have:
            try:
                await self._delete_entry(key, entry)
            except AdapterError as exc:
                if exc.__cause__ is None or error_code(exc.__cause__) != errno.ESRCH:
                    raise
                gone += 1
        if gone == len(have):
            # None of our old version is left: the kernel flushed it with its link, or
            # someone replaced it with a route of their own. Take ours back out and add
            # it exclusively: the kernel says which.
            await self._route("del", str(route), **self.base(key), **spec)
            await self._add_exclusive(key, route, spec)

    async def _add_exclusive(self, key: Key, route: Route, spec: dict[str, Any]) -> None:
        try:
            await self._route("add", str(route), **self.base(key), **spec)
        except AdapterError as exc:
            if exc.__cause__ is not None and error_code(exc.__cause__) == errno.EEXIST:
                self.owned.pop(key, None)
                raise _not_ours(route, key) from exc
            raise

    def _installed(self, key: Key, route: Route, entries: list[RouteEntry]) -> None:
        self.note_written(key)
        self.owned[key] = entries
        self.changes.append(f"installed route {route}")

    async def _delete_entry(self, key: Key, entry: RouteEntry) -> None:
        label = f"{key[2]} metric {key[3]} table {key[1]}"
        await self._route("del", label, **self.base(key), **_entry_args(entry))

    async def delete(self, key: Key) -> None:
        """Our route(s) at this key out; the protocol id in each request spares any other."""
        label = f"{key[2]} metric {key[3]} table {key[1]}"
        for entry in self.owned.get(key, []):
            try:
                await self._delete_entry(key, entry)
            except AdapterError as exc:
                if exc.__cause__ is None or error_code(exc.__cause__) != errno.ESRCH:
                    raise
                # Already gone (the kernel flushed it with its link): the goal is met.
        self.owned.pop(key, None)
        self.note_written(key)
        self.changes.append(f"removed route {label}")

    def note_written(self, key: Key) -> None:
        if self.written is not None:
            self.written.add(key)

    def log_changes(self) -> None:
        """Each route change on its own line, or one line for a table's worth."""
        changes, self.changes = self.changes, []
        if len(changes) <= _LOGGED_ONE_BY_ONE:
            for line in changes:
                log.info("%s", line)
            return
        installed = sum(1 for c in changes if c.startswith("installed route"))
        removed = sum(1 for c in changes if c.startswith("removed route"))
        log.info(
            "installed %d route(s), removed %d, %d nexthop group change(s) (first: %s; last: %s)",
            installed,
            removed,
            len(changes) - installed - removed,
            changes[0],
            changes[-1],
        )
