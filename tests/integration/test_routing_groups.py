"""The whole agent with nexthop groups against a real BIRD: a failover rewrites groups, not routes.

Same two sites as test_routing_failover (real Runtime, NetlinkActuator, ExaBgpAdapter with
a real exabgp; BIRD 2 at site B), with `netlink.nexthop_groups: true`. Every prefix both
tunnels have (the static one, and what BIRD announces over both sessions) routes via the
slot groups: moving traffic is a group write, and no route is added or deleted.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agent.adapters.netlink import DEFAULT_ROUTE_PROTOCOL
from tests.integration.sites import (
    REMOTE4,
    REMOTE6,
    STATIC,
    agent_config,
    kernel_routes,
    running_agent,
    site_b_bird,
    two_sites,
)
from tests.integration.test_routing_failover import NORMAL, until
from tests.support.netns_links import route_monitor, routes
from tests.support.system import require_tool, run

pytestmark = [pytest.mark.root, pytest.mark.services]

PROTO = str(DEFAULT_ROUTE_PROTOCOL)
# tun1's SA is gone: both slots hold tun2 (the standby slot has nobody of its own).
FAILED_OVER = sorted((p, "vti2", m) for p in (REMOTE4, REMOTE6, STATIC) for m in (10, 100))


def groups_in_use(ns: str) -> set[int]:
    got = routes(ns, "proto", PROTO) + routes(ns, "proto", PROTO, family="-6")
    return {int(r["nhid"]) for r in got}


def our_nexthops(ns: str) -> list[dict[str, object]]:
    out = run("ip", "-n", ns, "-j", "nexthop", "show", "proto", PROTO).stdout
    found: list[dict[str, object]] = json.loads(out) if out.strip() else []
    return found


async def test_a_failover_and_failback_move_groups_and_no_route(tmp_path: Path) -> None:
    require_tool("bird")
    with two_sites("vtfg") as sites, site_b_bird(sites, tmp_path / "bird"):
        a = sites.a
        cfg = agent_config(sites, tmp_path / "exabgp", hold_down_s=3.0, nexthop_groups=True)
        async with running_agent(sites, cfg) as agent:
            await until("routes of both tunnels", lambda: kernel_routes(a) == NORMAL, 40)
            base = DEFAULT_ROUTE_PROTOCOL << 20
            # IPv4 slots 1-2, IPv6 slots 129-130, every route on one of them.
            assert groups_in_use(a) == {base + 1, base + 2, base + 129, base + 130}
            with route_monitor(a) as mon:
                agent.sa.down("tun1")
                await until("failover", lambda: kernel_routes(a) == FAILED_OVER, 8)
                seen = await asyncio.to_thread(mon.stop)
            assert [line for line in seen if line.startswith("Deleted")] == []
            assert groups_in_use(a) == {base + 1, base + 2, base + 129, base + 130}
            agent.sa.up("tun1")
            await until("failback", lambda: kernel_routes(a) == NORMAL, 20)
        # A restart with nothing changed writes no route and no nexthop.
        before = our_nexthops(a)
        with route_monitor(a) as mon:
            async with running_agent(sites, cfg) as agent:
                await until(
                    "routes re-learned",
                    lambda: all(
                        {REMOTE4, REMOTE6} <= agent.runtime.state.learned.get(t, frozenset())
                        for t in ("tun1", "tun2")
                    ),
                    40,
                )
                changes = await asyncio.to_thread(mon.stop)
        assert changes == []
        assert our_nexthops(a) == before
