"""VICI source latency: from a CHILD_SA change in charon to the event the core receives.

Two real charons in two namespaces (tests/support/charon.py, kernel-libipsec). Each round
initiates tun1 over VICI, waits for ChildSaUp, terminates it, waits for ChildSaDown. Two
latencies per event:
  arrival->emit   the VICI event read by the listener thread -> emit() called (our cost)
  command->emit   the initiate/terminate request sent -> emit() called (charon + us)
Run as root:  .venv/bin/python labs/bench/vici_latency.py [--rounds 30] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vici
from lablib.stats import pct

from agent.core.events import ChildSaDown, ChildSaUp, Event
from tests.support.charon import two_sites
from tests.support.system import netns
from tests.vici.conftest import (
    SITE_A,
    Recorder,
    vici_source,
)


async def measure(uri: str, rounds: int) -> dict[str, list[float]]:
    emitted: dict[int, float] = {}
    samples: dict[str, list[float]] = {
        "up arrival->emit": [],
        "down arrival->emit": [],
        "up command->emit": [],
        "down command->emit": [],
    }
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(uri.removeprefix("unix://"))
    session = vici.Session(sock)
    rec = Recorder()

    def timed(event: Event) -> None:
        emitted[id(event)] = time.monotonic()
        rec(event)

    task = asyncio.create_task(vici_source(uri, poll_interval_s=1.0).run(timed))
    try:
        await rec.next(lambda e: isinstance(e, ChildSaDown) and e.tunnel == "tun1")
        for _ in range(rounds):
            for kind, request, target, label in (
                (ChildSaUp, "initiate", {"child": "tun1"}, "up"),
                (ChildSaDown, "terminate", {"ike": "tun1"}, "down"),
            ):
                t0 = time.monotonic()
                await asyncio.to_thread(
                    lambda r=request, m=target: list(getattr(session, r)({**m, "timeout": 5000}))
                )
                event = await rec.next(
                    lambda e, k=kind: isinstance(e, k) and e.tunnel == "tun1"  # type: ignore[attr-defined]
                )
                samples[f"{label} arrival->emit"].append(emitted[id(event)] - event.at)
                samples[f"{label} command->emit"].append(emitted[id(event)] - t0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    sock.close()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    with (
        netns("vtfa") as ns_a,
        netns("vtfb") as ns_b,
        two_sites(ns_a, ns_b, SITE_A, install_routes=True) as (a, _),
    ):
        samples = asyncio.run(measure(a.vici_uri, args.rounds))
    rows = {
        name: {
            "n": len(v),
            "p50_ms": statistics.median(v) * 1000,
            "p99_ms": pct(v, 99) * 1000,
            "max_ms": max(v) * 1000,
        }
        for name, v in samples.items()
    }
    print(f"{'latency':<22}{'n':>5}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for name, r in rows.items():
        print(f"{name:<22}{r['n']:>5}{r['p50_ms']:>10.3f}{r['p99_ms']:>10.3f}{r['max_ms']:>10.3f}")
    if args.json:
        args.json.write_text(json.dumps({"bench": "vici_latency", "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
