"""Link-state source: a tunnel interface's netlink state becomes LinkChanged, once per change.

An initial dump at start, then kernel notifications (RTMGRP_LINK). A failed netlink socket
is reported as SourceLost("link"), reopened with jittered backoff, then SourceRecovered and
a fresh dump, so the core never keeps a stale picture as if it were news.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from pyroute2.netlink.rtnl import RTMGRP_LINK

from agent.adapters.netlink_links import LinkView, link_view
from agent.adapters.netlink_socket import rtnl_socket
from agent.core.events import LinkChanged, SourceLost, SourceRecovered
from agent.ports import Emit

__all__ = ["LinkSource"]

log = logging.getLogger("vti_failover.links")

SOURCE = "link"


class LinkSource:
    """Watches the interfaces of the given tunnels ({tunnel name: interface name})."""

    name = "link"

    def __init__(
        self,
        interfaces: Mapping[str, str],
        *,
        netns: str | None = None,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        rcvbuf: int = 1 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interfaces = dict(interfaces)
        self.netns = netns
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.rcvbuf = rcvbuf
        self.clock = clock
        # ifindex -> state, only for indices that carry (or carried) a watched name.
        self._by_index: dict[int, LinkView] = {}
        self._emitted: dict[str, tuple[bool, bool, bool]] = {}

    async def run(self, emit: Emit) -> None:
        delay = self.backoff_min_s
        lost = False
        while True:
            try:
                async with self._open() as ipr:
                    await self._dump(ipr)
                    if lost:
                        emit(SourceRecovered(at=self.clock(), source=SOURCE))
                        lost = False
                        delay = self.backoff_min_s
                    self._emit_changes(emit)
                    await self._follow(ipr, emit)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any socket failure means: blind, retry
                if not lost:
                    log.warning("link events lost: %s", exc)
                    emit(SourceLost(at=self.clock(), source=SOURCE, detail=str(exc)))
                    lost = True
                    # After blindness nothing said before counts: report every state afresh.
                    self._emitted.clear()
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter
                delay = min(delay * 2, self.backoff_max_s)

    @contextlib.asynccontextmanager
    async def _open(self) -> AsyncIterator[Any]:
        ipr = rtnl_socket(self.netns, rcvbuf=self.rcvbuf)
        try:
            # Subscribe before the dump so no change between the two is missed.
            await ipr.bind(groups=RTMGRP_LINK)
            yield ipr
        finally:
            ipr.close()

    async def _dump(self, ipr: Any) -> None:
        self._by_index.clear()
        async for msg in await ipr.link("dump"):
            self._note(msg)

    async def _follow(self, ipr: Any, emit: Emit) -> None:
        while True:
            got = False
            async for msg in ipr.get():
                got = True
                self._note(msg)
            if not got:
                raise ConnectionError("netlink socket closed")
            self._emit_changes(emit)

    def _note(self, msg: Any) -> None:
        view = link_view(msg)
        if view is None:
            return
        if view.present and view.name in self.interfaces.values():
            self._by_index[view.index] = view
        else:
            # Deleted, or renamed away from a watched name.
            self._by_index.pop(view.index, None)

    def _emit_changes(self, emit: Emit) -> None:
        now = self.clock()
        by_name = {v.name: v for v in self._by_index.values()}
        for tunnel, interface in self.interfaces.items():
            view = by_name.get(interface)
            state = (view is not None, view.admin_up, view.oper_up) if view else (False,) * 3
            if self._emitted.get(tunnel) == state:
                continue
            self._emitted[tunnel] = state
            emit(
                LinkChanged(
                    at=now, tunnel=tunnel, present=state[0], admin_up=state[1], oper_up=state[2]
                )
            )
