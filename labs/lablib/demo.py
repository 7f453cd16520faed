"""The scripted demo: bring the lab up, cut isp1 silently, show what happens, repair it."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path

from lablib.nslab import Lab, LabError
from lablib.show import bgp_line, status_text, tunnel_line
from lablib.topology import LAB_DIR, STATE_ROOT, TOP

__all__ = ["agent_ready", "run_demo"]

STREAM = TOP / "labs" / "bench" / "udp_stream.py"
PY = str(TOP / ".venv" / "bin" / "python")
RATE = 200.0


def agent_ready() -> bool:
    """The agent can run the lab once agent/wiring.py builds live sources and actuators for it."""
    try:
        from agent.config import load_config  # noqa: PLC0415 - only the agent stack needs it
        from agent.wiring import build_live  # noqa: PLC0415

        adapters = build_live(load_config(LAB_DIR / "siteA" / "vti-failover.yaml"), dry_run=False)
    except Exception:
        return False
    kinds = {type(x).__name__ for x in (*adapters.sources, *adapters.actuators)}
    # Liveness from charon and a way to act on routing: the minimum the demo shows.
    return bool(adapters.sources) and bool(adapters.actuators) and len(kinds) >= 3


class Steps:
    def __init__(self, total: int) -> None:
        self.total, self.n, self.t0 = total, 0, time.monotonic()

    def step(self, text: str) -> None:
        self.n += 1
        print(f"\n[{self.n}/{self.total}] {text}  (+{time.monotonic() - self.t0:.0f}s)", flush=True)

    @staticmethod
    def show(text: str) -> None:
        for line in text.splitlines():
            print(f"      {line}", flush=True)


def _longest_gap(path: Path, since: float) -> float | None:
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and float(parts[1]) >= since - 1:
            rows.append((int(parts[0]), float(parts[1])))
    rows.sort()
    if not rows:
        return None
    gaps = [t1 - t0 - 1 / RATE for (s0, t0), (s1, t1) in itertools.pairwise(rows)]
    return max([0.0, *gaps])


def _watch(lab: Lab, steps: Steps, what: str, pred: Callable[[], bool], timeout: float) -> None:
    try:
        took = lab.wait_for(what, pred, timeout)
        steps.show(f"{what}: after {took:.1f}s")
    except LabError:
        steps.show(f"{what}: not within {timeout:.0f}s")


def run_demo(stack: str | None = None, kind: str = "vti") -> int:
    with_agent = agent_ready() if stack is None else stack == "agent"
    stack = "agent" if with_agent else (stack or "stock")
    steps = Steps(9)
    lab = Lab(stack, kind)
    steps.step(f"bringing the lab up: {kind} tunnels, site A runs {stack}")
    lab.up(progress=steps.show)
    try:
        took = lab.wait_ready()
        steps.show(f"both tunnels and BGP sessions up; converged in {took:.1f}s")
        steps.step("the tunnels, the BGP sessions and the paths")
        steps.show(status_text(lab))

        steps.step("UDP stream site B LAN -> site A LAN (200 packets/s); MQTT subscriber on site A")
        lab.spawn("lanA", "recv", PY, str(STREAM), "recv", "5000", str(STATE_ROOT / "demo.rx"))
        lab.spawn("lanB", "send", PY, str(STREAM), "send", "10.1.0.10", "5000")
        lab.spawn("siteA", "mqtt-sub", "mosquitto_sub", "-h", "127.0.0.1", "-v", "-t", "#")
        time.sleep(3)

        steps.step("cutting isp1 silently: tc ingress drop on both ends, links stay up")
        cut_at = time.time()
        lab.cut("isp1")
        if with_agent:
            _watch(
                lab,
                steps,
                "the agent takes vti1 down",
                lambda: "UP" not in lab.link("siteA", "vti1").get("flags", []),
                15,
            )  # type: ignore[operator]
        else:
            steps.show("vti-failover: PENDING (its live adapters are not in place yet);")
            steps.show("showing the stock stack: only DPD and BGP's hold timer react")
        _watch(
            lab,
            steps,
            "site B routes site A's LAN via vti2",
            lambda: lab.route_devs("siteB", "10.1.0.0/24")[:1] == ["vti2"],
            40,
        )
        _watch(
            lab,
            steps,
            "tun1's CHILD_SA deleted (DPD)",
            lambda: not lab.child_installed("siteA", "tun1"),
            40,
        )

        steps.step("what the kernel shows now")
        steps.show(tunnel_line(lab, "siteA", "vti1"))
        steps.show(tunnel_line(lab, "siteA", "vti2"))
        steps.show(bgp_line(lab))
        if not with_agent:
            steps.show(
                "vti1 is still UP,LOWER_UP with no SA behind it: the gap vti-failover closes"
            )

        steps.step("outage measured on the stream (longest gap)")
        gap = _longest_gap(STATE_ROOT / "demo.rx", cut_at)
        steps.show(f"traffic to site A's LAN stopped for {gap:.2f}s" if gap else "no data")

        steps.step("MQTT messages received on site A")
        time.sleep(1)
        mqtt = (STATE_ROOT / "siteA" / "mqtt-sub.log").read_text().strip()
        steps.show(mqtt or "(none: the agent is what publishes alerts; PENDING)")

        steps.step("repairing isp1; waiting for failback")
        lab.repair("isp1")
        _watch(lab, steps, "tun1's CHILD_SA back", lambda: lab.child_installed("siteA", "tun1"), 60)
        _watch(
            lab,
            steps,
            "site B back on vti1",
            lambda: lab.route_devs("siteB", "10.1.0.0/24")[:1] == ["vti1"],
            90,
        )

        steps.step("final state")
        steps.show(status_text(lab))
        return 0
    finally:
        lab.down()
