"""config/vti-failover.service: systemd accepts it, and it asks for what the agent needs only."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.sdnotify import watchdog_interval_s
from tests.cli.runner import REPO

UNIT = REPO / "config" / "vti-failover.service"
INSTALLED = "/opt/vti-failover/bin"


def service() -> dict[str, str]:
    # systemd's format is ini-like; repeated keys do not occur in this unit.
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return dict(parser["Service"])


def test_the_unit_asks_for_the_agents_needs_and_no_more() -> None:
    s = service()
    assert s["ExecStart"] == f"{INSTALLED}/vti-failover run /etc/vti-failover/config.yaml"
    assert s["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert s["Restart"] == "on-failure"
    assert s["CapabilityBoundingSet"].split() == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    assert s["NoNewPrivileges"] == "yes"
    assert s["ProtectSystem"] == "strict"
    assert s["RuntimeDirectory"] == "vti-failover"
    assert "/run/vti-failover" in s["ReadWritePaths"]
    assert "AF_NETLINK" in s["RestrictAddressFamilies"].split()
    assert "PrivateNetwork" not in s  # the host's namespace is the one to act on
    # The runtime sends READY=1 after its first decision and WATCHDOG=1 from its loop.
    assert s["Type"] == "notify"
    assert s["NotifyAccess"] == "main"
    assert s["WatchdogSec"] == "10s"


def test_the_watchdog_is_pinged_well_within_watchdog_sec() -> None:
    # The agent pings at half of WATCHDOG_USEC, which systemd sets from WatchdogSec.
    seconds = int(service()["WatchdogSec"].removesuffix("s"))
    interval = watchdog_interval_s({"WATCHDOG_USEC": str(seconds * 1_000_000)})
    assert interval == seconds / 2


def test_systemd_analyze_verify_accepts_it(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("needs systemd-analyze")
    # verify checks that ExecStart's binary exists: point it at this environment's.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALLED, str(Path(sys.prefix) / "bin")))
    proc = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    # Unknown keys and bad values are warnings with exit 0: none may appear.
    assert proc.stderr.strip() == "", proc.stderr
