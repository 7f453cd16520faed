"""What operators hear, end to end: the runtime with its ExaBGP (supervised, against a real
BIRD), the core, the metrics exporter and the MQTT publisher (to a real mosquitto, read by an
independent subscriber). A session BIRD disables and enables again is one bgp-session-lost and
one bgp-session-restored; ExaBGP killed with SIGKILL is one component-lost and one
component-restarted; the agent's own stop says nothing of its sessions."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.adapters.exabgp import ExaBgpAdapter
from agent.adapters.metrics import MetricsExporter
from agent.adapters.mqtt import MqttPublisher
from agent.components import Adapters, Lifecycle
from agent.config import Config, MetricsSettings
from agent.runtime import Runtime
from tests.bgp.conftest import Topology, agent_config
from tests.mqtt.conftest import Subscriber, events_of, settings, subscriber
from tests.support.bird import Bird
from tests.support.mosquitto import Broker, mosquitto
from tests.support.system import free_port

pytestmark = [pytest.mark.root, pytest.mark.services, pytest.mark.slow]

N1 = Topology.peer(1)


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        name: float(value)
        for name, value in (
            line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
        )
    }


class Site:
    """The runtime as `run` wires it for these parts; its ExaBGP and metrics within reach."""

    def __init__(self, cfg: Config) -> None:
        self.exabgp: ExaBgpAdapter | None = None
        self.metrics: MetricsExporter | None = None
        self.runtime = Runtime(cfg, self.build)

    def build(self, cfg: Config) -> Adapters:
        assert cfg.mqtt is not None
        self.exabgp = ExaBgpAdapter(cfg)
        self.metrics = MetricsExporter(cfg.metrics, cfg.agent_id)
        publisher = MqttPublisher(cfg.agent_id, cfg.mqtt)
        return Adapters(
            sources=[self.exabgp],
            actuators=[self.exabgp, self.metrics, publisher],
            lifecycle={self.exabgp.name: Lifecycle(after_first_decision=True)},
        )

    def scrape(self) -> dict[str, float]:
        assert self.metrics is not None
        return _scrape(self.metrics.port)


@contextlib.asynccontextmanager
async def site(topo: Topology, tmp_path: Path, broker: Broker) -> AsyncIterator[Site]:
    metrics = MetricsSettings(
        enabled=True, listen=ipaddress.IPv4Address("127.0.0.1"), port=free_port()
    )
    cfg = agent_config(topo, tmp_path / "exabgp").model_copy(
        update={"mqtt": settings(broker), "metrics": metrics}
    )
    s = Site(cfg)
    task = asyncio.create_task(s.runtime.run(), name="runtime")
    try:
        yield s
    finally:
        s.runtime.stop()
        async with asyncio.timeout(30):
            assert await task == 0


def told(got: Any, kind: str, **fields: str) -> list[dict[str, Any]]:
    return [
        e
        for e in events_of(got)
        if e["kind"] == kind and all(e.get(k) == v for k, v in fields.items())
    ]


async def both_up(sub: Subscriber, bird: Bird) -> None:
    await asyncio.to_thread(
        bird.wait_for,
        "both sessions",
        lambda: all(bird.protocol_state(p) == "Established" for p in ("tun1", "tun2")),
        60,
    )


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    with mosquitto(tmp_path / "broker") as b:
        yield b


async def test_a_session_disabled_at_the_peer_is_lost_then_restored(
    topo: Topology, bird_peer: Bird, tmp_path: Path, broker: Broker
) -> None:
    async with subscriber(broker) as sub:
        async with site(topo, tmp_path, broker) as s:
            await both_up(sub, bird_peer)
            await asyncio.sleep(1.0)
            # Sessions coming up at the start are not news.
            assert told(sub.got, "bgp-session-lost") == []
            assert told(sub.got, "bgp-session-restored") == []

            await asyncio.to_thread(bird_peer.birdc, "disable", "tun1")
            await sub.wait_for(lambda g: told(g, "bgp-session-lost"), 60, "bgp-session-lost")
            await asyncio.to_thread(bird_peer.birdc, "enable", "tun1")
            await sub.wait_for(
                lambda g: told(g, "bgp-session-restored"), 120, "bgp-session-restored"
            )
            await asyncio.sleep(1.0)

            (lost,) = told(sub.got, "bgp-session-lost")
            (back,) = told(sub.got, "bgp-session-restored")
            print(f"\nlost: {lost['reason']!r}; restored after {back['down_for_s']:.2f}s")
            assert (lost["tunnel"], lost["neighbor"], lost["from"]) == ("tun1", N1, ["tun1"])
            assert lost["reason"]
            assert (back["tunnel"], back["neighbor"], back["to"]) == ("tun1", N1, ["tun1"])
            assert back["down_for_s"] > 0
            assert lost["seq"] < back["seq"]
            samples = s.scrape()
            changes = "vti_failover_bgp_session_changes_total"
            assert samples[f'{changes}{{state="lost",tunnel="tun1"}}'] == 1
            assert samples[f'{changes}{{state="restored",tunnel="tun1"}}'] == 1
            assert f'{changes}{{state="lost",tunnel="tun2"}}' not in samples
            assert samples['vti_failover_bgp_session_up{tunnel="tun1"}'] == 1
            assert samples['vti_failover_bgp_session_up{tunnel="tun2"}'] == 1
        # The agent's own stop ends both sessions: that is no session lost. It said offline.
        await sub.wait_for(
            lambda g: any(r.body.get("status") == "offline" for r in g), 10, "offline"
        )
        await asyncio.sleep(1.0)
        assert len(told(sub.got, "bgp-session-lost")) == 1


async def test_exabgp_killed_is_told_as_lost_and_restarted(
    topo: Topology, bird_peer: Bird, tmp_path: Path, broker: Broker
) -> None:
    async with subscriber(broker) as sub, site(topo, tmp_path, broker) as s:
        await both_up(sub, bird_peer)
        assert s.exabgp is not None
        pid = s.exabgp.exabgp_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await sub.wait_for(
            lambda g: told(g, "component-restarted", component="exabgp"), 60, "restarted"
        )
        await sub.wait_for(
            lambda g: len(told(g, "bgp-session-restored")) == 2, 120, "both sessions back"
        )
        await asyncio.sleep(1.0)

        (lost,) = told(sub.got, "component-lost", component="exabgp")
        (restarted,) = told(sub.got, "component-restarted", component="exabgp")
        print(f"\n{lost['reason']!r} -> {restarted['reason']!r}")
        assert lost["reason"].startswith("exited with status -9 (SIGKILL); restarting in")
        assert "restarted after" in restarted["reason"]
        assert restarted["down_for_s"] >= 0
        assert lost["seq"] < restarted["seq"]
        # One lost and one restored per session, however ExaBGP's end was reported.
        for name in ("tun1", "tun2"):
            assert len(told(sub.got, "bgp-session-lost", tunnel=name)) == 1
            assert len(told(sub.got, "bgp-session-restored", tunnel=name)) == 1
        samples = s.scrape()
        assert samples['vti_failover_component_restarts_total{component="exabgp"}'] == 1
        assert samples['vti_failover_component_up{component="exabgp"}'] == 1
        assert s.exabgp.exabgp_pid not in (None, pid)
