"""The whole agent against a real BIRD: an SA-down event moves kernel routes and BGP at once.

Site A runs the real Runtime and core with the real LinkSource, NetlinkActuator and
ExaBgpAdapter (supervising a real exabgp in A's namespace); site B runs BIRD2 over two
veth "tunnels". The trigger is a ChildSaDown/ChildSaUp from a scripted SA source. Every
assertion reads the world: `ip -j route` in A, `birdc show route all` in B.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.core.health import Health
from tests.integration.sites import (
    HOLD_TIME_S,
    REMOTE4,
    REMOTE6,
    SITE,
    STATIC,
    agent_config,
    foreign_routes,
    kernel_routes,
    running_agent,
    site_b_bird,
    two_sites,
)
from tests.support.bird import Bird
from tests.support.bird import bird as run_bird
from tests.support.netns_links import route_monitor, routes
from tests.support.system import require_tool, run

pytestmark = [pytest.mark.root, pytest.mark.services]

HOLD_DOWN_S = 3.0
ACTIVE = (100, (65001,))
# A backup carrying for the primary announces one MED lower, to beat the primary's stale
# route wherever the withdrawal over the dead tunnel cannot arrive.
TAKEOVER = (99, (65001,))
STANDBY = (200, (65001, 65001, 65001))
FOREIGN = [(REMOTE4, "vti2", 500)]
# A routing daemon of site A's own (BIRD, protocol 12) with routes beside ours: one of
# our prefixes at another metric, one at our very metric in another table, one of its own.
SITE_A_BIRD = f"""
ipv4 table t100;
protocol static own {{ ipv4; route {STATIC} via "vti2"; route 10.77.0.0/24 via "vti1"; }}
protocol static own100 {{ ipv4 {{ table t100; }}; route {REMOTE4} via "vti2"; }}
protocol kernel kmain {{ ipv4 {{ export all; }}; metric 300; }}
protocol kernel k100 {{ ipv4 {{ table t100; export all; }}; kernel table 100; metric 10; }}
"""
BIRDS_OWN = sorted(
    [
        (STATIC, "main", 300, "vti2"),
        ("10.77.0.0/24", "main", 300, "vti1"),
        (REMOTE4, "100", 10, "vti2"),
    ]
)


def birds_own(ns: str) -> list[tuple[object, ...]]:
    """Site A's BIRD's routes in the kernel, in every table."""
    got = routes(ns, "proto", "bird")
    return sorted((r["dst"], r.get("table", "main"), r.get("metric", 0), r.get("dev")) for r in got)


# Both tunnels healthy: tun1 carries (metric 10), tun2 stands by (100); each learned
# prefix goes via the tunnel that taught it, the static one via both.
NORMAL = sorted(
    [
        (REMOTE4, "vti1", 10),
        (REMOTE4, "vti2", 100),
        (REMOTE6, "vti1", 10),
        (REMOTE6, "vti2", 100),
        (STATIC, "vti1", 10),
        (STATIC, "vti2", 100),
    ]
)
# tun1's SA is gone: tun2 carries everything at metric 10; nothing is left via vti1.
FAILED_OVER = sorted([(REMOTE4, "vti2", 10), (REMOTE6, "vti2", 10), (STATIC, "vti2", 10)])


async def until(what: str, check: Callable[[], bool], timeout: float) -> float:
    """Poll `check` (in a thread: it runs ip/birdc) until true; returns the time it took."""
    start = time.monotonic()
    while not await asyncio.to_thread(check):
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def announced(bird: Bird) -> dict[str, tuple[int | None, tuple[int, ...]]]:
    """What BIRD holds for site A's prefix, per session: (MED, AS path)."""
    return {r.protocol: (r.med, r.as_path) for r in bird.routes() if r.prefix == SITE}


def preferred(bird: Bird) -> str | None:
    return next((r.protocol for r in bird.routes() if r.prefix == SITE and r.primary), None)


def established(bird: Bird, session: str) -> bool:
    return bird.protocol_state(session) == "Established"


