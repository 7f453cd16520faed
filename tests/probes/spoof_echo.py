"""A far end that answers a tunnel's probes wrongly (or, with --honest, rightly).

Run inside the far namespace with the kernel's own echo replies off
(net.ipv4.icmp_echo_ignore_all=1). For each echo request carrying --ident it sends
replies that must not count: from another tunnel's peer address, for a sequence never
sent, with a payload that is not the one sent, and with another identifier.
"""

from __future__ import annotations

import argparse
import socket
import struct

from agent.adapters import probe_wire as wire

_IP = struct.Struct("!BBHHHBBH4s4s")


def reply(ident: int, seq: int, payload: bytes) -> bytes:
    head = struct.pack("!BBHHH", wire.ICMP_ECHO_REPLY, 0, 0, ident, seq)
    csum = wire.checksum(head + payload)
    return struct.pack("!BBHHH", wire.ICMP_ECHO_REPLY, 0, csum, ident, seq) + payload


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ident", type=int, required=True)
    ap.add_argument("--fake-source", required=True)
    ap.add_argument("--honest", action="store_true")
    args = ap.parse_args()
    listen = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    plain = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    forged = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    fake = socket.inet_aton(args.fake_source)
    while True:
        packet, (src, _) = listen.recvfrom(65535)
        echo = wire.decode_echo_v4(packet)
        if echo is None or echo.type != wire.ICMP_ECHO_REQUEST or echo.ident != args.ident:
            continue
        if args.honest:
            plain.sendto(reply(echo.ident, echo.seq, echo.payload), (src, 0))
            continue
        # Right identifier, sequence and payload, but from another tunnel's peer.
        icmp = reply(echo.ident, echo.seq, echo.payload)
        header = _IP.pack(0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0, fake, socket.inet_aton(src))
        forged.sendto(header + icmp, (src, 0))
        # A sequence that was never sent.
        plain.sendto(reply(echo.ident, (echo.seq + 1000) & 0xFFFF, echo.payload), (src, 0))
        # Not the payload that was sent (another process pinging with the same identifier).
        plain.sendto(reply(echo.ident, echo.seq, bytes(b ^ 0xFF for b in echo.payload)), (src, 0))
        # Another identifier: another tunnel's, or another process's.
        plain.sendto(reply(echo.ident ^ 0x5555, echo.seq, echo.payload), (src, 0))


if __name__ == "__main__":
    main()
