"""drain/undrain over a real broker: the core hears AdminDisabled/AdminEnabled; junk is ignored."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import aiomqtt
import pytest

from agent.adapters.mqtt_commands import MqttCommands
from agent.core import engine
from agent.core.events import AdminDisabled, AdminEnabled, Event
from tests.mqtt.conftest import AGENT, BASE, base_config, settings
from tests.support.mosquitto import Broker

pytestmark = [pytest.mark.services]


async def _wait(got: list[Event], n: int) -> None:
    async with asyncio.timeout(10):
        while len(got) < n:
            await asyncio.sleep(0.02)


async def test_drain_and_undrain_reach_the_core(
    plain_broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    cfg = base_config()
    source = MqttCommands(AGENT, settings(plain_broker), [t.name for t in cfg.tunnels])
    got: list[Event] = []
    task = asyncio.create_task(source.run(got.append))
    try:
        async with asyncio.timeout(10):
            while "listening for commands" not in caplog.text:
                await asyncio.sleep(0.02)
        async with aiomqtt.Client(plain_broker.host, plain_broker.port, identifier="ops") as ops:
            for raw in (
                b"not json",
                json.dumps({"command": "drain", "tunnel": "nope"}).encode(),
                json.dumps({"command": "drain", "tunnel": "tun1"}).encode(),
                json.dumps({"command": "undrain", "tunnel": "tun1"}).encode(),
            ):
                await ops.publish(f"{BASE}/cmd", raw, qos=1)
            await _wait(got, 2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert [type(e) for e in got] == [AdminDisabled, AdminEnabled]
    assert all(getattr(e, "tunnel", None) == "tun1" for e in got)
    assert "ignored command" in caplog.text
    assert "no tunnel named 'nope'" in caplog.text
    # The core takes the drained tunnel out of service.
    state = engine.initial_state(cfg, 0.0)
    state, _ = engine.step(state, got[0], 1.0)
    assert state.health["tun1"].state.value == "ADMIN_DOWN"
