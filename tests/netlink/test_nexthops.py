"""Kernel nexthop objects in a namespace: ours written, dumped and moved; others' left alone."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from agent.adapters import nexthops
from agent.adapters.netlink_socket import rtnl_socket
from agent.adapters.nexthop_wire import NexthopObject
from agent.ports import AdapterError, InterfaceNotFoundError
from tests.support.netns_links import add_veth
from tests.support.system import netns, run, sh_in

pytestmark = pytest.mark.root

PROTO = 157
V4, V6, UNSPEC = socket.AF_INET, socket.AF_INET6, socket.AF_UNSPEC


@pytest.fixture
def ns() -> Iterator[str]:
    with netns("vtf-nh") as name:
        add_veth(name, "vti1")
        add_veth(name, "vti2")
        run("ip", "-n", name, "addr", "add", "192.0.2.1/24", "dev", "vti1")
        run("ip", "-n", name, "addr", "add", "198.51.100.1/24", "dev", "vti2")
        yield name


@pytest.fixture
async def ipr(ns: str) -> AsyncIterator[Any]:
    sock = rtnl_socket(ns)
    try:
        nexthops.attach(sock)
        yield sock
    finally:
        sock.close()


async def index(ipr: Any, name: str) -> int:
    return int((await ipr.link_lookup(ifname=name))[0])


def kernel_nexthops(ns: str) -> dict[int, dict[str, Any]]:
    out = run("ip", "-n", ns, "-j", "nexthop", "show").stdout
    return {n["id"]: n for n in json.loads(out or "[]")}


def route_json(ns: str, *selector: str, family: str = "-4") -> list[dict[str, Any]]:
    out = run("ip", "-n", ns, "-j", family, "route", "show", *selector).stdout
    got: list[dict[str, Any]] = json.loads(out or "[]")
    return got


def egress(ns: str, address: str) -> str:
    dev: str = json.loads(run("ip", "-n", ns, "-j", "route", "get", address).stdout)[0]["dev"]
    return dev


async def via_group(ipr: Any, dst: str, group: int, priority: int = 10) -> None:
    await ipr.route("replace", dst=dst, nh_id=group, table=254, priority=priority, proto=PROTO)


async def test_supported_here(ipr: Any) -> None:
    assert await nexthops.supported(ipr)


async def test_single_nexthops_v4_v6_device_only_and_with_gateway(ns: str, ipr: Any) -> None:
    one, two = await index(ipr, "vti1"), await index(ipr, "vti2")
    wanted = [
        NexthopObject(1, V4, PROTO, oif=one),
        NexthopObject(2, V4, PROTO, oif=two, gateway="198.51.100.2"),
        NexthopObject(3, V6, PROTO, oif=one),
        # IPv6 link-local: reachable on any up link without an address of our own.
        NexthopObject(4, V6, PROTO, oif=two, gateway="fe80::2"),
    ]
    for obj in wanted:
        await nexthops.replace(ipr, obj)

    assert await nexthops.dump(ipr, PROTO) == {o.id: o for o in wanted}
    seen = kernel_nexthops(ns)
    assert (seen[1]["dev"], seen[2]["gateway"], seen[4]["gateway"]) == (
        "vti1",
        "198.51.100.2",
        "fe80::2",
    )
    assert all(seen[i]["protocol"] == str(PROTO) for i in (1, 2, 3, 4))
    # Same object again: replace in place, nothing new.
    await nexthops.replace(ipr, wanted[1])
    assert set(kernel_nexthops(ns)) == {1, 2, 3, 4}


async def test_routes_via_ids_v4_v6_and_rfc5549(ns: str, ipr: Any) -> None:
    """route(nh_id=) sends RTA_NH_ID for both families and a route dump gives it back.

    An IPv6 route cannot use an IPv4 nexthop (EINVAL); an IPv4 route can use an IPv6 one.
    """
    one = await index(ipr, "vti1")
    await nexthops.replace(ipr, NexthopObject(1, V4, PROTO, oif=one))
    await nexthops.replace(ipr, NexthopObject(6, V6, PROTO, oif=one, gateway="fe80::2"))
    await nexthops.replace(ipr, NexthopObject(10, UNSPEC, PROTO, group=(1,)))
    await nexthops.replace(ipr, NexthopObject(60, UNSPEC, PROTO, group=(6,)))
    await via_group(ipr, "10.2.0.0/24", 10)
    await via_group(ipr, "2001:db8:2::/48", 60)
    await via_group(ipr, "10.6.0.0/24", 60)
    with pytest.raises(NetlinkError):
        await via_group(ipr, "2001:db8:3::/48", 10)

    got = {}
    for family in (V4, V6):
        async for msg in await ipr.route("dump", family=family):
            if msg["proto"] == PROTO:
                got[msg.get_attr("RTA_DST")] = msg.get_attr("RTA_NH_ID")
    assert got == {"10.2.0.0": 10, "2001:db8:2::": 60, "10.6.0.0": 60}
    assert route_json(ns, "10.6.0.0/24")[0]["via"] == {"family": "inet6", "host": "fe80::2"}
    assert route_json(ns, "2001:db8:2::/48", family="-6")[0]["nhid"] == 60


async def test_group_replace_moves_traffic_without_touching_the_route(ns: str, ipr: Any) -> None:
    one, two = await index(ipr, "vti1"), await index(ipr, "vti2")
    await nexthops.replace(ipr, NexthopObject(1, V4, PROTO, oif=one))
    await nexthops.replace(ipr, NexthopObject(2, V4, PROTO, oif=two))
    await nexthops.replace(ipr, NexthopObject(10, UNSPEC, PROTO, group=(1, 2)))  # ECMP
    await nexthops.replace(ipr, NexthopObject(20, UNSPEC, PROTO, group=(1,)))  # active-standby
    await via_group(ipr, "10.3.0.0/24", 10)
    await via_group(ipr, "10.2.0.0/24", 20)

    ecmp = route_json(ns, "10.3.0.0/24")[0]
    assert sorted(h["dev"] for h in ecmp["nexthops"]) == ["vti1", "vti2"]
    assert egress(ns, "10.2.0.1") == "vti1"
    before = route_json(ns, "10.2.0.0/24")

    await nexthops.replace(ipr, NexthopObject(20, UNSPEC, PROTO, group=(2,)))

    assert egress(ns, "10.2.0.1") == "vti2"
    after = route_json(ns, "10.2.0.0/24")
    # In the default compat mode the kernel expands the group into dev/gateway in route
    # dumps; everything that makes the route itself is unchanged.
    assert [r.pop("dev") for r in before] == ["vti1"]
    assert [r.pop("dev") for r in after] == ["vti2"]
    assert before == after
    assert after[0]["nhid"] == 20

    # With nexthop_compat_mode=0 a dump shows the route as it is: nhid only, identical.
    sh_in(ns, "sysctl", "-qw", "net.ipv4.nexthop_compat_mode=0")
    before = route_json(ns, "10.2.0.0/24")
    await nexthops.replace(ipr, NexthopObject(20, UNSPEC, PROTO, group=(1,)))
    assert route_json(ns, "10.2.0.0/24") == before
    assert "dev" not in before[0]
    assert egress(ns, "10.2.0.1") == "vti1"


async def test_dump_leaves_out_and_never_touches_other_protocols(ns: str, ipr: Any) -> None:
    run("ip", "-n", ns, "nexthop", "add", "id", "500", "dev", "vti1", "proto", "12")
    run("ip", "-n", ns, "nexthop", "add", "id", "501", "group", "500", "proto", "12")
    theirs = {i: n for i, n in kernel_nexthops(ns).items() if i in (500, 501)}
    ours = NexthopObject(1, V4, PROTO, oif=await index(ipr, "vti2"))
    await nexthops.replace(ipr, ours)
    await nexthops.replace(ipr, NexthopObject(10, UNSPEC, PROTO, group=(1,)))

    assert await nexthops.dump(ipr, PROTO) == {1: ours, 10: NexthopObject(10, 0, PROTO, group=(1,))}
    assert set(await nexthops.dump(ipr, 12)) == {500, 501}  # the kernel reports groups' too
    await nexthops.delete(ipr, 10)
    await nexthops.delete(ipr, 1)
    assert kernel_nexthops(ns) == theirs


async def test_delete_takes_the_groups_routes_and_gone_is_fine(ns: str, ipr: Any) -> None:
    await nexthops.replace(ipr, NexthopObject(1, V4, PROTO, oif=await index(ipr, "vti1")))
    await nexthops.replace(ipr, NexthopObject(10, UNSPEC, PROTO, group=(1,)))
    await via_group(ipr, "10.2.0.0/24", 10)

    await nexthops.delete(ipr, 10)
    assert route_json(ns, "10.2.0.0/24") == []  # the kernel removed the route with it
    await nexthops.delete(ipr, 10)  # already gone
    await nexthops.delete(ipr, 1)
    assert await nexthops.dump(ipr, PROTO) == {}


async def test_errors_are_ours(ns: str, ipr: Any) -> None:
    # The kernel says EINVAL ("Invalid device index") for an unknown NHA_OIF.
    with pytest.raises(InterfaceNotFoundError, match="no interface with index 99999") as info:
        await nexthops.replace(ipr, NexthopObject(1, V4, PROTO, oif=99999))
    assert isinstance(info.value.__cause__, NetlinkError)
    # A member that does not exist, and a device that is down (ENETDOWN): AdapterError.
    with pytest.raises(AdapterError) as missing:
        await nexthops.replace(ipr, NexthopObject(10, UNSPEC, PROTO, group=(7,)))
    assert not isinstance(missing.value, InterfaceNotFoundError)
    run("ip", "-n", ns, "link", "set", "vti2", "down")
    with pytest.raises(AdapterError, match="Network is down"):
        await nexthops.replace(ipr, NexthopObject(2, V4, PROTO, oif=await index(ipr, "vti2")))


async def test_member_device_down_deletes_it_and_a_group_left_empty_takes_its_routes(
    ns: str, ipr: Any
) -> None:
    """What the kernel does when a member's device goes admin-down (the agent must know).

    The nexthop on that device is deleted, not marked dead. A group that still has other
    members shrinks and its routes stay; a group left empty is deleted and every route
    via it with it. The kernel sends no RTM_DELNEXTHOP for any of this, and nothing comes
    back when the link comes up: whoever owns them must re-create nexthop, group and
    routes. Carrier loss (the peer going down) does the same. So a failover must move the
    group off a tunnel before setting that tunnel's link down, never after.
    """
    one, two = await index(ipr, "vti1"), await index(ipr, "vti2")
    await nexthops.replace(ipr, NexthopObject(1, V4, PROTO, oif=one))
    await nexthops.replace(ipr, NexthopObject(2, V4, PROTO, oif=two))
    await nexthops.replace(ipr, NexthopObject(10, UNSPEC, PROTO, group=(1, 2)))
    await nexthops.replace(ipr, NexthopObject(20, UNSPEC, PROTO, group=(2,)))
    await via_group(ipr, "10.3.0.0/24", 10)
    await via_group(ipr, "10.2.0.0/24", 20)

    with nexthop_monitor(ns) as heard:
        run("ip", "-n", ns, "link", "set", "vti2", "down")
        # A change the monitor does report, so that silence above means something.
        run("ip", "-n", ns, "nexthop", "add", "id", "99", "dev", "vti1", "proto", "12")
    assert [line.split()[:2] for line in heard()] == [["id", "99"]]
    run("ip", "-n", ns, "nexthop", "del", "id", "99")
    assert await nexthops.dump(ipr, PROTO) == {
        1: NexthopObject(1, V4, PROTO, oif=one),
        10: NexthopObject(10, UNSPEC, PROTO, group=(1,)),
    }
    assert [r["dst"] for r in route_json(ns, "root", "10.0.0.0/8")] == ["10.3.0.0/24"]

    run("ip", "-n", ns, "link", "set", "vti2", "up")
    assert set(await nexthops.dump(ipr, PROTO)) == {1, 10}

    # Carrier loss on vti1 (its peer goes down) deletes nexthop 1, group 10, the route.
    run("ip", "-n", ns, "link", "set", "vti1p", "down")
    assert await nexthops.dump(ipr, PROTO) == {}
    assert route_json(ns, "root", "10.0.0.0/8") == []


class nexthop_monitor:  # noqa: N801 - used as a context manager, like a function
    """`ip monitor nexthop` while the block runs; the lines it printed."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.lines: list[str] = []

    def __enter__(self) -> Any:
        self.proc = subprocess.Popen(
            ["ip", "-n", self.ns, "monitor", "nexthop"], stdout=subprocess.PIPE, text=True
        )
        time.sleep(0.3)  # ip subscribes right after it starts
        return lambda: self.lines

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.5)
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=5)
        self.lines.extend(line for line in out.splitlines() if line.strip())


