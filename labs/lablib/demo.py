"""The scripted demo: bring the lab up, cut isp1 silently, show what happens, repair it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from lablib.nslab import Lab, LabError
from lablib.show import bgp_line, status_text, tunnel_line
from lablib.stream import longest_gap, read_stream
from lablib.topology import STATE_ROOT, TOP

__all__ = ["run_demo"]

STREAM = TOP / "labs" / "bench" / "udp_stream.py"
PY = str(TOP / ".venv" / "bin" / "python")
RATE = 200.0


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


def _watch(
    lab: Lab, steps: Steps, what: str, pred: Callable[[], bool], timeout: float, since: float
) -> None:
    """Wait for pred; print when it held, in seconds after `since` (a monotonic time)."""
    try:
        lab.wait_for(what, pred, timeout)
        steps.show(f"{what}: {time.monotonic() - since:.1f}s after")
    except LabError:
        steps.show(f"{what}: not within {timeout:.0f}s")


def _flowing(*paths: Path) -> bool:
    return all(p.exists() and p.stat().st_size > 0 for p in paths)


def _vti1_down(lab: Lab) -> bool:
    flags = lab.link("siteA", "vti1").get("flags", [])
    return isinstance(flags, list) and "UP" not in flags


def _best(lab: Lab, node: str, prefix: str, dev: str) -> Callable[[], bool]:
    return lambda: lab.route_devs(node, prefix)[:1] == [dev]


def _start_streams(lab: Lab, steps: Steps) -> tuple[Path, Path]:
    """UDP streams both ways and an MQTT subscriber; the two receivers' files (B->A, A->B)."""
    steps.step("UDP streams between the LANs, 200 packets/s each way; MQTT subscriber on A")
    b2a, a2b = STATE_ROOT / "lanA" / "stream.rx", STATE_ROOT / "lanB" / "stream.rx"
    lab.spawn("lanA", "recv", PY, str(STREAM), "recv", "5000", str(b2a))
    lab.spawn("lanB", "recv", PY, str(STREAM), "recv", "5000", str(a2b))
    lab.spawn("lanB", "send", PY, str(STREAM), "send", "10.1.0.10", "5000")
    lab.spawn("lanA", "send", PY, str(STREAM), "send", "10.2.0.10", "5000")
    lab.spawn("siteA", "mqtt-sub", "mosquitto_sub", "-h", "127.0.0.1", "-v", "-t", "#")
    took = lab.wait_for("both streams", lambda: _flowing(b2a, a2b), 60)
    steps.show(f"both streams flowing ({took:.0f}s to start)")
    time.sleep(2)
    return b2a, a2b


def run_demo(stack: str = "agent", kind: str = "vti") -> int:
    with_agent = stack == "agent"
    steps = Steps(9)
    lab = Lab(stack, kind)
    steps.step(f"bringing the lab up: {kind} tunnels, site A runs {stack}")
    lab.up(progress=steps.show)
    try:
        took = lab.wait_ready()
        steps.show(f"both tunnels and BGP sessions up; converged in {took:.1f}s")
        steps.step("the tunnels, the BGP sessions and the paths")
        steps.show(status_text(lab))

        b2a, a2b = _start_streams(lab, steps)

        steps.step("cutting isp1 silently: tc drops everything both ways, links stay up")
        cut_at, cut = time.time(), time.monotonic()
        lab.cut("isp1")
        if with_agent:
            _watch(lab, steps, "the agent takes vti1 down", lambda: _vti1_down(lab), 15, cut)
            _watch(lab, steps, "site A routes site B's LAN via vti2",
                   _best(lab, "siteA", "10.2.0.0/24", "vti2"), 15, cut)  # fmt: skip
        else:
            steps.show(f"site A runs {stack}, no agent: only DPD and BGP's hold timer react")
        _watch(lab, steps, "site B routes site A's LAN via vti2",
               _best(lab, "siteB", "10.1.0.0/24", "vti2"), 40, cut)  # fmt: skip
        _watch(lab, steps, "tun1's CHILD_SA deleted (DPD)",
               lambda: not lab.child_installed("siteA", "tun1"), 40, cut)  # fmt: skip

        steps.step("what the kernel shows now")
        steps.show(tunnel_line(lab, "siteA", "vti1"))
        steps.show(tunnel_line(lab, "siteA", "vti2"))
        steps.show(bgp_line(lab))
        if not with_agent:
            steps.show(
                "vti1 is still UP,LOWER_UP with no SA behind it: the gap vti-failover closes"
            )

        steps.step("outage measured on the streams (longest gap since the cut)")
        for label, path in (("site A -> site B", a2b), ("site B -> site A", b2a)):
            # Up to a second ago: the receiver flushes its log every half second.
            gap = longest_gap(read_stream(path), cut_at, time.time() - 1.0, RATE)
            steps.show(f"{label}: {gap:.2f}s")
        steps.show("A -> B follows site A's own routes; B -> A follows site B's BGP, which")
        steps.show("moves when tun2 announces a better MED (the withdrawal over tun1 is lost)")

        steps.step("MQTT messages received on site A")
        time.sleep(1)
        mqtt = (STATE_ROOT / "siteA" / "mqtt-sub.log").read_text().strip()
        steps.show(mqtt or "(none: without the agent nothing publishes alerts)")

        steps.step("repairing isp1; waiting for failback")
        lab.repair("isp1")
        fixed = time.monotonic()
        _watch(lab, steps, "tun1's CHILD_SA back",
               lambda: lab.child_installed("siteA", "tun1"), 60, fixed)  # fmt: skip
        if with_agent:
            _watch(lab, steps, "site A back on vti1 (after the agent's hold-down)",
                   _best(lab, "siteA", "10.2.0.0/24", "vti1"), 90, fixed)  # fmt: skip
        _watch(lab, steps, "site B back on vti1",
               _best(lab, "siteB", "10.1.0.0/24", "vti1"), 90, fixed)  # fmt: skip

        steps.step("final state")
        steps.show(status_text(lab))
        return 0
    finally:
        lab.down()
