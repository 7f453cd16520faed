"""Guest-side helpers: site A's agent, its ExaBGP and BIRD's sessions, as the lab runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "labs"))
from lablib.nslab import Lab
from lablib.topology import STATE_ROOT, TOP

AGENT = "vti-failover"
# agent/config/models.py: exabgp.workdir's default, where the supervisor keeps its pid file.
EXABGP_PID = Path("/run/vti-failover/exabgp/exabgp.pid")


def wait(what: str, ok: Callable[[], bool], timeout: float) -> float:
    """Seconds until ok() held; TimeoutError naming `what` after `timeout`."""
    start = time.monotonic()
    while not ok():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.3)
    return round(time.monotonic() - start, 1)


def agent_log() -> Path:
    return STATE_ROOT / "siteA" / f"{AGENT}.log"


def agent_pid() -> int:
    return int((STATE_ROOT / "siteA" / f"{AGENT}.pid").read_text().split()[0])


def gone(pid: int) -> Callable[[], bool]:
    """The process has exited (an agent this script started stays a zombie until reaped)."""

    def ok() -> bool:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")

    return ok


def stop_agent(sig: signal.Signals = signal.SIGTERM) -> None:
    pid = agent_pid()
    os.kill(pid, sig)
    wait("agent exit", gone(pid), 30)


def start_agent(lab: Lab, config: Path, log_lines: list[str]) -> None:
    """The agent again, as node.sh starts it (same environment, same pid and log file).

    The old log's lines are kept in `log_lines`; returns once the new agent has adopted
    the kernel's routes.
    """
    log_lines += agent_log().read_text().splitlines()
    os.environ.update(
        exabgp_daemon_user="root",
        exabgp_api_cli="false",
        exabgp_log_destination="stdout",
        exabgp_daemon_daemonize="false",
        PATH=f"{TOP / '.venv' / 'bin'}:{os.environ.get('PATH', '')}:/usr/sbin:/sbin",
    )
    lab.spawn("siteA", AGENT, AGENT, "run", str(config))
    try:
        wait("adoption", lambda: "adopted" in agent_log().read_text(), 120)
    except TimeoutError as exc:
        # What the new agent said, and what runs: the lines that explain a hang.
        ps = subprocess.run(
            ["ps", "-eo", "pid,ppid,stat,wchan:20,etime,args"],
            check=False,
            capture_output=True,
            text=True,
        ).stdout
        said = agent_log().read_text()[-2000:]
        raise TimeoutError(f"{exc}; the new agent's log: {said!r}; processes:\n{ps}") from exc


def exabgp_pids() -> list[int]:
    """Every running exabgp (by its command line): there must only ever be one."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(Path(w.decode(errors="replace")).name == "exabgp" for w in cmd[:2]):
            found.append(int(proc.name))
    return sorted(found)


def sessions_up(lab: Lab) -> bool:
    s = lab.bgp_sessions()
    return (s.get("tun1"), s.get("tun2")) == ("Established", "Established")


def sessions_since(lab: Lab) -> dict[str, str]:
    """When each of BIRD's BGP sessions last changed state (`show protocols`' since column)."""
    since = {}
    for line in lab.bird("show", "protocols").splitlines():
        words = line.split()
        if len(words) >= 6 and words[1] == "BGP":
            since[words[0]] = " ".join(words[4:6])
    return since


def reestablished(lab: Lab, before: dict[str, str]) -> Callable[[], bool]:
    """tun1's and tun2's sessions Established again, each since a later moment than in
    `before` (BIRD's tun3 peers only a three-tunnel agent)."""

    def ok() -> bool:
        since = sessions_since(lab)
        return sessions_up(lab) and all(since.get(t) != before.get(t) for t in ("tun1", "tun2"))

    return ok


def restarting(lab: Lab) -> bool:
    """BIRD keeps a restarting neighbor's routes as stale (RFC 4724) on either session."""
    return any(
        "Neighbor graceful restart active" in lab.bird("show", "protocols", "all", t)
        for t in ("tun1", "tun2")
    )
