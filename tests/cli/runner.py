"""Runs the installed vti-failover command the way an operator does: a subprocess."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["REPO", "Result", "vtf"]

REPO = Path(__file__).resolve().parents[2]
# The console script of the environment running the tests (.venv/bin/vti-failover).
COMMAND = Path(sys.prefix) / "bin" / "vti-failover"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


def vtf(*args: str | Path, timeout: float = 30) -> Result:
    proc = subprocess.run(
        [str(COMMAND), *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)
