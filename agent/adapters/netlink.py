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
import logging
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTMGRP_LINK

from agent.adapters import nexthops
from agent.adapters.netlink_errors import mapped
from agent.adapters.netlink_groups import GroupTable
from agent.adapters.netlink_links import IFF_UP, link_view
from agent.adapters.netlink_routes import (
    RTN_UNICAST,
    Hop,
    Key,
    RouteEntry,
    RouteWriter,
    parse_route,
    route_key,
)
from agent.adapters.netlink_socket import netlink_fd_in, rtnl_socket
from agent.adapters.nexthop_wire import extend_rtmsg
from agent.config import Config
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

__all__ = ["DEFAULT_ROUTE_PROTOCOL", "NetlinkActuator", "tunnel_kinds"]

log = logging.getLogger("vti_failover.netlink")

# Unused by iproute2, BIRD and FRR; name it in /etc/iproute2/rt_protos.d/vti-failover.conf.
DEFAULT_ROUTE_PROTOCOL = 157
# Routes compared and repaired per turn of the lock during a resync.
_RESYNC_CHUNK = 256


# The kernel's link kinds (IFLA_INFO_KIND) each configured tunnel kind may be. A `mark`
# tunnel has no interface of its own: its plain interface is never ours to take down.
_KERNEL_KINDS: dict[str, frozenset[str]] = {
    "vti": frozenset({"vti", "vti6"}),
    "xfrm": frozenset({"xfrm"}),
    "gre": frozenset({"gre", "gretap", "ip6gre", "ip6gretap"}),
    "tap": frozenset({"tun"}),
}


def tunnel_kinds(cfg: Config) -> dict[str, str]:
    """Each configured tunnel interface and the kind the config says it is."""
    return {t.interface: str(t.kind) for t in cfg.tunnels}


def _about_groups(action: Action) -> bool:
    return isinstance(action, SetNexthopGroup | RemoveNexthopGroup) or (
        isinstance(action, InstallRoute) and action.route.group != 0
    )


