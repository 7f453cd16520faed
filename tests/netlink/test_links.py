"""The link-state source against real interfaces in a namespace: one event per real change."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable

import pytest

from agent.adapters.links import LinkSource
from agent.core.events import Event, LinkChanged, SourceLost, SourceRecovered
from tests.support.netns_links import add_veth
from tests.support.system import netns, run

pytestmark = pytest.mark.root


def link(tunnel: str, present: bool, admin: bool, oper: bool) -> tuple[str, bool, bool, bool]:
    return (tunnel, present, admin, oper)


def seen(events: list[Event]) -> list[object]:
    out: list[object] = []
    for e in events:
        if isinstance(e, LinkChanged):
            out.append(link(e.tunnel, e.present, e.admin_up, e.oper_up))
        else:
            out.append(type(e).__name__)
    return out


async def until(check: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def watching(source: LinkSource) -> AsyncIterator[list[Event]]:
    events: list[Event] = []
    task = asyncio.create_task(source.run(events.append))
    try:
        yield events
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_initial_dump_then_changes_only() -> None:
    with netns("vtf-lk") as ns:
        add_veth(ns, "vti1")
        add_veth(ns, "vti2", up=False)
        source = LinkSource({"tun1": "vti1", "tun2": "vti2", "tun3": "vti3"}, netns=ns)
        async with watching(source) as events:
            await until(lambda: len(events) == 3)
            assert sorted(seen(events)) == [  # type: ignore[type-var]
                link("tun1", True, True, True),
                link("tun2", True, False, False),
                link("tun3", False, False, False),
            ]
            events.clear()

            run("ip", "-n", ns, "link", "set", "vti1", "down")
            await until(lambda: len(events) >= 1)
            # Admin up but the far end down: present, admin up, not operational.
            run("ip", "-n", ns, "link", "set", "vti1p", "down")
            run("ip", "-n", ns, "link", "set", "vti1", "up")
            await until(lambda: len(events) >= 2)
            run("ip", "-n", ns, "link", "set", "vti1p", "up")
            await until(lambda: len(events) >= 3)
            # Changes that are not state: no event for them, nor for other interfaces.
            run("ip", "-n", ns, "link", "set", "vti1", "mtu", "1400")
            run("ip", "-n", ns, "link", "set", "vti1", "alias", "to-site-b")
            add_veth(ns, "other0")
            run("ip", "-n", ns, "link", "set", "other0", "down")
            run("ip", "-n", ns, "link", "set", "vti2", "up")  # its peer is down: no carrier
            await until(lambda: len(events) >= 4)
            await asyncio.sleep(0.3)
            assert seen(events) == [
                link("tun1", True, False, False),
                link("tun1", True, True, False),
                link("tun1", True, True, True),
                link("tun2", True, True, False),
            ]


async def test_interface_deleted_and_recreated() -> None:
    with netns("vtf-lk") as ns:
        add_veth(ns, "vti1")
        source = LinkSource({"tun1": "vti1"}, netns=ns)
        async with watching(source) as events:
            await until(lambda: len(events) == 1)
            run("ip", "-n", ns, "link", "del", "vti1")
            await until(lambda: len(events) >= 3)
            # charon's updown scripts recreate a VTI: down first, then raised.
            add_veth(ns, "vti1", up=False)
            await until(lambda: len(events) >= 4)
            run("ip", "-n", ns, "link", "set", "vti1p", "up")
            run("ip", "-n", ns, "link", "set", "vti1", "up")
            await until(lambda: len(events) >= 6)
            # A rename away is a disappearance too.
            run("ip", "-n", ns, "link", "set", "vti1", "down")
            run("ip", "-n", ns, "link", "set", "vti1", "name", "old1")
            await until(lambda: len(events) >= 8)
            await asyncio.sleep(0.2)
        assert seen(events) == [
            link("tun1", True, True, True),
            # The kernel takes a deleted link down first, then removes it.
            link("tun1", True, False, False),
            link("tun1", False, False, False),
            link("tun1", True, False, False),
            # Raised: admin up at once, operational once the kernel's linkwatch saw carrier.
            link("tun1", True, True, False),
            link("tun1", True, True, True),
            link("tun1", True, False, False),
            link("tun1", False, False, False),
        ]


async def test_socket_overflow_is_reported_lost_then_recovered() -> None:
    with netns("vtf-lk") as ns:
        add_veth(ns, "vti1")
        # A tiny receive buffer overflows (ENOBUFS) the moment the loop falls behind: the
        # real way a netlink monitor goes blind on a busy router.
        source = LinkSource({"tun1": "vti1"}, netns=ns, rcvbuf=4096, backoff_min_s=0.1)
        async with watching(source) as events:
            await until(lambda: len(events) == 1)
            flaps = "".join(f"link set vti1 {s}\n" for _ in range(100) for s in ("down", "up"))
            flaps += "link set vti1 down\n"
            # Synchronous on purpose: the event loop cannot read while the kernel sends.
            subprocess.run(
                ["ip", "-n", ns, "-batch", "-"], input=flaps, text=True, check=True, timeout=30
            )
            await until(lambda: "SourceRecovered" in seen(events), timeout=5)
            await until(lambda: len(events) >= 4)
            await asyncio.sleep(0.2)
        got = seen(events)
        assert got[0] == link("tun1", True, True, True)
        assert got[1] == "SourceLost"
        assert isinstance(events[1], SourceLost)
        assert events[1].source == "link"
        assert got[2] == "SourceRecovered"
        assert isinstance(events[2], SourceRecovered)
        # After blindness the state is reported afresh, as it is now.
        assert got[3:] == [link("tun1", True, False, False)]
