"""systemd's notify protocol: READY=1 once settled, WATCHDOG=1 while the event loop turns,
RELOADING=1 around a reload, STOPPING=1 on the way out.

A datagram to $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace); without it
every call is a no-op, so the agent runs the same outside systemd. The watchdog task proves
the loop alive only because it runs on that loop: a hung consumer stops the pings and
systemd restarts the agent (WatchdogSec=).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping

__all__ = [
    "ServiceNotifier",
    "notify",
    "ready",
    "stopping",
    "watchdog_interval_s",
    "watchdog_loop",
]


def _address(env: Mapping[str, str]) -> str | None:
    path = env.get("NOTIFY_SOCKET")
    if not path or path[0] not in "/@":
        return None
    return "\0" + path[1:] if path[0] == "@" else path


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one state ("READY=1", "WATCHDOG=1", "STATUS=..."); False when not under systemd."""
    address = _address(os.environ if env is None else env)
    if address is None:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError:
            # systemd gone or the socket not ours to reach: nothing to tell, nothing to stop.
            return False
    return True


def ready(status: str | None = None, env: Mapping[str, str] | None = None) -> bool:
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""), env)


def stopping(env: Mapping[str, str] | None = None) -> bool:
    return notify("STOPPING=1", env)


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """Half of WatchdogSec (systemd's advice), or None when no watchdog is asked for us."""
    e = os.environ if env is None else env
    try:
        usec = int(e.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = e.get("WATCHDOG_PID")
    if usec <= 0 or (pid is not None and pid != str(os.getpid())):
        return None
    return usec / 2e6


async def watchdog_loop(env: Mapping[str, str] | None = None) -> None:
    """Ping the watchdog until cancelled; returns at once when there is none."""
    interval = watchdog_interval_s(env)
    if interval is None:
        return
    while True:
        notify("WATCHDOG=1", env)
        await asyncio.sleep(interval)


def _monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class ServiceNotifier:
    """What the agent tells systemd, each at its moment.

    READY=1 once, after the core's first decision was carried out (systemd then orders the
    units after us, and `systemctl start` returns); RELOADING=1 when a SIGHUP arrives and
    READY=1 when that reload was applied or refused; STOPPING=1 once. A reload before the
    first decision says nothing: the start itself is not over yet.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = env
        self.ready = False
        self.stopping = False

    def settled(self, status: str) -> None:
        if not self.ready and not self.stopping:
            self.ready = True
            ready(status, self.env)

    def reloading(self) -> None:
        if self.ready and not self.stopping:
            # systemd >= 253 wants the moment, to tell this reload from an older one.
            notify(f"RELOADING=1\nMONOTONIC_USEC={_monotonic_usec()}", self.env)

    def reloaded(self, status: str) -> None:
        if self.ready and not self.stopping:
            ready(status, self.env)

    def stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            stopping(self.env)
