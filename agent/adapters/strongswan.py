"""strongSwan VICI -> SA events: report what charon says about each tunnel's CHILD_SAs.

Two VICI sessions: one listens for `ike-updown`, `child-updown`, `child-rekey` and
`ike-rekey` in a thread (the `vici` package blocks; `listen(timeout=0.5)` lets the thread
see a stop request), the other polls `list-sas` for per-CHILD_SA state and inbound
counters. A tunnel is down only when its last live CHILD_SA is gone, so a rekey (new SA
before the old one goes) never looks like a failure. While charon cannot be reached the
source says `SourceLost` once -- blindness, not a dead tunnel -- and after reconnecting
`SourceRecovered` followed by the full state from `list-sas`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import vici
import vici.exception

from agent.adapters.dropped import DroppedMessages
from agent.adapters.vici_wire import bounded_session
from agent.config import Source, Tunnel, ViciSettings
from agent.core.events import (
    ChildSaDown,
    ChildSaRekeyed,
    ChildSaUp,
    Event,
    InboundTrafficSeen,
    SourceLost,
    SourceRecovered,
)
from agent.ports import AdapterError, Emit

__all__ = ["EVENT_TYPES", "LIVE_STATES", "ViciSource", "ViciTracker", "ViciUnreachableError"]

log = logging.getLogger("vti_failover.vici")

SOURCE = "vici"
EVENT_TYPES = ("ike-updown", "child-updown", "child-rekey", "ike-rekey")
# A REKEYED SA still carries traffic until its successor's peer switches over.
LIVE_STATES = frozenset({"INSTALLED", "UPDATING", "REKEYING", "REKEYED"})
LISTEN_TIMEOUT_S = 0.5

VICI_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    vici.exception.SessionException,
    vici.exception.CommandException,
    vici.exception.EventUnknownException,
    vici.exception.DeserializationException,
)

Message = Mapping[str, Any]


class ViciUnreachableError(AdapterError):
    """charon's VICI socket cannot be reached or stopped answering."""


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _hex(value: object) -> int | None:
    if value is None:
        return None
    try:
        return int(_text(value), 16)
    except ValueError:
        return None


def _count(value: object) -> int:
    try:
        return int(_text(value))
    except (TypeError, ValueError):
        return 0


def _sections(msg: Message) -> Iterable[tuple[str, Message]]:
    """The named sub-sections of a message (IKE SAs at the top, CHILD_SAs below)."""
    return ((k, v) for k, v in msg.items() if isinstance(v, Mapping))


@dataclass(frozen=True)
class _ChildSa:
    tunnel: str
    ike_uid: str


class _Matcher:
    """Which tunnel a CHILD_SA belongs to: by connection/child name, then mark, then if_id."""

    def __init__(self, tunnels: Sequence[Tunnel]) -> None:
        self.names = {(t.ike.connection, t.ike.child): t.name for t in tunnels if t.ike}
        self.marks = {t.sa_mark: t.name for t in tunnels if t.sa_mark is not None}
        self.if_ids = {t.if_id: t.name for t in tunnels if t.if_id is not None}

    def __call__(self, ike_name: str, child: Message) -> str | None:
        by_name = self.names.get((ike_name, _text(child.get("name", ""))))
        if by_name is not None:
            return by_name
        mark = _hex(child.get("mark-in"))
        if mark:
            by_mark = self.marks.get(mark)
            if by_mark is not None:
                return by_mark
        if_id = _hex(child.get("if-id-in"))
        if if_id:
            return self.if_ids.get(if_id)
        return None


