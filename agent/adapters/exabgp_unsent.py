"""Withdrawals ExaBGP has acked but not yet reported writing to the neighbor.

ExaBGP's `done` means a command reached its RIB; the UPDATE goes out on that peer's next
turn. Its shutdown drops what is still queued, and with graceful restart negotiated it
closes the session without a NOTIFICATION, so the peer keeps a withdrawn prefix as stale for
the whole restart time: traffic still drawn into a tunnel we took away. Before an ExaBGP is
stopped on purpose the adapter waits here until every withdrawal sent to an up neighbor has
come back as an UPDATE sent (`api { send { parsed; update; } }`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

__all__ = ["UnsentWithdrawals"]


class UnsentWithdrawals:
    """(neighbor, prefix) withdrawals not yet seen on the wire; canonical strings."""

    def __init__(self) -> None:
        self._waiting: set[tuple[str, str]] = set()
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._waiting)

    def expect(self, peer: str, prefix: str) -> None:
        self._waiting.add((peer, prefix))

    def cancel(self, peer: str, prefix: str) -> None:
        """Announced again before the withdrawal went out: ExaBGP may never send it."""
        self._discard({(peer, prefix)})

    def sent(self, peer: str, withdrawn: Iterable[str]) -> None:
        self._discard({(peer, prefix) for prefix in withdrawn})

    def forget(self, peer: str | None = None) -> None:
        """The session (or all of them) went down: nothing more goes out on it."""
        self._discard({k for k in self._waiting if peer is None or k[0] == peer})

    async def drained(self) -> None:
        while self._waiting:
            self._changed.clear()
            await self._changed.wait()

    def _discard(self, keys: set[tuple[str, str]]) -> None:
        if keys & self._waiting:
            self._waiting -= keys
            self._changed.set()
