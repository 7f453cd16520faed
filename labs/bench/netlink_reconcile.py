"""Netlink actuator reconcile time for 1k and 10k prefixes: install, no-op, metric flip, restart.

Creates a private network namespace with two veth pairs (tunnel stand-ins), applies N
InstallRoute actions through the real actuator, then the same desired state again (must
write nothing), then a failover-style metric flip (every route's active metric moves to
the other link: N installs and N removals, as the core emits them), then a restart (a new
actuator adopts the kernel's routes and is handed the same desired state). Needs root.

    .venv/bin/python labs/bench/netlink_reconcile.py [--sizes 1000 10000] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import subprocess
import time
import uuid
from pathlib import Path

from agent.adapters.netlink import NetlinkActuator
from agent.core.actions import Action, InstallRoute, NextHop, RemoveRoute, Route


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def _prefixes(n: int) -> list[str]:
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    return [f"{ipaddress.IPv4Address(base + (i << 8))}/24" for i in range(n)]


def _routes(prefixes: list[str], active: str, standby: str) -> list[Route]:
    out = []
    for p in prefixes:
        out.append(Route(p, 254, 10, (NextHop(active),)))
        out.append(Route(p, 254, 100, (NextHop(standby),)))
    return out


def _kernel_count(ns: str) -> int:
    out = subprocess.run(
        ["ip", "-n", ns, "route", "show", "proto", "157"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return len(out.splitlines())


async def _timed(act: NetlinkActuator, actions: list[Action]) -> tuple[float, int]:
    before = act.writes
    t0 = time.perf_counter()
    await act.apply(actions)
    return time.perf_counter() - t0, act.writes - before


async def _one_size(ns: str, n: int) -> list[dict[str, object]]:
    prefixes = _prefixes(n)
    first = _routes(prefixes, "bench1", "bench2")
    flipped = _routes(prefixes, "bench2", "bench1")
    rows: list[dict[str, object]] = []
    act = NetlinkActuator(netns=ns)
    try:
        for phase, actions in (
            ("first install", [InstallRoute(r) for r in first]),
            ("no-op reconcile", [InstallRoute(r) for r in first]),
            (
                "metric flip",
                [InstallRoute(r) for r in flipped] + [RemoveRoute(r) for r in first],
            ),
        ):
            took, writes = await _timed(act, actions)
            rows.append(
                {
                    "prefixes": n,
                    "routes": len(first),
                    "phase": phase,
                    "seconds": round(took, 4),
                    "netlink_writes": writes,
                    "kernel_routes": _kernel_count(ns),
                }
            )
    finally:
        await act.close(cleanup=False)
    restarted = NetlinkActuator(netns=ns)
    try:
        t0 = time.perf_counter()
        took, writes = await _timed(restarted, [InstallRoute(r) for r in flipped])
        rows.append(
            {
                "prefixes": n,
                "routes": len(first),
                "phase": "restart (adopt + no-op)",
                "seconds": round(time.perf_counter() - t0, 4),
                "netlink_writes": writes,
                "kernel_routes": _kernel_count(ns),
            }
        )
    finally:
        await restarted.close(cleanup=True)
    return rows


async def _main(sizes: list[int]) -> list[dict[str, object]]:
    ns = f"vtf-bench-{uuid.uuid4().hex[:8]}"
    _sh("ip", "netns", "add", ns)
    try:
        for name in ("bench1", "bench2"):
            _sh("ip", "-n", ns, "link", "add", name, "type", "veth", "peer", "name", f"{name}p")
            _sh("ip", "-n", ns, "link", "set", f"{name}p", "up")
            _sh("ip", "-n", ns, "link", "set", name, "up")
        rows: list[dict[str, object]] = []
        for n in sizes:
            rows += await _one_size(ns, n)
        return rows
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--json", type=Path, metavar="PATH")
    args = parser.parse_args()
    rows = asyncio.run(_main(args.sizes))
    header = (
        f"{'prefixes':>8} {'routes':>7}  {'phase':<24} {'seconds':>9} {'writes':>7} {'kernel':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['prefixes']:>8} {r['routes']:>7}  {r['phase']!s:<24} {r['seconds']:>9.3f} "
            f"{r['netlink_writes']:>7} {r['kernel_routes']:>7}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
