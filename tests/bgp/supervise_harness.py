"""An agent process for the supervision tests: the real adapter, supervising a real ExaBGP.

It prints `exabgp PID` once ExaBGP's API relay has connected, then runs until killed.
Usage: python -m tests.bgp.supervise_harness CONFIG
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from agent.adapters.exabgp import ExaBgpAdapter
from agent.config import load_config


async def main(config: Path) -> None:
    adapter = ExaBgpAdapter(load_config(config), mode="supervise")
    link = asyncio.create_task(adapter.run())
    async with asyncio.timeout(30):
        await adapter.wait_connected()
    print(f"exabgp {adapter.exabgp_pid}", flush=True)
    await link


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