async def test_measure_one_group_replace_with_10000_routes(
    ns: str, ipr: Any, tmp_path: Path
) -> None:
    """Printed, not asserted: what one failover costs with 10,000 prefixes on the group."""
    one, two = await index(ipr, "vti1"), await index(ipr, "vti2")
    await nexthops.replace(ipr, NexthopObject(1, V4, PROTO, oif=one))
    await nexthops.replace(ipr, NexthopObject(2, V4, PROTO, oif=two))
    await nexthops.replace(ipr, NexthopObject(20, UNSPEC, PROTO, group=(1,)))
    batch = tmp_path / "routes"
    batch.write_text(
        "".join(
            f"route add 10.{i >> 8}.{i & 255}.0/24 nhid 20 proto {PROTO} metric 10\n"
            for i in range(10_000)
        )
    )
    run("ip", "-n", ns, "-batch", str(batch), timeout=120)

    for compat in ("1", "0"):
        sh_in(ns, "sysctl", "-qw", f"net.ipv4.nexthop_compat_mode={compat}")
        for member, dev in ((2, "vti2"), (1, "vti1")):
            t0 = time.perf_counter()
            await nexthops.replace(ipr, NexthopObject(20, UNSPEC, PROTO, group=(member,)))
            took = time.perf_counter() - t0
            assert egress(ns, "10.39.15.1") == dev
            print(
                f"group replace, 10,000 routes, compat_mode={compat} -> {dev}: {took * 1e3:.2f} ms"
            )
