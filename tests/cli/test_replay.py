"""`run --dry-run --replay`: the recorded failover and failback come out in order, on time.

Real config, real replay file, the real core and runtime replay: the expected times are
derived from those files, not written down here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from tests.cli.runner import REPO, vtf

CONFIG = REPO / "config" / "dual-vti.yaml"
REPLAY = REPO / "tests" / "data" / "failover-failback.jsonl"
LINE = re.compile(r"^\[\s*(?P<t>[\d.]+)\] (?P<action>.*)$")


def _actions(out: str) -> list[tuple[float, str]]:
    parsed = []
    for line in out.splitlines():
        match = LINE.match(line)
        assert match, f"not an action line: {line!r}"
        parsed.append((float(match["t"]), match["action"]))
    return parsed


def _first(actions: list[tuple[float, str]], pattern: str, after: int = -1) -> int:
    for i, (_, text) in enumerate(actions):
        if i > after and re.search(pattern, text):
            return i
    raise AssertionError(f"no action matches {pattern!r} after #{after}")


def test_failover_then_failback_in_order() -> None:
    result = vtf("run", CONFIG, "--dry-run", "--replay", REPLAY)
    assert result.code == 0, result.err
    actions = _actions(result.out)
    events = [json.loads(x) for x in REPLAY.read_text().splitlines() if x.startswith("{")]
    fall = yaml.safe_load(CONFIG.read_text())["policy"]["fall"]
    hold = yaml.safe_load(CONFIG.read_text())["policy"]["preempt_hold_down_s"]
    lost = [e["t"] for e in events if e["event"] == "ProbeLost" and e["tunnel"] == "tun1"]
    answered = [e["t"] for e in events if e["event"] == "ProbeSucceeded" and e["tunnel"] == "tun1"]

    # Failover: make-before-break. The backup's route takes the active metric before the
    # primary's link goes down, the alert follows the routing change.
    backup_route = _first(actions, r"^install route 10\.2\.0\.0/24 dev vti2 metric 10$")
    # The stand-in announces one below the active MED, to beat tun1's stale route at site B.
    moved = _first(actions, r"^announce 10\.1\.0\.0/24 to 169\.254\.2\.2 \(tun2\) med 99$")
    withdrawn = _first(actions, r"^withdraw 10\.1\.0\.0/24 from 169\.254\.1\.2 \(tun1\)$")
    link_down = _first(actions, r"^set link vti1 down")
    failover = _first(actions, r"^alert failover: tun1 -> tun2")
    assert backup_route < moved < withdrawn < link_down < failover
    # It happens on the fall-th lost probe in a row, not before.
    assert actions[failover][0] == lost[fall - 1]
    assert {actions[i][0] for i in (backup_route, link_down, failover)} == {lost[fall - 1]}

    # Failback: only once tun1 has been healthy for the preempt hold-down.
    failback = _first(actions, r"^alert failback: tun2 -> tun1", after=failover)
    primary_route = _first(actions, r"^install route 10\.2\.0\.0/24 dev vti1 metric 10$", failover)
    assert primary_route < failback
    assert actions[failback][0] == answered[-1] + hold
    assert not any(
        re.match(r"^alert (failover|failback)", text)
        for t, text in actions[failover + 1 : failback]
    )
    # After the failback nothing else moves traffic.
    assert not any(text.startswith("alert") for _, text in actions[failback + 1 :])


def _bad_replay(tmp_path: Path, bad_line: str) -> Path:
    good = REPLAY.read_text().splitlines()
    events = [x for x in good if x.startswith("{")][:2]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([*events, bad_line, events[0]]) + "\n")
    return path


def test_bad_replay_lines_exit_2_naming_the_line(tmp_path: Path) -> None:
    cases = {
        '{"t": 1.0, "event": "ProbeLost"': "not JSON",
        '{"t": 1.0, "event": "SaExploded", "tunnel": "tun1"}': "unknown event 'SaExploded'",
        '{"t": 1.0, "event": "ProbeSucceeded", "tunnel": "tun1"}': "ProbeSucceeded needs rtt_ms",
        '{"t": -1, "event": "ProbeLost", "tunnel": "tun1"}': "'t' must be seconds >= 0",
        '{"event": "ProbeLost", "tunnel": "tun1"}': "'t' must be seconds",
        '{"t": 1.0, "event": "ProbeLost", "tunnel": "tun1", "colour": 1}': "no field 'colour'",
        "[1, 2]": "must be a JSON object",
    }
    for line, message in cases.items():
        path = _bad_replay(tmp_path, line)
        result = vtf("run", CONFIG, "--dry-run", "--replay", path)
        assert result.code == 2, (line, result)
        assert result.out == "", line
        assert "Traceback" not in result.err
        assert result.err_lines == [result.err_lines[0]], result.err
        assert result.err.startswith(f"error: {path}:3: "), result.err
        assert message in result.err, result.err


def test_replay_going_back_in_time(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"t": 5, "event": "ChildSaUp", "tunnel": "tun1"}\n'
        "# comments and blank lines count as lines too\n\n"
        '{"t": 4, "event": "ChildSaUp", "tunnel": "tun2"}\n'
    )
    result = vtf("run", CONFIG, "--dry-run", "--replay", path)
    assert result.code == 2
    assert result.err.strip() == f"error: {path}:4: 't' goes back in time (4 < 5.0)"


def test_missing_replay_file(tmp_path: Path) -> None:
    result = vtf("run", CONFIG, "--dry-run", "--replay", tmp_path / "none.jsonl")
    assert result.code == 2
    assert result.out == ""
    assert "none.jsonl" in result.err
    assert "Traceback" not in result.err
