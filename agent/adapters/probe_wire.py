"""Probe packets as bytes: echo requests and replies, pktinfo ancillary data; no sockets here.

Every decoder takes untrusted bytes from the network and returns None for anything that
is not exactly what it expects, never raising.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

__all__ = [
    "ICMP6_ECHO_REPLY",
    "ICMP6_ECHO_REQUEST",
    "ICMP6_FILTER",
    "ICMP_ECHO_REPLY",
    "ICMP_ECHO_REQUEST",
    "ICMP_FILTER",
    "IP_PKTINFO",
    "SOL_RAW",
    "Echo",
    "checksum",
    "decode_echo_v4",
    "decode_echo_v6",
    "decode_pktinfo_v4",
    "decode_pktinfo_v6",
    "decode_udp_probe",
    "encode_echo_v4",
    "encode_echo_v6",
    "encode_pktinfo_v4",
    "encode_pktinfo_v6",
    "encode_udp_probe",
    "icmp6_filter_only",
    "icmp_filter_only",
]

# Linux values the socket module does not export.
SOL_RAW = 255
ICMP_FILTER = 1
ICMP6_FILTER = 1
IP_PKTINFO = 8

ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
ICMP6_ECHO_REQUEST = 128
ICMP6_ECHO_REPLY = 129

_ECHO = struct.Struct("!BBHHH")
_UDP_MAGIC = b"VTFP"
_UDP_HEAD = struct.Struct("!4sHH")
_PKTINFO_V4 = struct.Struct("=i4s4s")
_PKTINFO_V6 = struct.Struct("=16si")


@dataclass(frozen=True, slots=True)
class Echo:
    """An ICMP/ICMPv6 echo message: type, identifier, sequence, payload."""

    type: int
    ident: int
    seq: int
    payload: bytes


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of data."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def encode_echo_v4(ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMP echo request with its checksum (raw IPv4 sockets leave it to us)."""
    head = _ECHO.pack(ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    csum = checksum(head + payload)
    return _ECHO.pack(ICMP_ECHO_REQUEST, 0, csum, ident, seq) + payload


def encode_echo_v6(ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMPv6 echo request; the kernel fills the checksum (it needs the pseudo-header)."""
    return _ECHO.pack(ICMP6_ECHO_REQUEST, 0, 0, ident, seq) + payload


def decode_echo_v4(packet: bytes) -> Echo | None:
    """An ICMP echo message from what a raw IPv4 socket reads (IP header included)."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if ihl < 20 or len(packet) < ihl + _ECHO.size:
        return None
    icmp = packet[ihl:]
    if checksum(icmp) != 0:
        return None
    kind, code, _, ident, seq = _ECHO.unpack_from(icmp)
    if code != 0:
        return None
    return Echo(kind, ident, seq, icmp[_ECHO.size :])


def decode_echo_v6(message: bytes) -> Echo | None:
    """An ICMPv6 echo message from what a raw ICMPv6 socket reads (the kernel checked the sum)."""
    if len(message) < _ECHO.size:
        return None
    kind, code, _, ident, seq = _ECHO.unpack_from(message)
    if code != 0:
        return None
    return Echo(kind, ident, seq, message[_ECHO.size :])


def encode_udp_probe(ident: int, seq: int, cookie: bytes, size: int) -> bytes:
    """A UDP probe datagram: magic, ident, seq, the sender's cookie, padded to size."""
    body = _UDP_HEAD.pack(_UDP_MAGIC, ident, seq) + cookie
    return body + b"\0" * max(0, size - len(body))


def decode_udp_probe(data: bytes) -> tuple[int, int] | None:
    """(ident, seq) of an echoed UDP probe, or None when it is not one of ours in shape."""
    if len(data) < _UDP_HEAD.size:
        return None
    magic, ident, seq = _UDP_HEAD.unpack_from(data)
    if magic != _UDP_MAGIC:
        return None
    return ident, seq


def encode_pktinfo_v4(ifindex: int, source: ipaddress.IPv4Address) -> bytes:
    """struct in_pktinfo for sendmsg: leave by this interface, from this address."""
    return _PKTINFO_V4.pack(ifindex, source.packed, b"\0\0\0\0")


def decode_pktinfo_v4(data: bytes) -> tuple[int, ipaddress.IPv4Address] | None:
    """(ifindex, destination address) from a received IP_PKTINFO."""
    if len(data) < _PKTINFO_V4.size:
        return None
    ifindex, _, dst = _PKTINFO_V4.unpack_from(data)
    return ifindex, ipaddress.IPv4Address(dst)


def encode_pktinfo_v6(ifindex: int, source: ipaddress.IPv6Address) -> bytes:
    """struct in6_pktinfo for sendmsg: leave by this interface, from this address."""
    return _PKTINFO_V6.pack(source.packed, ifindex)


def decode_pktinfo_v6(data: bytes) -> tuple[int, ipaddress.IPv6Address] | None:
    """(ifindex, destination address) from a received IPV6_PKTINFO."""
    if len(data) < _PKTINFO_V6.size:
        return None
    addr, ifindex = _PKTINFO_V6.unpack_from(data)
    return ifindex, ipaddress.IPv6Address(addr)


def icmp_filter_only(*types: int) -> bytes:
    """ICMP_FILTER value passing only these types (a set bit blocks a type)."""
    mask = 0xFFFFFFFF
    for t in types:
        mask &= ~(1 << t)
    return struct.pack("=I", mask)


def icmp6_filter_only(*types: int) -> bytes:
    """ICMP6_FILTER value passing only these types (Linux: a set bit blocks a type)."""
    words = [0xFFFFFFFF] * 8
    for t in types:
        words[t >> 5] &= ~(1 << (t & 31))
    return struct.pack("=8I", *words)
