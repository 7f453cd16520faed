"""ExaBGP's API process for the process-mode test: the real adapter on stdin/stdout.

The test drives it over a Unix socket: it sends actions as JSON lines and reads back the
events the adapter emitted. Usage: python -m tests.bgp.process_harness CONFIG SOCKET
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from pathlib import Path

from agent.adapters.exabgp import ExaBgpAdapter
from agent.config import load_config
from agent.core.actions import Action, AnnouncePrefix, WithdrawPrefix
from agent.core.events import Event


def _action(obj: dict[str, object]) -> Action:
    kind = obj.pop("kind")
    if kind == "announce":
        obj["communities"] = tuple(obj.get("communities", ()))  # type: ignore[arg-type]
        return AnnouncePrefix(**obj)  # type: ignore[arg-type]
    return WithdrawPrefix(**obj)  # type: ignore[arg-type]


async def main(config: Path, socket_path: str) -> None:
    adapter = ExaBgpAdapter(load_config(config), mode="process")
    reader, writer = await asyncio.open_unix_connection(socket_path)

    def emit(event: Event) -> None:
        writer.write(
            (
                json.dumps({"type": type(event).__name__, **dataclasses.asdict(event)}) + "\n"
            ).encode()
        )

    async def actions() -> None:
        async for raw in reader:
            await adapter.apply([_action(json.loads(raw))])
            writer.write(b'{"type": "applied"}\n')
        raise SystemExit(0)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(adapter.run())
        tg.create_task(adapter.run(emit))
        tg.create_task(actions())


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
