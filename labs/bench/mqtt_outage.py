"""MQTT publisher under a broker outage: apply() latency while up vs down, and catch-up time.

Starts a real mosquitto on a free loopback port, drives the real core through failovers
(tun1 <-> tun2 by SA loss), stops the broker for --outage-s while --failovers more happen,
starts it again and waits until a separate subscriber has every queued event.
apply() is what the runtime awaits on the failover path; it must not depend on the broker.

    .venv/bin/python labs/bench/mqtt_outage.py [--outage-s 30] [--failovers 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiomqtt

from agent.adapters.mqtt import MqttPublisher
from agent.config import Config, MqttSettings, parse_config
from agent.core import engine
from agent.core.events import ChildSaDown, ChildSaUp, Event, ProbeSucceeded
from tests.support.mosquitto import mosquitto

CONFIG = """
agent_id: bench
tunnels:
  - {name: tun1, interface: vti1, key: 1, underlay: {local: 192.0.2.1, remote: 192.0.2.2},
     ike: {connection: tun1, child: tun1}, inner: {local: 169.254.1.1/30, peer: 169.254.1.2},
     role: primary, sources: [vici, probe]}
  - {name: tun2, interface: vti2, key: 2, underlay: {local: 198.51.100.1, remote: 198.51.100.2},
     ike: {connection: tun2, child: tun2}, inner: {local: 169.254.2.1/30, peer: 169.254.2.2},
     role: backup, sources: [vici, probe]}
remote_prefixes: {static: [10.2.0.0/24]}
policy: {rise: 2, preempt: false, link_control: none, dampening: {enabled: false}}
"""


class Driver:
    """The real core; records how long each publisher.apply() and each whole step took."""

    def __init__(self, cfg: Config, publisher: MqttPublisher) -> None:
        self.cfg = cfg
        self.publisher = publisher
        self.state = engine.initial_state(cfg, time.monotonic())
        self.apply_s: list[float] = []
        self.step_s: list[float] = []

    async def feed(self, events: list[Event]) -> None:
        for event in events:
            t0 = time.perf_counter()
            self.state, actions = engine.step(self.state, event, time.monotonic())
            mine = [a for a in actions if self.publisher.wants(a)]
            t1 = time.perf_counter()
            if mine:
                await self.publisher.apply(mine)
                self.apply_s.append(time.perf_counter() - t1)
            self.step_s.append(time.perf_counter() - t0)

    async def up(self, name: str) -> None:
        evs: list[Event] = [ChildSaUp(tunnel=name, at=time.monotonic())]
        evs += [ProbeSucceeded(tunnel=name, rtt_ms=5.0) for _ in range(self.cfg.policy.rise)]
        await self.feed(evs)

    async def failover(self, lose: str, regain: str | None) -> None:
        if regain is not None:
            await self.up(regain)
        await self.feed([ChildSaDown(tunnel=lose, at=time.monotonic())])

    def take(self) -> tuple[list[float], list[float]]:
        out = (self.apply_s, self.step_s)
        self.apply_s, self.step_s = [], []
        return out


def _observer(host: str, port: int) -> aiomqtt.Client:
    # A persistent session: the broker keeps what arrives while the observer is away.
    return aiomqtt.Client(host, port, identifier="bench-observer", clean_session=False)


async def _count_events(host: str, port: int, want: int, topic: str) -> None:
    async with _observer(host, port) as client:
        await client.subscribe(topic, qos=1)
        seen = 0
        async with asyncio.timeout(120):
            async for _ in client.messages:
                seen += 1
                if seen >= want:
                    break


def _row(name: str, samples: list[float]) -> dict[str, Any]:
    us = sorted(s * 1e6 for s in samples)
    return {
        "phase": name,
        "n": len(us),
        "p50_us": round(statistics.median(us), 1),
        "p99_us": round(us[min(len(us) - 1, int(len(us) * 0.99))], 1),
        "max_us": round(us[-1], 1),
    }


async def bench(outage_s: float, failovers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, mosquitto(Path(tmp), persistent=True) as broker:
        settings = MqttSettings(host=broker.host, port=broker.port, reconnect_max_s=4.0)
        cfg = parse_config(CONFIG).model_copy(update={"mqtt": settings})
        publisher = MqttPublisher(cfg.agent_id, settings)
        driver = Driver(cfg, publisher)
        runner = asyncio.create_task(publisher.run())
        try:
            await driver.up("tun1")
            await driver.up("tun2")
            carrier, other = "tun1", "tun2"
            for i in range(failovers):
                await driver.failover(carrier, other if i else None)
                carrier, other = other, carrier
                await asyncio.sleep(0.2)
            up_apply, up_step = driver.take()
            async with _observer(broker.host, broker.port) as observer:
                await observer.subscribe("vti-failover/bench/event", qos=1)
            broker.stop()
            down_at = time.monotonic()
            for i in range(failovers):
                await asyncio.sleep(
                    max(0.0, down_at + (i + 1) * outage_s / (failovers + 1) - time.monotonic())
                )
                await driver.failover(carrier, other)
                carrier, other = other, carrier
            down_apply, down_step = driver.take()
            queued = publisher.queued
            await asyncio.sleep(max(0.0, down_at + outage_s - time.monotonic()))
            broker.start()
            back_at = time.monotonic()
            await _count_events(broker.host, broker.port, queued, "vti-failover/bench/event")
            caught_up_s = time.monotonic() - back_at
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
    return {
        "outage_s": outage_s,
        "failovers_during_outage": failovers,
        "queued_at_return": queued,
        "all_delivered_after_return_s": round(caught_up_s, 3),
        "rows": [
            _row("apply, broker up", up_apply),
            _row("apply, broker down", down_apply),
            _row("step+apply, broker up", up_step),
            _row("step+apply, broker down", down_step),
        ],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--outage-s", type=float, default=30.0)
    p.add_argument("--failovers", type=int, default=3)
    p.add_argument("--json", type=Path, metavar="PATH")
    args = p.parse_args()
    result = asyncio.run(bench(args.outage_s, args.failovers))
    print(f"{'phase':<26}{'n':>5}{'p50 us':>10}{'p99 us':>10}{'max us':>10}")
    for r in result["rows"]:
        print(f"{r['phase']:<26}{r['n']:>5}{r['p50_us']:>10}{r['p99_us']:>10}{r['max_us']:>10}")
    print(
        f"outage {result['outage_s']:g}s, {result['queued_at_return']} events queued, all "
        f"delivered {result['all_delivered_after_return_s']}s after the broker returned"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
