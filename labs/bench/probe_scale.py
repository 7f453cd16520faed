"""Probe source at scale: scheduling jitter and CPU for 100 and 1,000 tunnels at 5 probes/s.

Needs root. Tunnels are simulated as address pairs on one veth pair between two private
namespaces (tunnel i probes 10.64.x.y+2 from 10.64.x.y+1 over its own /30); the far
kernel answers. Jitter is actual send time minus planned send time; CPU is this
process's CPU seconds (user + system) per wall second while probing.

    .venv/bin/python labs/bench/probe_scale.py [--seconds 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lablib.stats import pct

from agent.adapters.probes import ProbeSource
from agent.config import ProbeSettings, Source, Tunnel
from agent.core.events import Event, ProbeLost, ProbeSucceeded

BASE = ipaddress.IPv4Address("10.64.0.0")


def sh(*cmd: str, stdin: str | None = None) -> str:
    done = subprocess.run(cmd, input=stdin, text=True, capture_output=True, check=True)
    return done.stdout


def mac(ns: str, ifname: str) -> str:
    out = json.loads(sh("ip", "-n", ns, "-j", "link", "show", "dev", ifname))
    address: str = out[0]["address"]
    return address


@contextlib.contextmanager
def lab(n: int) -> Iterator[str]:
    """A near namespace whose veth `tun0` reaches n peer addresses in a far namespace."""
    tag = uuid.uuid4().hex[:6]
    near, far = f"vtfbn-{tag}", f"vtfbf-{tag}"
    sh("ip", "netns", "add", near)
    sh("ip", "netns", "add", far)
    try:
        sh("ip", "-n", near, "link", "add", "tun0", "type", "veth", "peer", "name", "far0",
           "netns", far)  # fmt: skip
        near_mac, far_mac = mac(near, "tun0"), mac(far, "far0")
        near_cmds, far_cmds = [], []
        for i in range(n):
            local, peer = BASE + 4 * i + 1, BASE + 4 * i + 2
            near_cmds.append(f"addr add {local}/30 dev tun0")
            # Permanent neighbours: the benchmark measures probes, not ARP.
            near_cmds.append(f"neigh replace {peer} lladdr {far_mac} dev tun0 nud permanent")
            far_cmds.append(f"addr add {peer}/30 dev far0")
            far_cmds.append(f"neigh replace {local} lladdr {near_mac} dev far0 nud permanent")
        for ns, ifname, cmds in ((near, "tun0", near_cmds), (far, "far0", far_cmds)):
            sh("ip", "-n", ns, "link", "set", ifname, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "-batch", "-", stdin="\n".join(cmds) + "\n")
        yield near
    finally:
        subprocess.run(["ip", "netns", "del", near], check=False)
        subprocess.run(["ip", "netns", "del", far], check=False)


def tunnels(n: int, interval: float, timeout: float) -> list[Tunnel]:
    probe = ProbeSettings(interval_s=interval, timeout_s=timeout)
    return [
        Tunnel(
            name=f"t{i}",
            interface="tun0",
            kind="gre",  # type: ignore[arg-type]
            underlay={"local": "192.0.2.1", "remote": "192.0.2.2"},  # type: ignore[arg-type]
            inner={"local": f"{BASE + 4 * i + 1}/30", "peer": str(BASE + 4 * i + 2)},  # type: ignore[arg-type]
            sources=(Source.PROBE,),
            probe=probe,
        )
        for i in range(n)
    ]


async def measure(n: int, seconds: float, warmup: float, interval: float) -> dict[str, Any]:
    with lab(n) as near:
        lateness: list[float] = []
        counts = {"ok": 0, "lost": 0}
        measuring = False

        def on_send(_tunnel: str, planned: float, actual: float) -> None:
            if measuring:
                lateness.append(actual - planned)

        def emit(event: Event) -> None:
            if measuring:
                if isinstance(event, ProbeSucceeded):
                    counts["ok"] += 1
                elif isinstance(event, ProbeLost):
                    counts["lost"] += 1

        source = ProbeSource(tunnels(n, interval, 0.5), netns=near, on_send=on_send)
        task = asyncio.create_task(source.run(emit))
        await asyncio.sleep(warmup)
        measuring = True
        cpu0, wall0, times0 = time.process_time(), time.monotonic(), os.times()
        await asyncio.sleep(seconds)
        cpu1, wall1, times1 = time.process_time(), time.monotonic(), os.times()
        measuring = False
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    wall = wall1 - wall0
    ms = [x * 1000 for x in lateness]
    return {
        "tunnels": n,
        "probes_per_s_each": 1 / interval,
        "wall_s": round(wall, 2),
        "probes_sent": len(ms),
        "answered": counts["ok"],
        "lost": counts["lost"],
        "jitter_ms_p50": round(statistics.median(ms), 3),
        "jitter_ms_p99": round(pct(ms, 99), 3),
        "jitter_ms_max": round(max(ms), 3),
        "cpu_s_per_s": round((cpu1 - cpu0) / wall, 4),
        "user_s_per_s": round((times1.user - times0.user) / wall, 4),
        "system_s_per_s": round((times1.system - times0.system) / wall, 4),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="measured seconds per size")
    ap.add_argument("--warmup", type=float, default=1.5, help="unmeasured seconds first")
    ap.add_argument("--interval", type=float, default=0.2, help="probe interval (s)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (namespaces, raw sockets)", file=sys.stderr)
        return 2
    rows = [asyncio.run(measure(n, args.seconds, args.warmup, args.interval)) for n in args.sizes]
    cols = ["tunnels", "probes_sent", "answered", "lost", "jitter_ms_p50", "jitter_ms_p99",
            "jitter_ms_max", "cpu_s_per_s", "user_s_per_s", "system_s_per_s"]  # fmt: skip
    print(" ".join(f"{c:>14}" for c in cols))
    for row in rows:
        print(" ".join(f"{row[c]!s:>14}" for c in cols))
    if args.json is not None:
        args.json.write_text(json.dumps({"probe_scale": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
