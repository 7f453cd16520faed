"""`vti-failover status / drain / undrain` against a real `vti-failover run` in a namespace.

Site A runs the agent (live: it writes routes) with two veth pairs standing in for the
tunnels to site B, whose kernel answers the in-tunnel ICMP probes; a silent cut is an
nftables drop at site B. The test asks the agent as an operator does: the CLI, as a
subprocess, on the agent's control socket. What it asserts it reads from the kernel
(`ip route`, `ip monitor route`) and from what the CLI prints.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.instance_lock import lock_dir
from tests.cli.runner import COMMAND, Result, vtf
from tests.probes.lab import add_link, nft
from tests.support.agent_process import AgentProcess
from tests.support.netns_links import route_monitor, routes
from tests.support.system import netns, require_tool

pytestmark = [pytest.mark.root]

REMOTE = "10.2.0.0/24"
HOLD_DOWN_S = 2.0
PROTO = "157"
TUNNEL = """\
  - name: tun{n}
    interface: vti{n}
    kind: gre
    underlay: {{local: 192.0.2.{n}, remote: 198.51.100.{n}}}
    inner: {{local: 169.254.{n}.1/30, peer: 169.254.{n}.2}}
    priority: {prio}
    sources: [probe, link]
    probe: {{kind: icmp, interval_s: 0.1, timeout_s: 0.3}}
"""
CONFIG = (
    "agent_id: ctl-site\ntunnels:\n"
    + "".join(TUNNEL.format(n=n, prio=100 * n) for n in (1, 2))
    + f"""\
remote_prefixes: {{static: [{REMOTE}]}}
policy:
  rise: 3
  fall: 3
  preempt_hold_down_s: {HOLD_DOWN_S:g}
  link_control: none
  dampening: {{enabled: false}}
