"""Tunnel stand-ins (veth pairs) in a namespace, the kernel's routes read back, a route monitor."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

from tests.support.system import run

__all__ = ["RouteMonitor", "add_veth", "link_flags", "route_monitor", "routes"]


def add_veth(ns: str, name: str, *, up: bool = True) -> None:
    """`name` in the namespace, its peer `<name>p` too; both up unless asked otherwise.

    This kernel has no VTI or dummy links; a veth pair carries routes the same way.
    """
    run("ip", "-n", ns, "link", "add", name, "type", "veth", "peer", "name", f"{name}p")
    if up:
        run("ip", "-n", ns, "link", "set", f"{name}p", "up")
        run("ip", "-n", ns, "link", "set", name, "up")


def link_flags(ns: str, name: str) -> list[str]:
    out = run("ip", "-n", ns, "-j", "link", "show", "dev", name).stdout
    flags: list[str] = json.loads(out)[0]["flags"]
    return flags


def routes(ns: str, *args: str, family: str = "-4") -> list[dict[str, Any]]:
    """`ip -j route show table all ...` with the kernel's own local/multicast noise removed."""
    out = run("ip", "-n", ns, "-j", family, "route", "show", "table", "all", *args).stdout
    got: list[dict[str, Any]] = json.loads(out) if out.strip() else []
    return [
        r
        for r in got
        if r.get("type", "unicast") == "unicast" and r.get("protocol") not in ("kernel",)
    ]


class RouteMonitor:
    """`ip monitor route` in the namespace: every route change the kernel announces."""

    def __init__(self, ns: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "-n", ns, "monitor", "route"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        # ip subscribes right after it starts; give it that moment before anything changes.
        time.sleep(0.3)

    def stop(self) -> list[str]:
        """Every change seen, except the kernel's own (link-local and address routes)."""
        time.sleep(0.3)
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=5)
        return [line for line in out.splitlines() if line.strip() and "proto kernel" not in line]


@contextlib.contextmanager
def route_monitor(ns: str) -> Iterator[RouteMonitor]:
    mon = RouteMonitor(ns)
    try:
        yield mon
    finally:
        if mon.proc.poll() is None:
            mon.proc.kill()
            mon.proc.wait()
