"""Runs a guest script in the VM lab and returns the JSON facts it wrote."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.system import require_root, require_tool

TOP = Path(__file__).resolve().parents[2]


def facts_from_vm(results: Path, stack: str, guest_script: str) -> dict:  # type: ignore[type-arg]
    """Boot the VM, bring the lab up with `stack`, run tests/lab/<guest_script> FACTS_PATH."""
    require_root()
    require_tool("qemu-system-x86_64")
    if not (TOP / ".venv" / "bin" / "vng").exists():
        pytest.skip("needs virtme-ng in .venv (bash labs/install.sh)")
    facts = results / "facts.json"
    guest = f".venv/bin/python tests/lab/{guest_script} {facts}"
    proc = subprocess.run(
        ["labs/lab", "--vm", "always", "--results", str(results), "up", "--stack", stack,
         "--then", guest],
        cwd=TOP,
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )  # fmt: skip
    if not facts.exists():
        pytest.fail(
            f"the VM lab produced no facts (exit {proc.returncode}):\n{proc.stdout[-4000:]}"
        )
    loaded: dict = json.loads(facts.read_text())  # type: ignore[type-arg]
    return loaded
