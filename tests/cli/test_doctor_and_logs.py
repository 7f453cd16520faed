"""doctor's usage errors and `run --log-format json`, as an operator meets them.

JSON log lines must parse one by one with the stable keys; a log pipeline reads them so.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from agent.logfmt import JsonFormatter
from tests.cli.runner import COMMAND, REPO, vtf

CONFIG = REPO / "config" / "dual-vti.yaml"
KEYS = ["ts", "level", "logger", "message"]


def test_doctor_with_a_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent_id: x\ntunnels: []\n")
    result = vtf("doctor", bad, "--json")
    assert result.code == 2
    assert result.out == ""
    assert len(result.err_lines) == 1
    assert result.err_lines[0].startswith("error: ")
    missing = vtf("doctor", tmp_path / "absent.yaml")
    assert missing.code == 2
    assert len(missing.err_lines) == 1
    assert vtf("doctor").code == 2


def test_doctor_is_listed_in_help() -> None:
    result = vtf("doctor", "--help")
    assert result.code == 0
    assert "--json" in result.out


def record(**extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("vti_failover.runtime", logging.INFO, __file__, 1,
                            "decided %s", ("failover",), None)  # fmt: skip
    rec.created = 1_800_000_000.1234
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_lines_have_stable_keys_then_the_extra_fields() -> None:
    line = JsonFormatter().format(record(tunnel="tun1", at=Path("/x")))
    got = json.loads(line)
    assert list(got) == [*KEYS, "tunnel", "at"]
    assert got["ts"] == "2027-01-15T08:00:00.123Z"
    assert got["level"] == "info"
    assert got["logger"] == "vti_failover.runtime"
    assert got["message"] == "decided failover"
    assert got["at"] == "/x"  # not JSON-native: shown as text
    assert "\n" not in line


def test_a_traceback_stays_on_the_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = record()
        import sys  # noqa: PLC0415

        rec.exc_info = sys.exc_info()
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exc"]


def test_unknown_log_format_is_a_usage_error() -> None:
    result = vtf("run", CONFIG, "--dry-run", "--log-format", "xml")
    assert result.code == 2
    assert "invalid choice: 'xml'" in result.err


@pytest.mark.root
def test_run_dry_run_logs_json_lines(tmp_path: Path) -> None:
    env = {**os.environ, "VTI_FAILOVER_LOCK_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [str(COMMAND), "run", str(CONFIG), "--dry-run", "--log-format", "json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    try:
        # No VTI and no charon here: the agent says so at once, then runs on.
        time.sleep(3)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    lines = [json.loads(line) for line in err.splitlines()]
    assert len(lines) >= 2, err
    for line in lines:
        assert list(line)[:4] == KEYS
        ts = datetime.datetime.fromisoformat(line["ts"])
        assert ts.utcoffset() == datetime.timedelta(0)
        assert len(line["ts"]) == len("2026-12-01T10:00:00.123Z")
    assert any(line["logger"] == "vti_failover.runtime" for line in lines)
    assert lines[-1]["message"].startswith("stopping")
