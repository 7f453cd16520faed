"""One live API channel to one ExaBGP: commands go out in order, acks come back in that order.

ExaBGP 5 (with `exabgp.api.ack` on) answers every command line with `done` or `error`,
oldest first; a channel keeps one future per unanswered line and resolves them as the
answers arrive. When the channel goes away every unanswered line counts as refused.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence
from typing import Protocol

__all__ = ["AckSession", "Writer"]

log = logging.getLogger("vti_failover.exabgp")


class Writer(Protocol):
    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class AckSession:
    """One live API channel to one ExaBGP; acks come back in command order."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self.pending: collections.deque[tuple[str, asyncio.Future[bool]]] = collections.deque()
        self.closed = False

    def send(self, lines: Sequence[str]) -> list[asyncio.Future[bool]]:
        loop = asyncio.get_running_loop()
        futures = []
        for line in lines:
            fut: asyncio.Future[bool] = loop.create_future()
            self.pending.append((line, fut))
            futures.append(fut)
        if lines:
            self.writer.write("".join(f"{line}\n" for line in lines).encode())
        return futures

    def answered(self, ok: bool) -> None:
        if not self.pending:
            log.warning("exabgp answered %s with no command outstanding", "done" if ok else "error")
            return
        line, fut = self.pending.popleft()
        if not ok:
            log.error("exabgp refused: %s", line)
        if not fut.done():
            fut.set_result(ok)

    def fail_pending(self) -> None:
        self.closed = True
        while self.pending:
            _, fut = self.pending.popleft()
            if not fut.done():
                fut.set_result(False)
