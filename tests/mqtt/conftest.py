"""Brokers (plain, password, TLS), a separate subscriber, and the real core to drive."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from agent.adapters.mqtt import MqttPublisher
from agent.config import Config, MqttSettings, parse_config
from agent.core import engine
from agent.core.actions import Action
from agent.core.events import ChildSaDown, ChildSaUp, Event, ProbeSucceeded
from tests.support.mosquitto import Broker, Certs, make_certs, mosquitto

AGENT = "site-a"
PREFIX = "vti-failover"
BASE = f"{PREFIX}/{AGENT}"

CONFIG = f"""
agent_id: {AGENT}
tunnels:
  - name: tun1
    interface: vti1
    key: 1
    underlay: {{local: 192.0.2.1, remote: 192.0.2.2}}
    ike: {{connection: tun1, child: tun1}}
    inner: {{local: 169.254.1.1/30, peer: 169.254.1.2}}
    role: primary
    sources: [vici, probe]
  - name: tun2
    interface: vti2
    key: 2
    underlay: {{local: 198.51.100.1, remote: 198.51.100.2}}
    ike: {{connection: tun2, child: tun2}}
    inner: {{local: 169.254.2.1/30, peer: 169.254.2.2}}
    role: backup
    sources: [vici, probe]
remote_prefixes: {{static: [10.2.0.0/24]}}
policy:
  rise: 2
  preempt: false
  link_control: none
"""


def base_config() -> Config:
    return parse_config(CONFIG)


def with_mqtt(cfg: Config, settings: MqttSettings) -> Config:
    return cfg.model_copy(update={"mqtt": settings})


@pytest.fixture
def plain_broker(tmp_path: Path) -> Iterator[Broker]:
    with mosquitto(tmp_path / "plain") as broker:
        yield broker


@pytest.fixture
def durable_broker(tmp_path: Path) -> Iterator[Broker]:
    """Survives its own restart with sessions intact, so an observer misses nothing."""
    with mosquitto(tmp_path / "durable", persistent=True) as broker:
        yield broker


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[Broker]:
    with mosquitto(tmp_path / "auth", users={AGENT: "right-secret", "ops": "ops-secret"}) as b:
        yield b


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tls_broker(tmp_path: Path, certs: Certs) -> Iterator[Broker]:
    with mosquitto(tmp_path / "tls", certs=certs) as broker:
        yield broker


@dataclass
class Received:
    topic: str
    body: dict[str, Any]
    retain: bool


@dataclass
class Subscriber:
    """An independent MQTT client that records what the broker delivers."""

    client: aiomqtt.Client
    got: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def on(self, topic: str) -> list[Received]:
        return [r for r in self.got if r.topic == topic]

    async def wait_for(
        self, want: Any, timeout: float = 10.0, what: str = "a message"
    ) -> list[Received]:
        """Wait until want(self.got) is truthy; return the messages seen so far."""
        try:
            async with asyncio.timeout(timeout):
                while not want(self.got):
                    self.arrived.clear()
                    await self.arrived.wait()
        except TimeoutError:
            seen = "\n".join(f"  {r.topic} {r.body}" for r in self.got)
            raise AssertionError(f"timed out waiting for {what}; got:\n{seen}") from None
        return self.got


async def _collect(sub: Subscriber) -> None:
    async for msg in sub.client.messages:
        raw = msg.payload
        assert isinstance(raw, bytes | bytearray)
        sub.got.append(Received(str(msg.topic), json.loads(raw), bool(msg.retain)))
        sub.arrived.set()


@contextlib.asynccontextmanager
async def subscriber(
    broker: Broker,
    topic: str = f"{BASE}/#",
    *,
    username: str | None = None,
    password: str | None = None,
    tls_context: ssl.SSLContext | None = None,
    session: str | None = None,
) -> AsyncIterator[Subscriber]:
    """With `session`, a persistent session: reconnecting collects what was queued meanwhile."""
    client = aiomqtt.Client(
        broker.host,
        broker.port,
        username=username,
        password=password,
        tls_context=tls_context,
        identifier=session or f"observer-{time.monotonic_ns()}",
        clean_session=session is None,
    )
    async with client:
        await client.subscribe(topic, qos=1)
        sub = Subscriber(client)
        task = asyncio.create_task(_collect(sub))
        try:
            yield sub
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task


@contextlib.asynccontextmanager
async def running(publisher: MqttPublisher) -> AsyncIterator[MqttPublisher]:
    """The publisher's connection loop as the runtime runs it, then its close()."""
    task = asyncio.create_task(publisher.run(), name="actuator:mqtt")
    try:
        yield publisher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await publisher.close(cleanup=False)


class Core:
    """The real pure core, stepped with real monotonic time; its actions go to the publisher."""

    def __init__(self, cfg: Config, publisher: MqttPublisher) -> None:
        self.cfg = cfg
        self.publisher = publisher
        self.state = engine.initial_state(cfg, time.monotonic())
        self.apply_latencies: list[float] = []
        self.alerts: list[str] = []

    async def feed(self, events: Sequence[Event]) -> list[Action]:
        out: list[Action] = []
        for event in events:
            now = time.monotonic()
            self.state, actions = engine.step(self.state, event, now)
            mine = [a for a in actions if self.publisher.wants(a)]
            if mine:
                started = time.perf_counter()
                await self.publisher.apply(mine)
                self.apply_latencies.append(time.perf_counter() - started)
            out += actions
        self.alerts += [str(a) for a in out if type(a).__name__ == "PublishAlert"]
        return out

    async def bring_up(self, *tunnels: str) -> None:
        events: list[Event] = []
        for name in tunnels:
            events.append(ChildSaUp(tunnel=name, at=time.monotonic()))
        for _ in range(self.cfg.policy.rise):
            events += [ProbeSucceeded(tunnel=n, rtt_ms=5.0, at=time.monotonic()) for n in tunnels]
        await self.feed(events)

    async def sa_down(self, tunnel: str) -> None:
        await self.feed([ChildSaDown(tunnel=tunnel, at=time.monotonic())])


def events_of(got: Sequence[Received]) -> list[dict[str, Any]]:
    return [r.body for r in got if r.topic == f"{BASE}/event"]


def settings(broker: Broker, **extra: Any) -> MqttSettings:
    base: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "topic_prefix": PREFIX,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
        "keepalive_s": 5,
    }
    base.update(extra)
    return MqttSettings(**base)
