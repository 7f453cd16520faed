"""Only ours, checked by the kernel when we write: foreign routes and links are never changed.

Foreign routes are planted the way an operator or another daemon would: at our very prefix
and metric after we installed ours (a `replace` takes it over), and beside ours in other
tables and under other protocol ids. Failovers, removals and a restart's sweep run over
them; each must come out exactly as it went in.
"""

from __future__ import annotations

import pytest

from agent.adapters.netlink import DEFAULT_ROUTE_PROTOCOL, NetlinkActuator
from agent.core.actions import (
    InstallRoute,
    NextHop,
    RemoveRoute,
    Route,
    SetLinkDown,
    SweepRoutes,
)
from agent.ports import AdapterError
from tests.support.netns_links import link_flags, routes
from tests.support.system import run

pytestmark = pytest.mark.root

PROTO = str(DEFAULT_ROUTE_PROTOCOL)


def route(prefix: str, metric: int, *devs: str, table: int = 254) -> Route:
    return Route(prefix, table, metric, tuple(NextHop(d) for d in devs))


def foreign(ns: str, family: str = "-4") -> list[tuple[object, ...]]:
    """Every route not of our protocol, as (dst, table, metric, protocol, dev)."""
    found = [
        (r["dst"], r.get("table", "main"), r.get("metric", 0), r.get("protocol"), r.get("dev"))
        for r in routes(ns, family=family)
        if str(r.get("protocol")) != PROTO
    ]
    return sorted(found, key=str)


def ip(ns: str, *args: str) -> None:
    run("ip", "-n", ns, *args)


async def test_a_route_planted_at_our_prefix_and_metric_survives_the_next_failover(
    ns: str, actuator: NetlinkActuator
) -> None:
    await actuator.apply([InstallRoute(route("10.2.0.0/24", 10, "vti1"))])
    # Someone takes our route over in place: same prefix and metric, another protocol.
    ip(ns, "route", "replace", "10.2.0.0/24", "dev", "vti2", "metric", "10", "proto", "static")
    planted = foreign(ns)
    assert ("10.2.0.0/24", "main", 10, "static", "vti2") in planted
    # The failover our stale view would have written over it.
    with pytest.raises(AdapterError, match="not ours"):
        await actuator.apply([InstallRoute(route("10.2.0.0/24", 10, "vti2", "vti1"))])
    assert foreign(ns) == planted
    assert routes(ns, "proto", PROTO) == []
    # And its removal, asked for later, leaves it too.
    await actuator.apply([RemoveRoute(route("10.2.0.0/24", 10, "vti2", "vti1"))])
    assert foreign(ns) == planted


async def test_ipv6_route_planted_at_our_prefix_and_metric_survives_the_next_failover(
    ns: str, actuator: NetlinkActuator
) -> None:
    await actuator.apply([InstallRoute(route("2001:db8:2::/48", 10, "vti1"))])
    ip(
        ns,
        "-6",
        "route",
        "replace",
        "2001:db8:2::/48",
        "dev",
        "vti2",
        "metric",
        "10",
        "proto",
        "static",
    )
    planted = foreign(ns, "-6")
    with pytest.raises(AdapterError, match="not ours"):
        await actuator.apply([InstallRoute(route("2001:db8:2::/48", 10, "vti2"))])
    assert foreign(ns, "-6") == planted
    assert routes(ns, "proto", PROTO, family="-6") == []


async def test_a_move_is_make_before_break_and_leaves_no_old_copy(
    ns: str, actuator: NetlinkActuator
) -> None:
    # Every kind of move: one hop to another, into and out of ECMP sets from either end.
    for devs in (
        ("vti1",),
        ("vti2",),
        ("vti1", "vti2"),
        ("vti2",),
        ("vti2", "vti1"),
        ("vti1",),
        ("vti1", "vti2"),
        ("vti1",),
    ):
        await actuator.apply([InstallRoute(route("10.2.0.0/24", 10, *devs))])
        (only,) = routes(ns, "proto", PROTO)
        got = sorted(h["dev"] for h in only.get("nexthops", [only]))
        assert (only["dst"], only.get("metric"), got) == ("10.2.0.0/24", 10, sorted(devs))


async def test_foreign_routes_beside_ours_survive_failovers_removals_and_the_sweep(
    ns: str, actuator: NetlinkActuator
) -> None:
    # Same prefix, other metrics and protocols; same prefix and metric in another table;
    # BIRD's and zebra's protocol ids among them.
    ip(
        ns,
        "route",
        "add",
        "10.2.0.0/24",
        "dev",
        "vti2",
        "metric",
        "10",
        "table",
        "100",
        "proto",
        "12",
    )
    ip(ns, "route", "add", "10.2.0.0/24", "dev", "vti1", "metric", "50", "proto", "11")
    ip(ns, "route", "add", "10.2.0.0/24", "dev", "vti2", "metric", "100", "proto", "static")
    ip(ns, "-6", "route", "add", "2001:db8:2::/48", "dev", "vti2", "metric", "20", "proto", "12")
    planted, planted6 = foreign(ns), foreign(ns, "-6")
    for step in (
        [
            InstallRoute(route("10.2.0.0/24", 10, "vti1")),
            InstallRoute(route("2001:db8:2::/48", 10, "vti1")),
        ],
        [
            InstallRoute(route("10.2.0.0/24", 10, "vti2")),
            InstallRoute(route("2001:db8:2::/48", 10, "vti2")),
        ],
        [
            RemoveRoute(route("10.2.0.0/24", 10, "vti2")),
            RemoveRoute(route("2001:db8:2::/48", 10, "vti2")),
        ],
        [InstallRoute(route("10.2.0.0/24", 10, "vti1"))],
    ):
        await actuator.apply(step)
        assert foreign(ns) == planted
        assert foreign(ns, "-6") == planted6
    # A restart that no longer wants the route sweeps ours, and only ours.
    second = NetlinkActuator(netns=ns)
    try:
        await second.apply([SweepRoutes("ipv4"), SweepRoutes("ipv6")])
    finally:
        await second.close(cleanup=False)
    assert routes(ns, "proto", PROTO) == []
    assert foreign(ns) == planted
    assert foreign(ns, "-6") == planted6


async def test_links_are_changed_only_for_configured_tunnels_of_their_kind(ns: str) -> None:
    # vti1 and vti2 are veth stand-ins here: configured as vti, neither may be taken down.
    lo_before = link_flags(ns, "lo")
    act = NetlinkActuator(netns=ns, tunnels={"vti1": "vti", "vti2": "gre"})
    try:
        with pytest.raises(AdapterError, match="vti1 is a veth interface, not vti"):
            await act.apply([SetLinkDown("vti1", "tun1")])
        with pytest.raises(AdapterError, match="not a configured tunnel interface"):
            await act.apply([SetLinkDown("lo", "tun9")])
    finally:
        await act.close(cleanup=False)
    assert "UP" in link_flags(ns, "vti1")
    assert link_flags(ns, "lo") == lo_before
    # A configured interface of its kind is ours to set (a tap device: kind tun).
    run("ip", "-n", ns, "tuntap", "add", "dev", "tap9", "mode", "tap")
    run("ip", "-n", ns, "link", "set", "tap9", "up")
    act = NetlinkActuator(netns=ns, tunnels={"tap9": "tap"})
    try:
        await act.apply([SetLinkDown("tap9", "tun9")])
    finally:
        await act.close(cleanup=False)
    assert "UP" not in link_flags(ns, "tap9")
