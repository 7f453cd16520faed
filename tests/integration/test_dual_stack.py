"""Dual stack over one tunnel: IPv6 rides the IPv4 BGP session (MP-BGP) with the tunnel's
inner6 address as next hop, against a real BIRD2.

Site A announces 10.1.0.0/24 and 2001:db8:a::/48 over the IPv4 sessions of vti1 and vti2;
BIRD announces 10.2.0.0/24 and 2001:db8:b::/48 back. An SA-down of tun1 moves both
families, in site A's kernel and at BIRD.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.sites import (
    SITE,
    SITE6,
    agent_config,
    kernel_routes,
    running_agent,
    site_b_bird,
    two_sites,
)
from tests.integration.test_routing_failover import FAILED_OVER, NORMAL, established, until
from tests.support.bird import Bird
from tests.support.system import require_tool

pytestmark = [pytest.mark.root, pytest.mark.services]


def paths(bird: Bird, prefix: str) -> dict[str, tuple[int | None, int, str]]:
    """BIRD's paths for one of our prefixes: session -> (MED, AS path length, next hop)."""
    return {
        r.protocol: (r.med, len(r.as_path), (r.next_hop or "").split()[0])
        for r in bird.routes()
        if r.prefix == prefix
    }


def best(bird: Bird, prefix: str) -> str | None:
    return next((r.protocol for r in bird.routes() if r.prefix == prefix and r.primary), None)


async def test_ipv6_rides_the_ipv4_session_and_fails_over_with_it(tmp_path: Path) -> None:
    require_tool("bird")
    with two_sites("vtds") as sites, site_b_bird(sites, tmp_path / "bird") as bird:
        cfg = agent_config(sites, tmp_path / "exabgp", hold_down_s=3.0, dual_stack=True)
        async with running_agent(sites, cfg) as agent:
            await until(
                "both sessions", lambda: all(established(bird, s) for s in ("tun1", "tun2")), 40
            )
            await until("both families routed", lambda: kernel_routes(sites.a) == NORMAL, 30)
            want6 = {
                "tun1": (100, 1, "2001:db8:ff:1::1"),
                "tun2": (200, 3, "2001:db8:ff:2::1"),
            }
            await until("our IPv6 prefix at BIRD", lambda: paths(bird, SITE6) == want6, 20)
            assert paths(bird, SITE) == {
                "tun1": (100, 1, "169.254.1.1"),
                "tun2": (200, 3, "169.254.2.1"),
            }
            assert best(bird, SITE6) == "tun1"

            agent.sa.down("tun1")
            await until("failover in the kernel", lambda: kernel_routes(sites.a) == FAILED_OVER, 8)
            # Both families leave tun1's session and take tun2's, MED one lower (takeover).
            await until(
                "both families via tun2 at BIRD",
                lambda: best(bird, SITE6) == "tun2" and best(bird, SITE) == "tun2",
                10,
            )
            assert paths(bird, SITE6) == {"tun2": (99, 1, "2001:db8:ff:2::1")}

            agent.sa.up("tun1")
            await until("failback", lambda: kernel_routes(sites.a) == NORMAL, 30)
            await until("IPv6 back on tun1", lambda: paths(bird, SITE6) == want6, 20)
