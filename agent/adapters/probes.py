"""In-tunnel probes: each probe becomes exactly one ProbeSucceeded or ProbeLost, nothing more.

Each tunnel is probed from its inner address to the peer's inner address, out of its own
interface, with ICMP/ICMPv6 echo (default) or UDP echo (for peers that filter ICMP). The
source only reports each probe; loss windows and RTT thresholds are the core's business.

Shape, chosen for hundreds of tunnels in one process:
- One socket per (address family, kind): a raw ICMP socket sees every echo reply in the
  namespace (ICMP_FILTER / ICMP6_FILTER pass only echo replies), a UDP socket per family
  sees every echoed UDP probe. Replies are matched on (identifier, sequence) - each tunnel
  owns one ICMP identifier and counts its own sequence - and must also come from that
  tunnel's peer address and carry the exact payload sent, so another tunnel's, another
  process's or a forged reply never counts.
- The outgoing interface is chosen per packet with IP_PKTINFO / IPV6_PKTINFO (ifindex and
  source address). That sets the same output-interface key of the route lookup as
  SO_BINDTODEVICE does, but per packet, so one socket serves every tunnel; a socket per
  tunnel with SO_BINDTODEVICE would cost hundreds of descriptors and readers.
- One scheduler task sends due probes from a heap of send times and expires probes from a
  deadline heap; one reader callback per socket (loop.add_reader) matches replies. No task,
  future or timer per packet.
- Raw sockets, not icmplib: icmplib's async API opens a socket per request and cannot
  choose an outgoing interface per packet, which is the whole point here.
- Replies are stamped by the kernel on arrival (SO_TIMESTAMPNS): whether a reply came
  within its timeout, and its RTT, do not depend on when this process got to read it.

`at` of ProbeSucceeded is when the probe was sent (rtt_ms says how long it took); `at` of
ProbeLost is when its timeout expired, or when sending it failed. A probe that cannot be
sent (interface missing or down, address gone, socket error) is lost; that is logged once
when a tunnel starts failing to send and once when it can send again, not per packet.
Needs CAP_NET_RAW (raw sockets).

The UDP probe's peer must echo each datagram back unchanged, from the probed address, to
the sending port; `serve_udp_echo` below is such a responder, and any UDP echo service
(inetd's internal `echo dgram`) works too.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import heapq
import ipaddress
import itertools
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from agent.adapters import probe_wire as wire
from agent.config import ProbeKind, Source, Tunnel
from agent.core.events import ProbeLost, ProbeSucceeded
from agent.ports import AdapterError, Emit, PermissionDeniedError

__all__ = ["ProbeSource", "SendObserver", "serve_udp_echo"]

T = TypeVar("T")

log = logging.getLogger("vti_failover.probes")

# Called for every probe sent: tunnel, planned send time, actual send time.
SendObserver = Callable[[str, float, float], None]

_SIOCGIFINDEX = 0x8933
_CLONE_NEWNET = 0x40000000
_RCVBUF = 4 * 1024 * 1024
_SO_RCVBUFFORCE = 33
_SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("=qq")
# Replies read per readiness callback, so one busy socket cannot starve the loop.
_READ_BATCH = 512
_IFINDEX_GONE = frozenset({errno.ENODEV, errno.ENXIO})

_IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
_SockKey = tuple[int, ProbeKind]


@dataclass(slots=True)
class _Target:
    """One tunnel's probe: where from, where to, how often, and its own counters."""

    tunnel: str
    interface: str
    kind: ProbeKind
    version: int
    source: _IPAddr
    peer: _IPAddr
    port: int
    interval: float
    timeout: float
    size: int
    ident: int
    seq: int = 0
    payload: bytes = b""
    ifindex: int | None = None
    failing: str | None = None


@dataclass(slots=True)
class _Pending:
    target: _Target
    seq: int
    sent_at: float
    # Wall clock, to compare with the kernel's receive timestamp of the reply.
    sent_wall: float


@dataclass
class _Matcher:
    """Outstanding probes by (ident, seq): written by the scheduler, read by the readers."""

    pending: dict[tuple[int, int], _Pending] = field(default_factory=dict)


def _setns_call(netns: str, fn: Callable[[], T]) -> T:
    """Run fn in a short-lived thread that entered netns (setns affects one thread only)."""
    out: list[T] = []
    err: list[BaseException] = []

    def work() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, os.strerror(code))
            finally:
                os.close(fd)
            out.append(fn())
        except BaseException as exc:  # handed to the caller's thread
            err.append(exc)

    thread = threading.Thread(target=work, name=f"netns:{netns}")
    thread.start()
    thread.join()
    if err:
        raise err[0]
    return out[0]


