"""Inside the lab's kernel: site A's agent routing through nexthop groups on real VTIs.

Run by test_vm_groups.py through `labs/lab up --stack agent --agent-config ... --then ...`;
the lab started the agent on an active-standby config with `netlink.nexthop_groups: true`
and IPv4 and IPv6 static prefixes. Phases, each recording the kernel's nexthop objects,
the routes of the static prefixes and where `ip route get` sends one address per family:

  start     as the agent left it once routes are in
  cut       isp1 black-holed: the carrier moves to tun2
  back      isp1 repaired: the agent fails back after its hold-down
  restart   SIGTERM, then the same config again: `ip monitor nexthop route` over the
            restart (the new agent settled and ExaBGP's sessions back) should see nothing
  ecmp      SIGTERM, then the ECMP variant (policy.mode active-active): the groups are
            replaced in place, both tunnels in the carrying ones

Writes JSON facts for the test to judge on the host.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from guest_agent import (
    agent_log,
    reestablished,
    sessions_since,
    sessions_up,
    start_agent,
    stop_agent,
    wait,
)
from lablib.nslab import Lab

Facts = dict[str, Any]
PROBE_V4 = "10.2.0.10"
PROBE_V6 = "2001:db8:2::10"


def kernel(lab: Lab, prefixes: list[str]) -> Facts:
    """Our nexthop objects, the static prefixes' routes, and each family's chosen device."""

    def ip_json(*args: str) -> Any:
        out = lab.sh("siteA", "ip", "-j", *args).stdout
        return json.loads(out or "[]")

    objects = ip_json("nexthop", "show")  # both families
    routes = {}
    for prefix in prefixes:
        family = "-6" if ":" in prefix else "-4"
        routes[prefix] = [
            {"metric": r.get("metric", 0), "nhid": r.get("nhid"), "protocol": r.get("protocol")}
            for r in ip_json(family, "route", "show", prefix)
        ]
    get = {}
    for addr in (PROBE_V4, PROBE_V6):
        family = "-6" if ":" in addr else "-4"
        found = ip_json(family, "route", "get", addr)
        get[addr] = found[0].get("dev") if found else None
    return {"at": time.time(), "nexthops": objects, "routes": routes, "get": get}


def routed_via(lab: Lab, dev: str) -> Callable[[], bool]:
    def ok() -> bool:
        got = kernel(lab, [])["get"]
        return got[PROBE_V4] == dev and got[PROBE_V6] == dev

    return ok


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("facts", type=Path)
    p.add_argument("--config", type=Path, required=True, help="the config the lab started with")
    p.add_argument("--ecmp-config", type=Path, required=True)
    a = p.parse_args()
    # From the config, not the command line: the VM's exec line rides the kernel's
    # command line, which holds 2,048 bytes.
    a.prefix = yaml.safe_load(a.config.read_text())["remote_prefixes"]["static"]
    running = Lab.running()
    assert running is not None, "no lab is up"
    lab = Lab(running["stack"], running["kind"])
    config = a.config
    facts: Facts = {"kernel_release": os.uname().release, "phases": {}}
    log_lines: list[str] = []
    phases = facts["phases"]
    try:
        phases["start_wait_s"] = wait("routes via vti1", routed_via(lab, "vti1"), 60)
        phases["start"] = kernel(lab, a.prefix)

        lab.cut("isp1")
        phases["cut_wait_s"] = wait("routes via vti2", routed_via(lab, "vti2"), 60)
        phases["cut"] = kernel(lab, a.prefix)

        lab.repair("isp1")
        phases["back_wait_s"] = wait("failback to vti1", routed_via(lab, "vti1"), 120)
        wait("both sessions", lambda: sessions_up(lab), 60)
        phases["back"] = kernel(lab, a.prefix)

        monitor = subprocess.Popen(
            ["ip", "netns", "exec", lab.ns("siteA"), "ip", "-ts", "monitor", "nexthop", "route"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(1)  # the monitor is subscribed before anything can change
        before = sessions_since(lab)
        stop_agent()
        start_agent(lab, config, log_lines)
        phases["restart_sessions_s"] = wait(
            "sessions back after the restart", reestablished(lab, before), 90
        )
        time.sleep(5)  # and a quiet spell past them: a late rewrite would show
        monitor.send_signal(signal.SIGTERM)
        out, _ = monitor.communicate(timeout=10)
        phases["restart"] = kernel(lab, a.prefix)
        phases["restart_monitor"] = out.splitlines()

        stop_agent()
        start_agent(lab, a.ecmp_config, log_lines)
        phases["ecmp_wait_s"] = wait(
            "ECMP groups", lambda: any_group_of(kernel(lab, [])["nexthops"], 2), 60
        )
        phases["ecmp"] = kernel(lab, a.prefix)
    except TimeoutError as exc:
        facts["error"] = str(exc)
    finally:
        facts["agent_log"] = (log_lines + agent_log().read_text().splitlines())[-300:]
        a.facts.write_text(json.dumps(facts, indent=2))


def any_group_of(objects: list[Facts], size: int) -> bool:
    return any(len(o.get("group", [])) == size for o in objects)


if __name__ == "__main__":
    main()
