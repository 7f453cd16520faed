"""The whole agent (`vti-failover run` in site A's namespace) against a real BIRD: restarts and
reloads read off BIRD's RIB.

A restarted agent starts its ExaBGP only once the core has decided, with our announcements
in its start config: BIRD, a graceful-restart helper, keeps our prefix through the
restart and never loses it. A reload adds or removes the bgp section, or moves a
tunnel's session to another neighbor while it is up, without stopping the agent.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bgp.conftest import Topology, agent_config, bird_config
from tests.support.agent_process import AgentProcess
from tests.support.bird import Bird, bgp_peer_block, bird
from tests.support.system import run

pytestmark = [pytest.mark.root, pytest.mark.services, pytest.mark.slow]

SITE = "10.1.0.0/24"
# tun2's other neighbor for the reload that moves its session: BIRD's second address on b2.
OTHER = "169.254.2.6"


def site_config(topo: Topology, workdir: Path, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = agent_config(topo, workdir).model_dump(
        mode="json", exclude_none=True, by_alias=True
    )
    for t in data["tunnels"]:
        t["probe"] = {"kind": "icmp", "interval_s": 0.2, "timeout_s": 0.5}
    data["policy"] = {"rise": 2, "link_control": "none", "preempt_hold_down_s": 1}
    data.update(changes)
    return data


def write(path: Path, data: dict[str, Any]) -> Path:
    # JSON is YAML.
    path.write_text(json.dumps(data))
    return path


def has_site(b: Bird, *protocols: str) -> bool:
    return all(b.route(SITE, p) is not None for p in protocols)


def settled(b: Bird, *protocols: str) -> bool:
    return all(
        b.protocol_state(p) == "Established" and not b.graceful_restart_active(p) for p in protocols
    ) and has_site(b, *protocols)


class Sampler:
    """Polls BIRD for our prefix on both sessions every ~20 ms in a thread."""

    def __init__(self, b: Bird) -> None:
        self.bird = b
        self.samples = 0
        self.missing: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples += 1
            if not has_site(self.bird, "tun1", "tun2"):
                self.missing.append(time.monotonic())
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for a in started:
        a.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "kill-9"])
def test_agent_restart_never_loses_our_prefix_at_the_peer(
    topo: Topology,
    bird_peer: Bird,
    tmp_path: Path,
    agents: list[AgentProcess],
    sig: signal.Signals,
) -> None:
    path = write(tmp_path / "site.json", site_config(topo, tmp_path / "exabgp"))
    first = AgentProcess(path, tmp_path, netns=topo.ns_a, name="agent1")
    agents.append(first)
    bird_peer.wait_for(
        "our prefix on both sessions", lambda: settled(bird_peer, "tun1", "tun2"), 60
    )
    sampler = Sampler(bird_peer)
    try:
        stopped = time.monotonic()
        first.stop(sig)
        second = AgentProcess(path, tmp_path, netns=topo.ns_a, name="agent2")
        agents.append(second)
        second.wait_log("started exabgp", timeout=30)
        started_exabgp = time.monotonic()
        # Graceful restart seen and over: fresh routes from the new exabgp on both sessions.
        bird_peer.wait_for(
            "the sessions back",
            lambda: settled(bird_peer, "tun1", "tun2"),
            60,
        )
        back = time.monotonic()
        time.sleep(1.0)
    finally:
        sampler.stop()
    print(
        f"\n{sig.name}: new exabgp started {started_exabgp - stopped:.2f}s after the stop, "
        f"sessions fresh {back - stopped:.2f}s after; prefix missing in "
        f"{len(sampler.missing)} of {sampler.samples} samples"
    )
    assert sampler.samples > 50
    assert sampler.missing == []
    assert "Traceback" not in second.log()


def test_reload_removes_and_adds_the_bgp_section(
    topo: Topology, bird_peer: Bird, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    # Defect: a valid reload without `bgp:` logged "reloaded" and then exited 1.
    with_bgp = site_config(topo, tmp_path / "exabgp")
    without = {k: v for k, v in with_bgp.items() if k != "bgp"}
    without["remote_prefixes"] = {"static": ["10.9.0.0/24"]}
    without["site_prefixes"] = []
    path = write(tmp_path / "site.json", with_bgp)
    agent = AgentProcess(path, tmp_path, netns=topo.ns_a)
    agents.append(agent)
    bird_peer.wait_for("our prefix", lambda: settled(bird_peer, "tun1", "tun2"), 60)

    write(path, without)
    agent.send(signal.SIGHUP)
    assert "removed exabgp" in agent.wait_log("reloaded")[-1]
    # Withdrawn, then exabgp stopped once it reported the withdrawals written (a stop on
    # its `done` alone once left them queued, and BIRD kept our prefix as stale under
    # graceful restart): the sessions down and no route of ours.
    bird_peer.wait_for("our prefix gone", lambda: bird_peer.route(SITE, "tun1") is None, 30)
    bird_peer.wait_for(
        "sessions down", lambda: bird_peer.protocol_state("tun1") != "Established", 30
    )
    time.sleep(1.0)
    assert agent.proc.poll() is None
    assert "not reported sent" not in agent.log()

    write(path, with_bgp)
    agent.send(signal.SIGHUP)
    assert "added exabgp" in agent.wait_log("reloaded", 2)[-1]
    bird_peer.wait_for("our prefix back", lambda: settled(bird_peer, "tun1", "tun2"), 60)
    assert agent.stop() == 0
    assert "Traceback" not in agent.log()


def test_reload_moves_a_session_that_is_up_to_another_neighbor(
    topo: Topology, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    # Defect: changing a bgp_neighbor while its session was up raised KeyError.
    run("ip", "-n", topo.ns_b, "addr", "add", f"{OTHER}/32", "dev", "b2")
    run("ip", "-n", topo.ns_a, "route", "add", f"{OTHER}/32", "dev", "a2")
    # BIRD takes one protocol per neighbor address: tun2b waits disabled until tun2 is off.
    other = bgp_peer_block("tun2b", OTHER, 65002, Topology.local(2), 65001).replace(
        "protocol bgp tun2b {", "protocol bgp tun2b {\n    disabled;"
    )
    with bird(topo.ns_b, bird_config() + other, tmp_path / "bird") as b:
        data = site_config(topo, tmp_path / "exabgp")
        path = write(tmp_path / "site.json", data)
        agent = AgentProcess(path, tmp_path, netns=topo.ns_a)
        agents.append(agent)
        b.wait_for("our prefix", lambda: settled(b, "tun1", "tun2"), 60)

        data["tunnels"][1]["bgp_neighbor"] = OTHER
        write(path, data)
        agent.send(signal.SIGHUP)
        assert "reconfigured exabgp" in agent.wait_log("reloaded")[-1]
        b.birdc("disable", "tun2")
        b.birdc("enable", "tun2b")
        b.wait_for("our prefix from the new neighbor", lambda: settled(b, "tun1", "tun2b"), 60)
        b.wait_for("the old session gone", lambda: b.protocol_state("tun2") != "Established", 30)
        assert agent.proc.poll() is None
        assert agent.stop() == 0
    assert "KeyError" not in agent.log()
    assert "Traceback" not in agent.log()