def _open_socket(version: int, kind: ProbeKind) -> socket.socket:
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    if kind is ProbeKind.ICMP:
        if version == 4:
            sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            sock.setsockopt(
                wire.SOL_RAW, wire.ICMP_FILTER, wire.icmp_filter_only(wire.ICMP_ECHO_REPLY)
            )
        else:
            sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            sock.setsockopt(
                socket.IPPROTO_ICMPV6,
                wire.ICMP6_FILTER,
                wire.icmp6_filter_only(wire.ICMP6_ECHO_REPLY),
            )
    else:
        sock = socket.socket(family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        if version == 6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(("0.0.0.0", 0) if version == 4 else ("::", 0))
    try:
        # Root may exceed rmem_max: a burst of replies must not overflow between reads.
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RCVBUF)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
    # The kernel stamps each reply on arrival: a reply that came in time counts even when
    # this process was descheduled and reads it late, and its RTT is the network's.
    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    sock.setblocking(False)
    return sock


def _received_at(ancdata: list[tuple[int, int, bytes]]) -> float | None:
    for level, kind, value in ancdata:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(value)
            stamp: float = sec + nsec / 1e9
            return stamp
    return None


def _ifindex(sock: socket.socket, name: str) -> int:
    """The interface's index in the socket's own namespace (if_nametoindex uses the thread's)."""
    req = struct.pack("16si", name.encode(), 0)
    res = fcntl.ioctl(sock.fileno(), _SIOCGIFINDEX, req)
    index: int = struct.unpack("16si", res)[1]
    return index


def _host(addr: str) -> _IPAddr | None:
    try:
        return ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return None


