"""Routes via one nexthop group: N installs awaited one by one vs pipelined, then one group move.

In a private namespace with two veth pairs (tunnel stand-ins): a nexthop on each and a
group of one; N IPv4 /24 routes via the group installed with `ipr.route("replace", ...,
nh_id=)` awaited one by one, then (after deleting the group, which takes its routes)
pipelined: up to W calls in flight on the same AsyncIPRoute. For scale, the same N
requests hand-packed with struct on a plain netlink socket (the kernel's own cost). Then
the group's member is replaced (every route moves to the other link) with
net.ipv4.nexthop_compat_mode 1 (the kernel default) and 0, with and without a route
listener in the namespace. Prints a table. Needs root.

    .venv/bin/python labs/bench/nexthop_routes.py [--routes 10000] [--windows 16 64 256 1024]

Windows far above 1,000 can hang: the first W requests are sent before any ack is read,
the kernel drops acks that overflow the receive buffer (ENOBUFS), and pyroute2 posts
that error to no waiting request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_NEWROUTE

from agent.adapters import nexthops
from agent.adapters.netlink_socket import netlink_fd_in, rtnl_socket
from agent.adapters.nexthop_wire import NexthopObject

PROTO = 99
GROUP = 100
RTA_DST, RTA_PRIORITY, RTA_NH_ID = 1, 6, 30


def _sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def _prefixes(n: int) -> list[str]:
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    return [f"{ipaddress.IPv4Address(base + (i << 8))}/24" for i in range(n)]


def _count(ns: str) -> int:
    return len(_sh("ip", "-n", ns, "route", "show", "proto", str(PROTO)).splitlines())


async def _pipelined(calls: list[Callable[[], Awaitable[Any]]], window: int) -> list[Any]:
    """Each call's result or exception, at most `window` awaiting at once."""
    results: list[Any] = [None] * len(calls)
    jobs = iter(enumerate(calls))

    async def worker() -> None:
        for index, call in jobs:
            try:
                results[index] = await call()
            except Exception as exc:  # counted and shown in the table
                results[index] = exc

    await asyncio.gather(*(worker() for _ in range(min(window, len(calls)))))
    return results


def _calls(ipr: Any, prefixes: list[str]) -> list[Callable[[], Awaitable[Any]]]:
    def one(p: str) -> Callable[[], Awaitable[Any]]:
        return lambda: ipr.route("replace", dst=p, nh_id=GROUP, table=254, priority=10, proto=PROTO)

    return [one(p) for p in prefixes]


def _raw_install(ns: str, prefixes: list[str]) -> float:
    """The same RTM_NEWROUTE requests packed with struct, each acked: the kernel's share."""
    sock = socket.socket(fileno=netlink_fd_in(ns))

    def nla(kind: int, payload: bytes) -> bytes:
        return struct.pack("=HH", 4 + len(payload), kind) + payload

    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    try:
        t0 = time.perf_counter()
        for seq, prefix in enumerate(prefixes, 1):
            net = ipaddress.IPv4Network(prefix)
            body = (
                struct.pack("=BBBBBBBBI", socket.AF_INET, net.prefixlen, 0, 0, 254, PROTO, 0, 1, 0)
                + nla(RTA_DST, net.network_address.packed)
                + nla(RTA_PRIORITY, struct.pack("=I", 10))
                + nla(RTA_NH_ID, struct.pack("=I", GROUP))
            )
            sock.send(struct.pack("=IHHII", 16 + len(body), RTM_NEWROUTE, flags, seq, 0) + body)
            ack = sock.recv(65536)
            if struct.unpack_from("=i", ack, 16)[0] != 0:
                raise OSError(-struct.unpack_from("=i", ack, 16)[0], f"route {prefix}")
        return time.perf_counter() - t0
    finally:
        sock.close()


@contextlib.contextmanager
def _listener(ns: str, on: bool) -> Iterator[Callable[[], int]]:
    """`ip monitor route` in the namespace while the block runs; how many lines it printed."""
    if not on:
        yield lambda: 0
        return
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(["ip", "-n", ns, "monitor", "route"], stdout=out)
        time.sleep(0.3)  # ip subscribes right after it starts
        try:
            lines: list[int] = []
            yield lambda: lines[0] if lines else -1
        finally:
            time.sleep(1.0)
            proc.terminate()
            proc.wait()
            out.seek(0)
            lines.append(sum(1 for _ in out))


