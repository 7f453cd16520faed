"""A constant, sequence-numbered UDP stream: `send` paces it, `recv` logs what arrives.

Each datagram carries its sequence number and send time; the receiver writes one line
"seq send_time recv_time" per datagram, so outages can be computed afterwards from the
gaps between consecutive sequence numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import struct
import sys
import time
from types import FrameType

HEADER = struct.Struct("!Qd")


def send(dst: str, port: int, rate: float, size: int) -> None:
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    pad = b"\0" * max(0, size - HEADER.size)
    start = time.monotonic()
    seq = 0
    while True:
        # Absolute schedule: a late wake-up sends at once instead of drifting the rate.
        delay = start + seq / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        # No route or no SA for a moment is exactly what is being measured.
        with contextlib.suppress(OSError):
            sock.sendto(HEADER.pack(seq, time.time()) + pad, (dst, port))
        seq += 1


def recv(port: int, out: str, ipv6: bool = False) -> None:
    sock = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("::" if ipv6 else "0.0.0.0", port))
    with open(out, "w", buffering=1 << 16) as log:

        def stop(signum: int, frame: FrameType | None) -> None:
            del signum, frame
            log.flush()
            sys.exit(0)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        flushed = time.monotonic()
        while True:
            data = sock.recv(2048)
            if len(data) >= HEADER.size:
                seq, sent = HEADER.unpack_from(data)
                log.write(f"{seq} {sent:.6f} {time.time():.6f}\n")
            # Readers (the demo) look at the file while the stream runs.
            if time.monotonic() - flushed > 0.5:
                log.flush()
                flushed = time.monotonic()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send")
    s.add_argument("dst")
    s.add_argument("port", type=int)
    s.add_argument("--rate", type=float, default=200.0, help="datagrams per second")
    s.add_argument("--size", type=int, default=64, help="datagram payload bytes")
    r = sub.add_parser("recv")
    r.add_argument("port", type=int)
    r.add_argument("out", help="file for 'seq send_time recv_time' lines")
    r.add_argument("--ipv6", action="store_true", help="listen on IPv6 (::) instead")
    a = p.parse_args()
    if a.cmd == "send":
        send(a.dst, a.port, a.rate, a.size)
    else:
        recv(a.port, a.out, a.ipv6)


if __name__ == "__main__":
    main()
