"""Kernel XFRM -> SA events: the kernel's own SAs per tunnel, whatever IKE daemon made them.

Design choice: a NETLINK_XFRM reader built on pyroute2's message classes, not parsing
`ip -s xfrm state` / `ip xfrm monitor`. pyroute2 has no XFRM API, but its `nlmsg`/`nla`
codec declares a C struct as a field table, so `xfrm_usersa_info`, `xfrm_usersa_id` and
`xfrm_user_expire` are a few declarations here. That gives the kernel's binary messages
directly: no text format that changes between iproute2 versions (`ip -j xfrm` is not
JSON), no subprocess per poll, events from the XFRMNLGRP_SA/EXPIRE groups as they happen,
and tests that feed the decoder binary messages built with the same classes (this host's
kernel has no ESP, so no real SA can exist here).

A tunnel's SAs are found by if_id (XFRMA_IF_ID) when the tunnel has one, else by mark
(XFRMA_MARK), else by its underlay address pair. The tunnel is down only when its last SA
is gone (a rekey adds the new SA first); a soft expire is a rekey due, not a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST, nla, nlmsg

from agent.adapters.dropped import DroppedMessages
from agent.config import Source, Tunnel
from agent.core.events import (
    ChildSaDown,
    ChildSaUp,
    Event,
    InboundTrafficSeen,
    SourceLost,
    SourceRecovered,
)
from agent.ports import AdapterError, Emit, PermissionDeniedError

__all__ = [
    "NETLINK_XFRM",
    "SELECTOR_FIELDS",
    "XFRMNLGRP_EXPIRE",
    "XFRMNLGRP_SA",
    "XFRM_MSG_DELSA",
    "XFRM_MSG_EXPIRE",
    "XFRM_MSG_GETSA",
    "XFRM_MSG_NEWSA",
    "XFRM_MSG_UPDSA",
    "SaInfo",
    "XfrmSource",
    "XfrmTracker",
    "decode",
    "xfrm_user_expire",
    "xfrm_usersa_id",
    "xfrm_usersa_info",
]

log = logging.getLogger("vti_failover.xfrm")

SOURCE = "xfrm"
NETLINK_XFRM = 6
XFRM_MSG_NEWSA = 0x10
XFRM_MSG_DELSA = 0x11
XFRM_MSG_GETSA = 0x12
XFRM_MSG_EXPIRE = 0x18
XFRM_MSG_UPDSA = 0x1A
XFRM_MSG_FLUSHSA = 0x1C
XFRMNLGRP_EXPIRE = 2
XFRMNLGRP_SA = 3
NLMSG_ERROR = 2
NLMSG_DONE = 3
_NLMSG_HDR = struct.Struct("=IHHII")
# A dump larger than this is not the SAs of any tunnel set we serve; stop reading it.
MAX_DUMP_SAS = 200_000

_XFRM_NLAS = (
    (6, "XFRMA_SA", "usersa_info"),
    (21, "XFRMA_MARK", "mark"),
    (31, "XFRMA_IF_ID", "uint32"),
)


class _XfrmNlas:
    """The attributes we read; the kernel sends more, which are skipped."""

    # pyroute2 ships no type information: its codec bases are Any to mypy.
    class mark(nla):  # type: ignore[misc]  # noqa: N801 - struct xfrm_mark
        fields = (("v", "I"), ("m", "I"))

    class usersa_info(nla):  # type: ignore[misc]  # noqa: N801 - struct in XFRMA_SA
        fields: tuple[tuple[str, str], ...] = ()


# struct xfrm_selector (linux/xfrm.h), 56 bytes: the head of SA and policy messages alike.
SELECTOR_FIELDS = (
    ("sel_daddr", "16s"),
    ("sel_saddr", "16s"),
    ("sel_dport", ">H"),
    ("sel_dport_mask", ">H"),
    ("sel_sport", ">H"),
    ("sel_sport_mask", ">H"),
    ("sel_family", "H"),
    ("sel_prefixlen_d", "B"),
    ("sel_prefixlen_s", "B"),
    ("sel_proto", "B"),
    ("__pad_sel", "3x"),
    ("sel_ifindex", "i"),
    ("sel_user", "I"),
)
# struct xfrm_usersa_info (linux/xfrm.h), 224 bytes on every ABI with 8-byte u64 alignment.
_USERSA_INFO_FIELDS = (
    *SELECTOR_FIELDS,
    # struct xfrm_id id
    ("daddr", "16s"),
    ("spi", ">I"),
    ("proto", "B"),
    ("__pad_id", "3x"),
    ("saddr", "16s"),
    # struct xfrm_lifetime_cfg lft
    ("soft_byte_limit", "Q"),
    ("hard_byte_limit", "Q"),
    ("soft_packet_limit", "Q"),
    ("hard_packet_limit", "Q"),
    ("soft_add_expires_seconds", "Q"),
    ("hard_add_expires_seconds", "Q"),
    ("soft_use_expires_seconds", "Q"),
    ("hard_use_expires_seconds", "Q"),
    # struct xfrm_lifetime_cur curlft
    ("bytes", "Q"),
    ("packets", "Q"),
    ("add_time", "Q"),
    ("use_time", "Q"),
    # struct xfrm_stats stats
    ("replay_window_stat", "I"),
    ("replay", "I"),
    ("integrity_failed", "I"),
    ("seq", "I"),
    ("reqid", "I"),
    ("family", "H"),
    ("mode", "B"),
    ("replay_window", "B"),
    ("flags", "B"),
    ("__pad_tail", "7x"),
)
_XfrmNlas.usersa_info.fields = _USERSA_INFO_FIELDS


class xfrm_usersa_info(nlmsg):  # type: ignore[misc]  # noqa: N801 - the kernel's struct name
    """XFRM_MSG_NEWSA / UPDSA / GETSA answers: one SA with its counters."""

    fields = _USERSA_INFO_FIELDS
    nla_map = _XFRM_NLAS
    mark = _XfrmNlas.mark
    usersa_info = _XfrmNlas.usersa_info


class xfrm_usersa_id(nlmsg):  # type: ignore[misc]  # noqa: N801 - the kernel's struct name
    """XFRM_MSG_DELSA (the whole SA follows in XFRMA_SA) and the GETSA dump request."""

    fields = (
        ("daddr", "16s"),
        ("spi", ">I"),
        ("family", "H"),
        ("proto", "B"),
        ("__pad", "1x"),
    )
    nla_map = _XFRM_NLAS
    mark = _XfrmNlas.mark
    usersa_info = _XfrmNlas.usersa_info


class xfrm_user_expire(nlmsg):  # type: ignore[misc]  # noqa: N801 - the kernel's struct name
    """XFRM_MSG_EXPIRE: the SA, and whether the hard limit (the SA is gone) was hit."""

    fields = (*_USERSA_INFO_FIELDS, ("hard", "B"), ("__pad_expire", "7x"))
    nla_map = _XFRM_NLAS
    mark = _XfrmNlas.mark
    usersa_info = _XfrmNlas.usersa_info


_CLASSES: dict[int, type[nlmsg]] = {
    XFRM_MSG_NEWSA: xfrm_usersa_info,
    XFRM_MSG_UPDSA: xfrm_usersa_info,
    XFRM_MSG_DELSA: xfrm_usersa_id,
    XFRM_MSG_EXPIRE: xfrm_user_expire,
}


@dataclass(frozen=True)
class SaInfo:
    """What we need of one kernel SA."""

    kind: int  # the netlink message type that told us
    src: str
    dst: str
    spi: int
    proto: int
    mark: int | None
    if_id: int | None
    packets: int
    hard: bool = False
    # The mask of XFRMA_MARK: the SA serves packets whose mark & mask == mark.
    mark_mask: int | None = None

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.dst, self.spi, self.proto)


def _address(raw: bytes, family: int) -> str:
    if family == socket.AF_INET6:
        return str(ipaddress.IPv6Address(raw[:16]))
    return str(ipaddress.IPv4Address(raw[:4]))


def _sa_from(kind: int, fields: Any, attrs: Any, hard: bool = False) -> SaInfo:
    mark = attrs.get_attr("XFRMA_MARK")
    if_id = attrs.get_attr("XFRMA_IF_ID")
    family = fields["family"]
    return SaInfo(
        kind=kind,
        src=_address(fields["saddr"], family),
        dst=_address(fields["daddr"], family),
        spi=fields["spi"],
        proto=fields["proto"],
        mark=None if mark is None else mark["v"],
        if_id=if_id,
        packets=fields["packets"],
        hard=hard,
        mark_mask=None if mark is None else mark["m"],
    )


def _messages(buf: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + _NLMSG_HDR.size <= len(buf):
        length, kind, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(buf, offset)
        if length < _NLMSG_HDR.size or offset + length > len(buf):
            raise ValueError(f"truncated netlink message at byte {offset}")
        yield kind, buf[offset : offset + length]
        offset += (length + 3) & ~3


def decode(buf: bytes) -> list[SaInfo | int]:
    """Decode a netlink datagram into SAs; bare ints are control types (DONE, FLUSHSA).

    Raises only ValueError (not a message we can read) and OSError (the kernel's error).
    """
    out: list[SaInfo | int] = []
    for kind, data in _messages(buf):
        cls = _CLASSES.get(kind)
        if cls is None:
            if kind in (NLMSG_DONE, XFRM_MSG_FLUSHSA):
                out.append(kind)
            elif kind == NLMSG_ERROR:
                if len(data) < _NLMSG_HDR.size + 4:
                    raise ValueError("truncated netlink error message")
                (code,) = struct.unpack_from("=i", data, _NLMSG_HDR.size)
                if code:
                    raise OSError(-code, f"XFRM netlink: {errno.errorcode.get(-code, code)}")
            continue
        try:
            sa = _decode_sa(cls, kind, data)
        except Exception as exc:
            # pyroute2's codec raises whatever its field reader meets; to us it is one kind.
            raise ValueError(f"undecodable XFRM message type {kind}: {exc!r}") from exc
        if sa is not None:
            out.append(sa)
    return out


def _decode_sa(cls: type[nlmsg], kind: int, data: bytes) -> SaInfo | None:
    msg = cls(data)
    msg.decode()
    if kind == XFRM_MSG_DELSA:
        inner = msg.get_attr("XFRMA_SA")
        return None if inner is None else _sa_from(kind, inner, msg)
    if kind == XFRM_MSG_EXPIRE:
        return _sa_from(kind, msg, msg, hard=bool(msg["hard"]))
    return _sa_from(kind, msg, msg)


def dump_request(seq: int) -> bytes:
    """XFRM_MSG_GETSA with NLM_F_DUMP: every SA, with counters."""
    msg = xfrm_usersa_id()
    msg["header"]["type"] = XFRM_MSG_GETSA
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
    msg["header"]["sequence_number"] = seq
    msg["daddr"] = b"\0" * 16
    msg.encode()
    return bytes(msg.data)


class _Matcher:
    def __init__(self, tunnels: Sequence[Tunnel]) -> None:
        self.if_ids = {t.if_id: t.name for t in tunnels if t.if_id is not None}
        self.marks = {
            t.sa_mark: t.name for t in tunnels if t.if_id is None and t.sa_mark is not None
        }
        self.pairs = {
            frozenset((str(t.underlay.local), str(t.underlay.remote))): t.name
            for t in tunnels
            if t.if_id is None and t.sa_mark is None
        }

    def __call__(self, sa: SaInfo) -> str | None:
        if sa.if_id:
            return self.if_ids.get(sa.if_id)
        if sa.mark:
            return self.marks.get(sa.mark)
        return self.pairs.get(frozenset((sa.src, sa.dst)))


class XfrmTracker:
    """Per tunnel, the kernel SAs that exist and their inbound packet counters."""

    def __init__(self, tunnels: Sequence[Tunnel]) -> None:
        self.tunnels = tuple(t.name for t in tunnels)
        self._local = {t.name: str(t.underlay.local) for t in tunnels}
        self._match = _Matcher(tunnels)
        self._sas: dict[tuple[str, int, int], str] = {}
        self._packets: dict[tuple[str, int, int], int] = {}

    def _live(self, tunnel: str) -> bool:
        return tunnel in self._sas.values()

    def on_event(self, sa: SaInfo, at: float) -> list[Event]:
        """One SA notification (new, updated, deleted or expired)."""
        tunnel = self._match(sa)
        if tunnel is None:
            return []
        was = self._live(tunnel)
        gone = sa.kind == XFRM_MSG_DELSA or (sa.kind == XFRM_MSG_EXPIRE and sa.hard)
        if gone:
            self._sas.pop(sa.key, None)
            self._packets.pop(sa.key, None)
        elif sa.kind in (XFRM_MSG_NEWSA, XFRM_MSG_UPDSA):
            self._sas[sa.key] = tunnel
            self._packets.setdefault(sa.key, sa.packets)
        now = self._live(tunnel)
        if now == was:
            return []
        if now:
            return [ChildSaUp(tunnel=tunnel, source=SOURCE, at=at)]
        reason = "xfrm expire" if sa.kind == XFRM_MSG_EXPIRE else "xfrm delsa"
        return [ChildSaDown(tunnel=tunnel, source=SOURCE, reason=reason, at=at)]

    def on_flush(self, at: float) -> list[Event]:
        """Every SA was flushed."""
        down = [t for t in self.tunnels if self._live(t)]
        self._sas.clear()
        self._packets.clear()
        return [ChildSaDown(tunnel=t, source=SOURCE, reason="xfrm flush", at=at) for t in down]

    def on_dump(self, sas: Sequence[SaInfo], at: float, *, full: bool) -> list[Event]:
        """A GETSA dump: the whole truth. full=True states every tunnel's presence."""
        seen: dict[tuple[str, int, int], str] = {}
        for sa in sas:
            tunnel = self._match(sa)
            if tunnel is not None:
                seen[sa.key] = tunnel
        counts = {sa.key: sa.packets for sa in sas if sa.key in seen}
        out: list[Event] = []
        for t in self.tunnels:
            was = self._live(t)
            now = t in seen.values()
            grown = 0
            for key, owner in seen.items():
                # Inbound SAs are the ones addressed to our end of the underlay.
                if owner != t or key[0] != self._local[t]:
                    continue
                prev = self._packets.get(key)
                if not full and prev is not None and counts[key] > prev:
                    grown += counts[key] - prev
            if full or now != was:
                out.append(
                    ChildSaUp(tunnel=t, source=SOURCE, at=at)
                    if now
                    else ChildSaDown(tunnel=t, source=SOURCE, reason="xfrm dump", at=at)
                )
            if grown:
                out.append(InboundTrafficSeen(tunnel=t, packets=grown, at=at))
        self._sas = seen
        self._packets = counts
        return out


class XfrmSource:
    """The `xfrm` liveness source: SA notifications as they happen, counters by polling."""

    name = "xfrm"

    def __init__(
        self,
        tunnels: Sequence[Tunnel],
        *,
        poll_interval_s: float = 1.0,
        retry_s: float = 2.0,
        open_socket: Callable[[int], socket.socket] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tunnels = tuple(t for t in tunnels if Source.XFRM in t.sources)
        self.poll_interval_s = poll_interval_s
        self.retry_s = retry_s
        self.open_socket = open_socket or _open_xfrm_socket
        self.clock = clock
        self.tracker = XfrmTracker(self.tunnels)
        self._blind = False
        self._dropped = DroppedMessages(log, "XFRM message")

    async def run(self, emit: Emit) -> None:
        while True:
            try:
                await self._watch(emit)
            except AdapterError as exc:
                if not self._blind:
                    self._blind = True
                    log.warning("XFRM netlink unusable, SA state unknown: %s", exc)
                    emit(SourceLost(source=SOURCE, detail=str(exc), at=self.clock()))
            await asyncio.sleep(self.retry_s)

    async def _watch(self, emit: Emit) -> None:
        events = self.open_socket((1 << (XFRMNLGRP_SA - 1)) | (1 << (XFRMNLGRP_EXPIRE - 1)))
        try:
            if self._blind:
                self._blind = False
                emit(SourceRecovered(source=SOURCE, at=self.clock()))
            for e in self.tracker.on_dump(await self._dump(), self.clock(), full=True):
                emit(e)
            poller = asyncio.create_task(self._poll(emit), name="xfrm-poll")
            try:
                loop = asyncio.get_running_loop()
                while True:
                    try:
                        buf = await loop.sock_recv(events, 1 << 16)
                    except OSError as exc:
                        if exc.errno != errno.ENOBUFS:
                            raise AdapterError(f"XFRM events: {exc.strerror}") from exc
                        # We fell behind and lost notifications: the dump is the truth.
                        log.warning("XFRM event socket overflowed, resynchronising")
                        for e in self.tracker.on_dump(await self._dump(), self.clock(), full=True):
                            emit(e)
                        continue
                    for e in self._translate(buf, self.clock()):
                        emit(e)
            finally:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
        finally:
            events.close()

    def _translate(self, buf: bytes, at: float) -> list[Event]:
        try:
            out: list[Event] = []
            for item in decode(buf):
                if isinstance(item, SaInfo):
                    out.extend(self.tracker.on_event(item, at))
                elif item == XFRM_MSG_FLUSHSA:
                    out.extend(self.tracker.on_flush(at))
        except Exception as exc:
            # One datagram we cannot read costs that datagram; the next dump corrects us.
            self._dropped(buf, exc)
            return []
        return out

    async def _poll(self, emit: Emit) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                sas = await self._dump()
            except AdapterError as exc:
                log.warning("XFRM dump failed: %s", exc)
                continue
            for e in self.tracker.on_dump(sas, self.clock(), full=False):
                emit(e)

    async def _dump(self) -> list[SaInfo]:
        sock = self.open_socket(0)
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_sendall(sock, dump_request(1))
            sas: list[SaInfo] = []
            while True:
                items = decode(await loop.sock_recv(sock, 1 << 16))
                sas.extend(i for i in items if isinstance(i, SaInfo))
                if NLMSG_DONE in items:
                    return sas
                if len(sas) > MAX_DUMP_SAS:
                    raise AdapterError(f"XFRM dump: more than {MAX_DUMP_SAS} SAs")
        except OSError as exc:
            raise AdapterError(f"XFRM dump: {exc.strerror or exc}") from exc
        except (ValueError, struct.error) as exc:
            raise AdapterError(f"XFRM dump: undecodable answer: {exc}") from exc
        finally:
            sock.close()


def _open_xfrm_socket(groups: int) -> socket.socket:
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM)
    except PermissionError as exc:
        raise PermissionDeniedError("XFRM netlink needs CAP_NET_ADMIN") from exc
    except OSError as exc:
        raise AdapterError(f"XFRM netlink socket: {exc.strerror}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, groups))
        sock.setblocking(False)
    except PermissionError as exc:
        sock.close()
        raise PermissionDeniedError("XFRM netlink groups need CAP_NET_ADMIN") from exc
    except OSError as exc:
        sock.close()
        raise AdapterError(f"XFRM netlink bind: {exc.strerror}") from exc
    return sock
