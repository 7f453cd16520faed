"""Runs a guest script in the VM lab and returns the JSON facts it wrote."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.support.system import require_root, require_tool

TOP = Path(__file__).resolve().parents[2]


def facts_from_vm(
    results: Path,
    stack: str,
    guest_script: str,
    *guest_args: str,
    kind: str = "vti",
    timeout: float = 420,
) -> dict:  # type: ignore[type-arg]
    """Boot the VM, bring the lab up with `stack` and `kind`, run tests/lab/<guest_script>.

    The script gets the path to write its JSON facts to, then `guest_args`.
    """
    require_root()
    require_tool("qemu-system-x86_64")
    if not (TOP / ".venv" / "bin" / "vng").exists():
        pytest.skip("needs virtme-ng in .venv (bash labs/install.sh)")
    facts = results / "facts.json"
    guest = shlex.join([".venv/bin/python", f"tests/lab/{guest_script}", str(facts), *guest_args])
    proc = subprocess.run(
        ["labs/lab", "--vm", "always", "--results", str(results), "up", "--stack", stack,
         "--kind", kind, "--then", guest],
        cwd=TOP,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )  # fmt: skip
    if not facts.exists():
        pytest.fail(
            f"the VM lab produced no facts (exit {proc.returncode}):\n{proc.stdout[-4000:]}"
        )
    loaded: dict = json.loads(facts.read_text())  # type: ignore[type-arg]
    return loaded
