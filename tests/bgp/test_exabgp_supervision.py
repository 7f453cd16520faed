"""One supervised ExaBGP per workdir, whatever happens to the agent (real agent processes).

An agent killed with SIGKILL takes its ExaBGP along (PR_SET_PDEATHSIG); an ExaBGP left
behind anyway is ended by the next agent before it starts its own, found through the pid
file and checked in /proc; a pid file naming some other process never gets it killed.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.adapters.exabgp_config import exabgp_conf, exabgp_env
from agent.adapters.exabgp_supervisor import CONF_NAME, PID_NAME
from agent.adapters.exabgp_workdir import prepare_workdir, read_private, write_private
from tests.bgp.conftest import EXABGP, Topology, agent_config, supervised

pytestmark = [pytest.mark.root, pytest.mark.services]

ROOT = Path(__file__).resolve().parents[2]
GONE_WITHIN_S = 10.0


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def running(conf: Path) -> list[int]:
    """Every live process with `conf` as one of its arguments (an exabgp of that workdir)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            args = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(conf).encode() in args and alive(int(d.name)):
            pids.append(int(d.name))
    return pids


def wait_gone(pid: int, bound: float = GONE_WITHIN_S) -> float:
    start = time.monotonic()
    while alive(pid):
        if time.monotonic() - start > bound:
            raise AssertionError(f"pid {pid} still alive after {bound}s")
        time.sleep(0.05)
    return time.monotonic() - start


class Agent:
    """`python -m tests.bgp.supervise_harness`: an agent process supervising one ExaBGP."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.bgp.supervise_harness", str(config)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("exabgp "):
            self.stop()
            raise AssertionError(f"agent did not start its exabgp; see {log}")
        self.exabgp = int(line.split()[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


@pytest.fixture
def agent_files(topo: Topology, tmp_path: Path) -> tuple[Path, Path]:
    """(the agent's config file, its exabgp.conf path) for one workdir."""
    workdir = tmp_path / "exabgp"
    cfg = agent_config(topo, workdir)
    path = tmp_path / "agent.json"
    # JSON is YAML: the harness loads the same settings back.
    path.write_text(json.dumps(cfg.model_dump(mode="json")))
    return path, workdir / CONF_NAME


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for a in started:
        a.stop()
    for a in started:
        wait_gone(a.exabgp)


def test_agent_killed_takes_its_exabgp_along_and_the_next_runs_one(
    agent_files: tuple[Path, Path], agents: list[Agent], tmp_path: Path
) -> None:
    config, conf = agent_files
    first = Agent(config, tmp_path / "agent1.log")
    agents.append(first)
    assert running(conf) == [first.exabgp]
    first.proc.kill()  # SIGKILL: no handler, no cleanup of its own
    first.proc.wait()
    took = wait_gone(first.exabgp)
    print(f"\nagent killed -> its exabgp gone after {took:.2f}s")
    assert running(conf) == []

    second = Agent(config, tmp_path / "agent2.log")
    agents.append(second)
    assert running(conf) == [second.exabgp]
    assert read_private(conf.parent, PID_NAME) == f"{second.exabgp}\n"


def test_agent_restarted_at_once_after_kill9_runs_exactly_one_exabgp(
    agent_files: tuple[Path, Path], agents: list[Agent], tmp_path: Path
) -> None:
    config, conf = agent_files
    first = Agent(config, tmp_path / "agent1.log")
    agents.append(first)
    first.proc.kill()
    first.proc.wait()
    # No wait for the old exabgp to finish dying: the new agent must cope either way.
    second = Agent(config, tmp_path / "agent2.log")
    agents.append(second)
    assert second.exabgp != first.exabgp
    assert not alive(first.exabgp)
    assert running(conf) == [second.exabgp]


def _start_leftover(topo: Topology, workdir: Path) -> subprocess.Popen[bytes]:
    """An exabgp started from the workdir as an agent would have, with its pid file."""
    cfg = agent_config(topo, workdir)
    prepare_workdir(workdir)
    relay = [sys.executable, "-m", "agent.adapters.exabgp_relay", str(workdir / "api.sock")]
    write_private(workdir, CONF_NAME, exabgp_conf(cfg, relay))
    conf = workdir / CONF_NAME
    proc = subprocess.Popen(
        ["ip", "netns", "exec", topo.ns_a, EXABGP, str(conf)],
        env={**os.environ, **exabgp_env()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # and no PDEATHSIG: it outlives whoever started it
    )
    write_private(workdir, PID_NAME, f"{proc.pid}\n")
    deadline = time.monotonic() + 10
    while proc.pid not in running(conf):
        assert time.monotonic() < deadline, "the leftover exabgp did not start"
        time.sleep(0.05)
    return proc


async def test_leftover_exabgp_is_ended_before_the_new_one_starts(
    topo: Topology, tmp_path: Path
) -> None:
    workdir = tmp_path / "exabgp"
    leftover = _start_leftover(topo, workdir)
    try:
        async with supervised(topo, workdir) as r:
            assert leftover.poll() is not None, "the leftover exabgp is still running"
            assert r.adapter.exabgp_pid is not None
            assert running(workdir / CONF_NAME) == [r.adapter.exabgp_pid]
    finally:
        if leftover.poll() is None:
            os.killpg(leftover.pid, signal.SIGKILL)
        leftover.wait()


@pytest.mark.parametrize(
    "argv",
    [
        ["sleep", "300"],
        # Names our conf, but is no exabgp: still not ours to kill.
        [sys.executable, "-c", "import time; time.sleep(300)", "{conf}"],
    ],
    ids=["sleep", "names-our-conf"],
)
async def test_stale_pid_file_naming_another_process_leaves_it_alone(
    topo: Topology, tmp_path: Path, argv: list[str]
) -> None:
    workdir = tmp_path / "exabgp"
    prepare_workdir(workdir)
    conf = str(workdir.absolute() / CONF_NAME)
    other = subprocess.Popen([a.replace("{conf}", conf) for a in argv])
    try:
        write_private(workdir, PID_NAME, f"{other.pid}\n")
        async with supervised(topo, workdir) as r:
            assert other.poll() is None, "an unrelated process was killed"
            assert r.adapter.exabgp_pid is not None
            assert read_private(workdir, PID_NAME) == f"{r.adapter.exabgp_pid}\n"
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
