"""`run` refuses clearly: missing privileges, a second agent of one agent_id, a closed stdout.

Real processes, as an operator starts them: the second agent and the unprivileged one must
end at once with exit status 2 and one line; `| head -1` must end without a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from agent.config import load_config
from agent.privileges import CAP_NET_ADMIN, CAP_NET_RAW, missing
from tests.cli.runner import COMMAND, REPO, vtf

CONFIG = REPO / "config" / "dual-vti.yaml"
REPLAY = REPO / "tests" / "data" / "failover-failback.jsonl"
SETPRIV = shutil.which("setpriv")


def _start(lock_dir: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "VTI_FAILOVER_LOCK_DIR": str(lock_dir)}
    return subprocess.Popen(
        [str(COMMAND), "run", str(CONFIG), "--dry-run", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def _wait_for_lock(lock: Path, pid: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if lock.exists() and lock.read_text().strip() == str(pid):
            return
        time.sleep(0.05)
    raise AssertionError(f"{lock} never named pid {pid}")


@pytest.mark.root
def test_second_agent_with_the_same_agent_id_exits_2_naming_the_first(tmp_path: Path) -> None:
    first = _start(tmp_path)
    try:
        lock = tmp_path / "site-a.lock"
        _wait_for_lock(lock, first.pid)
        second = _start(tmp_path)
        _, err = second.communicate(timeout=20)
        assert second.returncode == 2, err
        assert err.splitlines() == [
            f"error: agent site-a is already running (pid {first.pid}, lock {lock}): "
            "one agent per agent_id"
        ]
        assert first.poll() is None, "the first agent must keep running"
        # kill -9 leaves no stale lock: the kernel drops the flock with the process.
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        third = _start(tmp_path)
        try:
            _wait_for_lock(lock, third.pid)
        finally:
            third.send_signal(signal.SIGTERM)
            third.communicate(timeout=20)
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGTERM)
        first.communicate(timeout=20)


def test_lock_directory_is_created_owner_only(tmp_path: Path) -> None:
    from agent.instance_lock import InstanceLock, LockError  # noqa: PLC0415

    directory = tmp_path / "locks"
    lock = InstanceLock("site-a", directory)
    lock.acquire()
    try:
        assert directory.stat().st_mode & 0o777 == 0o700
        assert (directory / "site-a.lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(LockError, match=f"pid {os.getpid()}"):
            InstanceLock("site-a", directory).acquire()
        InstanceLock("site-b", directory).acquire()
    finally:
        lock.release()
    InstanceLock("site-a", directory).acquire()


@pytest.mark.root
@pytest.mark.skipif(SETPRIV is None, reason="needs setpriv (util-linux) to drop privileges")
def test_non_root_run_names_the_missing_capabilities_in_one_line() -> None:
    assert SETPRIV is not None
    proc = subprocess.run(
        [
            SETPRIV,
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            # Only to reach the checkout wherever it lies (a 0700 temp dir, /root): the
            # capabilities the agent asks for stay missing.
            "--inh-caps=+dac_read_search",
            "--ambient-caps=+dac_read_search",
            str(COMMAND),
            "run",
            str(CONFIG),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        check=False,
    )
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr
    assert "TaskGroup" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "CAP_NET_ADMIN" in lines[0]
    assert "CAP_NET_RAW (ICMP probe sockets for tun1, tun2)" in lines[0]
    assert "not root" in lines[0]


def test_missing_capabilities_are_judged_per_config() -> None:
    cfg = load_config(CONFIG)
    everything = (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)
    assert missing(cfg, dry_run=False, capabilities=everything) is None
    assert missing(cfg, dry_run=False, capabilities=None) is None
    raw_only = missing(cfg, dry_run=True, capabilities=1 << CAP_NET_ADMIN)
    assert raw_only is not None
    assert "CAP_NET_RAW" in raw_only
    assert "CAP_NET_ADMIN" not in raw_only.split(";")[0]


def test_replay_into_head_ends_quietly(tmp_path: Path) -> None:
    # Enough output that the writer meets the closed pipe, not only the exit flush.
    events = [json.loads(x) for x in REPLAY.read_text().splitlines() if x.startswith("{")]
    span = events[-1]["t"] + 1
    many = tmp_path / "many.jsonl"
    many.write_text(
        "".join(
            json.dumps({**e, "t": e["t"] + n * span}) + "\n" for n in range(200) for e in events
        )
    )
    agent = subprocess.Popen(
        [str(COMMAND), "run", str(CONFIG), "--replay", str(many)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    assert agent.stdout is not None
    head = subprocess.run(
        ["head", "-1"], stdin=agent.stdout, capture_output=True, timeout=60, check=True
    )
    agent.stdout.close()
    _, err = agent.communicate(timeout=120)
    assert len(head.stdout.splitlines()) == 1
    assert agent.returncode == 0
    assert err == b"", err.decode()


def test_replay_with_a_hostile_line_is_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"t": NaN, "event": "ProbeLost", "tunnel": "tun1"}\n')
    result = vtf("run", CONFIG, "--replay", path)
    assert result.code == 2
    assert result.err_lines == [f"error: {path}:1: NaN is not a number JSON allows"]
