"""A real FRR bgpd (with its zebra) in a network namespace, its RIB read through vtysh."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.system import run

__all__ = ["Frr", "frr"]

FRR_DIR = Path("/usr/lib/frr")


@dataclass
class Frr:
    ns: str
    vty_dir: Path

    def vtysh(self, command: str) -> str:
        result = run(
            "vtysh",
            "--vty_socket",
            str(self.vty_dir),
            "-d",
            "bgpd",
            "-c",
            command,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"vtysh {command!r}: {result.stdout}{result.stderr}")
        return result.stdout

    def paths(self, prefix: str) -> list[dict[str, Any]]:
        """BGP paths bgpd holds for `prefix` (`show bgp ... json`), [] when none."""
        family = "ipv6" if ":" in prefix else "ipv4"
        out = self.vtysh(f"show bgp {family} unicast {prefix} json")
        data = json.loads(out) if out.strip() else {}
        paths: list[dict[str, Any]] = data.get("paths", [])
        return paths


def _wait_file(path: Path, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 15
    while not path.exists():
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"{what} exited: {err}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not create {path}")
        time.sleep(0.05)


@contextlib.contextmanager
def frr(ns: str, bgpd_conf: str) -> Iterator[Frr]:
    """zebra + bgpd in `ns` with private config, pid and socket paths; stopped afterwards.

    They drop to the `frr` user, so their directory lives where that user can reach it.
    """
    if not (FRR_DIR / "bgpd").exists():
        pytest.skip("needs frr (bash labs/install.sh installs it)")
    workdir = Path(tempfile.mkdtemp(prefix="vtf-frr-"))
    shutil.chown(workdir, "frr", "frr")
    zsock = workdir / "zserv.api"
    (workdir / "zebra.conf").write_text("")
    (workdir / "bgpd.conf").write_text(bgpd_conf)
    common = [
        "--vty_socket",
        str(workdir),
        "-z",
        str(zsock),
        "-A",
        "127.0.0.1",
        "-P",
        "0",
    ]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        zebra = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                str(FRR_DIR / "zebra"),
                "-f",
                str(workdir / "zebra.conf"),
                "-i",
                str(workdir / "zebra.pid"),
                *common,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        procs.append(zebra)
        _wait_file(workdir / "zebra.vty", zebra, "zebra")
        bgpd = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                str(FRR_DIR / "bgpd"),
                "-f",
                str(workdir / "bgpd.conf"),
                "-i",
                str(workdir / "bgpd.pid"),
                *common,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        procs.append(bgpd)
        _wait_file(workdir / "bgpd.vty", bgpd, "bgpd")
        yield Frr(ns=ns, vty_dir=workdir)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