async def test_sa_down_fails_over_in_kernel_and_bgp_and_back_after_hold_down(
    tmp_path: Path,
) -> None:
    require_tool("bird")
    with (
        two_sites() as sites,
        site_b_bird(sites, tmp_path / "bird") as bird,
        run_bird(sites.a, SITE_A_BIRD, tmp_path / "bird-a", router_id="10.1.0.1"),
    ):
        a = sites.a
        # Someone else's route to a prefix the agent also routes (proto boot): never touched.
        run("ip", "-n", a, "route", "add", REMOTE4, "dev", "vti2", "metric", "500")
        await until("site A's BIRD's routes", lambda: birds_own(a) == BIRDS_OWN, 10)
        cfg = agent_config(sites, tmp_path / "exabgp", hold_down_s=HOLD_DOWN_S)
        async with running_agent(sites, cfg) as agent:
            await until(
                "both sessions", lambda: all(established(bird, s) for s in ("tun1", "tun2")), 40
            )
            await until("routes of both tunnels", lambda: kernel_routes(a) == NORMAL, 30)
            await until(
                "site prefix at BIRD",
                lambda: announced(bird) == {"tun1": ACTIVE, "tun2": STANDBY},
                20,
            )
            assert await asyncio.to_thread(preferred, bird) == "tun1"

            # tun1's SA dies. Its BGP session is still up (it would take the 9 s hold
            # timer to notice over a real tunnel): the agent must not wait for it.
            with route_monitor(a) as mon:
                down_at = agent.sa.down("tun1")
                await until("failover in the kernel", lambda: kernel_routes(a) == FAILED_OVER, 8)
                moved_after = time.monotonic() - down_at
                seen = await asyncio.to_thread(mon.stop)
            # Make-before-break, in both families: each carrier route (metric 10) moves by
            # its new version via vti2 going in before the old one via vti1 goes.
            for prefix in (REMOTE4, REMOTE6, STATIC):
                at = [f"{line} " for line in seen]
                new = [i for i, t in enumerate(at) if t.startswith(f"{prefix} dev vti2 ")]
                old = [i for i, t in enumerate(at) if t.startswith(f"Deleted {prefix} dev vti1 ")]
                carrier = [i for i in old if " metric 10 " in at[i]]
                assert new, (prefix, seen)
                assert all(min(new) < i for i in carrier), (prefix, seen)
            # Besides the old carriers, only the standby routes (metric 100) are deleted.
            standby = [
                line.split()[1]
                for line in seen
                if line.startswith("Deleted") and " metric 10 " not in f"{line} "
            ]
            assert sorted(standby) == sorted([REMOTE4, REMOTE6, STATIC])
            await until(
                "withdrawal on tun1",
                lambda: announced(bird) == {"tun2": TAKEOVER},
                8,
            )
            bgp_after = time.monotonic() - down_at
            # Nothing here came from a lost session: both are still up on both sides.
            assert await asyncio.to_thread(established, bird, "tun1")
            assert agent.runtime.state.health["tun1"].bgp_up
            assert REMOTE4 in agent.runtime.state.learned["tun1"]
            assert moved_after < HOLD_TIME_S
            assert bgp_after < HOLD_TIME_S
            assert await asyncio.to_thread(preferred, bird) == "tun2"
            assert foreign_routes(a) == FOREIGN
            assert birds_own(a) == BIRDS_OWN

            # The SA comes back: tun1 is UP at once but gets no route, not even a standby
            # one, until it has been healthy for the preempt hold-down; then it carries.
            up_at = agent.sa.up("tun1")
            await until("tun1 UP", lambda: agent.runtime.state.health["tun1"].state is Health.UP, 5)
            assert agent.runtime.state.carriers == ("tun2",)
            assert kernel_routes(a) == FAILED_OVER
            await until("failback", lambda: kernel_routes(a) == NORMAL, HOLD_DOWN_S + 10)
            assert time.monotonic() - up_at >= HOLD_DOWN_S
            await until(
                "announcements restored",
                lambda: announced(bird) == {"tun1": ACTIVE, "tun2": STANDBY},
                8,
            )
            assert await asyncio.to_thread(preferred, bird) == "tun1"
            assert foreign_routes(a) == FOREIGN
            assert birds_own(a) == BIRDS_OWN

        # A restart with nothing changed writes nothing: not even while the new ExaBGP
        # re-establishes both sessions and re-learns site B's prefixes.
        with route_monitor(a) as mon:
            async with running_agent(sites, cfg) as agent:
                await until(
                    "sessions and announcements after restart",
                    lambda: announced(bird) == {"tun1": ACTIVE, "tun2": STANDBY},
                    40,
                )
                await until(
                    "routes re-learned",
                    lambda: all(
                        {REMOTE4, REMOTE6} <= agent.runtime.state.learned.get(t, frozenset())
                        for t in ("tun1", "tun2")
                    ),
                    20,
                )
                await asyncio.sleep(0.5)
                changes = await asyncio.to_thread(mon.stop)
                assert changes == []
                assert kernel_routes(a) == NORMAL

                # Site B stops announcing its IPv4 prefix: it leaves A's FIB on both tunnels.
                await asyncio.to_thread(bird.birdc, "disable", "st4")
                await until(
                    "withdrawn prefix gone",
                    lambda: (
                        kernel_routes(a)
                        == sorted(
                            [
                                (REMOTE6, "vti1", 10),
                                (REMOTE6, "vti2", 100),
                                (STATIC, "vti1", 10),
                                (STATIC, "vti2", 100),
                            ]
                        )
                    ),
                    10,
                )
                # The session over tun1 ends: what it taught leaves; the static route stays.
                await asyncio.to_thread(bird.birdc, "disable", "tun1")
                await until(
                    "tun1's learned routes gone",
                    lambda: (
                        kernel_routes(a)
                        == sorted(
                            [(REMOTE6, "vti2", 100), (STATIC, "vti1", 10), (STATIC, "vti2", 100)]
                        )
                    ),
                    10,
                )
                assert not agent.runtime.state.health["tun1"].bgp_up
                assert foreign_routes(a) == FOREIGN
                assert birds_own(a) == BIRDS_OWN


async def test_prefix_withdrawn_while_the_agent_was_stopped_leaves_after_restart(
    tmp_path: Path,
) -> None:
    require_tool("bird")
    with two_sites() as sites, site_b_bird(sites, tmp_path / "bird") as bird:
        a = sites.a
        cfg = agent_config(sites, tmp_path / "exabgp", hold_down_s=HOLD_DOWN_S)
        async with running_agent(sites, cfg):
            await until("routes of both tunnels", lambda: kernel_routes(a) == NORMAL, 40)
        # While the agent is away, site B stops announcing its IPv4 prefix.
        await asyncio.to_thread(bird.birdc, "disable", "st4")
        async with running_agent(sites, cfg) as agent:
            await until(
                "sessions and announcements after restart",
                lambda: announced(bird) == {"tun1": ACTIVE, "tun2": STANDBY},
                40,
            )
            await until(
                "IPv6 prefix re-learned",
                lambda: all(
                    REMOTE6 in agent.runtime.state.learned.get(t, frozenset())
                    for t in ("tun1", "tun2")
                ),
                20,
            )
            # Give it a full BGP hold time to notice nothing teaches REMOTE4 any more.
            await asyncio.sleep(HOLD_TIME_S + 1)
            assert REMOTE4 not in {p for p, _, _ in kernel_routes(a)}
