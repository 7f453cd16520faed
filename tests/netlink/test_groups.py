"""Routes via nexthop groups against the real kernel: a move is one group write, whatever the
table; groups and members carry our protocol id, and a restart adopts them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest

from agent.adapters.netlink import DEFAULT_ROUTE_PROTOCOL, NetlinkActuator
from agent.core.actions import (
    InstallRoute,
    NextHop,
    RemoveNexthopGroup,
    RemoveRoute,
    Route,
    SetNexthopGroup,
    SweepRoutes,
)
from agent.ports import AdapterError
from tests.support.netns_links import routes
from tests.support.system import run

pytestmark = pytest.mark.root

PROTO = str(DEFAULT_ROUTE_PROTOCOL)
BASE = DEFAULT_ROUTE_PROTOCOL << 20


def nexthops(ns: str) -> dict[int, dict[str, object]]:
    out = run("ip", "-n", ns, "-j", "nexthop", "show").stdout
    return {int(n["id"]): n for n in (json.loads(out) if out.strip() else [])}


def dev_for(ns: str, address: str) -> str:
    family = "-6" if ":" in address else "-4"
    out = run("ip", "-n", ns, "-j", family, "route", "get", address).stdout
    dev: str = json.loads(out)[0]["dev"]
    return dev


def group(n: int, version: int, *devs: str) -> SetNexthopGroup:
    return SetNexthopGroup(n, version, tuple(NextHop(d) for d in devs))


def on(prefix: str, metric: int, n: int) -> InstallRoute:
    return InstallRoute(Route(prefix, 254, metric, (), n))


async def test_a_move_is_one_group_write_and_leaves_the_routes_alone(
    ns: str, actuator: NetlinkActuator
) -> None:
    await actuator.apply(
        [
            group(1, 4, "vti1"),
            group(2, 4, "vti2"),
            on("10.2.0.0/24", 10, 1),
            on("10.2.0.0/24", 100, 2),
        ]
    )
    before = {(r["dst"], r["metric"], r["nhid"]) for r in routes(ns, "proto", PROTO)}
    assert {(m, n) for _, m, n in before} == {(10, BASE + 1), (100, BASE + 2)}
    assert dev_for(ns, "10.2.0.9") == "vti1"
    # Groups and their members, all ours (ip names an unnamed protocol by its number).
    assert {str(o["protocol"]) for o in nexthops(ns).values()} == {PROTO}
    writes = actuator.writes + actuator._groups.writes
    await actuator.apply([group(1, 4, "vti2")])
    assert dev_for(ns, "10.2.0.9") == "vti2"
    assert {(r["dst"], r["metric"], r["nhid"]) for r in routes(ns, "proto", PROTO)} == before
    # vti2's nexthop already existed (group 2's member): one write, the group's.
    assert actuator.writes + actuator._groups.writes - writes == 1


async def test_ipv6_ecmp_over_device_only_next_hops(ns: str, actuator: NetlinkActuator) -> None:
    await actuator.apply([group(129, 6, "vti1", "vti2"), on("2001:db8:b::/48", 10, 129)])
    (route,) = routes(ns, "proto", PROTO, family="-6")
    assert route["nhid"] == BASE + 129
    members = nexthops(ns)[BASE + 129]["group"]
    assert len(members) == 2  # type: ignore[arg-type]
    await actuator.apply([group(129, 6, "vti2")])
    assert dev_for(ns, "2001:db8:b::1") == "vti2"


async def test_a_restart_adopts_groups_and_routes_without_a_write(
    ns: str, actuator: NetlinkActuator
) -> None:
    wanted = [
        group(1, 4, "vti1"),
        group(2, 4, "vti2"),
        group(129, 6, "vti1"),
        on("10.2.0.0/24", 10, 1),
        on("10.2.0.0/24", 100, 2),
        on("2001:db8:b::/48", 10, 129),
    ]
    await actuator.apply(wanted)
    await actuator.close(cleanup=False)
    again = NetlinkActuator(netns=ns)
    try:
        await again.apply(wanted)
        assert (again.writes, again._groups.writes) == (0, 0)
    finally:
        await again.close(cleanup=False)


async def test_foreign_nexthops_are_never_touched_and_ours_are_swept(
    ns: str, actuator: NetlinkActuator
) -> None:
    run("ip", "-n", ns, "nexthop", "add", "id", "7", "dev", "vti1", "proto", "12")
    run("ip", "-n", ns, "nexthop", "add", "id", "8", "group", "7", "proto", "12")
    run("ip", "-n", ns, "route", "add", "10.9.0.0/24", "nhid", "8", "proto", "12")
    await actuator.apply([group(1, 4, "vti1"), on("10.2.0.0/24", 10, 1)])
    # A later run that no longer wants them: the sweep takes ours, and only ours.
    await actuator.close(cleanup=False)
    again = NetlinkActuator(netns=ns)
    try:
        await again.apply([SweepRoutes("ipv4"), SweepRoutes("ipv6")])
        left = nexthops(ns)
        assert set(left) == {7, 8}
        assert [(r["dst"], r["nhid"]) for r in routes(ns, "proto", "12")] == [("10.9.0.0/24", 8)]
        assert routes(ns, "proto", PROTO) == []
    finally:
        await again.close(cleanup=False)


async def test_routes_then_groups_removed(ns: str, actuator: NetlinkActuator) -> None:
    route = Route("10.2.0.0/24", 254, 10, (), 1)
    await actuator.apply([group(1, 4, "vti1"), InstallRoute(route)])
    await actuator.apply([RemoveRoute(route), RemoveNexthopGroup(1)])
    assert routes(ns, "proto", PROTO) == []
    assert nexthops(ns) == {}


async def test_a_device_going_down_empties_its_group_and_the_routes_come_back(
    ns: str, actuator: NetlinkActuator
) -> None:
    await actuator.apply([group(1, 4, "vti1"), on("10.2.0.0/24", 10, 1)])
    # What the kernel does when the device of a group's only member goes down: the
    # nexthop, the group and the routes on it are gone.
    run("ip", "-n", ns, "link", "set", "vti1", "down")
    assert routes(ns, "proto", PROTO) == []
    assert BASE + 1 not in nexthops(ns)
    # The core moves the group to vti2 and asks for the route again, as after any loss.
    await actuator.apply([group(1, 4, "vti2"), on("10.2.0.0/24", 10, 1)])
    assert dev_for(ns, "10.2.0.9") == "vti2"
    assert [r["nhid"] for r in routes(ns, "proto", PROTO)] == [BASE + 1]


async def test_ten_thousand_routes_move_in_one_write(ns: str, actuator: NetlinkActuator) -> None:
    table = [on(f"10.{100 + i // 250}.{i % 250}.0/24", 10, 1) for i in range(10_000)]
    await actuator.apply([group(1, 4, "vti1"), *table])
    assert len(routes(ns, "proto", PROTO)) == 10_000
    start = time.perf_counter()
    await actuator.apply([group(1, 4, "vti2")])
    took = time.perf_counter() - start
    assert dev_for(ns, "10.139.249.1") == "vti2"
    print(f"10,000 routes moved by one group write in {took * 1000:.2f} ms")


async def test_an_ipv6_route_on_a_group_is_removed_cleanly(
    ns: str, actuator: NetlinkActuator
) -> None:
    route = Route("2001:db8:b::/48", 254, 10, (), 129)
    await actuator.apply([group(129, 6, "vti1", "vti2"), InstallRoute(route)])
    await actuator.apply([RemoveRoute(route), RemoveNexthopGroup(129)])
    assert routes(ns, "proto", PROTO, family="-6") == []
    assert nexthops(ns) == {}


async def test_a_group_lost_with_the_carrier_comes_back_with_it(
    ns: str, actuator: NetlinkActuator
) -> None:
    monitor = asyncio.create_task(actuator.run())
    try:
        await actuator.apply([group(1, 4, "vti1"), on("10.2.0.0/24", 10, 1)])
        await asyncio.sleep(0.3)  # the link monitor has read the links
        run("ip", "-n", ns, "link", "set", "vti1p", "down")  # vti1 loses its carrier
        assert routes(ns, "proto", PROTO) == []
        # The core asks again (its tunnel kept its role): nothing can be built on a
        # device without carrier yet.
        with contextlib.suppress(AdapterError):
            await actuator.apply([group(1, 4, "vti1"), on("10.2.0.0/24", 10, 1)])
        run("ip", "-n", ns, "link", "set", "vti1p", "up")
        deadline = time.monotonic() + 10
        while [r.get("nhid") for r in routes(ns, "proto", PROTO)] != [BASE + 1]:
            assert time.monotonic() < deadline, routes(ns, "proto", PROTO)
            await asyncio.sleep(0.1)
        assert dev_for(ns, "10.2.0.9") == "vti1"
    finally:
        monitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await monitor
