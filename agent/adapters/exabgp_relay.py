"""ExaBGP's API process in supervise mode: copies its stdin/stdout to the agent's Unix socket.

ExaBGP only speaks its API to processes it starts itself; this one joins ExaBGP's pipes
to the supervising agent, byte for byte, and exits when either side closes.
Usage (written into the generated exabgp.conf): python -m agent.adapters.exabgp_relay SOCKET
"""

from __future__ import annotations

import os
import select
import socket
import sys
import time

__all__ = ["main"]

_CONNECT_FOR_S = 10.0


def _connect(path: str) -> socket.socket:
    deadline = time.monotonic() + _CONNECT_FOR_S
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        else:
            return sock


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m agent.adapters.exabgp_relay SOCKET", file=sys.stderr)
        return 2
    try:
        sock = _connect(argv[0])
    except OSError as exc:
        print(f"exabgp relay: cannot reach {argv[0]}: {exc.strerror}", file=sys.stderr)
        return 1
    stdin, stdout, peer = sys.stdin.fileno(), sys.stdout.fileno(), sock.fileno()
    with sock:
        while True:
            readable, _, _ = select.select([stdin, peer], [], [])
            for fd in readable:
                data = os.read(fd, 65536)
                if not data:
                    return 0
                if fd == stdin:
                    sock.sendall(data)
                else:
                    _write_all(stdout, data)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
