"""Prints the kernel arrival time of every ICMP echo request on one interface, dropped or not.

    ip netns exec FAR python labs/lablib/echo_tap.py p1

One line per request: `<epoch seconds> <identifier> <sequence>`. The tap (AF_PACKET) sees a
packet before netfilter does, so the requests a cut drops are timed too: the first one after
a cut is when the agent's loss detection starts, whatever the probe schedule's phase.
"""

from __future__ import annotations

import socket
import struct
import sys

ETH_P_IP = 0x0800
SO_TIMESTAMPNS = 35
ICMP = 1
ECHO_REQUEST = 8


def main(ifname: str) -> None:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind((ifname, ETH_P_IP))
    out = sys.stdout
    while True:
        data, ancillary, _flags, addr = s.recvmsg(128, 64)
        if addr[2] == socket.PACKET_OUTGOING or len(data) < 20:
            continue
        ihl = (data[0] & 0x0F) * 4
        if data[9] != ICMP or len(data) < ihl + 8 or data[ihl] != ECHO_REQUEST:
            continue
        ident, seq = struct.unpack_from("!HH", data, ihl + 4)
        at = next(
            (
                sec + nsec / 1e9
                for level, kind, raw in ancillary
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS
                for sec, nsec in [struct.unpack("qq", raw[:16])]
            ),
            None,
        )
        if at is not None:
            out.write(f"{at:.6f} {ident} {seq}\n")
            out.flush()


if __name__ == "__main__":
    main(sys.argv[1])
