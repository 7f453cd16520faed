"""Inside the lab's kernel: cut isp1 under the stock stack and record what the world shows.

Run first by guest_stock_lab.py (test_vm_stock_stack.py); writes JSON facts (states
and times read from the real charons, kernel and BIRD) for the test to judge on the host,
then repairs isp1 and brings tun1 back for the guests after it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "labs"))
from lablib.nslab import Lab


def snapshot(lab: Lab) -> dict[str, object]:
    vti1 = lab.link("siteA", "vti1")
    return {
        "vti1_flags": vti1.get("flags", []),
        "vti1_operstate": vti1.get("operstate"),
        "vti1_tx_carrier_errors": vti1["stats64"]["tx"].get("carrier_errors", 0),  # type: ignore[index]
        "tun1_sa": lab.child_installed("siteA", "tun1"),
        "tun2_sa": lab.child_installed("siteA", "tun2"),
        "bgp": lab.bgp_sessions(),
        "siteB_route_devs": lab.route_devs("siteB", "10.1.0.0/24"),
    }


def restore(lab: Lab) -> float:
    """isp1 repaired and tun1's CHILD_SA installed again (re-initiated if charon gave up):
    the lab as it was built, for the next guest on the same VM. Seconds it took."""
    started = time.monotonic()
    lab.repair("isp1")
    while not lab.child_installed("siteA", "tun1"):
        if time.monotonic() - started > 120:
            raise TimeoutError("tun1's CHILD_SA not back within 120 s of isp1's repair")
        lab.swanctl("siteA", "--initiate", "--child", "tun1", "--timeout", "10")
        time.sleep(1)
    return round(time.monotonic() - started, 1)


def main(out: Path | None = None) -> None:
    out = out or Path(sys.argv[1])
    lab = Lab("stock", "vti")
    facts: dict[str, object] = {"before": snapshot(lab)}
    cut_at = time.monotonic()
    lab.cut("isp1")
    # One loop watches both, so each time is when it was first seen (~1 s resolution here).
    seen: dict[str, float] = {}
    while len(seen) < 2 and time.monotonic() - cut_at < 60:
        now = round(time.monotonic() - cut_at, 1)
        if "route" not in seen and lab.route_devs("siteB", "10.1.0.0/24")[:1] == ["vti2"]:
            seen["route"] = now
            facts["at_route_move"] = snapshot(lab)
        if "sa" not in seen and not lab.child_installed("siteA", "tun1"):
            seen["sa"] = now
        time.sleep(0.2)
    facts["route_moved_s"] = seen.get("route")
    facts["sa_gone_s"] = seen.get("sa")
    # Traffic the stock stack still routes into vti1: site A's static route to site B.
    lab.sh(
        "siteA", "busybox", "ping", "-c", "3", "-W", "1", "-I", "vti1", "169.254.1.2", check=False
    )
    facts["after_sa_gone"] = snapshot(lab)
    out.write_text(json.dumps(facts, indent=2))
    facts["restored_s"] = restore(lab)
    out.write_text(json.dumps(facts, indent=2))


if __name__ == "__main__":
    main()