class NetlinkActuator:
    """Applies SetLinkUp/SetLinkDown/InstallRoute/RemoveRoute in one network namespace."""

    name = "netlink"

    def __init__(
        self,
        *,
        route_protocol: int = DEFAULT_ROUTE_PROTOCOL,
        resync_interval_s: float = 30.0,
        netns: str | None = None,
        tunnels: Mapping[str, str] | None = None,
    ) -> None:
        self.route_protocol = route_protocol
        # Interface -> configured tunnel kind: the only links we may set up or down (None:
        # any, for tests that drive the actuator alone).
        self._tunnels = dict(tunnels) if tunnels is not None else None
        self.resync_interval_s = resync_interval_s
        self.netns = netns
        self._ipr: Any = None
        self._lock = asyncio.Lock()
        self._desired: dict[Key, Route] = {}
        # What the kernel holds under our protocol id, as last read or written.
        self._routes = RouteWriter(route_protocol)
        self._index: dict[str, int] = {}
        # Link writes so far: for tests and the benchmark, not for decisions.
        self._link_writes = 0
        # Nexthop groups the core asked for (its number -> IP version, next hops) and the
        # kernel objects behind them; None until we know whether the kernel has them.
        self._desired_groups: dict[int, tuple[int, tuple[NextHop, ...]]] = {}
        self._groups = GroupTable(route_protocol)
        self._has_nexthops: bool | None = None

    def configure(self, cfg: Config) -> None:
        """A reload: the tunnel interfaces we may touch are the new config's.

        The route protocol is who we are in the kernel: a reload that changes it is refused
        before it gets here (agent/reload.py), and this keeps the one it started with.
        """
        if self._tunnels is not None:
            self._tunnels = tunnel_kinds(cfg)
        self.resync_interval_s = cfg.netlink.resync_interval_s

    @property
    def writes(self) -> int:
        """Netlink writes of links and routes so far: for tests and benchmarks."""
        return self._link_writes + self._routes.writes

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
                self._ipr = self._routes.ipr = self._socket()
                await self._refresh()
            except (NetlinkError, OSError) as exc:
                self._drop_socket()
                raise mapped(exc, "netlink open") from exc
            log.info(
                "adopted %d route(s) of protocol %d", len(self._routes.owned), self.route_protocol
            )
        return self._ipr

    def _drop_socket(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = self._routes.ipr = None

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
            self._routes.written = set()
        try:
            seen = await self._dump_off_loop()
        except (NetlinkError, OSError) as exc:
            log.error("%s", mapped(exc, "netlink resync dump"))
            self._routes.written = None
            return
        async with self._lock:
            written, self._routes.written = self._routes.written or set(), None
            for key in written:
                seen.pop(key, None)
                if key in self._routes.owned:
                    seen[key] = self._routes.owned[key]
            self._routes.owned = seen
            try:
                await self._refresh_groups()
                errors = await self._set_groups(list(self._desired_groups))
            except AdapterError as exc:
                errors = [exc]
            keys = list(self._desired)
        for start in range(0, len(keys), _RESYNC_CHUNK):
            async with self._lock:
                errors += await self._sync(keys[start : start + _RESYNC_CHUNK])
                self._routes.log_changes()
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
                    await self._sync(list(self._routes.owned))
                    await self._sweep_groups()
            finally:
                self._routes.log_changes()
                self._drop_socket()

    # -- actions ---------------------------------------------------------------------------

    async def apply(self, actions: Sequence[Action]) -> None:
        async with self._lock:
            await self._open()
            self._routes.changes = []
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
                        self._routes.changes.append(f"removed nexthop group {action.group}")
                    elif isinstance(action, InstallRoute):
                        key = route_key(action.route)
                        self._desired[key] = action.route
                        touched.append(key)
                    elif isinstance(action, RemoveRoute):
                        key = route_key(action.route)
                        if key in self._desired and self._desired[key] == action.route:
                            del self._desired[key]
                        touched.append(key)
                    elif isinstance(action, SweepRoutes):
                        # Routes of ours adopted at start that the core never asked for again.
                        family = socket.AF_INET if action.family == "ipv4" else socket.AF_INET6
                        await self._refresh()
                        stale = [
                            k
                            for k in self._routes.owned
                            if k[0] == family and k not in self._desired
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
            self._routes.log_changes()
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
            self._check_tunnel(what, interface, link)
            if bool(link.get("flags", 0) & IFF_UP) == up:
                return False
            self._link_writes += 1
            await ipr.link("set", index=index, state="up" if up else "down")
        except (NetlinkError, OSError) as exc:
            raise mapped(exc, what) from exc
        log.info("%s", what)
        return up

    def _check_tunnel(self, what: str, interface: str, link: Any) -> None:
        """Only a configured tunnel interface of its configured kind, seen at this moment."""
        if self._tunnels is None:
            return
        kind = self._tunnels.get(interface)
        if kind is None:
            raise AdapterError(f"{what}: not a configured tunnel interface; left as it is")
        found = link.get(("linkinfo", "kind"))
        if found not in _KERNEL_KINDS.get(kind, ()):
            shown = f"a {found} interface" if found else "not a tunnel interface"
            raise AdapterError(f"{what}: {interface} is {shown}, not {kind}; left as it is")

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
        self._routes.owned = await self._dump_off_loop()
        await self._refresh_groups()

    async def _dump_off_loop(self) -> dict[Key, list[RouteEntry]]:
        """Our routes, read and parsed in a thread on a socket of its own.

        Parsing a table costs ~50 us of CPU a route (a second for 20,000): on the event
        loop that would hold up every probe and decision behind it.
        """
        return await asyncio.to_thread(self._dump_blocking)

    def _dump_blocking(self) -> dict[Key, list[RouteEntry]]:
        extend_rtmsg()
        fileno = None if self.netns is None else netlink_fd_in(self.netns)
        ipr = IPRoute() if fileno is None else IPRoute(fileno=fileno)
        try:
            owned: dict[Key, list[RouteEntry]] = {}
            for family in (socket.AF_INET, socket.AF_INET6):
                for msg in ipr.route("dump", family=family):
                    if msg.get("proto") != self.route_protocol or msg.get("type") != RTN_UNICAST:
                        continue
                    key, entry = parse_route(msg, family)
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
            self._routes.owned = {
                k: es for k, es in self._routes.owned.items() if not any(e.nhid in gone for e in es)
            }

    async def _sweep_groups(self) -> None:
        """Groups of ours left by a previous run that nothing uses any more."""
        if not self._has_nexthops:
            return
        wanted = {self._groups.kernel_id(g) for g in self._desired_groups}
        used = {e.nhid for es in self._routes.owned.values() for e in es if e.nhid}
        await self._groups.collect(self._ipr, keep=lambda i: i in wanted or i in used)

    async def _set_groups(self, groups: Iterable[int]) -> list[AdapterError]:
        errors: list[AdapterError] = []
        for group in groups:
            version, hops = self._desired_groups[group]
            try:
                wanted = [(await self._ifindex(h.interface), h.gateway) for h in hops]
                if await self._groups.set(self._ipr, group, version, wanted):
                    shown = " ".join(str(h) for h in hops)
                    self._routes.changes.append(f"set nexthop group {group} {shown}")
            except AdapterError as exc:
                errors.append(exc)
        return errors

    async def _wanted_hops(self, route: Route) -> frozenset[Hop]:
        return frozenset([(await self._ifindex(h.interface), h.gateway) for h in route.nexthops])

    async def _sync(self, keys: Iterable[Key]) -> list[AdapterError]:
        """Write the difference between desired and owned for these keys; report, never stop."""
        errors: list[AdapterError] = []
        for key in dict.fromkeys(keys):
            want = self._desired.get(key)
            have = self._routes.owned.get(key)
            try:
                if want is None:
                    if have:
                        await self._routes.delete(key)
                    continue
                if want.group:
                    nhid = self._groups.kernel_id(want.group)
                    if have and len(have) == 1 and have[0].nhid == nhid:
                        continue
                    await self._routes.write_via_group(key, want, nhid)
                    continue
                hops = await self._wanted_hops(want)
                if (
                    have
                    and not any(e.nhid for e in have)
                    and frozenset().union(*(e.hops for e in have)) == hops
                ):
                    continue
                await self._routes.write(key, want, hops)
            except AdapterError as exc:
                errors.append(exc)
        return errors
