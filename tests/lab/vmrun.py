"""Runs a guest script in the VM lab and returns the JSON facts it wrote."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.system import require_root, require_tool

TOP = Path(__file__).resolve().parents[2]


def facts_from_vm(
    results: Path,
    stack: str,
    guest_script: str,
    *guest_args: str,
    kind: str = "vti",
    family: str = "ipv4",
    timeout: float = 420,
    agent_config: Path | None = None,
) -> dict:  # type: ignore[type-arg]
    """Boot the VM, bring the lab up with `stack` and `kind`, run tests/lab/<guest_script>.

    The script gets the path to write its JSON facts to, then `guest_args`. An
    `agent_config` must lie under `results`, the directory the guest shares.
    """
    require_root()
    require_tool("qemu-system-x86_64")
    if not (TOP / ".venv" / "bin" / "vng").exists():
        pytest.skip("needs virtme-ng in .venv (bash labs/install.sh)")
    facts = results / "facts.json"
    guest = shlex.join([".venv/bin/python", f"tests/lab/{guest_script}", str(facts), *guest_args])
    chosen = [] if agent_config is None else ["--agent-config", str(agent_config)]
    # The guest's exec line travels base64-encoded on the kernel's command line (2,048
    # bytes on x86 with the boot options): a longer one leaves the VM hanging at boot.
    assert len(guest) + len(str(results)) * 2 < 900, f"guest command too long: {guest}"
    # Its own process group: on a timeout the VM (vng, qemu) goes with labs/lab.
    proc = subprocess.Popen(
        ["labs/lab", "--vm", "always", "--results", str(results), "up", "--stack", stack,
         "--kind", kind, "--family", family, *chosen, "--then", guest],
        cwd=TOP,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        # labs/lab retries a VM that stopped running at all (no heartbeat for 300 s) once.
        out, _ = proc.communicate(timeout=2 * timeout + 300)
    except subprocess.TimeoutExpired:
        # SIGTERM first: labs/lab then stops the VM it started in a session of its own.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        pytest.fail(f"the VM lab did not finish within {2 * timeout + 300:.0f} s:\n{out[-4000:]}")
    if not facts.exists():
        pytest.fail(f"the VM lab produced no facts (exit {proc.returncode}):\n{out[-4000:]}")
    loaded: dict = json.loads(facts.read_text())  # type: ignore[type-arg]
    stalls = sorted(p.name for p in results.glob("stall-cpus-*.txt"))
    if stalls:
        print(f"the VM stalled and was booted again: {stalls} in {results}")
    loaded["vm_stalls"] = stalls
    # labs/lablib/pyimage.py: a guest importing over 9p instead is ~2.5x slower to start.
    loaded["python_image"] = "==> the guest imports Python from its image" in out
    return loaded


def stock_part(stock_lab: dict[str, Any], name: str) -> dict[str, Any]:
    """One guest's facts from the shared stock VM; its own failure if it wrote none."""
    part: dict[str, Any] | None = stock_lab["parts"].get(name)
    error = stock_lab["errors"].get(name)
    if part is None:
        pytest.fail(f"guest {name} wrote no facts:\n{error}")
    if error is not None:
        # Its tests judge what it wrote; the error says why the rest is missing.
        print(f"guest {name} failed after writing facts:\n{error}")
    return part