class ViciTracker:
    """What charon said, per tunnel: its live CHILD_SAs and their inbound packet counters.

    Pure bookkeeping: VICI messages in, core events out. `seq` counts the events applied,
    so a `list-sas` snapshot taken while events were arriving does not overrule them.
    """

    def __init__(self, tunnels: Sequence[Tunnel]) -> None:
        self.tunnels = tuple(t.name for t in tunnels)
        self._match = _Matcher(tunnels)
        self._sas: dict[str, _ChildSa] = {}
        self._packets: dict[str, int] = {}
        self._touched: dict[str, int] = {}
        self.seq = 0

    def live(self, tunnel: str) -> frozenset[str]:
        """The unique ids of the tunnel's live CHILD_SAs."""
        return frozenset(uid for uid, sa in self._sas.items() if sa.tunnel == tunnel)

    def forget(self) -> None:
        """charon is out of sight: what it said no longer holds."""
        self._sas.clear()
        self._packets.clear()
        self._touched.clear()

    def on_event(self, kind: str, msg: Message, at: float) -> list[Event]:
        """Translate one VICI event message."""
        self.seq += 1
        before = {t: bool(self.live(t)) for t in self.tunnels}
        affected: set[str] = set()
        rekeyed: list[str] = []
        up = _text(msg.get("up", "")) == "yes"
        for ike_name, ike in _sections(msg):
            if kind == "ike-rekey":
                affected |= self._ike_rekeyed(ike)
            elif kind == "ike-updown" and not up:
                affected |= self._ike_gone(_text(ike.get("uniqueid", "")))
            elif kind == "child-updown":
                for _, child in _sections(ike.get("child-sas", {})):
                    affected |= self._child_updown(ike_name, ike, child, up)
            elif kind == "child-rekey":
                for _, pair in _sections(ike.get("child-sas", {})):
                    tunnel = self._child_rekeyed(ike_name, ike, pair)
                    if tunnel is not None:
                        rekeyed.append(tunnel)
        for t in affected.union(rekeyed):
            self._touched[t] = self.seq
        out: list[Event] = []
        for t in self.tunnels:
            now_live = bool(self.live(t))
            if now_live != before[t]:
                out.append(
                    ChildSaUp(tunnel=t, source=SOURCE, at=at)
                    if now_live
                    else ChildSaDown(tunnel=t, source=SOURCE, reason=f"vici {kind}", at=at)
                )
        out.extend(
            ChildSaRekeyed(tunnel=t, source=SOURCE, at=at)
            for t in dict.fromkeys(rekeyed)
            if self.live(t)
        )
        return out

    def _child_updown(self, ike_name: str, ike: Message, child: Message, up: bool) -> set[str]:
        uid = _text(child.get("uniqueid", ""))
        if not uid:
            return set()
        if not up:
            return self._drop(uid)
        tunnel = self._match(ike_name, child)
        if tunnel is None or _text(child.get("state", "")) not in LIVE_STATES:
            return set()
        self._sas[uid] = _ChildSa(tunnel, _text(ike.get("uniqueid", "")))
        self._packets[uid] = _count(child.get("packets-in"))
        return {tunnel}

    def _child_rekeyed(self, ike_name: str, ike: Message, pair: Message) -> str | None:
        old, new = pair.get("old"), pair.get("new")
        if not isinstance(old, Mapping) or not isinstance(new, Mapping):
            return None
        tunnel = self._match(ike_name, new)
        if tunnel is None:
            return None
        # The old SA stays installed a moment longer, but charon says no more about it.
        self._drop(_text(old.get("uniqueid", "")))
        uid = _text(new.get("uniqueid", ""))
        if uid:
            self._sas[uid] = _ChildSa(tunnel, _text(ike.get("uniqueid", "")))
            self._packets[uid] = _count(new.get("packets-in"))
        return tunnel

    def _ike_rekeyed(self, pair: Message) -> set[str]:
        old, new = pair.get("old"), pair.get("new")
        if not isinstance(old, Mapping) or not isinstance(new, Mapping):
            return set()
        old_uid, new_uid = _text(old.get("uniqueid", "")), _text(new.get("uniqueid", ""))
        moved = set()
        for uid, sa in list(self._sas.items()):
            if sa.ike_uid == old_uid:
                self._sas[uid] = _ChildSa(sa.tunnel, new_uid)
                moved.add(sa.tunnel)
        return moved

    def _ike_gone(self, ike_uid: str) -> set[str]:
        gone: set[str] = set()
        for uid, sa in list(self._sas.items()):
            if sa.ike_uid == ike_uid:
                gone |= self._drop(uid)
        return gone

    def _drop(self, uid: str) -> set[str]:
        sa = self._sas.pop(uid, None)
        self._packets.pop(uid, None)
        return set() if sa is None else {sa.tunnel}

    def on_snapshot(
        self, ike_sas: Sequence[Message], at: float, *, since: int, full: bool
    ) -> list[Event]:
        """Reconcile with a `list-sas` answer whose request went out when `seq` was `since`.

        full=True (after connecting): state every tunnel's SA presence, whatever was said
        before. Tunnels an event touched since the request keep what that event said.
        """
        seen: dict[str, _ChildSa] = {}
        packets: dict[str, int] = {}
        for msg in ike_sas:
            for ike_name, ike in _sections(msg):
                ike_uid = _text(ike.get("uniqueid", ""))
                for _, child in _sections(ike.get("child-sas", {})):
                    uid = _text(child.get("uniqueid", ""))
                    tunnel = self._match(ike_name, child)
                    if uid and tunnel and _text(child.get("state", "")) in LIVE_STATES:
                        seen[uid] = _ChildSa(tunnel, ike_uid)
                        packets[uid] = _count(child.get("packets-in"))
        out: list[Event] = []
        for t in self.tunnels:
            if self._touched.get(t, -1) > since:
                continue
            was = bool(self.live(t))
            previous = {uid: self._packets.get(uid) for uid in self.live(t)}
            for uid in previous:
                self._drop(uid)
            grown = 0
            for uid, sa in seen.items():
                if sa.tunnel != t:
                    continue
                self._sas[uid] = sa
                prev = previous.get(uid)
                # Counters of an SA first met here only set the baseline.
                if not full and prev is not None and packets[uid] > prev:
                    grown += packets[uid] - prev
                self._packets[uid] = packets[uid]
            now_live = bool(self.live(t))
            if full or now_live != was:
                out.append(
                    ChildSaUp(tunnel=t, source=SOURCE, at=at)
                    if now_live
                    else ChildSaDown(tunnel=t, source=SOURCE, reason="vici list-sas", at=at)
                )
            if grown:
                out.append(InboundTrafficSeen(tunnel=t, packets=grown, at=at))
        return out


