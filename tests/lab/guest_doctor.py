"""Inside the lab's kernel: `vti-failover doctor` on site A's config, over real VTIs and SAs.

Run by test_vm_doctor.py through `labs/lab up --stack stock --then ...`: doctor needs the
kernel, the charons and the VTIs, not a running agent. Three runs once both CHILD_SAs are
installed: the lab as built (known good), vti1's key changed in the kernel to 5, and a
config whose tun1 key and mark are 5 while the SAs keep mark 1. Writes each run's exit
status and findings as JSON facts for the test to judge on the host.
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
CONFIG = TOP / "labs" / "dual-vti" / "siteA" / "vti-failover.yaml"
COMMAND = TOP / ".venv" / "bin" / "vti-failover"


def doctor(lab: Lab, config: Path) -> dict[str, Any]:
    started = time.monotonic()
    # Under TCG a Python start with pydantic and pyroute2 takes seconds, more on a busy host.
    proc = subprocess.run(
        ["ip", "netns", "exec", lab.ns("siteA"), str(COMMAND), "doctor", str(config), "--json"],
        capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    try:
        findings = json.loads(proc.stdout)["findings"]
    except ValueError:
        findings = None
    return {
        "code": proc.returncode,
        "findings": findings,
        "stderr": proc.stderr[-2000:],
        "took_s": round(time.monotonic() - started, 1),
    }


def main() -> None:
    out = Path(sys.argv[1])
    lab = Lab("stock", "vti")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (
        lab.child_installed("siteA", "tun1") and lab.child_installed("siteA", "tun2")
    ):
        time.sleep(0.5)
    facts: dict[str, Any] = {"sas_up": lab.child_installed("siteA", "tun1")}
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


if __name__ == "__main__":
    main()
