"""Inside the lab's kernel, site A running vti-failover: cut isp1 and record what changes.

Run by test_vm_agent.py through `labs/lab up --stack agent --then ...`; writes JSON facts
(first time each observable changed after the cut, MQTT messages seen on site A's broker)
for the test to judge on the host.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "labs"))
from lablib.nslab import Lab
from lablib.topology import STATE_ROOT


def observe(lab: Lab) -> dict[str, object]:
    return {
        "vti1_up": "UP" in lab.link("siteA", "vti1").get("flags", []),  # type: ignore[operator]
        "siteA_route": (lab.route_devs("siteA", "10.2.0.0/24") or ["none"])[0],
        "siteB_route": (lab.route_devs("siteB", "10.1.0.0/24") or ["none"])[0],
        "siteB_tun1": lab.bgp_sessions().get("tun1", ""),
    }


def main() -> None:
    out = Path(sys.argv[1])
    lab = Lab("agent", "vti")
    lab.spawn("siteA", "mqtt-sub", "mosquitto_sub", "-h", "127.0.0.1", "-v", "-t", "#")
    # Give the agent time to finish its start-up reconcile and publish retained state.
    time.sleep(5)
    before = observe(lab)
    facts: dict[str, object] = {"before": before, "changes": []}
    changes: list[dict[str, object]] = facts["changes"]  # type: ignore[assignment]
    cut_at = time.monotonic()
    lab.cut("isp1")
    last = before
    while time.monotonic() - cut_at < 25:
        now = observe(lab)
        for key, value in now.items():
            if value != last[key]:
                changes.append({"t": round(time.monotonic() - cut_at, 1), key: value, **now})
        last = now
        time.sleep(0.2)
    facts["after"] = last
    facts["mqtt"] = (STATE_ROOT / "siteA" / "mqtt-sub.log").read_text().splitlines()
    facts["agent_log"] = (STATE_ROOT / "siteA" / "vti-failover.log").read_text().splitlines()[-60:]
    out.write_text(json.dumps(facts, indent=2))


if __name__ == "__main__":
    main()
