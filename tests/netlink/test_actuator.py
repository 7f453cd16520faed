"""The netlink actuator against the real kernel in a namespace: what it writes, what it leaves."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from agent.adapters.netlink import DEFAULT_ROUTE_PROTOCOL, NetlinkActuator
from agent.core.actions import InstallRoute, NextHop, RemoveRoute, Route, SetLinkDown, SetLinkUp
from agent.ports import AdapterError, InterfaceNotFoundError
from tests.support.netns_links import add_veth, link_flags, route_monitor, routes
from tests.support.system import run

pytestmark = pytest.mark.root

PROTO = str(DEFAULT_ROUTE_PROTOCOL)


@contextlib.asynccontextmanager
async def running(act: NetlinkActuator) -> AsyncIterator[None]:
    task = asyncio.create_task(act.run())
    try:
        await asyncio.sleep(0.2)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def via(*ifaces: str) -> tuple[NextHop, ...]:
    return tuple(NextHop(i) for i in ifaces)


def ours(ns: str, family: str = "-4") -> list[dict[str, object]]:
    return routes(ns, "proto", PROTO, family=family)


def shape(r: dict[str, object]) -> tuple[object, ...]:
    hops = r.get("nexthops")
    devs = tuple(sorted(h["dev"] for h in hops)) if isinstance(hops, list) else (r.get("dev"),)
    return (r["dst"], r.get("table", "main"), r.get("metric", 0), devs)


async def test_installs_v4_v6_custom_table_and_ecmp(ns: str, actuator: NetlinkActuator) -> None:
    run("ip", "-n", ns, "-6", "addr", "add", "fd00:1::1/64", "dev", "vti1", "nodad")
    run("ip", "-n", ns, "-6", "addr", "add", "fd00:2::1/64", "dev", "vti2", "nodad")
    await actuator.apply(
        [
            InstallRoute(Route("10.2.0.0/24", 254, 10, via("vti1"))),
            InstallRoute(Route("10.3.0.0/24", 100, 20, via("vti2"))),
            InstallRoute(Route("10.4.0.0/24", 254, 10, via("vti1", "vti2"))),
            InstallRoute(Route("2001:db8:2::/48", 254, 10, via("vti1"))),
            InstallRoute(
                Route(
                    "2001:db8:3::/48",
                    4000,
                    30,
                    (NextHop("vti1", "fd00:1::2"), NextHop("vti2", "fd00:2::2")),
                )
            ),
        ]
    )
    assert sorted(shape(r) for r in ours(ns)) == [
        ("10.2.0.0/24", "main", 10, ("vti1",)),
        ("10.3.0.0/24", "100", 20, ("vti2",)),
        ("10.4.0.0/24", "main", 10, ("vti1", "vti2")),
    ]
    v6 = ours(ns, "-6")
    assert sorted(shape(r) for r in v6) == [
        ("2001:db8:2::/48", "main", 10, ("vti1",)),
        ("2001:db8:3::/48", "4000", 30, ("vti1", "vti2")),
    ]
    multipath = next(r for r in v6 if r["dst"] == "2001:db8:3::/48")
    assert sorted(h["gateway"] for h in multipath["nexthops"]) == ["fd00:1::2", "fd00:2::2"]

    await actuator.apply(
        [
            RemoveRoute(Route("10.3.0.0/24", 100, 20, via("vti2"))),
            RemoveRoute(
                Route(
                    "2001:db8:3::/48",
                    4000,
                    30,
                    (NextHop("vti1", "fd00:1::2"), NextHop("vti2", "fd00:2::2")),
                )
            ),
        ]
    )
    assert sorted(r["dst"] for r in ours(ns)) == ["10.2.0.0/24", "10.4.0.0/24"]
    assert [r["dst"] for r in ours(ns, "-6")] == ["2001:db8:2::/48"]


async def test_same_desired_state_twice_writes_nothing(ns: str, actuator: NetlinkActuator) -> None:
    batch = [
        InstallRoute(Route("10.2.0.0/24", 254, 10, via("vti1"))),
        InstallRoute(Route("10.4.0.0/24", 254, 10, via("vti1", "vti2"))),
        SetLinkUp("vti2", "tun2"),
    ]
    await actuator.apply(batch)
    with route_monitor(ns) as mon:
        await actuator.apply(batch)
        await actuator.apply([SetLinkUp("vti1", "tun1")])
        seen_noop = mon.stop()
    assert seen_noop == []
    assert len(ours(ns)) == 2


async def test_changed_nexthops_replace_in_place(ns: str, actuator: NetlinkActuator) -> None:
    await actuator.apply([InstallRoute(Route("10.4.0.0/24", 254, 10, via("vti1", "vti2")))])
    # Active-active lost vti2: the core removes the ECMP route and installs the single one;
    # a route to the same key that only changes hops is rewritten, not duplicated.
    await actuator.apply([InstallRoute(Route("10.4.0.0/24", 254, 10, via("vti1")))])
    assert [shape(r) for r in ours(ns)] == [("10.4.0.0/24", "main", 10, ("vti1",))]


async def test_routes_of_other_protocols_are_untouched(ns: str, actuator: NetlinkActuator) -> None:
    run("ip", "-n", ns, "route", "add", "10.2.0.0/24", "dev", "vti2", "metric", "50")
    run("ip", "-n", ns, "route", "add", "10.5.0.0/24", "dev", "vti2", "metric", "10")
    # `ip route add` marks its routes proto boot: they stand for an operator's static routes.
    foreign_before = routes(ns, "proto", "boot")
    assert len(foreign_before) == 2

    await actuator.apply([InstallRoute(Route("10.2.0.0/24", 254, 10, via("vti1")))])
    # Same prefix and metric as a static route: refused, the static route stays as it was.
    with pytest.raises(AdapterError, match="not ours"):
        await actuator.apply([InstallRoute(Route("10.5.0.0/24", 254, 10, via("vti1")))])
    # Removing what is not ours (only the static route has this key) is a no-op.
    await actuator.apply([RemoveRoute(Route("10.5.0.0/24", 254, 10, via("vti1")))])
    await actuator.apply([RemoveRoute(Route("10.2.0.0/24", 254, 10, via("vti1")))])
    await actuator.close(cleanup=True)

    assert routes(ns, "proto", "boot") == foreign_before
    assert ours(ns) == []


async def test_link_down_up_puts_our_ipv4_routes_back(ns: str, actuator: NetlinkActuator) -> None:
    route = Route("10.2.0.0/24", 254, 10, via("vti1"))
    await actuator.apply([InstallRoute(route)])
    await actuator.apply([SetLinkDown("vti1", "tun1")])
    assert "UP" not in link_flags(ns, "vti1")
    assert ours(ns) == []  # the kernel's own doing: admin-down drops IPv4 routes
    await actuator.apply([SetLinkUp("vti1", "tun1")])
    assert "UP" in link_flags(ns, "vti1")
    assert [shape(r) for r in ours(ns)] == [("10.2.0.0/24", "main", 10, ("vti1",))]


async def test_link_raised_by_someone_else_gets_routes_back(
    ns: str, actuator: NetlinkActuator
) -> None:
    route = Route("10.2.0.0/24", 254, 10, via("vti1"))
    async with running(actuator):
        await actuator.apply([InstallRoute(route)])
        run("ip", "-n", ns, "link", "set", "vti1", "down")
        assert ours(ns) == []
        run("ip", "-n", ns, "link", "set", "vti1", "up")
        for _ in range(50):
            if ours(ns):
                break
            await asyncio.sleep(0.05)
    assert [shape(r) for r in ours(ns)] == [("10.2.0.0/24", "main", 10, ("vti1",))]


async def test_recreated_interface_gets_routes_back(ns: str, actuator: NetlinkActuator) -> None:
    route = Route("10.2.0.0/24", 254, 10, via("vti1"))
    async with running(actuator):
        await actuator.apply([InstallRoute(route)])
        run("ip", "-n", ns, "link", "del", "vti1")
        add_veth(ns, "vti1")
        for _ in range(50):
            if ours(ns):
                break
            await asyncio.sleep(0.05)
    assert [shape(r) for r in ours(ns)] == [("10.2.0.0/24", "main", 10, ("vti1",))]


async def test_missing_interface_is_reported_not_fatal(ns: str, actuator: NetlinkActuator) -> None:
    with pytest.raises(InterfaceNotFoundError):
        await actuator.apply([SetLinkDown("nosuch0", "tun9")])
    # The same batch's other actions still happen.
    with pytest.raises(InterfaceNotFoundError):
        await actuator.apply(
            [
                InstallRoute(Route("10.9.0.0/24", 254, 10, via("nosuch0"))),
                InstallRoute(Route("10.2.0.0/24", 254, 10, via("vti1"))),
            ]
        )
    assert [r["dst"] for r in ours(ns)] == ["10.2.0.0/24"]


async def test_restart_adopts_routes_without_a_single_write(ns: str) -> None:
    desired = [
        InstallRoute(Route("10.2.0.0/24", 254, 10, via("vti1"))),
        InstallRoute(Route("10.2.0.0/24", 254, 100, via("vti2"))),
        InstallRoute(Route("10.4.0.0/24", 100, 10, via("vti1", "vti2"))),
        InstallRoute(Route("2001:db8:2::/48", 254, 10, via("vti1"))),
    ]
    first = NetlinkActuator(netns=ns)
    await first.apply(desired)
    await first.close(cleanup=False)
    before = ours(ns) + ours(ns, "-6")

    with route_monitor(ns) as mon:
        second = NetlinkActuator(netns=ns)
        try:
            async with running(second):
                await second.apply(desired)
                writes_after_restart = second.writes
                # Proof the monitor is live: one real change right after must show up.
                await second.apply([InstallRoute(Route("10.2.0.0/24", 254, 10, via("vti2")))])
        finally:
            await second.close(cleanup=False)
        seen = mon.stop()
    assert writes_after_restart == 0
    # The move: the new version beside the old, then the old out (make-before-break).
    assert len(seen) == 2, seen
    assert "10.2.0.0/24 dev vti2" in seen[0]
    assert seen[1].startswith("Deleted 10.2.0.0/24 dev vti1")
    assert len(before) == 4


async def test_a_resync_of_a_big_table_does_not_hold_up_a_failover_write(
    ns: str, actuator: NetlinkActuator
) -> None:
    table = [
        Route(f"10.{100 + i // 250}.{i % 250}.0/24", 254, 10, via("vti1")) for i in range(5000)
    ]
    await actuator.apply([InstallRoute(r) for r in table])
    assert len(ours(ns)) == 5000
    # Someone deletes one of ours behind our back: the resync puts it back.
    run("ip", "-n", ns, "route", "del", "10.100.0.0/24", "proto", PROTO)
    done: list[str] = []

    async def resync() -> None:
        await actuator.resync()
        done.append("resync")

    async def failover() -> None:
        await asyncio.sleep(0)  # let the resync start its dump first
        await actuator.apply([InstallRoute(Route("10.2.0.0/24", 254, 10, via("vti2")))])
        done.append("failover")

    await asyncio.gather(resync(), failover())
    assert done == ["failover", "resync"]
    assert len(ours(ns)) == 5001
    assert any(r["dst"] == "10.100.0.0/24" for r in ours(ns))
