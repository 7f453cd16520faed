"""Supervise mode against a real BIRD2: the adapter starts ExaBGP, BIRD's RIB shows the result.

Two veth pairs stand in for two tunnels; one BGP session runs over each. Assertions read
BIRD's `show route all` (what the far side really received) and the events the adapter
emitted (what the core would see).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from agent.core.actions import AnnouncePrefix, WithdrawPrefix
from agent.core.events import BgpNeighborDown, BgpNeighborUp, BgpRoutesChanged
from tests.bgp.conftest import REMOTE4, REMOTE6, Topology, agent_config, supervised, until
from tests.support.bird import Bird

pytestmark = [pytest.mark.root, pytest.mark.services]

SITE = "10.1.0.0/24"
N1, N2 = Topology.peer(1), Topology.peer(2)


def active(neighbor: str, tunnel: str, prefix: str = SITE) -> AnnouncePrefix:
    return AnnouncePrefix(neighbor, tunnel, prefix, med=100)


def standby(neighbor: str, tunnel: str, prefix: str = SITE) -> AnnouncePrefix:
    return AnnouncePrefix(
        neighbor, tunnel, prefix, med=200, as_path_prepend=2, communities=("65001:666", "65001:42")
    )


async def test_announce_change_attributes_and_withdraw(
    topo: Topology, bird_peer: Bird, tmp_path: Path
) -> None:
    async with supervised(topo, tmp_path / "exabgp") as r:
        await r.adapter.apply([active(N1, "tun1"), standby(N2, "tun2")])
        await until(
            bird_peer,
            "both paths",
            lambda: bool(bird_peer.route(SITE, "tun1") and bird_peer.route(SITE, "tun2")),
        )
        one, two = bird_peer.route(SITE, "tun1"), bird_peer.route(SITE, "tun2")
        assert one is not None
        assert two is not None
        assert (one.med, one.as_path, one.communities) == (100, (65001,), ())
        assert one.next_hop == Topology.local(1)  # next-hop self: our end of tunnel 1
        assert (two.med, two.as_path) == (200, (65001, 65001, 65001))
        assert set(two.communities) == {"65001:666", "65001:42"}
        assert two.next_hop == Topology.local(2)
        assert one.primary  # BIRD prefers the unprepended path

        # Failover: the roles swap, as the core asks with new attributes.
        await r.adapter.apply([active(N2, "tun2"), standby(N1, "tun1")])
        await until(
            bird_peer,
            "swapped attributes",
            lambda: (
                (x := bird_peer.route(SITE, "tun2")) is not None
                and x.med == 100
                and (y := bird_peer.route(SITE, "tun1")) is not None
                and y.med == 200
            ),
        )
        two = bird_peer.route(SITE, "tun2")
        assert two is not None
        assert two.as_path == (65001,)
        assert two.primary

        await r.adapter.apply([WithdrawPrefix(N1, "tun1", SITE)])
        await until(bird_peer, "withdrawal", lambda: bird_peer.route(SITE, "tun1") is None)
        assert bird_peer.route(SITE, "tun2") is not None


async def test_learned_routes_and_neighbor_state_become_events(
    topo: Topology, bird_peer: Bird, tmp_path: Path
) -> None:
    async with supervised(topo, tmp_path / "exabgp") as r:
        await r.adapter.apply([active(N1, "tun1")])
        for tunnel in ("tun1", "tun2"):
            await r.wait_event(lambda e, t=tunnel: isinstance(e, BgpNeighborUp) and e.tunnel == t)
            for prefix in (REMOTE4, REMOTE6):
                await r.wait_event(
                    lambda e, t=tunnel, p=prefix: (
                        isinstance(e, BgpRoutesChanged) and e.tunnel == t and p in e.announced
                    )
                )

        # BIRD stops announcing site B's IPv4 prefix: both tunnels report the withdrawal.
        bird_peer.birdc("disable", "st4")
        for tunnel in ("tun1", "tun2"):
            await r.wait_event(
                lambda e, t=tunnel: (
                    isinstance(e, BgpRoutesChanged) and e.tunnel == t and REMOTE4 in e.withdrawn
                )
            )

        # The session over tunnel 1 goes down and comes back; our announcement returns.
        r.events.clear()
        bird_peer.birdc("disable", "tun1")
        await r.wait_event(lambda e: isinstance(e, BgpNeighborDown) and e.tunnel == "tun1")
        assert bird_peer.route(SITE, "tun1") is None
        bird_peer.birdc("enable", "tun1")
        up = await r.wait_event(lambda e: isinstance(e, BgpNeighborUp) and e.tunnel == "tun1")
        await asyncio.to_thread(
            bird_peer.wait_for,
            "re-announcement",
            lambda: bird_peer.route(SITE, "tun1") is not None,
            30,
            0.02,
        )
        # Loose: up is when the event was seen (50 ms polling), BIRD is polled every 20 ms.
        took = time.monotonic() - up.at
        print(f"\nsession up -> our prefix at the peer <= {took:.2f}s")
        assert took < 2.0
        assert not any(isinstance(e, BgpNeighborDown) and e.tunnel == "tun2" for e in r.events)


def _sample_outage(bird: Bird, protocols: tuple[str, ...], timeout: float) -> tuple[int, int]:
    """Poll BIRD through one ExaBGP restart: (samples without our prefix, samples in all).

    Ends once every protocol is back up with its graceful restart over (fresh routes).
    """
    missing = samples = 0
    deadline = time.monotonic() + timeout
    seen_restart = False
    while True:
        samples += 1
        if any(bird.route(SITE, p) is None for p in protocols):
            missing += 1
        restarting = [p for p in protocols if bird.graceful_restart_active(p)]
        seen_restart = seen_restart or bool(restarting)
        if (
            seen_restart
            and not restarting
            and all(bird.protocol_state(p) == "Established" for p in protocols)
        ):
            return missing, samples
        if time.monotonic() > deadline:
            raise AssertionError(
                f"graceful restart not over in {timeout}s\n"
                + bird.birdc("show", "protocols", "all")
            )
        time.sleep(0.02)


async def test_exabgp_killed_peer_keeps_our_routes_stale_then_fresh(
    topo: Topology, bird_peer: Bird, tmp_path: Path
) -> None:
    async with supervised(topo, tmp_path / "exabgp") as r:
        await r.adapter.apply([active(N1, "tun1"), standby(N2, "tun2")])
        await until(
            bird_peer,
            "announcements",
            lambda: bool(bird_peer.route(SITE, "tun1") and bird_peer.route(SITE, "tun2")),
        )
        await r.wait_event(lambda e: isinstance(e, BgpNeighborUp) and e.tunnel == "tun2")
        pid = r.adapter.exabgp_pid
        assert pid is not None
        r.events.clear()
        killed = time.monotonic()
        os.killpg(pid, signal.SIGKILL)  # no goodbye: BIRD sees the TCP session die
        # BIRD, a graceful-restart helper by default, keeps both paths while exabgp is away
        # and until the new one's End-of-RIB, which follows our announcements.
        missing, samples = await asyncio.to_thread(_sample_outage, bird_peer, ("tun1", "tun2"), 40)
        fresh = time.monotonic()
        up = await r.wait_event(lambda e: isinstance(e, BgpNeighborUp) and e.tunnel == "tun1")
        print(
            f"\nexabgp killed -> session up {up.at - killed:.2f}s, "
            f"up -> routes fresh <= {fresh - up.at:.2f}s; "
            f"prefix missing in {missing} of {samples} samples"
        )
        assert missing == 0
        assert fresh - up.at < 2.0
        two = bird_peer.route(SITE, "tun2")
        assert two is not None
        assert two.as_path == (65001, 65001, 65001)
        assert r.adapter.exabgp_pid not in (None, pid)


async def test_without_graceful_restart_the_peer_drops_routes_until_exabgp_is_back(
    topo: Topology, bird_peer: Bird, tmp_path: Path
) -> None:
    cfg = agent_config(topo, tmp_path / "exabgp", graceful_restart_s=0)
    async with supervised(topo, tmp_path / "exabgp", cfg) as r:
        await r.adapter.apply([active(N1, "tun1"), standby(N2, "tun2")])
        await until(
            bird_peer,
            "announcements",
            lambda: bool(bird_peer.route(SITE, "tun1") and bird_peer.route(SITE, "tun2")),
        )
        await r.wait_event(lambda e: isinstance(e, BgpNeighborUp) and e.tunnel == "tun2")
        pid = r.adapter.exabgp_pid
        assert pid is not None
        r.events.clear()
        os.killpg(pid, signal.SIGKILL)
        await r.wait_event(lambda e: isinstance(e, BgpNeighborDown) and e.tunnel == "tun1")
        await until(bird_peer, "routes gone", lambda: bird_peer.route(SITE, "tun1") is None, 15)
        # A new ExaBGP starts with what the core asked for.
        await r.wait_event(lambda e: isinstance(e, BgpNeighborUp) and e.tunnel == "tun1", 40)
        await until(
            bird_peer,
            "announcements back",
            lambda: bool(
                (x := bird_peer.route(SITE, "tun2"))
                and x.as_path == (65001, 65001, 65001)
                and bird_peer.route(SITE, "tun1")
            ),
            40,
        )
        assert r.adapter.exabgp_pid not in (None, pid)
