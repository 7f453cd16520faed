"""A reload that moves MQTT to another broker: the publisher reconnects there at once.

The real Runtime and the real wiring's MQTT publisher with its declared lifecycle, two
real mosquittos, a real SIGHUP. The old broker is told `offline`; the new one gets
`online`, every tunnel's retained state, and the events after the move.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import Config, load_config
from agent.core import events as ev
from agent.runtime import Adapters, Runtime
from agent.wiring import build_live
from tests.mqtt.conftest import BASE, CONFIG, PREFIX, events_of, subscriber
from tests.runtime.fakes import ScriptedSource, healthy, until
from tests.support.mosquitto import Broker, mosquitto

pytestmark = [pytest.mark.services]


@pytest.fixture
def second_broker(tmp_path: Path) -> Iterator[Broker]:
    with mosquitto(tmp_path / "second") as broker:
        yield broker


def _config(broker: Broker) -> str:
    return CONFIG + (
        f"mqtt: {{host: {broker.host}, port: {broker.port}, topic_prefix: {PREFIX},"
        " keepalive_s: 5, reconnect_min_s: 0.1, reconnect_max_s: 0.5}\n"
    )


async def test_reload_moves_the_publisher_to_the_new_broker(
    plain_broker: Broker, second_broker: Broker, tmp_path: Path
) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(_config(plain_broker))
    source = ScriptedSource(healthy("tun1", "tun2"))

    def build(cfg: Config) -> Adapters:
        # The live wiring's MQTT publisher (and its lifecycle), without netlink.
        adapters = build_live(cfg, dry_run=False)
        adapters.actuators = [a for a in adapters.actuators if a.name == "mqtt"]
        adapters.sources = [source]
        return adapters

    runtime = Runtime(load_config(path), build, config_path=path)
    task = asyncio.create_task(runtime.run())
    try:
        async with subscriber(plain_broker) as old:
            await old.wait_for(
                lambda got: any(r.topic == f"{BASE}/tunnel/tun2/state" for r in got),
                timeout=20,
                what="tunnel state on the first broker",
            )
            publisher = runtime.components["mqtt"].actuator
            async with subscriber(second_broker) as new:
                path.write_text(_config(second_broker))
                os.kill(os.getpid(), signal.SIGHUP)
                await until(lambda: runtime.reloads == 1)
                # The same publisher, reconfigured in place.
                assert runtime.components["mqtt"].actuator is publisher
                await new.wait_for(
                    lambda got: (
                        {r.topic for r in got}
                        >= {
                            f"{BASE}/status",
                            f"{BASE}/tunnel/tun1/state",
                            f"{BASE}/tunnel/tun2/state",
                        }
                    ),
                    timeout=10,
                    what="online and retained state on the new broker",
                )
                assert new.on(f"{BASE}/status")[-1].body["status"] == "online"
                await old.wait_for(
                    lambda got: (
                        got[-1].topic == f"{BASE}/status" and got[-1].body["status"] == "offline"
                    ),
                    timeout=10,
                    what="offline on the old broker",
                )
                source.push(ev.ChildSaDown(tunnel="tun1"))
                await new.wait_for(
                    lambda got: any(e["kind"] == "failover" for e in events_of(got)),
                    timeout=10,
                    what="the failover on the new broker",
                )
            assert not events_of(old.got[-1:])
    finally:
        runtime.stop()
        async with asyncio.timeout(10):
            assert await task == 0
