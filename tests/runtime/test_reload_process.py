"""SIGHUP to a real `vti-failover run --dry-run` in a namespace with veth stand-ins for tunnels.

Each reload case is read off what an operator sees: the printed actions, the log, a
metrics scrape from inside the namespace.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent_process import AgentProcess
from tests.support.netns_links import add_veth
from tests.support.system import free_port, netns

pytestmark = [pytest.mark.root]

TUNNEL = """\
  - name: tun{n}
    interface: vti{n}
    key: {n}
    underlay: {{local: 192.0.2.{n}, remote: 198.51.100.{n}}}
    inner: {{local: 169.254.{n}.1/30, peer: 169.254.{n}.2}}
    priority: {prio}
    sources: [link]
"""


def config(tunnels: int = 2, *, metrics: int | None = None, extra: str = "") -> str:
    text = "agent_id: reload-site\ntunnels:\n" + "".join(
        TUNNEL.format(n=n, prio=100 * n) for n in range(1, tunnels + 1)
    )
    text += """\
remote_prefixes: {static: [10.2.0.0/24]}
policy: {link_control: none, preempt_hold_down_s: 1}
netlink: {nexthop_groups: false}
"""
    if metrics is not None:
        text += f"metrics: {{enabled: true, listen: 127.0.0.1, port: {metrics}}}\n"
    return text + extra


@pytest.fixture
def ns() -> Iterator[str]:
    with netns("vtfrl") as name:
        for n in (1, 2, 3):
            add_veth(name, f"vti{n}")
        yield name


def _start(ns: str, tmp_path: Path, text: str, *, live: bool = False) -> tuple[AgentProcess, Path]:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    if live:
        # Metrics are an actuator: dry-run has none. Live, the agent routes via the veths.
        agent = AgentProcess(path, tmp_path, netns=ns)
        agent.wait_for("the first decision", lambda: agent.lines("sweeping|route"), 30)
    else:
        agent = AgentProcess(path, tmp_path, "--dry-run", netns=ns)
        agent.wait_for("the first decision", lambda: "dev vti1 metric 10" in agent.out())
    return agent, path


def _reload(
    agent: AgentProcess, path: Path, text: str, what: str = r"reloaded|reload refused"
) -> str:
    before = len(agent.lines(what))
    path.write_text(text)
    agent.send(signal.SIGHUP)
    return agent.wait_log(what, before + 1)[-1]


def _scrape(ns: str, port: int) -> str:
    url = f"http://127.0.0.1:{port}/metrics"
    code = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=5).read().decode())"
    return subprocess.run(
        ["ip", "netns", "exec", ns, "python3", "-c", code],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    ).stdout


def test_reload_adds_and_removes_a_tunnel(ns: str, tmp_path: Path) -> None:
    agent, path = _start(ns, tmp_path, config(2))
    try:
        line = _reload(agent, path, config(3))
        assert "reloaded" in line
        # The new tunnel's link is watched (the link source is rebuilt) and it is routed.
        agent.wait_for("a route via vti3", lambda: "dev vti3 metric" in agent.out())
        line = _reload(agent, path, config(2))
        assert "reloaded" in line
        agent.wait_for(
            "vti3's route removed", lambda: "remove route 10.2.0.0/24 dev vti3" in agent.out()
        )
        assert agent.proc.poll() is None
    finally:
        assert agent.stop() == 0
    assert "Traceback" not in agent.log()


def test_reload_enables_metrics_and_moves_them_to_a_new_port(ns: str, tmp_path: Path) -> None:
    first, second = free_port(), free_port()
    agent, path = _start(ns, tmp_path, config(2), live=True)
    try:
        assert "added metrics" in _reload(agent, path, config(2, metrics=first))
        agent.wait_for(
            "metrics on the first port",
            lambda: "vti_failover_tunnel_carrying" in _scrape(ns, first),
        )
        # A new exporter starts knowing every tunnel's state.
        assert 'vti_failover_tunnel_carrying{tunnel="tun1"} 1.0' in _scrape(ns, first)
        assert "reconfigured metrics" in _reload(agent, path, config(2, metrics=second))
        agent.wait_for(
            "metrics on the new port",
            lambda: 'vti_failover_tunnel_carrying{tunnel="tun1"} 1.0' in _scrape(ns, second),
        )
        agent.wait_for("the old port closed", lambda: _scrape(ns, first) == "", 10)
    finally:
        assert agent.stop() == 0


@pytest.mark.parametrize(
    ("text", "logged"),
    [
        (config(2).replace("key: 2", "key: two"), "tunnels[tun2].key"),
        (
            config(2, extra="netlink: {route_protocol: 201}\n").replace(
                "netlink: {nexthop_groups: false}\n", ""
            ),
            "netlink.route_protocol cannot change from 157 to 201",
        ),
    ],
    ids=["invalid", "route-protocol"],
)
def test_a_refused_reload_is_one_line_and_the_agent_carries_on(
    ns: str, tmp_path: Path, text: str, logged: str
) -> None:
    agent, path = _start(ns, tmp_path, config(2))
    try:
        out = len(agent.out())
        line = _reload(agent, path, text)
        assert "reload refused, keeping the running config" in line
        assert logged in line
        assert len(agent.lines("reload refused")) == 1
        # Still running on the old config: a link cut is failed over.
        subprocess.run(["ip", "-n", ns, "link", "set", "vti1p", "down"], check=True)
        agent.wait_for("the failover", lambda: "alert failover: tun1 -> tun2" in agent.out()[out:])
    finally:
        assert agent.stop() == 0


def test_a_storm_of_100_sighups_in_a_second(ns: str, tmp_path: Path) -> None:
    agent, path = _start(ns, tmp_path, config(2))
    try:
        started = time.monotonic()
        for i in range(100):
            if i % 10 == 0:
                path.write_text(config(3 if (i // 10) % 2 else 2))
            agent.send(signal.SIGHUP)
            time.sleep(0.009)
        took = time.monotonic() - started
        # The last file written has three tunnels.
        agent.wait_for("vti3 routed", lambda: "dev vti3 metric" in agent.out())
        time.sleep(1.0)
        reloads = agent.lines("reloaded")
        print(f"\n100 SIGHUPs in {took:.2f}s -> {len(reloads)} reloads applied")
        assert took < 1.5
        assert 1 <= len(reloads) <= 100
        assert not agent.lines("reload refused")
        assert agent.proc.poll() is None
        # One consistent config: a cut of vti3 is seen (its link is watched).
        out = len(agent.out())
        subprocess.run(["ip", "-n", ns, "link", "set", "vti1p", "down"], check=True)
        agent.wait_for("the failover", lambda: "alert failover: tun1 -> tun2" in agent.out()[out:])
    finally:
        assert agent.stop() == 0
    assert "Traceback" not in agent.log()
