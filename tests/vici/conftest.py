"""Two sites, each a namespace with its own charon, joined by two veth underlays."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pytest

from agent.adapters.strongswan import ViciSource
from agent.config import Tunnel, ViciSettings
from agent.core.events import Event
from tests.support.charon import Charon, IpsecTunnel, swanctl_conf, two_sites
from tests.support.system import netns

# tun1 is found by its swanctl names, tun2 (named differently in swanctl) by its if_id.
SITE_A = [
    IpsecTunnel("tun1", "192.0.2.1", "192.0.2.2", "a-tun1", "b-tun1", "psk-one-0123456789",
                "10.0.1.1/32", "10.0.2.1/32", mark=1),
    IpsecTunnel("isp2", "198.51.100.1", "198.51.100.2", "a-tun2", "b-tun2", "psk-two-0123456789",
                "10.1.1.1/32", "10.1.2.1/32", if_id=7),
]  # fmt: skip
SITE_B = [t.far_side() for t in SITE_A]

TUNNELS = (
    Tunnel.model_validate(
        {
            "name": "tun1",
            "interface": "vti1",
            "kind": "vti",
            "underlay": {"local": "192.0.2.1", "remote": "192.0.2.2"},
            "key": 1,
            "ike": {"connection": "tun1", "child": "tun1"},
            "inner": {"local": "169.254.1.1/30", "peer": "169.254.1.2"},
            "sources": ["vici"],
        }
    ),
    Tunnel.model_validate(
        {
            "name": "tun2",
            "interface": "xfrm2",
            "kind": "xfrm",
            "if_id": 7,
            "underlay": {"local": "198.51.100.1", "remote": "198.51.100.2"},
            "ike": {"connection": "tun2", "child": "tun2"},
            "inner": {"local": "169.254.2.1/30", "peer": "169.254.2.2"},
            "role": "backup",
            "sources": ["vici"],
        }
    ),
)


@dataclass
class Sites:
    ns_a: str
    ns_b: str
    a: Charon
    b: Charon

    def load(self) -> None:
        # The responder first: an initiator that meets no config gives up for good.
        self.b.load(swanctl_conf(SITE_B))
        self.a.load(swanctl_conf(SITE_A))


@pytest.fixture
def sites() -> Iterator[Sites]:
    with (
        netns("vtfa") as ns_a,
        netns("vtfb") as ns_b,
        two_sites(ns_a, ns_b, SITE_A, install_routes=True) as (a, b),
    ):
        yield Sites(ns_a, ns_b, a, b)


class Recorder:
    """An emit() that keeps every event and lets a test wait for the next one it wants."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._cursor = 0
        self._arrived = asyncio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._arrived.set()

    async def next(self, want: Callable[[Event], bool], timeout: float = 10.0) -> Event:
        """The first event after the last one returned that `want` accepts."""
        async with asyncio.timeout(timeout):
            while True:
                for i in range(self._cursor, len(self.events)):
                    if want(self.events[i]):
                        self._cursor = i + 1
                        return self.events[i]
                self._arrived.clear()
                await self._arrived.wait()

    def since(self, start: int) -> list[Event]:
        return self.events[start:]


@contextlib.asynccontextmanager
async def running(source: ViciSource) -> AsyncIterator[Recorder]:
    rec = Recorder()
    task = asyncio.create_task(source.run(rec), name="vici-under-test")
    try:
        yield rec
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def vici_source(uri: str, poll_interval_s: float = 0.2) -> ViciSource:
    return ViciSource(TUNNELS, ViciSettings(socket=uri, poll_interval_s=poll_interval_s))
