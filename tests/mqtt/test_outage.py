"""A 30 s broker outage during three failovers: every event arrives afterwards, in order."""

from __future__ import annotations

import asyncio
import time

import pytest

from agent.adapters.mqtt import MqttPublisher
from tests.mqtt.conftest import (
    AGENT,
    BASE,
    Core,
    base_config,
    events_of,
    running,
    settings,
    subscriber,
)
from tests.support.mosquitto import Broker

pytestmark = [pytest.mark.services, pytest.mark.slow]

OUTAGE_S = 30.0


async def test_thirty_second_outage_three_failovers_in_order(durable_broker: Broker) -> None:
    # A backoff ceiling of a few seconds, so the agent really waits between tries.
    publisher = MqttPublisher(AGENT, settings(durable_broker, reconnect_max_s=4.0))
    core = Core(base_config(), publisher)
    async with running(publisher):
        await core.bring_up("tun1", "tun2")
        async with subscriber(durable_broker, session="observer") as sub:
            await sub.wait_for(lambda got: len(got) >= 3, what="initial state")
        durable_broker.stop()
        down_at = time.monotonic()
        for n, (lose, regain) in enumerate((("tun1", None), ("tun2", "tun1"), ("tun1", "tun2"))):
            await asyncio.sleep(down_at + 5 + 10 * n - time.monotonic())
            if regain is not None:
                await core.bring_up(regain)
            await core.sa_down(lose)
        assert publisher.queued == 3
        await asyncio.sleep(down_at + OUTAGE_S - time.monotonic())
        durable_broker.start()
        async with subscriber(durable_broker, session="observer") as sub:
            await sub.wait_for(lambda got: len(events_of(got)) >= 3, timeout=15, what="3 events")
            await asyncio.sleep(0.5)
    events = events_of(sub.got)
    assert [(e["from"], e["to"]) for e in events] == [
        (["tun1"], ["tun2"]),
        (["tun2"], ["tun1"]),
        (["tun1"], ["tun2"]),
    ]
    assert [e["kind"] for e in events] == ["failover"] * 3
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 3
    # Decision times are when the core decided, ~10 s apart, not when the broker got them.
    assert events[0]["at"] < events[1]["at"] < events[2]["at"]
    assert sub.on(f"{BASE}/status")[-1].body["status"] == "online"
