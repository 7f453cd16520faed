"""Inside the lab's kernel: `vti-failover apply` builds site A's three tunnels from nothing.

Run last by guest_stock_lab.py (test_vm_apply.py). Once charon's three
CHILD_SAs are installed, site A's vti1, vti2 and xfrm3 (made by node.sh) are deleted; the SAs
stay in the kernel, tied by mark and if_id. Then: apply --dry-run (must change nothing),
apply (creates the VTIs and the XFRM interface with addresses, MTU, sysctls, SNAT), pings
through each tunnel to its inner peer, a second apply under `ip monitor link address`
(must say "nothing to do" and cause no event), a last --dry-run and doctor. Writes what it
saw as JSON facts for the host test to judge.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "labs"))
from lablib.nslab import Lab

TOP = Path(__file__).resolve().parents[2]
CONFIG = TOP / "labs" / "dual-vti" / "siteA" / "vti-failover-three.yaml"
COMMAND = TOP / ".venv" / "bin" / "vti-failover"
DEVICES = ("vti1", "vti2", "xfrm3")
PEERS = {"vti1": "169.254.1.2", "vti2": "169.254.2.2", "xfrm3": "169.254.3.2"}


def command(lab: Lab, *args: str) -> dict[str, Any]:
    started = time.monotonic()
    # Under TCG a Python start with pydantic and pyroute2 takes seconds, more on a busy host.
    proc = subprocess.run(
        ["ip", "netns", "exec", lab.ns("siteA"), str(COMMAND), *args],
        capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    return {
        "code": proc.returncode,
        "stdout": proc.stdout[-6000:],
        "stderr": proc.stderr[-2000:],
        "took_s": round(time.monotonic() - started, 1),
    }


def system(lab: Lab) -> dict[str, Any]:
    """Site A's links, addresses, tunnel sysctls and nft ruleset, for before/after compares."""
    links = json.loads(lab.sh("siteA", "ip", "-d", "-j", "addr", "show").stdout)
    for link in links:
        link.pop("stats64", None)
        for addr in link.get("addr_info", []):
            # Lifetimes count down by themselves.
            addr.pop("valid_life_time", None)
            addr.pop("preferred_life_time", None)
    pattern = r"net\.ipv[46]\.conf\..*(rp_filter|disable_policy)"
    sysctls = lab.sh("siteA", "sysctl", "-a", "--pattern", pattern, check=False).stdout
    nft = lab.sh("siteA", "nft", "list", "ruleset", check=False)
    return {"links": links, "sysctls": sysctls, "nft": nft.stdout + nft.stderr}


def ping(lab: Lab, peer: str, deadline_s: float = 20) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        res = lab.sh("siteA", "ping", "-c", "2", "-W", "2", "-i", "0.5", peer, check=False)
        if res.returncode == 0:
            return True
        time.sleep(0.5)
    return False


def sysctl(lab: Lab, key: str) -> str:
    return lab.sh("siteA", "sysctl", "-n", key, check=False).stdout.strip()


def config() -> Path:
    cfg = yaml.safe_load(CONFIG.read_text())
    for t in cfg["tunnels"]:
        t["mtu"] = 1400  # as node.sh builds them
    cfg["tunnels"][0]["snat"] = {"source": "10.1.0.1"}
    path = Path("/tmp/vti-failover-apply.yaml")
    path.write_text(yaml.safe_dump(cfg))
    return path


def main(out: Path | None = None) -> None:
    out = out or Path(sys.argv[1])
    lab = Lab("stock", "vti")
    children = ("tun1", "tun2", "tun3")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(
        lab.child_installed("siteA", c) for c in children
    ):
        time.sleep(0.5)
    facts: dict[str, Any] = {"sas_up": all(lab.child_installed("siteA", c) for c in children)}
    facts["ping_before"] = {dev: ping(lab, peer) for dev, peer in PEERS.items()}
    for dev in DEVICES:
        lab.sh("siteA", "ip", "link", "del", "dev", dev)
    cfg = config()

    before = system(lab)
    facts["dry_from_nothing"] = command(lab, "apply", str(cfg), "--dry-run")
    facts["dry_changed_nothing"] = system(lab) == before

    facts["first"] = command(lab, "apply", str(cfg))
    facts["links"] = {}
    for dev in DEVICES:
        shown = lab.sh("siteA", "ip", "-d", "-j", "addr", "show", "dev", dev, check=False)
        facts["links"][dev] = json.loads(shown.stdout)[0] if shown.returncode == 0 else None
    facts["sysctls"] = {
        f"{fam}.{dev}.{name}": sysctl(lab, f"net.{fam}.conf.{dev}.{name}")
        for dev in DEVICES
        for fam, name in (
            ("ipv4", "disable_policy"),
            ("ipv4", "rp_filter"),
            ("ipv6", "disable_policy"),
        )
    }
    isp3 = lab.sh("siteA", "ip", "-j", "link", "show", "isp3").stdout
    facts["isp3_index"] = json.loads(isp3)[0]["ifindex"]
    facts["ping_after"] = {dev: ping(lab, peer) for dev, peer in PEERS.items()}
    facts["nft"] = lab.sh("siteA", "nft", "list", "table", "inet", "vti_failover_site_a",
                          check=False).stdout  # fmt: skip
    # The stock stack's route to site B went with vti1: put it back to see SNAT at work
    # (informational: the way back depends on site B's BGP having re-converged).
    lab.sh("siteA", "ip", "route", "replace", "10.2.0.0/24", "dev", "vti1", "metric", "10")
    facts["snat_ping"] = ping(lab, "10.2.0.1", deadline_s=30)

    before = system(lab)
    monitor = subprocess.Popen(
        ["ip", "-n", lab.ns("siteA"), "monitor", "link", "address"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    time.sleep(1)  # ip subscribes after it starts; under TCG that takes a moment
    facts["second"] = command(lab, "apply", str(cfg))
    time.sleep(1)
    monitor.terminate()
    seen, _ = monitor.communicate(timeout=10)
    facts["second_events"] = [line for line in seen.splitlines() if line.strip()]
    facts["second_changed_nothing"] = system(lab) == before
    facts["dry_after"] = command(lab, "apply", str(cfg), "--dry-run")
    doctor = command(lab, "doctor", str(cfg), "--json")
    try:
        facts["doctor"] = json.loads(doctor["stdout"])["findings"]
    except ValueError:
        facts["doctor"] = None
        facts["doctor_run"] = doctor
    out.write_text(json.dumps(facts, indent=2))


if __name__ == "__main__":
    main()
