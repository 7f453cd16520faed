"""BGP lines per second through the ExaBGP adapter, and action-to-line / action-to-ack latency.

Runs a real ExaBGP (supervise mode) in a private network namespace with two configured
neighbors that never come up: ExaBGP still parses, stores and acks every command.
Needs root. Usage: python labs/bench/bgp_lines.py [--lines N] [--samples N] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lablib.stats import pct

from agent.adapters.exabgp import ExaBgpAdapter
from agent.config import parse_config
from agent.core.actions import AnnouncePrefix

EXABGP = str(Path(sys.executable).with_name("exabgp"))


def _config(ns: str, workdir: Path) -> str:
    return f"""
agent_id: bench
tunnels:
  - {{name: tun1, interface: a1, key: 1, sources: [probe],
     underlay: {{local: 192.0.2.1, remote: 192.0.2.2}},
     inner: {{local: 169.254.1.1/30, peer: 169.254.1.2}}}}
  - {{name: tun2, interface: a2, key: 2, sources: [probe], role: backup,
     underlay: {{local: 198.51.100.1, remote: 198.51.100.2}},
     inner: {{local: 169.254.2.1/30, peer: 169.254.2.2}}}}
bgp: {{local_as: 65001, peer_as: 65002, router_id: 10.1.0.1}}
exabgp: {{executable: "ip netns exec {ns} {EXABGP}", workdir: "{workdir}", ack_timeout_s: 30}}
"""


async def bench(lines: int, samples: int) -> dict[str, float]:
    ns = f"vtf-bench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        with tempfile.TemporaryDirectory() as tmp:
            adapter = ExaBgpAdapter(parse_config(_config(ns, Path(tmp))))
            link = asyncio.create_task(adapter.run())
            try:
                async with asyncio.timeout(30):
                    await adapter.wait_connected()
                await asyncio.sleep(1.0)  # let ExaBGP finish starting its neighbors
                batch = [
                    AnnouncePrefix(
                        "169.254.1.2", "tun1", f"10.{i // 256}.{i % 256}.0/24", 100 + i % 7
                    )
                    for i in range(lines)
                ]
                t0 = time.monotonic()
                await adapter.apply(batch)
                elapsed = time.monotonic() - t0
                to_line: list[float] = []
                to_ack: list[float] = []
                for i in range(samples):
                    action = AnnouncePrefix("169.254.2.2", "tun2", "10.200.0.0/24", 1000 + i)
                    t = time.monotonic()
                    await adapter.apply([action])
                    done = time.monotonic()
                    assert adapter.last_write_at is not None
                    to_line.append((adapter.last_write_at - t) * 1000)
                    to_ack.append((done - t) * 1000)
            finally:
                link.cancel()
                await asyncio.gather(link, return_exceptions=True)
                await adapter.close(cleanup=False)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    return {
        "lines": lines,
        "lines_per_s": lines / elapsed,
        "samples": samples,
        "action_to_line_p50_ms": pct(to_line, 50),
        "action_to_line_p99_ms": pct(to_line, 99),
        "action_to_ack_p50_ms": pct(to_ack, 50),
        "action_to_ack_p99_ms": pct(to_ack, 99),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=2000)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--json", type=Path, metavar="PATH")
    args = p.parse_args()
    result = asyncio.run(bench(args.lines, args.samples))
    print(f"{'metric':<26} {'value':>12}")
    for key, value in result.items():
        print(f"{key:<26} {value:>12.3f}" if isinstance(value, float) else f"{key:<26} {value:>12}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