def _connect(uri: str, timeout: float) -> socket.socket:
    parts = urlsplit(uri)
    try:
        if parts.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: Any = (parts.netloc + parts.path) or "/var/run/charon.vici"
        elif parts.scheme == "tcp":
            sock = socket.socket(
                socket.AF_INET6 if ":" in (parts.hostname or "") else socket.AF_INET
            )
            target = (parts.hostname or "127.0.0.1", parts.port or 4502)
        else:
            raise ViciUnreachableError(f"unsupported VICI socket URI {uri!r}")
        sock.settimeout(timeout)
        try:
            sock.connect(target)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise ViciUnreachableError(f"{uri}: {exc.strerror or exc}") from exc
    return sock


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


_Item = tuple[str, Any, Any, float]


class ViciSource:
    """The `vici` liveness source for the tunnels that list it."""

    name = "vici"

    def __init__(
        self,
        tunnels: Sequence[Tunnel],
        settings: ViciSettings,
        *,
        reconnect_min_s: float = 0.2,
        reconnect_max_s: float = 5.0,
        request_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tunnels = tuple(t for t in tunnels if Source.VICI in t.sources)
        self.settings = settings
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.request_timeout_s = request_timeout_s
        self.clock = clock
        self.tracker = ViciTracker(self.tunnels)
        self._blind = False
        self._dropped = DroppedMessages(log, "VICI message")

    async def run(self, emit: Emit) -> None:
        """Watch charon until cancelled, reconnecting with jittered backoff."""
        delay = self.reconnect_min_s
        while True:
            connected = False
            try:
                connected = await self._session(emit)
            except ViciUnreachableError as exc:
                self.tracker.forget()
                if not self._blind:
                    self._blind = True
                    log.warning("VICI unreachable, SA state unknown: %s", exc)
                    emit(SourceLost(source=SOURCE, detail=str(exc), at=self.clock()))
            if connected:
                delay = self.reconnect_min_s
            # Jitter keeps many agents from hammering a restarting charon in step.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not crypto
            delay = min(delay * 2, self.reconnect_max_s)

    async def _session(self, emit: Emit) -> bool:
        """One connection's life; raises ViciUnreachableError when it ends."""
        uri = self.settings.socket
        events_sock = await asyncio.to_thread(_connect, uri, self.request_timeout_s)
        try:
            command_sock = await asyncio.to_thread(_connect, uri, self.request_timeout_s)
        except ViciUnreachableError:
            _close(events_sock)
            raise
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        stop = threading.Event()

        def deliver(item: _Item) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(queue.put_nowait, item)

        listener = loop.run_in_executor(
            None, self._listen, bounded_session(events_sock), stop, deliver
        )
        command = bounded_session(command_sock)
        poller: asyncio.Task[None] | None = None
        try:
            if self._blind:
                self._blind = False
                log.info("VICI reachable again, resynchronising")
                emit(SourceRecovered(source=SOURCE, at=self.clock()))
            poller = asyncio.create_task(self._poll(command, deliver), name="vici-poll")
            while True:
                kind, a, b, at = await queue.get()
                if kind == "event":
                    self._emit_all(emit, self._on_event(a, b, at))
                elif kind == "snapshot":
                    since, full = b
                    self._emit_all(emit, self._on_snapshot(a, at, since, full))
                else:
                    raise ViciUnreachableError(f"{uri}: {a}") from b
        finally:
            stop.set()
            if poller is not None:
                poller.cancel()
            _close(events_sock)
            _close(command_sock)
            await asyncio.wait([listener], timeout=2 * LISTEN_TIMEOUT_S + 1)
            if poller is not None:
                await asyncio.wait([poller], timeout=1)

    def _on_event(self, kind: str, msg: Message, at: float) -> list[Event]:
        try:
            return self.tracker.on_event(kind, msg, at)
        except Exception as exc:
            # A message we cannot read must not end the source: the next poll corrects us.
            self._dropped((kind, msg), exc)
            return []

    def _on_snapshot(
        self, sas: Sequence[Message], at: float, since: int, full: bool
    ) -> list[Event]:
        try:
            return self.tracker.on_snapshot(sas, at, since=since, full=full)
        except Exception as exc:
            # Nothing of it applied is better than half: the next poll tries again.
            self._dropped(("list-sas", sas), exc)
            return []

    @staticmethod
    def _emit_all(emit: Emit, events: Iterable[Event]) -> None:
        for event in events:
            emit(event)

    async def _poll(self, command: vici.Session, deliver: Callable[[_Item], None]) -> None:
        full = True
        while True:
            since = self.tracker.seq
            try:
                sas = await asyncio.to_thread(lambda: list(command.list_sas()))
            except Exception as exc:
                # charon's socket failing and a packet past our bounds both end the session.
                deliver(("gone", f"list-sas: {exc}", exc, self.clock()))
                return
            deliver(("snapshot", sas, (since, full), self.clock()))
            full = False
            await asyncio.sleep(self.settings.poll_interval_s)

    def _listen(
        self, session: vici.Session, stop: threading.Event, deliver: Callable[[_Item], None]
    ) -> None:
        """Thread body: forward VICI events until asked to stop or the socket fails."""
        stream = session.listen(list(EVENT_TYPES), timeout=LISTEN_TIMEOUT_S)
        try:
            for kind, msg in stream:
                if stop.is_set():
                    break
                if kind is not None:
                    deliver(("event", _text(kind), msg, self.clock()))
        except Exception as exc:
            # Beyond socket errors, a packet past our bounds: either way the stream is done.
            if not stop.is_set():
                deliver(("gone", f"event stream: {exc}", exc, self.clock()))
            return
        finally:
            # Closing unregisters, which fails on a dead socket; nothing left to tell.
            with contextlib.suppress(*VICI_ERRORS):
                stream.close()
        if not stop.is_set():
            deliver(("gone", "event stream ended", None, self.clock()))
