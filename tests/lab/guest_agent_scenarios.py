"""Inside the lab's kernel, site A running vti-failover: break the ISP paths, record what changes.

Run by test_vm_agent.py through `labs/lab up --stack agent --then ...`. Each phase breaks
something, watches the lab (links, both sites' routes, BIRD's sessions) for the changes and
when they happened, then undoes it. The MQTT events site A's broker carried are kept with
their decision times, so the test can tell which phase each belongs to. Writes JSON facts
for the test to judge on the host.

Phases, in the order given:
  loss      LOSS_PCT random loss both ways on isp1 for LOSS_S seconds (a bad line, not dead)
  cut       isp1 silently black-holed (links stay up), then repaired: failover and failback;
            `vti-failover status` read while the cut lasts
  linkdown  site A's isp1 underlay link set down (stays down for the next phase)
  bothdown  isp2 black-holed too, then both paths repaired: both-down and recovery
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "labs"))
from lablib.nslab import Lab
from lablib.topology import STATE_ROOT, TOP

Facts = dict[str, Any]
State = dict[str, object]


def observe(lab: Lab) -> dict[str, object]:
    sessions = lab.bgp_sessions()
    return {
        "vti1_up": "UP" in lab.link("siteA", "vti1").get("flags", []),  # type: ignore[operator]
        "siteA_route": (lab.route_devs("siteA", "10.2.0.0/24") or ["none"])[0],
        "siteB_route": (lab.route_devs("siteB", "10.1.0.0/24") or ["none"])[0],
        "siteB_tun1": sessions.get("tun1", ""),
        "siteB_tun2": sessions.get("tun2", ""),
    }


class Watcher:
    """Polls the lab and keeps each change with its time since the phase began."""

    def __init__(self, lab: Lab, name: str) -> None:
        self.lab = lab
        self.start = time.time()
        self.last = observe(lab)
        self.facts: Facts = {"name": name, "start": self.start, "before": self.last, "changes": []}

    def watch(self, seconds: float, until: Callable[[State], bool] | None = None) -> bool:
        """Poll for `seconds`, or until `until(state)` holds; whether it did."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            now = observe(self.lab)
            for key, value in now.items():
                if value != self.last[key]:
                    self.facts["changes"].append(
                        {"t": round(time.time() - self.start, 1), key: value, **now}
                    )
            self.last = now
            if until is not None and until(now):
                return True
            time.sleep(0.2)
        return until is None

    def mark(self, label: str) -> None:
        self.facts[label] = round(time.time() - self.start, 1)

    def done(self) -> Facts:
        self.facts["after"] = self.last
        self.facts["end"] = time.time()
        return self.facts


def on_primary(state: dict[str, object]) -> bool:
    return state["siteA_route"] == "vti1" and state["siteB_route"] == "vti1"


def phase_loss(lab: Lab, a: argparse.Namespace) -> Facts:
    w = Watcher(lab, "loss")
    lab.lossy("isp1", a.loss_pct)
    try:
        w.watch(a.loss_s)
    finally:
        lab.clean("isp1")
    w.facts["loss_pct"], w.facts["loss_s"] = a.loss_pct, a.loss_s
    return w.done()


def phase_cut(lab: Lab, a: argparse.Namespace) -> Facts:
    w = Watcher(lab, "cut")
    lab.cut("isp1")
    w.watch(25)
    # What an operator sees meanwhile: the running agent's own account, over its socket.
    w.facts["status"] = status(lab)
    w.mark("repaired_at")
    lab.repair("isp1")
    # Failback waits for the preempt hold-down (30 s) after tun1 is healthy again.
    w.facts["back"] = w.watch(120, until=on_primary)
    return w.done()


def status(lab: Lab) -> dict[str, object]:
    # Found alone: one agent runs in site A. Under TCG a Python start takes seconds.
    res = lab.sh("siteA", str(TOP / ".venv" / "bin" / "vti-failover"), "status", check=False,
                 timeout=120)  # fmt: skip
    return {"code": res.returncode, "stdout": res.stdout, "stderr": res.stderr[-2000:]}


def phase_linkdown(lab: Lab, a: argparse.Namespace) -> Facts:
    w = Watcher(lab, "linkdown")
    lab.sh("siteA", "ip", "link", "set", "isp1", "down")
    w.watch(20)
    return w.done()


def phase_bothdown(lab: Lab, a: argparse.Namespace) -> Facts:
    w = Watcher(lab, "bothdown")
    lab.cut("isp2")
    w.watch(20)
    w.mark("repaired_at")
    w.facts["during"] = w.last
    lab.sh("siteA", "ip", "link", "set", "isp1", "up")
    lab.repair("isp2")
    w.facts["back"] = w.watch(120, until=lambda s: s["siteB_route"] in ("vti1", "vti2"))
    return w.done()


PHASES = {
    "loss": phase_loss,
    "cut": phase_cut,
    "linkdown": phase_linkdown,
    "bothdown": phase_bothdown,
}


def mqtt_events(log: Path) -> list[dict[str, Any]]:
    """site-a's event messages, each with `at_epoch` (its decision time) added."""
    events = []
    for line in log.read_text().splitlines():
        topic, _, payload = line.partition(" ")
        if topic == "vti-failover/site-a/event":
            event = json.loads(payload)
            event["at_epoch"] = datetime.fromisoformat(event["at"]).timestamp()
            events.append(event)
    return events


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("facts", type=Path)
    p.add_argument("--phases", default="cut")
    p.add_argument("--loss-pct", type=float, default=5.0)
    p.add_argument("--loss-s", type=float, default=150.0)
    a = p.parse_args()
    running = Lab.running()
    assert running is not None, "no lab is up"
    lab = Lab(running["stack"], running["kind"])
    lab.spawn("siteA", "mqtt-sub", "mosquitto_sub", "-h", "127.0.0.1", "-v", "-t", "#")
    # Give the agent time to finish its start-up reconcile and publish retained state.
    time.sleep(5)
    facts: Facts = {"kind": lab.kind, "stack": lab.stack, "phases": []}
    try:
        for name in a.phases.split(","):
            facts["phases"].append(PHASES[name](lab, a))
            time.sleep(3)
    finally:
        facts["mqtt"] = (STATE_ROOT / "siteA" / "mqtt-sub.log").read_text().splitlines()
        facts["events"] = mqtt_events(STATE_ROOT / "siteA" / "mqtt-sub.log")
        agent_log = (STATE_ROOT / "siteA" / "vti-failover.log").read_text().splitlines()
        facts["agent_log"] = agent_log[-200:]
        a.facts.write_text(json.dumps(facts, indent=2))


if __name__ == "__main__":
    main()
