"""Probe packet encoding and decoding, without sockets."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given
from hypothesis import strategies as st

from agent.adapters import probe_wire as wire


def _ipv4(payload: bytes, ihl_words: int = 5) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl_words, 0, 20 + len(payload), 0, 0, 64, 1,
                         0, bytes([169, 254, 1, 2]), bytes([169, 254, 1, 1]))  # fmt: skip
    return header + b"\0" * (4 * ihl_words - 20) + payload


def test_checksum_matches_rfc1071_example() -> None:
    # RFC 1071 section 3: these bytes sum to 0xddf2 (one's complement), so the sum is ~that.
    assert wire.checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2


def test_a_v4_request_turned_reply_decodes_to_what_was_sent() -> None:
    request = wire.encode_echo_v4(0x1234, 7, b"cookie..")
    assert wire.checksum(request) == 0
    # The far kernel answers by flipping the type and fixing the checksum (+8 on type 8->0).
    body = bytes([wire.ICMP_ECHO_REPLY]) + request[1:2] + b"\0\0" + request[4:]
    reply = body[:2] + struct.pack("!H", wire.checksum(body)) + body[4:]
    for ihl in (5, 6):
        echo = wire.decode_echo_v4(_ipv4(reply, ihl))
        assert echo == wire.Echo(wire.ICMP_ECHO_REPLY, 0x1234, 7, b"cookie..")


def test_a_corrupted_v4_reply_is_refused() -> None:
    request = bytearray(wire.encode_echo_v4(1, 2, b"abcd"))
    request[-1] ^= 0x01
    assert wire.decode_echo_v4(_ipv4(bytes(request))) is None


def test_v6_echo_keeps_ident_seq_and_payload() -> None:
    message = wire.encode_echo_v6(0xBEEF, 65535, b"xyz")
    assert wire.decode_echo_v6(message) == wire.Echo(wire.ICMP6_ECHO_REQUEST, 0xBEEF, 65535, b"xyz")


def test_udp_probe_round_trip_and_foreign_datagrams() -> None:
    data = wire.encode_udp_probe(9, 10, b"12345678", 64)
    assert len(data) == 64
    assert wire.decode_udp_probe(data) == (9, 10)
    assert wire.decode_udp_probe(b"GET / HTTP/1.1\r\n") is None
    assert wire.decode_udp_probe(b"VTF") is None


def test_pktinfo_round_trip() -> None:
    v4 = ipaddress.IPv4Address("169.254.1.1")
    v6 = ipaddress.IPv6Address("fd00::1")
    # in_pktinfo carries the source in ipi_spec_dst; a received one has the header dst in ipi_addr.
    assert wire.decode_pktinfo_v4(struct.pack("=i4s4s", 3, b"\0" * 4, v4.packed)) == (3, v4)
    assert wire.encode_pktinfo_v4(3, v4)[4:8] == v4.packed
    assert wire.decode_pktinfo_v6(wire.encode_pktinfo_v6(5, v6)) == (5, v6)


def test_filters_pass_only_echo_replies() -> None:
    (mask,) = struct.unpack("=I", wire.icmp_filter_only(wire.ICMP_ECHO_REPLY))
    assert [t for t in range(32) if not mask & (1 << t)] == [wire.ICMP_ECHO_REPLY]
    words = struct.unpack("=8I", wire.icmp6_filter_only(wire.ICMP6_ECHO_REPLY))
    passed = [t for t in range(256) if not words[t >> 5] & (1 << (t & 31))]
    assert passed == [wire.ICMP6_ECHO_REPLY]


@given(st.binary(max_size=128))
def test_decoders_never_raise_on_garbage(data: bytes) -> None:
    for decode in (wire.decode_echo_v4, wire.decode_echo_v6, wire.decode_udp_probe,
                   wire.decode_pktinfo_v4, wire.decode_pktinfo_v6):  # fmt: skip
        decode(data)
