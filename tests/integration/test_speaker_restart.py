"""kill -9 of the agent's own exabgp: what BIRD taught stays in site A's FIB meanwhile.

The whole agent (runtime, core, netlink, supervised ExaBGP with graceful restart) in site
A's namespace, a real BIRD2 in site B's. BIRD announces 10.2.0.0/24 and 2001:db8:b::/48;
the IPv6 one is learned only (no static route covers it). exabgp dies: its sessions end
with it, the agent restarts it, the new sessions bring BIRD's table and End-of-RIB back.
Not one route may change in between.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from tests.integration.sites import (
    REMOTE6,
    agent_config,
    kernel_routes,
    running_agent,
    site_b_bird,
    two_sites,
)
from tests.integration.test_routing_failover import NORMAL, established, until
from tests.support.netns_links import route_monitor
from tests.support.system import require_tool

pytestmark = [pytest.mark.root, pytest.mark.services]


async def test_learned_routes_ride_out_an_exabgp_restart(tmp_path: Path) -> None:
    require_tool("bird")
    with two_sites("vtsr") as sites, site_b_bird(sites, tmp_path / "bird") as bird:
        workdir = tmp_path / "exabgp"
        cfg = agent_config(sites, workdir)
        async with running_agent(sites, cfg):
            await until(
                "both sessions", lambda: all(established(bird, s) for s in ("tun1", "tun2")), 40
            )
            await until("routes of both tunnels", lambda: kernel_routes(sites.a) == NORMAL, 30)
            assert any(r[0] == REMOTE6 for r in NORMAL)
            before = {s: bird.birdc("show", "protocols", s) for s in ("tun1", "tun2")}
            with route_monitor(sites.a) as mon:
                pid = int((workdir / "exabgp.pid").read_text().split()[0])
                os.kill(pid, signal.SIGKILL)
                # New sessions (BIRD's protocol lines change), then BIRD's table again.
                await until(
                    "new sessions",
                    lambda: all(
                        established(bird, s) and bird.birdc("show", "protocols", s) != before[s]
                        for s in ("tun1", "tun2")
                    ),
                    60,
                )
                # Anything late (a sweep, a stale route dropped) would show by now.
                await asyncio.sleep(3)
                changes = mon.stop()
            assert changes == [], "\n".join(changes)
            assert kernel_routes(sites.a) == NORMAL
