"""Two namespaces joined by two veth pairs (stand-ins for two tunnels), a BIRD peer, configs,
and the ExaBGP adapter running in supervise mode inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.adapters.exabgp import ExaBgpAdapter
from agent.config import Config, parse_config
from agent.core.events import Event
from tests.support.bird import Bird, bird, site_b_config
from tests.support.system import netns, require_tool, run

EXABGP = str(Path(sys.executable).with_name("exabgp"))

# Site B's prefixes, announced by the peer to us.
REMOTE4 = "10.2.0.0/24"
REMOTE6 = "2001:db8:b::/48"


@dataclass(frozen=True)
class Topology:
    """ns_a runs ExaBGP (our side), ns_b the peer; tunN is 169.254.N.1 <-> 169.254.N.2."""

    ns_a: str
    ns_b: str

    @staticmethod
    def local(n: int) -> str:
        return f"169.254.{n}.1"

    @staticmethod
    def peer(n: int) -> str:
        return f"169.254.{n}.2"


@contextlib.contextmanager
def topology() -> Iterator[Topology]:
    with netns("bgpa") as ns_a, netns("bgpb") as ns_b:
        for n in (1, 2):
            run(
                "ip",
                "-n",
                ns_a,
                "link",
                "add",
                f"a{n}",
                "type",
                "veth",
                "peer",
                "name",
                f"b{n}",
                "netns",
                ns_b,
            )
            run("ip", "-n", ns_a, "addr", "add", f"{Topology.local(n)}/30", "dev", f"a{n}")
            run("ip", "-n", ns_b, "addr", "add", f"{Topology.peer(n)}/30", "dev", f"b{n}")
            # Site B's IPv6 next hop over the IPv4 session (BIRD needs one to send IPv6).
            run("ip", "-n", ns_a, "addr", "add", f"2001:db8:ff:{n}::1/64", "dev", f"a{n}", "nodad")
            run("ip", "-n", ns_b, "addr", "add", f"2001:db8:ff:{n}::2/64", "dev", f"b{n}", "nodad")
            run("ip", "-n", ns_a, "link", "set", f"a{n}", "up")
            run("ip", "-n", ns_b, "link", "set", f"b{n}", "up")
        yield Topology(ns_a, ns_b)


@pytest.fixture
def topo() -> Iterator[Topology]:
    require_tool("ip")
    with topology() as t:
        yield t


def bird_config() -> str:
    """BIRD (AS 65002) peering with us (AS 65001) on both tunnels, announcing site B."""
    return site_b_config(REMOTE4, REMOTE6, Topology.peer, Topology.local)


@pytest.fixture
def bird_peer(topo: Topology, tmp_path: Path) -> Iterator[Bird]:
    with bird(topo.ns_b, bird_config(), tmp_path / "bird") as b:
        yield b


def agent_config(
    topo: Topology, workdir: Path, mode: str = "supervise", graceful_restart_s: int = 120
) -> Config:
    text = f"""
agent_id: site-a
tunnels:
  - name: tun1
    interface: a1
    key: 1
    underlay: {{local: 192.0.2.1, remote: 192.0.2.2}}
    inner: {{local: {Topology.local(1)}/30, peer: {Topology.peer(1)}}}
    sources: [probe]
  - name: tun2
    interface: a2
    key: 2
    role: backup
    underlay: {{local: 198.51.100.1, remote: 198.51.100.2}}
    inner: {{local: {Topology.local(2)}/30, peer: {Topology.peer(2)}}}
    sources: [probe]
site_prefixes: [10.1.0.0/24, 10.1.1.0/24]
remote_prefixes: {{learned_from_bgp: true}}
bgp:
  local_as: 65001
  peer_as: 65002
  router_id: 10.1.0.1
  graceful_restart_s: {graceful_restart_s}
exabgp:
  mode: {mode}
  executable: ip netns exec {topo.ns_a} {EXABGP}
  workdir: {workdir}
  ack_timeout_s: 5
"""
    return parse_config(text)


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
async def supervised(
    topo: Topology, workdir: Path, cfg: Config | None = None
) -> AsyncIterator[Running]:
    """The adapter with its link (which starts ExaBGP) and its event source running."""
    adapter = ExaBgpAdapter(cfg if cfg is not None else agent_config(topo, workdir))
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
