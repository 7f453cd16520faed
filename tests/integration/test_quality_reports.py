"""Loss and RTT in the retained MQTT tunnel state, from a real `vti-failover run`.

Site A runs the agent and a mosquitto in its namespace; two veth pairs stand in for the
tunnels, and site B's kernel answers the in-tunnel probes. One in four of tun1's probes
is dropped at site B (nftables): the retained state says so, refreshed at
mqtt.quality_interval_s (1 s here), not on every probe.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_control import TUNNEL
from tests.probes.lab import add_link, nft
from tests.support.agent_process import AgentProcess
from tests.support.system import netns, require_tool

pytestmark = [pytest.mark.root, pytest.mark.services]

PREFIX = "vtq"
CONFIG = (
    "agent_id: q-site\ntunnels:\n"
    + "".join(TUNNEL.format(n=n, prio=100 * n) for n in (1, 2))
    + f"""\
remote_prefixes: {{static: [10.2.0.0/24]}}
policy:
  rise: 3
  fall: 5
  # 25% loss must neither degrade nor take tun1 down here: only the numbers change.
  loss_window: 40
  loss_down: 40
  loss_degraded: 40
  link_control: none
netlink: {{nexthop_groups: false}}
mqtt: {{host: 127.0.0.1, port: 1883, topic_prefix: {PREFIX}, quality_interval_s: 1}}
control: {{enabled: false}}
"""
)
STATE = f"{PREFIX}/q-site/tunnel/tun1/state"
# Every fourth echo request on tun1's far end is dropped.
QUARTER = 'iifname "p1" icmp type echo-request numgen inc mod 4 0 counter drop'


def retained(ns: str) -> dict[str, Any]:
    """The retained state of tun1 as a new subscriber gets it ({} while there is none)."""
    res = subprocess.run(
        ["ip", "netns", "exec", ns, "mosquitto_sub", "-p", "1883", "-t", STATE, "-C", "1",
         "-W", "5"],
        capture_output=True, text=True, timeout=15, check=False,
    )  # fmt: skip
    if res.returncode != 0:
        return {}
    body: dict[str, Any] = json.loads(res.stdout)
    return body


def until(what: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_retained_state_tells_loss_and_rtt_at_the_report_interval(tmp_path: Path) -> None:
    require_tool("mosquitto")
    require_tool("nft")
    with netns("vtqa") as a, netns("vtqb") as b:
        for n in (1, 2):
            add_link(a, b, n, near_if=f"vti{n}")
        broker = subprocess.Popen(
            ["ip", "netns", "exec", a, "mosquitto", "-p", "1883"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        config = tmp_path / "site.yaml"
        config.write_text(CONFIG)
        agent = AgentProcess(config, tmp_path, netns=a)
        try:
            clean = until("loss and RTT told", lambda: (s := retained(a)).get("rtt_ms") and s)
            lost, window = (int(x) for x in clean["loss"].split("/"))
            assert lost == 0 < window
            assert 0 < clean["rtt_ms"] < 100
            with nft(b, QUARTER):
                time.sleep(5)  # 50 probes, 12 of them dropped: the window fills up
                lossy = retained(a)
                lost, window = (int(x) for x in lossy["loss"].split("/"))
                assert (lossy["health"], window) == ("UP", 40)
                assert 6 <= lost <= 14, lossy
                # The pace: over 3 s, a subscriber sees at most about one new state a
                # second (only when a number changed), though 30 probes were answered or
                # lost meanwhile and each moved the window.
                seen = subprocess.run(
                    ["ip", "netns", "exec", a, "mosquitto_sub", "-p", "1883", "-t", STATE,
                     "-W", "3", "-R"],
                    capture_output=True, text=True, timeout=15, check=False,
                ).stdout.splitlines()  # fmt: skip
                assert len(seen) <= 5, seen
        finally:
            # The broker goes whatever the agent's exit said (it would outlive the test).
            status = agent.stop()
            broker.send_signal(signal.SIGTERM)
            broker.wait(timeout=10)
            assert status == 0
        assert "Traceback" not in agent.log()