async def _bench(ns: str, n: int, windows: list[int]) -> list[tuple[str, float, str]]:
    rows: list[tuple[str, float, str]] = []
    ipr = rtnl_socket(ns)
    try:
        nexthops.attach(ipr)
        one = (await ipr.link_lookup(ifname="nh1"))[0]
        two = (await ipr.link_lookup(ifname="nh2"))[0]
        await nexthops.replace(ipr, NexthopObject(1, socket.AF_INET, PROTO, oif=one))
        await nexthops.replace(ipr, NexthopObject(2, socket.AF_INET, PROTO, oif=two))
        await nexthops.replace(ipr, NexthopObject(GROUP, socket.AF_UNSPEC, PROTO, group=(1,)))
        prefixes = _prefixes(n)

        t0 = time.perf_counter()
        for call in _calls(ipr, prefixes):
            await call()
        rows.append((f"install {n}, sequential", time.perf_counter() - t0, f"{_count(ns)} routes"))

        for window in windows:
            # Deleting the group takes its routes with it (faster than a flush, which iproute2
            # refuses here: "FIB table does not exist").
            await nexthops.delete(ipr, GROUP)
            await nexthops.replace(ipr, NexthopObject(GROUP, socket.AF_UNSPEC, PROTO, group=(1,)))
            assert _count(ns) == 0
            t0 = time.perf_counter()
            results = await _pipelined(_calls(ipr, prefixes), window)
            took = time.perf_counter() - t0
            failed = [r for r in results if isinstance(r, BaseException)]
            note = f"{_count(ns)} routes, {len(failed)} failed"
            if failed:
                note += f" (first: {failed[0]!r})"
            rows.append((f"install {n}, pipelined window {window}", took, note))

        await nexthops.delete(ipr, GROUP)
        await nexthops.replace(ipr, NexthopObject(GROUP, socket.AF_UNSPEC, PROTO, group=(1,)))
        took = _raw_install(ns, prefixes)
        rows.append((f"install {n}, struct-packed, plain socket", took, f"{_count(ns)} routes"))

        for compat in ("1", "0"):
            _sh(
                "ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv4.nexthop_compat_mode={compat}"
            )
            for listening in (False, True):
                for member, dev in ((2, "nh2"), (1, "nh1")):
                    group = NexthopObject(GROUP, socket.AF_UNSPEC, PROTO, group=(member,))
                    with _listener(ns, listening) as heard:
                        t0 = time.perf_counter()
                        await nexthops.replace(ipr, group)
                        took = time.perf_counter() - t0
                    got = _sh("ip", "-n", ns, "route", "get", "10.0.7.1")
                    note = f"{_count(ns)} routes; 10.0.7.1 via {dev}: {f'dev {dev}' in got}"
                    if listening:
                        note += f"; listener got {heard()} route messages"
                    who = ", route listener" if listening else ""
                    rows.append((f"group replace -> {dev}, compat_mode={compat}{who}", took, note))
    finally:
        ipr.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=10_000)
    parser.add_argument("--windows", type=int, nargs="+", default=[16, 64, 256, 1024])
    args = parser.parse_args()
    ns = f"vtf-nhb-{uuid.uuid4().hex[:8]}"
    _sh("ip", "netns", "add", ns)
    try:
        for dev in ("nh1", "nh2"):
            _sh("ip", "-n", ns, "link", "add", dev, "type", "veth", "peer", "name", f"{dev}p")
            _sh("ip", "-n", ns, "link", "set", f"{dev}p", "up")
            _sh("ip", "-n", ns, "link", "set", dev, "up")
        rows = asyncio.run(_bench(ns, args.routes, args.windows))
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    width = max(len(r[0]) for r in rows)
    print(f"{'phase':<{width}}  {'seconds':>8}  notes")
    for phase, took, note in rows:
        print(f"{phase:<{width}}  {took:8.3f}  {note}")


if __name__ == "__main__":
    main()
