"""How the adapter reaches ExaBGP: its stdio (process mode) or our Unix socket (supervise).

Either way one `serve(reader, writer)` speaks with one connected ExaBGP; this module only
sets up the channel and says when it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from agent.adapters.exabgp_session import Writer
from agent.adapters.exabgp_supervisor import ExaBgpSupervisor
from agent.adapters.exabgp_workdir import prepare_workdir
from agent.ports import AdapterError

__all__ = ["over_socket", "over_stdio"]

Serve = Callable[[asyncio.StreamReader, Writer], Awaitable[None]]
# An UPDATE is at most ~1 MB of JSON (exabgp_api.MAX_LINE_CHARS is the parser's bound).
_LINE_LIMIT = 1 << 20


async def over_stdio(serve: Serve) -> None:
    """Process mode: ExaBGP started us; we speak on stdin/stdout until it closes them."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout)
    await serve(reader, transport)
    raise AdapterError("exabgp closed the API pipe (it stopped or restarted)")


async def over_socket(
    socket_path: Path,
    supervisor: ExaBgpSupervisor,
    start_text: Callable[[], str],
    serve: Serve,
) -> None:
    """Supervise mode: run ExaBGP; its API process (the relay) connects to `socket_path`."""
    prepare_workdir(supervisor.workdir)
    try:
        socket_path.unlink(missing_ok=True)
    except OSError as exc:
        raise AdapterError(f"exabgp workdir {supervisor.workdir}: {exc.strerror}") from exc

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await serve(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_unix_server(
        on_connection, path=str(socket_path), limit=_LINE_LIMIT
    )
    try:
        # The workdir already keeps others out; the socket should not depend on the umask.
        os.chmod(socket_path, 0o600)
        async with server:
            await supervisor.run(start_text)
    finally:
        with contextlib.suppress(OSError):
            socket_path.unlink()
