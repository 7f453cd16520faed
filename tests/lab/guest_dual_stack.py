"""Inside the lab's kernel: both families over mixed underlays, under UDP streams.

Run by test_vm_dual_stack.py through `labs/lab up --stack agent --family dual --then ...`
with the three-tunnel config: vti1 over IPv4, vti2 (an ip6 VTI) and xfrm3 (an XFRM
interface) over IPv6; each carries IPv4 and IPv6 inside, and one BGP session per tunnel
carries both (MP-BGP). Streams run lanA <-> lanB in both families (50 datagrams/s each
way each family). Phases, in order:

  v4_underlay  cut isp1 (traffic moves to vti2, over IPv6), then repair it (back to vti1)
  v6_underlay  cut isp1, then isp2 (traffic moves from vti2 to xfrm3, both over IPv6),
               repair isp2 (back to vti2), repair isp1 (back to vti1)
  sa_death     tun1's CHILD_SA terminated at site A: the learned 2001:db8:2:99::/64
               leaves vti1 at once; the SA initiated again
  three_order  guest_faults.py's: every path cut, isp3 back, then isp2, then isp1

Writes JSON facts for the test to judge on the host.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import guest_faults
from guest_agent import agent_log, wait
from guest_faults import PY, RATE, STREAM, lost, mqtt_events
from lablib.nslab import Lab
from lablib.stream import longest_gap, read_stream
from lablib.topology import STATE_ROOT

Facts = dict[str, Any]
# What each site routes toward the other, per family: site A's kernel, site B's kernel.
TOWARD = {
    "ipv4": (("siteA", "10.2.0.0/24"), ("siteB", "10.1.0.0/24")),
    "ipv6": (("siteA", "2001:db8:2::/64"), ("siteB", "2001:db8:1::/64")),
}
LEARNED6 = "2001:db8:2:99::/64"
STREAMS = {  # name -> (receiving node, sender node, destination, port)
    "to_a4": ("lanA", "lanB", "10.1.0.10", 5000),
    "to_b4": ("lanB", "lanA", "10.2.0.10", 5000),
    "to_a6": ("lanA", "lanB", "2001:db8:1::10", 5006),
    "to_b6": ("lanB", "lanA", "2001:db8:2::10", 5006),
}


def carriers(lab: Lab) -> dict[str, list[str]]:
    """Per family, the first device of site A's and site B's route to the other site."""
    return {
        fam: [(lab.route_devs(node, prefix) or ["none"])[0] for node, prefix in ends]
        for fam, ends in TOWARD.items()
    }


def on(lab: Lab, dev: str) -> Callable[[], bool]:
    """Both families, both sites, through `dev`."""
    return lambda: all(devs == [dev, dev] for devs in carriers(lab).values())


def moved(lab: Lab, facts: Facts, step: str, dev: str, timeout: float) -> None:
    facts[step] = {"at": time.time()}
    facts[step]["took_s"] = wait(f"both families on {dev} ({step})", on(lab, dev), timeout)
    facts[step]["done"] = time.time()


def phase_v4_underlay(lab: Lab) -> Facts:
    facts: Facts = {"name": "v4_underlay", "start": time.time()}
    lab.cut("isp1")
    moved(lab, facts, "cut_isp1", "vti2", 60)
    lab.repair("isp1")
    moved(lab, facts, "repair_isp1", "vti1", 150)
    time.sleep(3)
    facts["end"] = time.time()
    return facts


def phase_v6_underlay(lab: Lab) -> Facts:
    facts: Facts = {"name": "v6_underlay", "start": time.time()}
    lab.cut("isp1")
    moved(lab, facts, "cut_isp1", "vti2", 60)
    lab.cut("isp2")
    moved(lab, facts, "cut_isp2", "xfrm3", 60)
    lab.repair("isp2")
    moved(lab, facts, "repair_isp2", "vti2", 150)
    lab.repair("isp1")
    moved(lab, facts, "repair_isp1", "vti1", 150)
    time.sleep(3)
    facts["end"] = time.time()
    return facts


def phase_sa_death(lab: Lab) -> Facts:
    facts: Facts = {"name": "sa_death", "start": time.time()}
    facts["learned_before"] = lab.route_devs("siteA", LEARNED6)
    terminated = time.time()
    lab.swanctl("siteA", "--terminate", "--child", "tun1", "--timeout", "10")
    facts["left_vti1_s"] = wait(
        "the learned IPv6 prefix off vti1",
        lambda: "vti1" not in lab.route_devs("siteA", LEARNED6),
        30,
    )
    facts["terminated_at"] = terminated
    facts["learned_after"] = lab.route_devs("siteA", LEARNED6)
    facts["carriers_after"] = carriers(lab)
    lab.swanctl("siteA", "--initiate", "--child", "tun1", "--timeout", "20")
    moved(lab, facts, "sa_back", "vti1", 150)
    facts["learned_back"] = lab.route_devs("siteA", LEARNED6)
    facts["end"] = time.time()
    return facts


def phase_three_order(lab: Lab) -> Facts:
    return guest_faults.phase_three_order(lab, argparse.Namespace(), [])


PHASES = {
    "v4_underlay": phase_v4_underlay,
    "v6_underlay": phase_v6_underlay,
    "sa_death": phase_sa_death,
    # The same three tunnels, so test_vm_three_tunnels.py needs no VM of its own.
    "three_order": phase_three_order,
}


def start_streams(lab: Lab) -> None:
    for name, (rx, tx, dst, port) in STREAMS.items():
        out = str(STATE_ROOT / rx / f"rx-{name}")
        six = ["--ipv6"] if ":" in dst else []
        lab.spawn(rx, f"recv-{name}", PY, str(STREAM), "recv", str(port), out, *six)
        lab.spawn(tx, f"send-{name}", PY, str(STREAM), "send", dst, str(port), "--rate", str(RATE))


def outages(facts: Facts) -> None:
    """Per phase step and stream: the longest gap and the datagrams lost."""
    rows = {n: read_stream(STATE_ROOT / rx / f"rx-{n}") for n, (rx, *_) in STREAMS.items()}
    facts["received"] = {n: len(r) for n, r in rows.items()}
    for ph in facts["phases"]:
        steps = [k for k, v in ph.items() if isinstance(v, dict) and "at" in v]
        for step in steps:
            # From the fault to a few seconds after both families had moved.
            start, end = ph[step]["at"], ph[step]["done"] + 3
            ph[step]["gap_s"] = {n: longest_gap(r, start, end, RATE) for n, r in rows.items()}
            ph[step]["lost"] = {n: lost(r, start, end) for n, r in rows.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("facts", type=Path)
    p.add_argument("--phases", default=",".join(PHASES))
    a = p.parse_args()
    running = Lab.running()
    assert running is not None, "no lab is up"
    lab = Lab(running["stack"], running["kind"], family=running.get("family", "ipv4"))
    lab.spawn("siteA", "mqtt-sub", "mosquitto_sub", "-h", "127.0.0.1", "-v", "-t", "#")
    start_streams(lab)
    facts: Facts = {"phases": [], "rate": RATE, "family": lab.family}
    try:
        wait("both families on vti1 at the start", on(lab, "vti1"), 60)
        facts["learned_at_start"] = lab.route_devs("siteA", LEARNED6)
        for name in a.phases.split(","):
            facts["phases"].append(PHASES[name](lab))
            time.sleep(3)
    except TimeoutError as exc:
        facts["error"] = str(exc)
        facts["carriers_at_error"] = carriers(lab)
    finally:
        time.sleep(1)
        outages(facts)
        facts["events"] = mqtt_events(STATE_ROOT / "siteA" / "mqtt-sub.log")
        facts["agent_log"] = agent_log().read_text().splitlines()[-300:]
        facts["bird"] = lab.bird("show", "route", "all")[-6000:]
        a.facts.write_text(json.dumps(facts, indent=2))


if __name__ == "__main__":
    main()
