"""Failover path latency: SA-down event enqueued -> last netlink write done -> ExaBGP line -> ack.

Two namespaces (tests/integration/sites.py): site A runs the real Runtime, core,
NetlinkActuator and ExaBgpAdapter (supervising exabgp in A's namespace); site B runs BIRD2
over two veth "tunnels" and announces two prefixes that the agent installs as learned
routes, next to --static static remote prefixes. Each round puts a ChildSaDown for tun1 on
the agent's queue, waits for both actuators to finish, then a ChildSaUp (preempt hold-down
0, dampening off, so it fails back at once). The actuators are wrapped to time apply():
  enqueue -> core stepped  the event enqueued -> the netlink actuator handed the actions
  enqueue -> netlink done  ... -> its last netlink write acknowledged by the kernel
  enqueue -> exabgp line   ... -> the announce/withdraw lines written to exabgp's API
  enqueue -> exabgp ack    ... -> exabgp answered `done` for every line
Run as root:  .venv/bin/python labs/bench/failover_path.py [--rounds 30] [--static 10]
              [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lablib.stats import pct

from agent.adapters.exabgp import ExaBgpAdapter
from agent.core.actions import Action
from agent.ports import Actuator
from tests.integration.sites import (
    REMOTE4,
    REMOTE6,
    agent_config,
    kernel_routes,
    running_agent,
    site_b_bird,
    two_sites,
)


@dataclass
class Call:
    started: float
    done: float
    actions: int
    wrote_at: float | None = None


@dataclass
class Timed:
    """An actuator whose apply() calls are timed; everything else passes through."""

    inner: Actuator
    calls: list[Call] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.inner.name

    def wants(self, action: Action) -> bool:
        return self.inner.wants(action)

    async def run(self) -> None:
        await self.inner.run()

    async def close(self, cleanup: bool) -> None:
        await self.inner.close(cleanup)

    async def apply(self, actions: Sequence[Action]) -> None:
        started = time.monotonic()
        try:
            await self.inner.apply(actions)
        finally:
            wrote = self.inner.last_write_at if isinstance(self.inner, ExaBgpAdapter) else None
            self.calls.append(Call(started, time.monotonic(), len(actions), wrote))

    def first_since(self, t0: float) -> Call | None:
        return next((c for c in self.calls if c.started >= t0), None)


def _statics(n: int) -> tuple[str, ...]:
    base = int(ipaddress.IPv4Address("10.100.0.0"))
    return tuple(f"{ipaddress.IPv4Address(base + (i << 8))}/24" for i in range(n))


async def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _bench(rounds: int, statics: int, workdir: Path) -> dict[str, object]:
    nl: list[Timed] = []
    exa: list[Timed] = []

    def wrap_nl(a: Actuator) -> Actuator:
        nl.append(Timed(a))
        return nl[-1]

    def wrap_exa(a: Actuator) -> Actuator:
        exa.append(Timed(a))
        return exa[-1]

    samples: dict[str, dict[str, list[float]]] = {"down": {}, "up": {}}
    writes: dict[str, list[int]] = {"down": [], "up": []}
    with two_sites("vtfb") as sites, site_b_bird(sites, workdir / "bird") as bird:
        cfg = agent_config(
            sites, workdir / "exabgp", hold_down_s=0.0, dampening=False, static=_statics(statics)
        )
        # Per tunnel: every static prefix plus the two learned ones.
        want = 2 * (statics + 2)
        async with running_agent(sites, cfg, wrap_netlink=wrap_nl, wrap_exabgp=wrap_exa) as ag:
            await _until(
                lambda: all(bird.protocol_state(s) == "Established" for s in ("tun1", "tun2")),
                60,
                "BGP sessions",
            )
            await _until(
                lambda: all(
                    {REMOTE4, REMOTE6} <= ag.runtime.state.learned.get(t, frozenset())
                    for t in ("tun1", "tun2")
                ),
                30,
                "learned routes",
            )
            await _until(lambda: len(kernel_routes(sites.a)) == want, 30, "initial routes")
            await asyncio.sleep(0.5)
            for _ in range(rounds):
                for direction in ("down", "up"):
                    before = ag.netlink.writes
                    t0 = ag.sa.down("tun1") if direction == "down" else ag.sa.up("tun1")
                    deadline = time.monotonic() + 10
                    while (n := nl[0].first_since(t0)) is None or (
                        e := exa[0].first_since(t0)
                    ) is None:
                        if time.monotonic() > deadline:
                            raise SystemExit(f"no actions after SA {direction}")
                        await asyncio.sleep(0.005)
                    got = samples[direction]
                    got.setdefault("enqueue -> core stepped", []).append(n.started - t0)
                    got.setdefault("enqueue -> netlink done", []).append(n.done - t0)
                    if e.wrote_at is not None and e.wrote_at >= t0:
                        got.setdefault("enqueue -> exabgp line", []).append(e.wrote_at - t0)
                    got.setdefault("enqueue -> exabgp ack", []).append(e.done - t0)
                    writes[direction].append(ag.netlink.writes - before)
                    # Let BIRD take the update in before the next event.
                    await asyncio.sleep(0.2)
            final = await asyncio.to_thread(kernel_routes, sites.a)
    return {
        "rounds": rounds,
        "routes_per_tunnel": statics + 2,
        "netlink_writes_per_event": {d: statistics.median(w) for d, w in writes.items()},
        "final_routes_ok": len(final) == want,
        "latency_ms": {
            d: {
                k: {
                    "n": len(v),
                    "p50": pct(v, 50) * 1e3,
                    "p99": pct(v, 99) * 1e3,
                    "max": max(v) * 1e3,
                }
                for k, v in got.items()
            }
            for d, got in samples.items()
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="SA down/up pairs (default 30)")
    parser.add_argument(
        "--static", type=int, default=10, help="static remote prefixes (default 10)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vtf-bench-") as tmp:
        result = asyncio.run(_bench(args.rounds, args.static, Path(tmp)))
    print(
        f"{result['rounds']} rounds, {result['routes_per_tunnel']} remote prefixes per tunnel, "
        f"netlink writes per event (median): {result['netlink_writes_per_event']}"
    )
    print(f"{'event':<8}{'interval':<26}{'n':>4}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    latency: dict[str, dict[str, dict[str, float]]] = result["latency_ms"]  # type: ignore[assignment]
    for direction, rows in latency.items():
        label = "SA down" if direction == "down" else "SA up"
        for name, s in rows.items():
            print(
                f"{label:<8}{name:<26}{int(s['n']):>4}"
                f"{s['p50']:>10.2f}{s['p99']:>10.2f}{s['max']:>10.2f}"
            )
    if not result["final_routes_ok"]:
        print("warning: the kernel did not end with the expected routes", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