netlink: {{nexthop_groups: false}}
"""
)
# A silent cut of tun1 only: site B's kernel stops answering the probes that arrive on p1.
CUT_TUN1 = 'iifname "p1" icmp type echo-request counter drop'
NORMAL = [(REMOTE, "vti1", 10), (REMOTE, "vti2", 100)]
ON_TUN2 = [(REMOTE, "vti2", 10)]


def _route(line: str, dev: str, metric: int) -> bool:
    """An `ip monitor route` line about our route to REMOTE via `dev` at `metric`."""
    padded = f" {line.removeprefix('Deleted ')} "
    return (
        padded.startswith(f" {REMOTE} ")
        and f" dev {dev} " in padded
        and (f" metric {metric} " in padded)
    )


@dataclass
class Site:
    a: str
    b: str
    config: Path
    agent: AgentProcess

    def status(self) -> dict[str, Any]:
        got = vtf("status", self.config, "--json")
        assert got.code == 0, got.err
        snap: dict[str, Any] = json.loads(got.out)
        return snap

    def tunnel(self, name: str) -> dict[str, Any]:
        return next(t for t in self.status()["tunnels"] if t["name"] == name)

    def kernel(self) -> list[tuple[str, str, int]]:
        return sorted((r["dst"], r["dev"], r["metric"]) for r in routes(self.a, "proto", PROTO))

    def until(self, what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
        self.agent.wait_for(what, check, timeout, every=0.1)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    require_tool("nft")
    with netns("vtfca") as a, netns("vtfcb") as b:
        for n in (1, 2):
            add_link(a, b, n, near_if=f"vti{n}")
        config = tmp_path / "site.yaml"
        config.write_text(CONFIG)
        agent = AgentProcess(config, tmp_path, netns=a)
        s = Site(a, b, config, agent)
        try:
            s.until("both tunnels routed", lambda: s.kernel() == NORMAL)
            yield s
        finally:
            assert agent.stop() == 0
            assert "Traceback" not in agent.log()


def test_status_during_a_failover_shows_the_change(site: Site) -> None:
    table = vtf("status", site.config)
    assert table.code == 0, table.err
    print("\n" + table.out)
    assert "carrying tun1, standby tun2" in table.out
    started = time.monotonic()
    before = site.status()
    # One request, one answer: the client does not wait for the agent to hang up on it.
    assert time.monotonic() - started < 5
    assert before["carriers"] == ["tun1"]
    assert before["last_move"] is None
    watch = subprocess.Popen(
        [str(COMMAND), "status", "--watch", "--json", "--interval", "0.2", str(site.config)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watch.stdout is not None
        assert json.loads(watch.stdout.readline())["carriers"] == ["tun1"]
        with nft(site.b, CUT_TUN1):
            site.until("the failover", lambda: site.kernel() == ON_TUN2)
            during = site.status()
            table = vtf("status", "--socket", lock_dir() / "ctl-site.sock")
            # The watcher saw it too, without asking again.
            while (seen := json.loads(watch.stdout.readline()))["carriers"] != ["tun2"]:
                pass
            assert seen["last_move"]["kind"] == "failover"
    finally:
        watch.terminate()
        watch.wait(timeout=10)
    print("\n" + table.out)
    assert during["carriers"] == ["tun2"]
    move = during["last_move"]
    assert (move["kind"], move["from"], move["to"]) == ("failover", ["tun1"], ["tun2"])
    assert move["reason"].startswith("tun1 probe-loss")
    tun1 = next(t for t in during["tunnels"] if t["name"] == "tun1")
    assert (tun1["health"], tun1["role"], tun1["metric"]) == ("DOWN", "idle", None)
    assert tun1["probes"]["lost_in_a_row"] >= 3
    assert "last move: failover tun1 -> tun2" in table.out
    assert table.out.count("\n") >= 5


def test_drain_moves_traffic_make_before_break_and_undrain_lets_it_back(site: Site) -> None:
    with route_monitor(site.a) as mon:
        drained = vtf("drain", "tun1", "--wait", "--config", site.config)
        seen = mon.stop()
    assert drained.code == 0, drained.err
    assert drained.out.strip() == "tun1: ADMIN_DOWN, drained"
    assert site.kernel() == ON_TUN2
    # Make-before-break: the carrier route via vti2 goes in before the one via vti1 goes.
    new = [
        i
        for i, line in enumerate(seen)
        if not line.startswith("Deleted ") and _route(line, "vti2", 10)
    ]
    old = [
        i for i, line in enumerate(seen) if line.startswith("Deleted ") and _route(line, "vti1", 10)
    ]
    assert new, seen
    assert old, seen
    assert all(min(new) < i for i in old), seen
    assert site.tunnel("tun1")["health"] == "ADMIN_DOWN"

    # tun2 is the last usable tunnel now: refused without --force, and nothing moves.
    refused = vtf("drain", "tun2", "--config", site.config)
    assert refused.code == 1, refused
    assert refused.err.strip() == "tun2: refused: tun2 is the last usable tunnel; use force"
    assert site.kernel() == ON_TUN2
    assert site.tunnel("tun2")["role"] == "carrying"

    back = vtf("undrain", "tun1", "--config", site.config)
    assert back.code == 0, back.err
    assert back.out.startswith("tun1: INIT")
    # Probation, then the hold-down, then it carries again.
    site.until("tun1 carrying again", lambda: site.kernel() == NORMAL, 20)
    assert site.status()["last_move"]["kind"] == "failback"

    unknown = vtf("drain", "tun9", "--config", site.config)
    assert (unknown.code, unknown.err.strip()) == (2, "error: no tunnel named 'tun9'")


def test_garbage_on_the_socket_is_answered_with_an_error_and_the_agent_keeps_working(
    site: Site,
) -> None:
    path = str(lock_dir() / "ctl-site.sock")
    for raw in (b"\x00\xff garbage\n", b"{" * 100 + b"\n", b'{"command": "drain", "tunnel": 5}\n'):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(path)
            s.sendall(raw)
            answer = json.loads(s.makefile("rb").readline())
        assert answer["ok"] is False
        assert answer["error"].startswith("bad request:")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(b"y" * 100_000)
        reply = s.makefile("rb").readline()
    assert b"longer than 1024 bytes" in reply
    # Still deciding: a cut is failed over, and status tells it.
    with nft(site.b, CUT_TUN1):
        site.until("the failover", lambda: site.kernel() == ON_TUN2)
        assert site.status()["carriers"] == ["tun2"]
    assert site.agent.proc.poll() is None


def test_status_without_an_agent_is_one_line_and_exit_2(tmp_path: Path) -> None:
    got = vtf("status", "--socket", tmp_path / "none.sock")
    assert got == Result(
        2, "", f"error: no agent listening on {tmp_path / 'none.sock'} (is it running?)\n"
    )
    started = time.monotonic()
    got = vtf("drain", "tun1", "--socket", tmp_path / "none.sock")
    assert got.code == 2
    assert len(got.err_lines) == 1
    assert time.monotonic() - started < 10
