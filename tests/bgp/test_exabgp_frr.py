"""The same announcements reach FRR bgpd intact: nothing is tuned to BIRD."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agent.adapters.exabgp import ExaBgpAdapter
from agent.core.actions import AnnouncePrefix, WithdrawPrefix
from agent.core.events import BgpNeighborUp, BgpRoutesChanged, Event
from tests.bgp.conftest import Topology, agent_config
from tests.support.frr import Frr, frr

pytestmark = [pytest.mark.root, pytest.mark.services]

SITE = "10.1.0.0/24"

BGPD_CONF = (
    """
hostname site-b
router bgp 65002
 bgp router-id 10.2.0.2
 no bgp ebgp-requires-policy
 no bgp network import-check
 timers bgp 3 9
"""
    + "".join(
        f" neighbor {Topology.local(n)} remote-as 65001\n"
        f" neighbor {Topology.local(n)} timers connect 2\n"
        for n in (1, 2)
    )
    + """ address-family ipv4 unicast
  network 10.2.0.0/24
 exit-address-family
"""
)


async def wait_paths(
    f: Frr, prefix: str, count: int, timeout: float = 30
) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            paths = await asyncio.to_thread(f.paths, prefix)
        except RuntimeError as exc:
            # bgpd can refuse vtysh for a moment right after it created its socket.
            paths = [{"vtysh": str(exc)}]
        if len(paths) == count and "vtysh" not in paths[0]:
            return paths
        if time.monotonic() > deadline:
            raise AssertionError(f"{prefix}: {len(paths)} paths, wanted {count}: {paths}")
        await asyncio.sleep(0.3)


async def test_frr_receives_attributes_and_withdrawal(topo: Topology, tmp_path: Path) -> None:
    with frr(topo.ns_b, BGPD_CONF) as f:
        adapter = ExaBgpAdapter(agent_config(topo, tmp_path / "exabgp"))
        events: list[Event] = []
        tasks = [
            asyncio.create_task(adapter.run()),
            asyncio.create_task(adapter.run(events.append)),
        ]
        try:
            await adapter.apply(
                [
                    AnnouncePrefix(Topology.peer(1), "tun1", SITE, med=100),
                    AnnouncePrefix(
                        Topology.peer(2),
                        "tun2",
                        SITE,
                        med=200,
                        as_path_prepend=2,
                        communities=("65001:666",),
                    ),
                ]
            )
            paths = await wait_paths(f, SITE, 2)
            by_peer = {p["peer"]["peerId"]: p for p in paths}  # type: ignore[index]
            one, two = by_peer[Topology.local(1)], by_peer[Topology.local(2)]
            assert one["metric"] == 100
            assert one["aspath"]["string"] == "65001"  # type: ignore[index]
            assert two["metric"] == 200
            assert two["aspath"]["string"] == "65001 65001 65001"  # type: ignore[index]
            assert two["community"]["string"] == "65001:666"  # type: ignore[index]
            # bgpd picks a best path once zebra has resolved the next hops.
            deadline = time.monotonic() + 15
            while True:
                best = [p for p in f.paths(SITE) if p.get("bestpath", {}).get("overall")]
                if best or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.3)
            assert [p["peer"]["peerId"] for p in best] == [Topology.local(1)]

            await adapter.apply([WithdrawPrefix(Topology.peer(2), "tun2", SITE)])
            paths = await wait_paths(f, SITE, 1)
            assert paths[0]["peer"]["peerId"] == Topology.local(1)  # type: ignore[index]
            assert any(isinstance(e, BgpNeighborUp) and e.tunnel == "tun2" for e in events)
            deadline = time.monotonic() + 20
            while not any(
                isinstance(e, BgpRoutesChanged) and "10.2.0.0/24" in e.announced for e in events
            ):
                assert time.monotonic() < deadline, f"nothing learned from FRR: {events}"
                await asyncio.sleep(0.2)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await adapter.close(cleanup=False)
