"""The notify protocol against a real AF_UNIX datagram socket, as systemd listens for it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sdnotify import (
    ServiceNotifier,
    notify,
    ready,
    stopping,
    watchdog_interval_s,
    watchdog_loop,
)


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(2)
    try:
        yield sock, path
    finally:
        sock.close()


def test_ready_and_stopping_reach_the_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    env = {"NOTIFY_SOCKET": path}
    assert ready("2 tunnels", env)
    assert sock.recv(4096) == b"READY=1\nSTATUS=2 tunnels"
    assert stopping(env)
    assert sock.recv(4096) == b"STOPPING=1"


def test_abstract_socket() -> None:
    name = f"vtf-notify-{uuid.uuid4().hex[:8]}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(64) == b"READY=1"


def test_outside_systemd_nothing_is_sent(tmp_path: Path) -> None:
    assert not notify("READY=1", {})
    assert not notify("READY=1", {"NOTIFY_SOCKET": "relative/path"})
    # A socket that went away is no reason to stop the agent.
    assert not notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")})


def test_watchdog_interval_is_half_of_watchdog_sec() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "10000000"}) == 5.0
    mine = str(os.getpid())
    assert watchdog_interval_s({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": mine}) == 2.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "x"}) is None


async def test_watchdog_pings_while_the_loop_runs(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    sock.setblocking(False)
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"}  # a ping every 50 ms
    task = asyncio.create_task(watchdog_loop(env))
    await asyncio.sleep(0.28)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    pings = []
    with contextlib.suppress(BlockingIOError):
        while True:
            pings.append(sock.recv(64))
    assert set(pings) == {b"WATCHDOG=1"}
    assert 4 <= len(pings) <= 7


async def test_no_watchdog_asked_returns_at_once() -> None:
    await asyncio.wait_for(watchdog_loop({}), timeout=1)


def test_the_notifier_says_each_thing_at_its_moment(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    sock.setblocking(False)
    told = ServiceNotifier({"NOTIFY_SOCKET": path})
    # A SIGHUP before the first decision: the start is not over, nothing to say yet.
    told.reloading()
    told.reloaded("early")
    told.settled("2 tunnels")
    told.settled("again")  # READY=1 once only
    told.reloading()
    told.reloaded("after")
    told.stop()
    told.stop()
    told.reloading()  # stopping: no more reloads or readiness
    told.settled("late")
    got = []
    with contextlib.suppress(BlockingIOError):
        while True:
            got.append(sock.recv(256).decode())
    assert got[0] == "READY=1\nSTATUS=2 tunnels"
    assert got[1].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert got[2:] == ["READY=1\nSTATUS=after", "STOPPING=1"]
