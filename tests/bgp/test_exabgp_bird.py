"""Supervise mode against a real BIRD2: the adapter starts ExaBGP, BIRD's RIB shows the result.

Two veth pairs stand in for two tunnels; one BGP session runs over each. Assertions read
BIRD's `show route all` (what the far side really received) and the events the adapter
emitted (what the core would see).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.adapters.exabgp import ExaBgpAdapter
from agent.core.actions import AnnouncePrefix, WithdrawPrefix
from agent.core.events import (
    BgpNeighborDown,
    BgpNeighborUp,
    BgpRoutesChanged,
    Event,
)
from tests.bgp.conftest import REMOTE4, REMOTE6, Topology, agent_config
from tests.support.bird import Bird

pytestmark = [pytest.mark.root, pytest.mark.services]

SITE = "10.1.0.0/24"
N1, N2 = Topology.peer(1), Topology.peer(2)


@dataclass
class Running:
    adapter: ExaBgpAdapter
    events: list[Event]

    async def wait_event(self, what: Callable[[Event], bool], timeout: float = 30.0) -> Event:
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events:
                if what(e):
                    return e
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching event in {timeout}s; got {self.events}")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def supervised(topo: Topology, workdir: Path) -> AsyncIterator[Running]:
    adapter = ExaBgpAdapter(agent_config(topo, workdir))
    events: list[Event] = []
    link = asyncio.create_task(adapter.run())
    source = asyncio.create_task(adapter.run(events.append))
    try:
        async with asyncio.timeout(20):
            await adapter.wait_connected()
        yield Running(adapter, events)
    finally:
        source.cancel()
        link.cancel()
        await asyncio.gather(link, source, return_exceptions=True)
        await adapter.close(cleanup=False)


async def until(bird: Bird, what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    await asyncio.to_thread(bird.wait_for, what, check, timeout)


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
                    isinstance(e, BgpRoutesChanged)
                    and e.tunnel == t
                    and REMOTE4 in e.withdrawn
                )
            )

        # The session over tunnel 1 goes down and comes back; our announcement returns.
        r.events.clear()
        bird_peer.birdc("disable", "tun1")
        await r.wait_event(lambda e: isinstance(e, BgpNeighborDown) and e.tunnel == "tun1")
        assert bird_peer.route(SITE, "tun1") is None
        bird_peer.birdc("enable", "tun1")
        await r.wait_event(lambda e: isinstance(e, BgpNeighborUp) and e.tunnel == "tun1")
        await until(bird_peer, "re-announcement", lambda: bird_peer.route(SITE, "tun1") is not None)
        assert not any(isinstance(e, BgpNeighborDown) and e.tunnel == "tun2" for e in r.events)


async def test_exabgp_killed_is_restarted_and_announcements_come_back(
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
        proc = r.adapter._process
        assert proc is not None
        r.events.clear()
        os.killpg(proc.pid, signal.SIGKILL)  # no goodbye: BIRD sees the TCP session die
        await r.wait_event(lambda e: isinstance(e, BgpNeighborDown) and e.tunnel == "tun1")
        await until(bird_peer, "routes gone", lambda: bird_peer.route(SITE, "tun1") is None, 15)
        # A new ExaBGP knows nothing: the adapter replays what the core asked for.
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
        assert r.adapter._process is not None
        assert r.adapter._process.pid != proc.pid
