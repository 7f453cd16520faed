"""The runtime's event inbox: failure evidence is never stuck behind a BGP table.

Two lanes, each in arrival order. Evidence (SA, link, probe, admin, timers, reloads) is
taken before BGP (sessions, End-of-RIB, learned routes: one lane, so a session's routes,
its End-of-RIB and its loss stay in the order the peer sent them). The evidence lane is
bounded: past the bound, probe answers and traffic counters are dropped (counted, logged
once per episode) and everything that can say a tunnel failed is still taken.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Generic, TypeVar

from agent.core import events as ev

__all__ = ["EVIDENCE_BOUND", "Inbox"]

log = logging.getLogger("vti_failover.runtime")

# 10 s of 5 probes/s from 1,000 tunnels.
EVIDENCE_BOUND = 50_000
_BGP = (
    ev.BgpRouteLearned,
    ev.BgpRouteWithdrawn,
    ev.BgpRoutesChanged,
    ev.BgpEndOfRib,
    ev.BgpNeighborUp,
    ev.BgpNeighborDown,
)
# Proof of life only: losing one under overload can delay a recovery, never hide a failure.
_DROPPABLE = (ev.ProbeSucceeded, ev.InboundTrafficSeen)

T = TypeVar("T")


class Inbox(Generic[T]):
    """Events (and runtime markers of type T) from every source to the one consumer."""

    def __init__(self, bound: int = EVIDENCE_BOUND) -> None:
        self.bound = bound
        self._evidence: collections.deque[ev.Event | T] = collections.deque()
        self._bgp: collections.deque[ev.Event] = collections.deque()
        self._ready = asyncio.Event()
        self.dropped = 0
        self._dropping = False

    def __len__(self) -> int:
        return len(self._evidence) + len(self._bgp)

    def put(self, item: ev.Event | T) -> None:
        if isinstance(item, _BGP):
            self._bgp.append(item)
        elif len(self._evidence) >= self.bound and isinstance(item, _DROPPABLE):
            self.dropped += 1
            if not self._dropping:
                self._dropping = True
                log.warning(
                    "agent overloaded: %d events waiting; dropping probe answers until it "
                    "catches up (failure evidence is kept)",
                    len(self._evidence),
                )
            return
        else:
            self._evidence.append(item)
        self._ready.set()

    def pop(self) -> ev.Event | T | None:
        """The next item, evidence first; None when both lanes are empty."""
        if self._evidence:
            item = self._evidence.popleft()
            if self._dropping and len(self._evidence) < self.bound // 2:
                self._dropping = False
                log.warning("agent caught up: %d probe answers were dropped", self.dropped)
            return item
        if self._bgp:
            return self._bgp.popleft()
        self._ready.clear()
        return None

    async def wait(self, timeout: float | None) -> bool:
        """Wait until something is in the inbox; False if the timeout came first."""
        if self._evidence or self._bgp:
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            return False
        return True
