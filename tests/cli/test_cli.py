"""The command line as an operator meets it: version, help, check's summary, usage errors."""

from __future__ import annotations

import shlex
import subprocess
from importlib.metadata import version

from tests.cli.runner import COMMAND, REPO, vtf


def test_version() -> None:
    result = vtf("--version")
    assert result.code == 0
    assert result.out.strip() == f"vti-failover {version('vti-failover')}"


def test_help_lists_commands() -> None:
    result = vtf("--help")
    assert result.code == 0
    assert result.err == ""
    for command in ("check", "run", "schema"):
        assert command in result.out
    run_help = vtf("run", "--help")
    assert run_help.code == 0
    assert "--dry-run" in run_help.out
    assert "--replay" in run_help.out


def test_no_command_is_a_usage_error() -> None:
    result = vtf()
    assert result.code == 2
    assert result.out == ""
    assert "usage: vti-failover" in result.err


def test_unknown_option_is_a_usage_error() -> None:
    result = vtf("check", "--frobnicate", REPO / "config" / "dual-vti.yaml")
    assert result.code == 2
    assert "unrecognized arguments: --frobnicate" in result.err


def test_check_summarises_a_good_config() -> None:
    result = vtf("check", REPO / "config" / "dual-vti.yaml")
    assert result.code == 0, result.err
    assert result.err == ""
    lines = result.out.splitlines()
    assert lines[0] == "config ok: agent site-a, 2 tunnel(s), policy active-standby"
    # The primary is listed first: tunnels appear in order of preference.
    assert lines[1].startswith("  tun1: vti vti1 (key 1) 192.0.2.1 -> 192.0.2.2")
    assert "priority 100" in lines[1]
    assert lines[2].startswith("  tun2: vti vti2 (key 2) 198.51.100.1 -> 198.51.100.2")
    assert "priority 200" in lines[2]
    assert "  announces 10.1.0.0/24" in lines
    assert "  routes 10.2.0.0/24, learned by BGP" in lines
    assert len(lines) < 10


def test_check_names_each_kinds_identifier() -> None:
    result = vtf("check", REPO / "config" / "xfrm-active-active.yaml")
    assert result.code == 0, result.err
    assert "isp1: xfrm xfrm1 (if_id 11)" in result.out
    assert "policy active-active" in result.out


def test_a_reader_that_stops_early_ends_check_and_schema_quietly() -> None:
    three = REPO / "labs" / "dual-vti" / "siteA" / "vti-failover-three-dual.yaml"
    for args in (["check", str(three)], ["schema"]):
        cmd = shlex.join([str(COMMAND), *args])
        line = f"{cmd} | head -c 1 >/dev/null; echo ${{PIPESTATUS[0]}}"
        res = subprocess.run(
            ["bash", "-c", line], capture_output=True, text=True, timeout=60, check=True
        )
        assert (res.stdout.strip(), res.stderr) == ("0", ""), (args, res.stderr)
