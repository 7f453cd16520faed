"""Inside the lab's kernel: `vti-failover doctor` on site A's config, over real VTIs and SAs.

Run by guest_stock_lab.py after the stock cut (test_vm_doctor.py): doctor needs the
kernel, the charons and the tunnel interfaces, not a running agent. Once the three CHILD_SAs
are installed: the lab as built (known good); vti1's key changed in the kernel to 5; a
config whose tun1 key and mark are 5 while the SAs keep mark 1; then each pitfall in
PITFALLS broken alone and fixed before the next run, so every run after the first also
shows the previous pitfall's finding gone; a text run with several broken at once (for
the README); and the lab fixed again. Writes each run's exit status and findings as JSON
facts for the test to judge on the host.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "labs"))
from lablib.nslab import Lab

TOP = Path(__file__).resolve().parents[2]
CONFIG = TOP / "labs" / "dual-vti" / "siteA" / "vti-failover-three.yaml"
COMMAND = TOP / ".venv" / "bin" / "vti-failover"
CHILDREN = ("tun1", "tun2", "tun3")
# node.sh's own tunnels config, which `vti-failover apply` built the lab's tunnels from.
TUNNELS = "/run/vti-failover-lab/siteA/tunnels.yaml"


@dataclass(frozen=True)
class Pitfall:
    name: str
    breaks: tuple[tuple[str, ...], ...]
    fixes: tuple[tuple[str, ...], ...]


def vti1(remote: str) -> tuple[str, ...]:
    return ("ip", "link", "set", "dev", "vti1", "type", "vti", "local", "192.0.2.1",
            "remote", remote, "key", "1")  # fmt: skip


def xfrm3(if_id: int) -> tuple[str, ...]:
    return ("ip", "link", "set", "dev", "xfrm3", "type", "xfrm", "dev", "isp3",
            "if_id", str(if_id))  # fmt: skip


# charon adds `ip rule ... lookup 220` even with install_routes = no: the route is the pitfall.
TABLE_220_ON = (("ip", "route", "add", "10.2.0.0/24", "dev", "isp1", "table", "220"),)
TABLE_220_OFF = (("ip", "route", "flush", "table", "220"),)

# Each the way it happens on a router, each with the plain fix an operator would make.
PITFALLS = (
    Pitfall("sa-endpoints", (vti1("192.0.2.99"),), (vti1("192.0.2.2"),)),
    Pitfall("sa-mark", (xfrm3(5),), (xfrm3(3),)),
    Pitfall("disable-policy", (("sysctl", "-qw", "net.ipv4.conf.vti2.disable_policy=0"),),
            (("sysctl", "-qw", "net.ipv4.conf.vti2.disable_policy=1"),)),
    Pitfall("rp-filter", (("sysctl", "-qw", "net.ipv4.conf.vti1.rp_filter=1"),),
            (("sysctl", "-qw", "net.ipv4.conf.vti1.rp_filter=2"),)),
    Pitfall("mtu", (("ip", "link", "set", "dev", "vti2", "mtu", "1480"),),
            (("ip", "link", "set", "dev", "vti2", "mtu", "1400"),)),
    Pitfall("source-address", (("ip", "addr", "del", "169.254.3.1/30", "dev", "xfrm3"),),
            (("ip", "addr", "add", "169.254.3.1/30", "dev", "xfrm3"),)),
    Pitfall("table-220", TABLE_220_ON, TABLE_220_OFF),
    # Gone altogether: `apply` on the lab's tunnels config makes it again.
    Pitfall("interface", (("ip", "link", "del", "dev", "vti2"),),
            ((str(COMMAND), "apply", TUNNELS),)),
)  # fmt: skip
# For the README: several at once, in doctor's text form.
SEVERAL = ("disable-policy", "mtu", "sa-mark", "table-220")


def doctor(lab: Lab, config: Path, *, text: bool = False) -> dict[str, Any]:
    started = time.monotonic()
    form = [] if text else ["--json"]
    # Under TCG a Python start with pydantic and pyroute2 takes seconds, more on a busy host.
    proc = subprocess.run(
        ["ip", "netns", "exec", lab.ns("siteA"), str(COMMAND), "doctor", str(config), *form],
        capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    try:
        findings = None if text else json.loads(proc.stdout)["findings"]
    except ValueError:
        findings = None
    return {
        "code": proc.returncode,
        "findings": findings,
        "stdout": proc.stdout[-6000:] if text or findings is None else "",
        "stderr": proc.stderr[-2000:],
        "took_s": round(time.monotonic() - started, 1),
    }


def run_all(lab: Lab, commands: tuple[tuple[str, ...], ...]) -> list[str]:
    """Each command in site A; what failed, for the facts (a silent failure would fake a
    finding or its silence)."""
    failed = []
    for cmd in commands:
        res = lab.sh("siteA", *cmd, check=False)
        if res.returncode != 0:
            failed.append(f"{' '.join(cmd)}: {res.returncode} {res.stdout}{res.stderr}"[-500:])
    return failed


def pitfalls(lab: Lab, facts: dict[str, Any], out: Path) -> None:
    by_name = {p.name: p for p in PITFALLS}
    facts["pitfalls"] = []
    for pit in PITFALLS:
        failed = run_all(lab, pit.breaks)
        run = doctor(lab, CONFIG)
        failed += run_all(lab, pit.fixes)
        facts["pitfalls"].append({"name": pit.name, "run": run, "failed": failed})
        print(f"pitfall {pit.name}: doctor exit {run['code']} in {run['took_s']}s", flush=True)
        out.write_text(json.dumps(facts, indent=2))
    failed = [f for name in SEVERAL for f in run_all(lab, by_name[name].breaks)]
    facts["several"] = doctor(lab, CONFIG, text=True)
    failed += [f for name in SEVERAL for f in run_all(lab, by_name[name].fixes)]
    facts["several_failed"] = failed
    facts["fixed"] = doctor(lab, CONFIG)


def main(out: Path | None = None) -> None:
    out = out or Path(sys.argv[1])
    lab = Lab("stock", "vti")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(
        lab.child_installed("siteA", c) for c in CHILDREN
    ):
        time.sleep(0.5)
    facts: dict[str, Any] = {"sas_up": all(lab.child_installed("siteA", c) for c in CHILDREN)}
    facts["good"] = doctor(lab, CONFIG)
    lab.sh("siteA", "ip", "link", "set", "dev", "vti1", "type", "vti", "key", "5")
    try:
        facts["vti_key_5"] = doctor(lab, CONFIG)
    finally:
        lab.sh("siteA", "ip", "link", "set", "dev", "vti1", "type", "vti", "key", "1")
    cfg = yaml.safe_load(CONFIG.read_text())
    tun1 = next(t for t in cfg["tunnels"] if t["name"] == "tun1")
    tun1["key"] = tun1["mark"] = 5
    wrong = Path("/tmp/vti-failover-doctor-key5.yaml")
    wrong.write_text(yaml.safe_dump(cfg))
    facts["config_key_5"] = doctor(lab, wrong)
    out.write_text(json.dumps(facts, indent=2))
    pitfalls(lab, facts, out)
    out.write_text(json.dumps(facts, indent=2))


if __name__ == "__main__":
    main()
