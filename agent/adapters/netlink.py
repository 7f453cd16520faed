"""Netlink actuator: every privileged kernel write of the agent (link state, routes), nothing else.

Reconcile, never replay: actions update the desired set; only the difference from what the
kernel holds under our routing-protocol id is written, so the same desired state twice
costs no netlink write. Routes of any other protocol are never changed or removed. The
kernel silently drops a link's IPv4 routes when it goes admin-down and does not restore
them: on SetLinkUp, on an observed link-up and every resync interval the kernel view is
read again and what we own is put back. On start, routes already carrying our id are
adopted, so a restart with the same desired state writes nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute, IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTMGRP_LINK

from agent.adapters import nexthops
from agent.adapters.netlink_errors import error_code, mapped
from agent.adapters.netlink_groups import GroupTable
from agent.adapters.nexthop_wire import extend_rtmsg
from agent.core.actions import (
    Action,
    InstallRoute,
    NextHop,
    RemoveNexthopGroup,
    RemoveRoute,
    Route,
    SetLinkDown,
    SetLinkUp,
    SetNexthopGroup,
    SweepRoutes,
)
from agent.ports import AdapterError, InterfaceNotFoundError

__all__ = [
    "DEFAULT_ROUTE_PROTOCOL",
    "LinkView",
    "NetlinkActuator",
    "link_view",
    "rtnl_socket",
]

log = logging.getLogger("vti_failover.netlink")

# Unused by iproute2, BIRD and FRR; name it in /etc/iproute2/rt_protos.d/vti-failover.conf.
DEFAULT_ROUTE_PROTOCOL = 157
RTN_UNICAST = 1
RTM_NEWROUTE = 24
NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
# The kernel stores an IPv6 route given metric 0 as 1024 (IP6_RT_PRIO_USER).
IPV6_DEFAULT_METRIC = 1024
# Routes compared and repaired per turn of the lock during a resync.
_RESYNC_CHUNK = 256
# Up to this many route changes in one apply are logged one per line.
_LOGGED_ONE_BY_ONE = 8

IFF_UP = 0x1
# Set by the kernel when the operational state is UP or UNKNOWN: a VTI has no carrier and
# reports UNKNOWN while it works, so operstate == "UP" alone would call every VTI down.
IFF_RUNNING = 0x40
RTM_NEWLINK = 16
RTM_DELLINK = 17


@dataclass(frozen=True)
class LinkView:
    """One RTM_NEWLINK / RTM_DELLINK message, reduced to what the agent uses."""

    index: int
    name: str | None
    present: bool
    admin_up: bool
    oper_up: bool


def link_view(msg: Any) -> LinkView | None:
    """Read a link message; None for anything else (other message types, bridge ports)."""
    kind = msg.get(("header", "type"))
    if kind not in (RTM_NEWLINK, RTM_DELLINK) or msg.get("family", 0) != socket.AF_UNSPEC:
        return None
    flags = int(msg.get("flags", 0))
    present = kind == RTM_NEWLINK
    name = msg.get("ifname")
    return LinkView(
        index=int(msg["index"]),
        name=str(name) if name is not None else None,
        present=present,
        admin_up=present and bool(flags & IFF_UP),
        oper_up=present and bool(flags & IFF_UP) and bool(flags & IFF_RUNNING),
    )


# (family, table, prefix, metric): a route's identity in the kernel.
Key = tuple[int, int, str, int]
# (ifindex, gateway or None)
Hop = tuple[int, str | None]


@dataclass(frozen=True)
class _Entry:
    """One kernel route message of ours: its next hops, and whether it is one multipath route."""

    hops: frozenset[Hop]
    multipath: bool
    # The nexthop object the route points at (RTA_NH_ID), if it is one of those.
    nhid: int | None = None


def _not_ours(route: Route, key: Key) -> AdapterError:
    return AdapterError(
        f"route {route}: the kernel already has a route to {key[2]} metric "
        f"{key[3]} table {key[1]} that is not ours; left untouched"
    )


def _about_groups(action: Action) -> bool:
    return isinstance(action, SetNexthopGroup | RemoveNexthopGroup) or (
        isinstance(action, InstallRoute) and action.route.group != 0
    )


def _key(route: Route) -> Key:
    net = ipaddress.ip_network(route.prefix, strict=False)
    family = socket.AF_INET if net.version == 4 else socket.AF_INET6
    metric = route.metric
    if family == socket.AF_INET6 and metric == 0:
        metric = IPV6_DEFAULT_METRIC
    return (family, route.table, str(net), metric)


def _netlink_fd_in(netns: str) -> int:
    """A NETLINK_ROUTE socket opened inside the named namespace, as a file descriptor.

    pyroute2's own netns= forks a child and SIGTERMs it; the child shares asyncio's signal
    wake-up socket, so the running loop can receive that SIGTERM as its own and stop the
    agent. A thread that enters the namespace just to open the socket has no such effect.
    """
    result: list[int | BaseException] = []

    def enter_and_open() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(os.path.join(NETNS_RUN_DIR, netns), os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, os.strerror(code), netns)
            finally:
                os.close(fd)
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)
            result.append(sock.detach())
        except BaseException as exc:  # handed to the caller's thread below
            result.append(exc)

    thread = threading.Thread(target=enter_and_open, name=f"netns:{netns}")
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def rtnl_socket(netns: str | None = None, **kwargs: Any) -> Any:
    """An AsyncIPRoute in our own namespace, or (for tests and labs) in a named one."""
    if netns is None:
        return AsyncIPRoute(**kwargs)
    return AsyncIPRoute(fileno=_netlink_fd_in(netns), **kwargs)


class NetlinkActuator:
    """Applies SetLinkUp/SetLinkDown/InstallRoute/RemoveRoute in one network namespace."""

    name = "netlink"

    def __init__(
        self,
        *,
        route_protocol: int = DEFAULT_ROUTE_PROTOCOL,
        resync_interval_s: float = 30.0,
        netns: str | None = None,
    ) -> None:
        self.route_protocol = route_protocol
        self.resync_interval_s = resync_interval_s
        self.netns = netns
        self._ipr: Any = None
        self._lock = asyncio.Lock()
        self._desired: dict[Key, Route] = {}
        # What the kernel holds under our protocol id, as last read or written.
        self._owned: dict[Key, list[_Entry]] = {}
        self._index: dict[str, int] = {}
        # Netlink writes so far: for tests and the benchmark, not for decisions.
        self.writes = 0
        # Route changes of the apply under way, logged together at its end.
        self._changes: list[str] = []
        # Keys written while a resync's dump runs (None: no dump running).
        self._written: set[Key] | None = None
        # Nexthop groups the core asked for (its number -> IP version, next hops) and the
        # kernel objects behind them; None until we know whether the kernel has them.
        self._desired_groups: dict[int, tuple[int, tuple[NextHop, ...]]] = {}
        self._groups = GroupTable(route_protocol)
        self._has_nexthops: bool | None = None

    def wants(self, action: Action) -> bool:
        return isinstance(
            action,
            SetLinkUp
            | SetLinkDown
            | InstallRoute
            | RemoveRoute
            | SweepRoutes
            | SetNexthopGroup
            | RemoveNexthopGroup,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def _socket(self) -> Any:
        return rtnl_socket(self.netns)

    async def _open(self) -> Any:
        """The request socket, opened on first use with our routes adopted from the kernel."""
        if self._ipr is None:
            try:
                self._ipr = self._socket()
                await self._refresh()
            except (NetlinkError, OSError) as exc:
                self._drop_socket()
                raise mapped(exc, "netlink open") from exc
            log.info("adopted %d route(s) of protocol %d", len(self._owned), self.route_protocol)
        return self._ipr

    def _drop_socket(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    async def run(self) -> None:
        """Watch links: a link coming up (or a recreated one) gets our routes back."""
        async with self._lock:
            try:
                await self._open()
            except AdapterError as exc:
                log.error("%s", exc)
        while True:
            try:
                await self._watch_links()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed monitor is retried, never fatal
                log.warning("link monitor failed, retrying: %s", exc)
                await asyncio.sleep(1.0)

    async def _watch_links(self) -> None:
        monitor = self._socket()
        up: dict[int, bool] = {}
        working: dict[int, bool] = {}
        try:
            await monitor.bind(groups=RTMGRP_LINK)
            async for msg in await monitor.link("dump"):
                view = link_view(msg)
                if view is not None:
                    up[view.index] = view.admin_up
                    working[view.index] = view.oper_up
            while True:
                raised = False
                try:
                    async with asyncio.timeout(self.resync_interval_s):
                        got = False
                        async for msg in monitor.get():
                            got = True
                            view = link_view(msg)
                            if view is None:
                                continue
                            self._note_index(view.index, view.name, view.present)
                            if view.admin_up and not up.get(view.index, False):
                                raised = True
                            if self._desired_groups and view.oper_up != working.get(
                                view.index, view.oper_up
                            ):
                                # Down: its nexthops are gone, and any group they emptied
                                # with its routes. Up: what could not be rebuilt on a
                                # device without carrier can be now. Read back and repair.
                                raised = True
                            up[view.index] = view.admin_up
                            working[view.index] = view.oper_up
                            if not view.present:
                                up.pop(view.index, None)
                        if not got:
                            raise ConnectionError("netlink socket closed")
                except TimeoutError:
                    raised = True
                if raised:
                    await self.resync()
        finally:
            monitor.close()

    def _note_index(self, index: int, name: str | None, present: bool) -> None:
        # A recreated interface (charon's updown scripts do that) comes back with a new index.
        for known in [n for n, i in self._index.items() if i == index]:
            del self._index[known]
        if present and name is not None:
            self._index[name] = index

    async def resync(self) -> None:
        """Read our routes back from the kernel and put back whatever is missing.

        The dump runs on a socket of its own without the lock, and the repair takes the
        lock a chunk at a time: a failover's writes never wait behind a table of 100,000
        routes. Routes written while the dump ran keep what the write said (the dump may
        predate it).
        """
        async with self._lock:
            try:
                await self._open()
            except AdapterError as exc:
                log.error("%s", exc)
                return
            self._index.clear()
            self._written = set()
        try:
            seen = await self._dump_off_loop()
        except (NetlinkError, OSError) as exc:
            log.error("%s", mapped(exc, "netlink resync dump"))
            self._written = None
            return
        async with self._lock:
            written, self._written = self._written or set(), None
            for key in written:
                seen.pop(key, None)
                if key in self._owned:
                    seen[key] = self._owned[key]
            self._owned = seen
            try:
                await self._refresh_groups()
                errors = await self._set_groups(list(self._desired_groups))
            except AdapterError as exc:
                errors = [exc]
            keys = list(self._desired)
        for start in range(0, len(keys), _RESYNC_CHUNK):
            async with self._lock:
                errors += await self._sync(keys[start : start + _RESYNC_CHUNK])
                self._log_changes()
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            log.error("resync: %s%s", errors[0], more)

    async def close(self, cleanup: bool) -> None:
        async with self._lock:
            try:
                if cleanup:
                    await self._open()
                    await self._refresh()
                    self._desired.clear()
                    self._desired_groups.clear()
                    await self._sync(list(self._owned))
                    await self._sweep_groups()
            finally:
                self._log_changes()
                self._drop_socket()

    # -- actions ---------------------------------------------------------------------------

    async def apply(self, actions: Sequence[Action]) -> None:
        async with self._lock:
            await self._open()
            self._changes = []
            errors: list[AdapterError] = []
            touched: list[Key] = []
            if any(_about_groups(a) for a in actions):
                # One cheap dump of our few nexthop objects: a group the kernel deleted
                # since (its devices went down) took its routes, which must go in again.
                await self._refresh_groups()
            for action in actions:
                try:
                    if isinstance(action, SetLinkUp | SetLinkDown):
                        raised = await self._set_link(
                            action.interface, isinstance(action, SetLinkUp)
                        )
                        if raised:
                            # The kernel forgot this link's IPv4 routes and its nexthops
                            # when it went down.
                            await self._refresh()
                            errors += await self._set_groups(list(self._desired_groups))
                            touched.extend(self._desired)
                    elif isinstance(action, SetNexthopGroup):
                        self._desired_groups[action.group] = (action.version, action.nexthops)
                        errors += await self._set_groups([action.group])
                    elif isinstance(action, RemoveNexthopGroup):
                        self._desired_groups.pop(action.group, None)
                        await self._groups.remove(self._ipr, action.group)
                        self._changes.append(f"removed nexthop group {action.group}")
                    elif isinstance(action, InstallRoute):
                        key = _key(action.route)
                        self._desired[key] = action.route
                        touched.append(key)
                    elif isinstance(action, RemoveRoute):
                        key = _key(action.route)
                        if key in self._desired and self._desired[key] == action.route:
                            del self._desired[key]
                        touched.append(key)
                    elif isinstance(action, SweepRoutes):
                        # Routes of ours adopted at start that the core never asked for again.
                        family = socket.AF_INET if action.family == "ipv4" else socket.AF_INET6
                        await self._refresh()
                        stale = [
                            k for k in self._owned if k[0] == family and k not in self._desired
                        ]
                        if stale:
                            log.info("sweeping %d stale %s route(s)", len(stale), action.family)
                        touched.extend(stale)
                        errors += await self._sync(touched)
                        touched = []
                        await self._sweep_groups()
                except AdapterError as exc:
                    errors.append(exc)
                # Make-before-break: the core orders links, installs, removals; keep it.
                errors += await self._sync(touched)
                touched = []
            self._log_changes()
            if len(errors) == 1:
                raise errors[0]
            if errors:
                raise AdapterError("; ".join(str(e) for e in errors)) from errors[0]

    async def _set_link(self, interface: str, up: bool) -> bool:
        """Set admin state if it differs; True when the link was raised just now."""
        ipr = self._ipr
        what = f"set link {interface} {'up' if up else 'down'}"
        try:
            index = await self._ifindex(interface)
            (link,) = await ipr.link("get", index=index)
            if bool(link.get("flags", 0) & IFF_UP) == up:
                return False
            self.writes += 1
            await ipr.link("set", index=index, state="up" if up else "down")
        except (NetlinkError, OSError) as exc:
            raise mapped(exc, what) from exc
        log.info("%s", what)
        return up

    async def _ifindex(self, interface: str) -> int:
        index = self._index.get(interface)
        if index is None:
            found = await self._ipr.link_lookup(ifname=interface)
            if not found:
                raise InterfaceNotFoundError(f"interface {interface} not found")
            index = self._index[interface] = int(found[0])
        return index

    # -- routes ----------------------------------------------------------------------------

    async def _refresh(self) -> None:
        """Read every route and nexthop object carrying our protocol id."""
        self._owned = await self._dump_off_loop()
        await self._refresh_groups()

    async def _dump_off_loop(self) -> dict[Key, list[_Entry]]:
        """Our routes, read and parsed in a thread on a socket of its own.

        Parsing a table costs ~50 us of CPU a route (a second for 20,000): on the event
        loop that would hold up every probe and decision behind it.
        """
        return await asyncio.to_thread(self._dump_blocking)

    def _dump_blocking(self) -> dict[Key, list[_Entry]]:
        extend_rtmsg()
        fileno = None if self.netns is None else _netlink_fd_in(self.netns)
        ipr = IPRoute() if fileno is None else IPRoute(fileno=fileno)
        try:
            owned: dict[Key, list[_Entry]] = {}
            for family in (socket.AF_INET, socket.AF_INET6):
                for msg in ipr.route("dump", family=family):
                    if msg.get("proto") != self.route_protocol or msg.get("type") != RTN_UNICAST:
                        continue
                    key, entry = self._parse(msg, family)
                    owned.setdefault(key, []).append(entry)
            return owned
        finally:
            ipr.close()

    async def _refresh_groups(self) -> None:
        """Read our nexthop objects back; forget routes on groups the kernel deleted."""
        if self._has_nexthops is None:
            self._has_nexthops = await nexthops.supported(self._ipr)
        if not self._has_nexthops:
            return
        gone = await self._groups.refresh(self._ipr)
        if gone:
            # An emptied group takes its routes with it (its last member's device went).
            self._owned = {
                k: es for k, es in self._owned.items() if not any(e.nhid in gone for e in es)
            }

    async def _sweep_groups(self) -> None:
        """Groups of ours left by a previous run that nothing uses any more."""
        if not self._has_nexthops:
            return
        wanted = {self._groups.kernel_id(g) for g in self._desired_groups}
        used = {e.nhid for es in self._owned.values() for e in es if e.nhid}
        await self._groups.collect(self._ipr, keep=lambda i: i in wanted or i in used)

    async def _set_groups(self, groups: Iterable[int]) -> list[AdapterError]:
        errors: list[AdapterError] = []
        for group in groups:
            version, hops = self._desired_groups[group]
            try:
                wanted = [(await self._ifindex(h.interface), h.gateway) for h in hops]
                if await self._groups.set(self._ipr, group, version, wanted):
                    shown = " ".join(str(h) for h in hops)
                    self._changes.append(f"set nexthop group {group} {shown}")
            except AdapterError as exc:
                errors.append(exc)
        return errors

    @staticmethod
    def _parse(msg: Any, family: int) -> tuple[Key, _Entry]:
        dst = msg.get("dst") or ("0.0.0.0" if family == socket.AF_INET else "::")
        prefix = str(ipaddress.ip_network(f"{dst}/{msg.get('dst_len', 0)}", strict=False))
        table = int(msg.get("table") or msg.get("RTA_TABLE") or 0)
        metric = int(msg.get("priority") or 0)
        multipath = msg.get("multipath")
        if multipath:
            hops = frozenset((int(nh["oif"]), nh.get("gateway")) for nh in multipath)
        else:
            hops = frozenset({(int(msg.get("oif") or 0), msg.get("gateway"))})
        nhid = msg.get("nh_id")
        return (family, table, prefix, metric), _Entry(
            hops, bool(multipath), int(nhid) if nhid else None
        )

    async def _wanted_hops(self, route: Route) -> frozenset[Hop]:
        return frozenset([(await self._ifindex(h.interface), h.gateway) for h in route.nexthops])

    async def _sync(self, keys: Iterable[Key]) -> list[AdapterError]:
        """Write the difference between desired and owned for these keys; report, never stop."""
        errors: list[AdapterError] = []
        for key in dict.fromkeys(keys):
            want = self._desired.get(key)
            have = self._owned.get(key)
            try:
                if want is None:
                    if have:
                        await self._delete(key, have)
                    continue
                if want.group:
                    nhid = self._groups.kernel_id(want.group)
                    if have and len(have) == 1 and have[0].nhid == nhid:
                        continue
                    await self._write_via_group(key, want, nhid, have)
                    continue
                hops = await self._wanted_hops(want)
                if (
                    have
                    and not any(e.nhid for e in have)
                    and frozenset().union(*(e.hops for e in have)) == hops
                ):
                    continue
                await self._write(key, want, hops, have)
            except AdapterError as exc:
                errors.append(exc)
        return errors

    def _base(self, key: Key) -> dict[str, Any]:
        family, table, prefix, metric = key
        return {
            "family": family,
            "dst": prefix,
            "table": table,
            "priority": metric,
            "proto": self.route_protocol,
        }

    @staticmethod
    def _hop_args(hop: Hop) -> dict[str, Any]:
        oif, gateway = hop
        return {"oif": oif, "gateway": gateway} if gateway else {"oif": oif}

    async def _route(self, command: str, route: str, **kwargs: Any) -> None:
        self.writes += 1
        try:
            await self._ipr.route(command, **kwargs)
        except (NetlinkError, OSError) as exc:
            raise mapped(exc, f"{command} route {route}") from exc

    async def _write(
        self, key: Key, route: Route, hops: frozenset[Hop], have: list[_Entry] | None
    ) -> None:
        family = key[0]
        ordered = sorted(hops, key=lambda h: (h[0], h[1] or ""))
        # IPv6 takes multipath only with a gateway on every hop; device-only hops (VTI,
        # XFRM) go in as separate routes of the same metric.
        split = family == socket.AF_INET6 and len(ordered) > 1 and not all(g for _, g in ordered)
        # One IPv6 device route for another is replaced in place too, as a failover moves a
        # carrier route: delete-then-add would leave the prefix without a route in between.
        # Device routes are never ECMP siblings, so the replace can only hit our own route.
        single6 = (
            family == socket.AF_INET6
            and len(ordered) == 1
            and ordered[0][1] is None
            and have is not None
            and len(have) == 1
            and not have[0].multipath
            and all(gateway is None for _, gateway in have[0].hops)
        )
        try:
            if have and (family == socket.AF_INET or single6) and not split:
                await self._route("replace", str(route), **self._base(key), **self._spec(ordered))
            else:
                if have:
                    await self._delete(key, have)
                if split:
                    for n, hop in enumerate(ordered):
                        await self._route(
                            "add" if n == 0 else "append",
                            str(route),
                            **self._base(key),
                            **self._hop_args(hop),
                        )
                else:
                    await self._route("add", str(route), **self._base(key), **self._spec(ordered))
        except AdapterError as exc:
            code = error_code(exc.__cause__) if exc.__cause__ is not None else None
            if code == errno.ENETDOWN:
                # The link is admin-down: the route goes in when it comes up (resync).
                log.info("route %s waits for its link: %s", route, exc)
                self._owned.pop(key, None)
                self._note_written(key)
                return
            if code == errno.EEXIST:
                raise _not_ours(route, key) from exc
            raise
        self._note_written(key)
        self._owned[key] = (
            [_Entry(frozenset({h}), False) for h in ordered]
            if split
            else [_Entry(hops, len(ordered) > 1)]
        )
        self._changes.append(f"installed route {route}")

    def _log_changes(self) -> None:
        """Each route change on its own line, or one line for a table's worth."""
        changes, self._changes = self._changes, []
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

    def _note_written(self, key: Key) -> None:
        if self._written is not None:
            self._written.add(key)

    async def _write_via_group(
        self, key: Key, route: Route, nhid: int, have: list[_Entry] | None
    ) -> None:
        """Point the route at a nexthop group: replaced in place, so no gap while it moves."""
        try:
            if have and len(have) > 1:
                # Split IPv6 device routes are siblings: a replace would hit only one.
                await self._delete(key, have)
                have = None
            await self._route(
                "replace" if have else "add", str(route), **self._base(key), nh_id=nhid
            )
        except AdapterError as exc:
            if exc.__cause__ is not None and error_code(exc.__cause__) == errno.EEXIST:
                raise _not_ours(route, key) from exc
            raise
        self._note_written(key)
        self._owned[key] = [_Entry(frozenset(), False, nhid)]
        self._changes.append(f"installed route {route}")

    def _spec(self, hops: list[Hop]) -> dict[str, Any]:
        if len(hops) == 1:
            return self._hop_args(hops[0])
        return {"multipath": [self._hop_args(h) for h in hops]}

    async def _delete(self, key: Key, have: list[_Entry]) -> None:
        label = f"{key[2]} metric {key[3]} table {key[1]}"
        try:
            if key[0] == socket.AF_INET:
                # proto in the request: the kernel deletes only a route of our protocol.
                await self._route("del", label, **self._base(key))
            else:
                for entry in have:
                    # A multipath route, or one via a nexthop group, is deleted by its
                    # identity alone; split device routes one hop at a time.
                    single = not entry.multipath and not entry.nhid and entry.hops
                    hop_args = self._hop_args(next(iter(entry.hops))) if single else {}
                    await self._route("del", label, **self._base(key), **hop_args)
        except AdapterError as exc:
            if exc.__cause__ is None or error_code(exc.__cause__) != errno.ESRCH:
                raise
            # Already gone (the kernel flushed it with its link): the goal is met.
        self._owned.pop(key, None)
        self._note_written(key)
        self._changes.append(f"removed route {label}")
