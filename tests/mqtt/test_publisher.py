"""The publisher against a real mosquitto, checked by a separate subscriber."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.adapters.mqtt import MqttPublisher
from tests.mqtt.conftest import (
    AGENT,
    BASE,
    Core,
    Received,
    base_config,
    events_of,
    running,
    settings,
    subscriber,
)
from tests.support.mosquitto import Broker

pytestmark = [pytest.mark.services]


def _latest(got: list[Received], topic: str) -> dict[str, object]:
    bodies = [r.body for r in got if r.topic == topic]
    assert bodies, f"nothing on {topic}"
    return bodies[-1]


async def test_failover_is_one_event_and_fresh_retained_state(plain_broker: Broker) -> None:
    cfg = base_config()
    publisher = MqttPublisher(AGENT, settings(plain_broker))
    core = Core(cfg, publisher)
    async with subscriber(plain_broker) as sub, running(publisher):
        await core.bring_up("tun1", "tun2")
        await sub.wait_for(
            lambda got: any(
                r.topic == f"{BASE}/tunnel/tun1/state" and r.body["carrying"] for r in got
            ),
            what="tun1 carrying",
        )
        before = len(sub.got)
        await core.sa_down("tun1")
        await sub.wait_for(events_of, what="the failover event")
        # Let anything else the publisher might send arrive before counting.
        await asyncio.sleep(0.5)
        after = sub.got[before:]

    events = events_of(after)
    assert len(events) == 1, events
    event = events[0]
    assert event["kind"] == "failover"
    assert event["from"] == ["tun1"]
    assert event["to"] == ["tun2"]
    assert "child-sa-down" in event["reason"]
    assert event["agent"] == AGENT
    assert event["at"].endswith("Z")
    tun1 = _latest(after, f"{BASE}/tunnel/tun1/state")
    tun2 = _latest(after, f"{BASE}/tunnel/tun2/state")
    assert tun1["health"] == "DOWN"
    assert tun1["sa"] == "down"
    assert tun1["carrying"] is False
    assert tun2["carrying"] is True
    assert tun2["announced"] is False  # no bgp in this config
    assert tun2["metric"] == cfg.policy.active_metric


async def test_late_subscriber_gets_retained_state_and_online(plain_broker: Broker) -> None:
    publisher = MqttPublisher(AGENT, settings(plain_broker))
    core = Core(base_config(), publisher)
    async with running(publisher):
        async with subscriber(plain_broker) as first:
            await core.bring_up("tun1", "tun2")
            await core.sa_down("tun1")
            await first.wait_for(events_of, what="the failover event")
        async with subscriber(plain_broker) as late:
            await late.wait_for(
                lambda got: (
                    {r.topic for r in got}
                    >= {f"{BASE}/status", f"{BASE}/tunnel/tun1/state", f"{BASE}/tunnel/tun2/state"}
                ),
                what="retained status and both tunnel states",
            )
            await asyncio.sleep(0.3)
    assert all(r.retain for r in late.got)
    assert not events_of(late.got), "events must not be retained"
    assert _latest(late.got, f"{BASE}/status")["status"] == "online"
    assert _latest(late.got, f"{BASE}/tunnel/tun1/state")["health"] == "DOWN"
    assert _latest(late.got, f"{BASE}/tunnel/tun2/state")["carrying"] is True


async def _three_failovers(core: Core) -> None:
    await core.sa_down("tun1")  # tun1 -> tun2
    await core.bring_up("tun1")
    await core.sa_down("tun2")  # tun2 -> tun1
    await core.bring_up("tun2")
    await core.sa_down("tun1")  # tun1 -> tun2


async def test_outage_events_arrive_in_order_after_broker_returns(durable_broker: Broker) -> None:
    publisher = MqttPublisher(AGENT, settings(durable_broker))
    core = Core(base_config(), publisher)
    async with running(publisher):
        await core.bring_up("tun1", "tun2")
        async with subscriber(durable_broker, session="observer") as sub:
            await sub.wait_for(lambda got: len(got) >= 3, what="initial state")
        durable_broker.stop()
        await _three_failovers(core)
        await asyncio.sleep(1.0)
        durable_broker.start()
        async with subscriber(durable_broker, session="observer") as sub:
            await sub.wait_for(lambda got: len(events_of(got)) >= 3, what="three queued events")
            await asyncio.sleep(0.3)
    events = events_of(sub.got)
    assert [(e["kind"], e["from"], e["to"]) for e in events] == [
        ("failover", ["tun1"], ["tun2"]),
        ("failover", ["tun2"], ["tun1"]),
        ("failover", ["tun1"], ["tun2"]),
    ]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    # tun1 went down only while the broker was away: this state was sent on reconnect.
    assert _latest(sub.got, f"{BASE}/status")["status"] == "online"
    assert _latest(sub.got, f"{BASE}/tunnel/tun2/state")["carrying"] is True
    assert _latest(sub.got, f"{BASE}/tunnel/tun1/state")["health"] == "DOWN"


async def test_full_queue_drops_oldest_and_reports_the_count(durable_broker: Broker) -> None:
    publisher = MqttPublisher(AGENT, settings(durable_broker, queue_size=2))
    core = Core(base_config(), publisher)
    async with running(publisher):
        await core.bring_up("tun1", "tun2")
        async with subscriber(durable_broker, session="observer") as sub:
            await sub.wait_for(lambda got: len(got) >= 3, what="initial state")
        durable_broker.stop()
        await _three_failovers(core)
        durable_broker.start()
        async with subscriber(durable_broker, session="observer") as sub:
            await sub.wait_for(lambda got: len(events_of(got)) >= 2, what="the two newest events")
            await asyncio.sleep(0.5)
    events = events_of(sub.got)
    assert [(e["from"], e["to"]) for e in events] == [(["tun2"], ["tun1"]), (["tun1"], ["tun2"])]
    assert _latest(sub.got, f"{BASE}/status")["dropped_events"] == 1


async def test_close_says_offline_with_a_time(plain_broker: Broker, tmp_path: Path) -> None:
    del tmp_path
    publisher = MqttPublisher(AGENT, settings(plain_broker))
    async with subscriber(plain_broker, f"{BASE}/status") as sub:
        async with running(publisher):
            await sub.wait_for(
                lambda got: any(r.body["status"] == "online" for r in got), what="online"
            )
        await sub.wait_for(
            lambda got: any(r.body["status"] == "offline" for r in got), what="offline"
        )
    offline = [r.body for r in sub.got if r.body["status"] == "offline"]
    # A graceful goodbye carries its time; the broker's last will (a crash) does not.
    assert "at" in offline[0]
