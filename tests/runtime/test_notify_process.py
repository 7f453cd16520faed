"""A real `vti-failover run` tells a real NOTIFY_SOCKET listener what systemd needs to know.

The test plays systemd: a unix datagram socket, its path in NOTIFY_SOCKET, WATCHDOG_USEC
set. The agent runs live in a namespace with veth stand-ins, so READY=1 can be checked
against the routes it wrote.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent_process import AgentProcess
from tests.support.netns_links import add_veth, routes
from tests.support.system import netns

pytestmark = [pytest.mark.root]

CONFIG = """\
agent_id: notify-site
tunnels:
  - name: tun1
    interface: vti1
    key: 1
    underlay: {local: 192.0.2.1, remote: 198.51.100.1}
    inner: {local: 169.254.1.1/30, peer: 169.254.1.2}
    sources: [link]
  - name: tun2
    interface: vti2
    key: 2
    underlay: {local: 192.0.2.2, remote: 198.51.100.2}
    inner: {local: 169.254.2.1/30, peer: 169.254.2.2}
    role: backup
    sources: [link]
remote_prefixes: {static: [10.2.0.0/24]}
policy: {link_control: none}
netlink: {nexthop_groups: false}
"""
WATCHDOG_USEC = 400_000  # a ping every 0.2 s


class Listener:
    """What systemd would receive, each datagram with the time it came."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.got: list[tuple[float, str]] = []

    def until(self, what: str, timeout: float = 30.0) -> tuple[float, str]:
        """Read until a datagram that starts with `what`; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {what!r} within {timeout}s; got {self.got}"
            self.sock.settimeout(left)
            message = (time.monotonic(), self.sock.recv(4096).decode())
            self.got.append(message)
            if message[1].startswith(what):
                return message

    def others(self) -> list[str]:
        return [m for _, m in self.got if m != "WATCHDOG=1"]


@pytest.fixture
def ns() -> Iterator[str]:
    with netns("vtfsd") as name:
        for n in (1, 2):
            add_veth(name, f"vti{n}")
        yield name


def test_ready_after_the_first_decision_watchdog_reload_and_stop(ns: str, tmp_path: Path) -> None:
    listener = Listener(tmp_path / "notify")
    config = tmp_path / "site.yaml"
    config.write_text(CONFIG)
    env = {"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    agent = AgentProcess(config, tmp_path, netns=ns, env=env)
    try:
        _, ready = listener.until("READY=1")
        # Ready means decided and carried out: the carrier's route is in the kernel already.
        assert [r["dev"] for r in routes(ns, "proto", "157") if r["metric"] == 10] == ["vti1"]
        assert ready == "READY=1\nSTATUS=2 tunnels, carrying: tun1"

        # The watchdog: one ping every WATCHDOG_USEC / 2 from the event loop.
        first, _ = listener.until("WATCHDOG=1")
        for _ in range(5):
            last, _ = listener.until("WATCHDOG=1")
        per_ping = (last - first) / 5
        assert 0.1 < per_ping < 0.4, per_ping

        # SIGHUP: RELOADING=1 with the moment, READY=1 again once the reload was applied.
        agent.send(signal.SIGHUP)
        _, reloading = listener.until("RELOADING=1")
        lines = reloading.split("\n")
        assert lines[0] == "RELOADING=1"
        assert lines[1].startswith("MONOTONIC_USEC=")
        assert int(lines[1].removeprefix("MONOTONIC_USEC=")) > 0
        _, again = listener.until("READY=1")
        assert again == "READY=1\nSTATUS=2 tunnels, carrying: tun1"
        agent.wait_log("reloaded")
    finally:
        code = agent.stop()
    listener.until("STOPPING=1", timeout=5)
    assert code == 0
    assert listener.others() == [
        "READY=1\nSTATUS=2 tunnels, carrying: tun1",
        reloading,
        "READY=1\nSTATUS=2 tunnels, carrying: tun1",
        "STOPPING=1",
    ]
    listener.sock.close()


def test_without_notify_socket_the_agent_runs_the_same(ns: str, tmp_path: Path) -> None:
    config = tmp_path / "site.yaml"
    config.write_text(CONFIG)
    agent = AgentProcess(config, tmp_path, netns=ns, env={"NOTIFY_SOCKET": ""})
    try:
        agent.wait_for(
            "the carrier's route",
            lambda: any(r["metric"] == 10 for r in routes(ns, "proto", "157")),
        )
    finally:
        assert agent.stop() == 0
    assert "Traceback" not in agent.log()