class ProbeSource:
    """Probes the given tunnels; `netns` names the namespace that holds them (default: ours)."""

    name = "probe"

    def __init__(
        self,
        tunnels: Sequence[Tunnel],
        *,
        netns: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_send: SendObserver | None = None,
    ) -> None:
        self.netns = netns
        self.clock = clock
        self.on_send = on_send
        self._cookie = os.urandom(8)
        base = int.from_bytes(os.urandom(2), "big")
        self.targets: list[_Target] = []
        for i, t in enumerate(x for x in tunnels if Source.PROBE in x.sources):
            p = t.probe
            target = _Target(
                tunnel=t.name,
                interface=t.interface,
                kind=p.kind,
                version=t.inner.peer.version,
                source=t.inner.local.ip,
                peer=t.inner.peer,
                port=p.udp_port or 0,
                interval=p.interval_s,
                timeout=p.timeout_s,
                size=p.payload_bytes,
                ident=(base + i) & 0xFFFF,
            )
            # ICMP payload is fixed per source: the cookie, repeated to the configured size.
            target.payload = (self._cookie * (p.payload_bytes // 8 + 1))[: p.payload_bytes]
            self.targets.append(target)
        if len(self.targets) > 0xFFFF:
            raise AdapterError("more than 65535 probed tunnels: ICMP identifiers run out")
        self._matcher = _Matcher()
        self._sockets: dict[_SockKey, socket.socket] = {}
        self._emit: Emit | None = None
        # Sends skipped because the scheduler fell a whole interval behind (and whether it
        # is behind now, so that is logged once per episode).
        self.late_sends = 0
        self._late = False

    def ident_of(self, tunnel: str) -> int:
        """The ICMP identifier (and UDP probe id) this source uses for a tunnel."""
        return next(t.ident for t in self.targets if t.tunnel == tunnel)

    async def run(self, emit: Emit) -> None:
        if not self.targets:
            await asyncio.Event().wait()
        keys = sorted({(t.version, t.kind) for t in self.targets})
        try:
            if self.netns is None:
                self._sockets = {k: _open_socket(*k) for k in keys}
            else:
                netns = self.netns
                self._sockets = _setns_call(netns, lambda: {k: _open_socket(*k) for k in keys})
        except PermissionError as exc:
            raise PermissionDeniedError(f"probe sockets need CAP_NET_RAW: {exc}") from exc
        except OSError as exc:
            raise AdapterError(f"cannot open probe sockets: {exc}") from exc
        self._emit = emit
        loop = asyncio.get_running_loop()
        try:
            for key, sock in self._sockets.items():
                loop.add_reader(sock.fileno(), self._on_readable, key, sock)
            await self._schedule(emit)
        finally:
            for sock in self._sockets.values():
                loop.remove_reader(sock.fileno())
                sock.close()
            self._sockets = {}
            self._matcher.pending.clear()

    async def _schedule(self, emit: Emit) -> None:
        start = self.clock()
        n = len(self.targets)
        # Spread first sends over each interval so a thousand tunnels do not send at once.
        sends = [(start + t.interval * i / n, i) for i, t in enumerate(self.targets)]
        heapq.heapify(sends)
        deadlines: list[tuple[float, int, int]] = []
        pending = self._matcher.pending
        while True:
            now = self.clock()
            while sends[0][0] <= now:
                planned, i = heapq.heappop(sends)
                target = self.targets[i]
                sent = self._send(target, planned, emit)
                if sent is not None:
                    heapq.heappush(
                        deadlines, (sent.sent_at + target.timeout, target.ident, sent.seq)
                    )
                nxt = planned + target.interval
                now = self.clock()
                if nxt <= now:
                    # Fell a whole interval behind: skip ahead rather than burst.
                    nxt = now + target.interval
                    self._note_late(now - planned, target.interval)
                elif self._late and now - planned < target.interval / 4:
                    self._late = False
                    log.info("probes are sent on schedule again")
                heapq.heappush(sends, (nxt, i))
            if deadlines and deadlines[0][0] <= now:
                # Replies that arrived while this loop was busy are read before any
                # probe is declared lost; their kernel timestamps say if they were in time.
                for key, sock in self._sockets.items():
                    self._on_readable(key, sock, limit=None)
            while deadlines and deadlines[0][0] <= now:
                deadline, ident, seq = heapq.heappop(deadlines)
                lost = pending.pop((ident, seq), None)
                if lost is not None:
                    emit(ProbeLost(tunnel=lost.target.tunnel, at=deadline))
            wake = sends[0][0] if not deadlines else min(sends[0][0], deadlines[0][0])
            await asyncio.sleep(max(0.0, wake - self.clock()))

    def _note_late(self, late_s: float, interval: float) -> None:
        """Say once per episode that probes cannot keep their rate (the loop is too busy)."""
        self.late_sends += 1
        if not self._late:
            self._late = True
            log.warning(
                "probes are sent %.0f ms late (interval %.0f ms): the agent cannot keep the "
                "configured probe rate; some are skipped",
                late_s * 1000,
                interval * 1000,
            )

    def _send(self, target: _Target, planned: float, emit: Emit) -> _Pending | None:
        sock = self._sockets[(target.version, target.kind)]
        seq = target.seq
        target.seq = (seq + 1) & 0xFFFF
        now = self.clock()
        try:
            if target.ifindex is None:
                target.ifindex = _ifindex(sock, target.interface)
            sent_at, sent_wall = self.clock(), time.time()
            self._sendmsg(sock, target, seq, target.ifindex)
        except OSError as exc:
            if exc.errno in _IFINDEX_GONE:
                # Deleted (or recreated under a new index): look it up again next time.
                target.ifindex = None
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            if target.failing != reason:
                log.warning(
                    "probe %s: cannot send via %s (%s): its probes count as lost",
                    target.tunnel,
                    target.interface,
                    reason,
                )
                target.failing = reason
            emit(ProbeLost(tunnel=target.tunnel, at=now))
            return None
        if target.failing is not None:
            log.info("probe %s: sending via %s again", target.tunnel, target.interface)
            target.failing = None
        if self.on_send is not None:
            self.on_send(target.tunnel, planned, sent_at)
        pend = _Pending(target, seq, sent_at, sent_wall)
        self._matcher.pending[(target.ident, seq)] = pend
        return pend

    def _sendmsg(self, sock: socket.socket, target: _Target, seq: int, ifindex: int) -> None:
        dst = str(target.peer)
        if target.kind is ProbeKind.ICMP:
            if target.version == 4:
                data = wire.encode_echo_v4(target.ident, seq, target.payload)
            else:
                data = wire.encode_echo_v6(target.ident, seq, target.payload)
        else:
            data = wire.encode_udp_probe(target.ident, seq, self._cookie, target.size)
        if isinstance(target.source, ipaddress.IPv4Address):
            info = wire.encode_pktinfo_v4(ifindex, target.source)
            sock.sendmsg(
                [data], [(socket.IPPROTO_IP, wire.IP_PKTINFO, info)], 0, (dst, target.port)
            )
        else:
            info = wire.encode_pktinfo_v6(ifindex, target.source)
            scope = ifindex if target.peer.is_link_local else 0
            sock.sendmsg(
                [data],
                [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)],
                0,
                (dst, target.port, 0, scope),
            )

    def _on_readable(
        self, key: _SockKey, sock: socket.socket, limit: int | None = _READ_BATCH
    ) -> None:
        """Read up to `limit` replies (None: all that are queued)."""
        version, kind = key
        for _ in itertools.repeat(None) if limit is None else range(limit):
            try:
                data, ancdata, _, addr = sock.recvmsg(65535, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("probe socket %s/%s: %s", version, kind, exc)
                return
            now = time.time()
            self._match(version, kind, data, addr, _received_at(ancdata) or now)

    def _match(
        self, version: int, kind: ProbeKind, data: bytes, addr: tuple[str, int], got: float
    ) -> None:
        """Count a reply received (kernel wall-clock time `got`) if it answers a pending probe."""
        if kind is ProbeKind.ICMP:
            echo = wire.decode_echo_v4(data) if version == 4 else wire.decode_echo_v6(data)
            reply = wire.ICMP_ECHO_REPLY if version == 4 else wire.ICMP6_ECHO_REPLY
            if echo is None or echo.type != reply:
                return
            key, body = (echo.ident, echo.seq), echo.payload
        else:
            ids = wire.decode_udp_probe(data)
            if ids is None:
                return
            key, body = ids, data
        pend = self._matcher.pending.get(key)
        if pend is None:
            return
        target = pend.target
        if target.kind is not kind or target.version != version or _host(addr[0]) != target.peer:
            return
        if kind is ProbeKind.ICMP:
            expected = target.payload
        else:
            if addr[1] != target.port:
                return
            expected = wire.encode_udp_probe(target.ident, pend.seq, self._cookie, target.size)
        if body != expected:
            return
        rtt = got - pend.sent_wall
        if rtt > target.timeout:
            # Arrived after its deadline: the probe is (or is about to be) reported lost.
            return
        del self._matcher.pending[key]
        if self._emit is not None:
            self._emit(
                ProbeSucceeded(tunnel=target.tunnel, rtt_ms=max(0.0, rtt) * 1000.0, at=pend.sent_at)
            )


def _echo_socket(address: str, port: int) -> socket.socket:
    addr = ipaddress.ip_address(address)
    if addr.version == 4:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IP, wire.IP_PKTINFO, 1)
    else:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.setblocking(False)
    return sock


def _echo_back(sock: socket.socket, port: int) -> None:
    for _ in range(_READ_BATCH):
        try:
            data, anc, _, addr = sock.recvmsg(65535, 256)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("udp echo: %s", exc)
            return
        # Only our probes, and never to a service port or our own: two echo services
        # must not be made to bounce a forged datagram between them forever.
        if wire.decode_udp_probe(data) is None or addr[1] < 1024 or addr[1] == port:
            continue
        # Answer from the address the probe was sent to, whatever the route would pick.
        reply_anc = []
        for level, kind, value in anc:
            if level == socket.IPPROTO_IP and kind == wire.IP_PKTINFO:
                info4 = wire.decode_pktinfo_v4(value)
                if info4 is not None:
                    pkt = wire.encode_pktinfo_v4(0, info4[1])
                    reply_anc.append((socket.IPPROTO_IP, wire.IP_PKTINFO, pkt))
            elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                info6 = wire.decode_pktinfo_v6(value)
                if info6 is not None:
                    pkt = wire.encode_pktinfo_v6(info6[0], info6[1])
                    reply_anc.append((socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, pkt))
        try:
            sock.sendmsg([data], reply_anc, 0, addr)
        except OSError as exc:
            log.debug("udp echo to %s: %s", addr[0], exc)


async def serve_udp_echo(port: int = 7, addresses: Sequence[str] = ("0.0.0.0", "::")) -> None:
    """Echo UDP probes back to their sender until cancelled: what a UDP-probed peer runs."""
    try:
        socks = [_echo_socket(a, port) for a in addresses]
    except PermissionError as exc:
        raise PermissionDeniedError(f"udp echo on port {port}: {exc}") from exc
    except OSError as exc:
        raise AdapterError(f"udp echo on port {port}: {exc}") from exc
    loop = asyncio.get_running_loop()
    try:
        for sock in socks:
            loop.add_reader(sock.fileno(), _echo_back, sock, port)
        log.info("udp echo listening on port %d (%s)", port, ", ".join(addresses))
        await asyncio.Event().wait()
    finally:
        for sock in socks:
            loop.remove_reader(sock.fileno())
            sock.close()
