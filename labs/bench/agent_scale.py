"""The whole agent at scale: CPU, memory, probe rate, cut -> route change, SIGTERM, bulk prefixes.

Runs the real agent process (`vti-failover run`, as `python -m agent` from this tree unless
--agent says otherwise) in a namespace with N tunnel stand-ins (labs/lablib/standins.py:
a veth pair each to a far namespace whose kernel answers the probes). Config as a new user
would write it: kind gre (routes via the peer as gateway), sources [probe, link], probes
0.2 s / 0.5 s, fall 5, 4 static remote prefixes, not dry-run. Three choices of ours, to
keep cycles short and the measure on routes: link_control none (a veth set admin-down also
makes the kernel flush its routes), dampening off (repeated cuts would suppress tun1) and a
2 s preempt hold-down (each cut is repaired, and the next waits for the failback).

Cases (--cases; all by default):
  steady    per N: agent CPU share of one core ((utime+stime) per wall second, /proc/PID/stat)
            over --seconds once the first install is done, RSS and peak RSS (VmRSS, VmHWM),
            echo requests arriving in the far namespace per second (Icmp InEchos) against
            N x 5 configured.
  cut       per N, --cuts times: silent cut of the carrier tun1 (nft drops all on its far
            end), then cut -> decision (the agent's "decided alert failover" line), decision
            -> first and last route/nexthop change (`ip -ts monitor route nexthop` in the
            agent's namespace) and "lag": decision minus the ideal decision moment, i.e. the
            first dropped probe (timed by an AF_PACKET tap on the far end, which sees it
            before nft drops it) + (fall-1) x interval + timeout. Repaired, then the next
            cut waits for the failback.
  sigterm   per N: SIGTERM -> exit.
  prefixes  per --prefixes size: that many static prefixes on 2 tunnels: start -> first
            full install, and one cut: decision -> every prefix via the backup.
  burst     --burst-tunnels stand-ins with BGP (ExaBGP supervised by the agent, a real
            BIRD 2 in the far namespace peering over every tunnel, learned_from_bgp on):
            --cuts plain cuts of tun1, then cuts of tun1 at the moment BIRD announces
            --burst-size prefixes over tun2's session (`birdc enable burst`); the decision
            lag with the burst against without.

The decision time is the agent's own log stamp (asctime: wall clock, millisecond
resolution, truncated), so decision -> first write is good to about 1 ms. Every wait is
bounded (--timeout); a case that does not get there says so ("no decision within 60 s")
and the run goes on. Everything made (namespaces, agent, exabgp, bird, monitors) is removed
at the end, on Ctrl-C or on error too; processes are stopped by pid. Needs root.

    .venv/bin/python labs/bench/agent_scale.py --sizes 10 100 --seconds 10 --cuts 5
    .venv/bin/python labs/bench/agent_scale.py --cases prefixes --prefixes 10000
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lablib.agentproc import DEFAULT_COMMAND, AgentProcess, descendants, standby_routes
from lablib.standins import (
    Pair,
    RouteSet,
    StandIns,
    active_standby,
    agent_config,
    route_set,
    stand_ins,
    via,
    wait_routes,
)
from lablib.stats import pct
from lablib.topology import TOP

from tests.support.bird import Bird, bgp_peer_block, bird

PROTO = 157
INTERVAL_S, TIMEOUT_S, FALL = 0.2, 0.5, 5
STATICS = tuple(f"10.96.{i}.0/24" for i in range(4))
CASES = ("steady", "cut", "sigterm", "prefixes", "burst")
EXABGP = str(Path(sys.executable).with_name("exabgp"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
ECHO_TAP = TOP / "labs" / "lablib" / "echo_tap.py"
TARGETS = {
    "cpu_share_at_1000": "<= 0.20 of one core (1,000 tunnels x 5 probes/s)",
    "rss_mb_at_1000": "<= 120 MB",
    "probes_sent": "100% of configured",
    "over_detection_ms": "<= 20 ms (cut -> route change = detection + 20 ms, N <= 1,000)",
    "move_100k_ms": "<= 10 ms (100,000 prefixes on the backup after the decision)",
    "burst_delay_ms": "<= 20 ms (a 10k-prefix burst delays a decision by at most this)",
    "sigterm_s": "<= 1 s",
}
FAILOVER = re.compile(r"decided alert failover: tun1 -> (\S+) .*?(?: after ([\d.]+)s)?$")
FAILBACK = re.compile(r"decided alert failback: \S+ -> tun1\b")


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def burst_prefix(i: int) -> str:
    # 10.192.0.0/10 in /26s: 65,536 of them, apart from the stand-ins and the statics.
    base = (10 << 24) | (192 << 16)
    a = base + i * 64
    return f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}/26"


def bulk_prefix(i: int) -> str:
    # 10.128.0.0/10 in /26s for the static-prefix case.
    base = (10 << 24) | (128 << 16)
    a = base + i * 64
    return f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}/26"


# -- observers --------------------------------------------------------------------------------
class RouteWatch:
    """`ip -ts monitor route nexthop` in a namespace: the time of each change of ours."""

    _TS = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)\] (.*)$")

    def __init__(self, ns: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "-n", ns, "-ts", "monitor", "route", "nexthop"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        # (time, destination or None for a nexthop object)
        self.changes: list[tuple[float, str | None]] = []
        self.overruns = 0
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._errors, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = self._TS.match(line)
            if m is None:
                continue
            text = m.group(2)
            # Our routes carry our protocol; the only nexthop objects here are the agent's.
            ours = f"proto {PROTO} " in f"{text} " or text.startswith(("id ", "Deleted id "))
            if ours:
                at = datetime.fromisoformat(m.group(1)).timestamp()
                words = text.removeprefix("Deleted ").split()
                dst = None if words[0] == "id" else words[0]
                with self._lock:
                    self.changes.append((at, dst))

    def _errors(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            # The monitor's socket overflowed: some changes were not seen.
            if "No buffer space" in line or "overrun" in line.lower():
                self.overruns += 1

    def between(self, t0: float, t1: float, only: frozenset[str] | None = None) -> list[float]:
        """Times of the changes in [t0, t1]; with `only`, of routes to those prefixes (and
        of nexthop objects, which any route may use)."""
        with self._lock:
            return [
                t
                for t, dst in self.changes
                if t0 <= t <= t1 and (only is None or dst is None or dst in only)
            ]

    def stop(self) -> None:
        stop_pid(self.proc)


class EchoTap:
    """Arrival times of the echo requests on one far interface, dropped ones included."""

    def __init__(self, lab: StandIns, pair: Pair) -> None:
        self.proc = subprocess.Popen(
            lab.far_exec(sys.executable, str(ECHO_TAP), pair.far_if),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self.times: list[float] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError, IndexError):
                self.times.append(float(line.split()[0]))

    def first_after(self, t: float) -> float | None:
        return next((x for x in list(self.times) if x >= t), None)

    def stop(self) -> None:
        stop_pid(self.proc)


def stop_pid(proc: subprocess.Popen[Any], grace: float = 3.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class FarCounter:
    """Icmp InEchos of the far namespace, read from /proc/<pid>/net/snmp of a sleeper there."""

    def __init__(self, lab: StandIns) -> None:
        self.proc = subprocess.Popen(
            lab.far_exec("sleep", "infinity"),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 5
        # `ip netns exec` execs sleep: the pid is in the far namespace once it has.
        while Path(f"/proc/{self.proc.pid}/cmdline").read_bytes().split(b"\0")[0] != b"sleep":
            if time.monotonic() > deadline:
                raise RuntimeError("sleeper did not start in the far namespace")
            time.sleep(0.01)

    def in_echos(self) -> int:
        return icmp_counter(self.proc.pid, "InEchos")

    def stop(self) -> None:
        stop_pid(self.proc)


def icmp_counter(pid: int, name: str) -> int:
    lines = [line.split() for line in Path(f"/proc/{pid}/net/snmp").read_text().splitlines()]
    head, values = (row for row in lines if row[0] == "Icmp:")
    return int(values[head.index(name)])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat; [0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_mb(pid: int) -> tuple[float, float]:
    got = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            got[key] = int(value.split()[0]) / 1024
    return round(got["VmRSS"], 1), round(got["VmHWM"], 1)


# -- one cut ----------------------------------------------------------------------------------
@dataclass
class Cut:
    detect_s: float | None = None  # cut -> decision
    agent_detected_s: float | None = None  # the agent's own "after X s"
    lag_ms: float | None = None  # decision - ideal decision (tap)
    first_ms: float | None = None  # decision -> first change of a route that moves
    last_ms: float | None = None  # decision -> last such change
    # decision -> the expected routes seen (polled; with a burst: also all of it installed)
    settled_ms: float | None = None
    changes: int = 0
    burst: bool = False
    error: str | None = None


@dataclass
class Run:
    """An agent on stand-ins with its observers."""

    lab: StandIns
    agent: AgentProcess
    watch: RouteWatch
    tap: EchoTap
    timeout: float
    normal: RouteSet
    failed: RouteSet


def cut_once(
    run: Run,
    *,
    before_cut: Callable[[], None] | None = None,
    failed: RouteSet | None = None,
    repair: Callable[[], None] | None = None,
    normal: RouteSet | None = None,
) -> Cut:
    """Cut tun1, time the decision and the route changes, repair, wait for the failback."""
    res = Cut(burst=before_cut is not None)
    want_failed = failed if failed is not None else run.failed
    # First/last change count the routes that move (a burst's own installs do not).
    moving = frozenset(dst for dst, _, _ in run.normal)
    mark = run.agent.mark()
    if before_cut is not None:
        before_cut()
    cut_at = run.lab.cut(1)
    hit = run.agent.wait_for(FAILOVER, run.timeout, mark)
    if hit is None:
        res.error = f"no decision within {run.timeout:g} s"
        return res
    line = hit[1]
    assert line.at is not None
    decision = line.at
    m = FAILOVER.search(line.text)
    res.detect_s = round(decision - cut_at, 3)
    if m is not None and m.group(2):
        res.agent_detected_s = float(m.group(2))
    first_lost = run.tap.first_after(cut_at)
    if first_lost is not None:
        ideal = first_lost + (FALL - 1) * INTERVAL_S + TIMEOUT_S
        res.lag_ms = round((decision - ideal) * 1e3, 1)
    seen = wait_routes(run.lab.near, want_failed, run.timeout, run.agent.alive)
    if seen is None:
        res.error = f"no route change within {run.timeout:g} s"
        changes = run.watch.between(cut_at, time.time(), moving)
        if changes:
            res.error = f"routes not all moved within {run.timeout:g} s"
            res.first_ms = round((changes[0] - decision) * 1e3, 1)
        return res
    res.settled_ms = round((seen - decision) * 1e3, 1)
    time.sleep(0.3)  # late writes after the state was first seen count too
    changes = run.watch.between(cut_at, time.time(), moving)
    res.changes = len(changes)
    if changes:
        res.first_ms = round((changes[0] - decision) * 1e3, 1)
        res.last_ms = round((changes[-1] - decision) * 1e3, 1)
    mark = run.agent.mark()
    if repair is not None:
        repair()
    run.lab.repair(1)
    if run.agent.wait_for(FAILBACK, run.timeout, mark) is None:
        res.error = f"no failback within {run.timeout:g} s after the repair"
    elif wait_routes(run.lab.near, normal or run.normal, run.timeout, run.agent.alive) is None:
        res.error = f"routes not back within {run.timeout:g} s after the failback"
    return res


def summarize(cuts: list[Cut]) -> dict[str, Any]:
    out: dict[str, Any] = {"cuts": len(cuts), "ok": sum(c.error is None for c in cuts)}
    for key in ("detect_s", "lag_ms", "first_ms", "last_ms", "settled_ms"):
        values = [getattr(c, key) for c in cuts if getattr(c, key) is not None]
        if values:
            out[f"{key}_p50"] = round(pct(values, 50), 3)
            out[f"{key}_p99"] = round(pct(values, 99), 3)
    errors = sorted({c.error for c in cuts if c.error})
    if errors:
        out["errors"] = errors
    return out


# -- an agent on stand-ins --------------------------------------------------------------------
@contextlib.contextmanager
def agent_on(
    lab: StandIns,
    cfg_text: str,
    workdir: Path,
    args: argparse.Namespace,
    normal: RouteSet,
    failed: RouteSet,
) -> Iterator[Run]:
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "agent.yaml"
    cfg.write_text(cfg_text)
    watch = RouteWatch(lab.near)
    tap = EchoTap(lab, lab[1])
    agent = AgentProcess(lab.near, cfg, workdir / "agent.log", args.agent)
    try:
        time.sleep(0.3)  # the monitor subscribes as it starts
        agent.start()
        yield Run(lab, agent, watch, tap, args.timeout, normal, failed)
    finally:
        agent.stop()
        watch.stop()
        tap.stop()


def full_rate(far: FarCounter, n: int, timeout: float) -> float | str:
    """Seconds until one second saw 95% of the configured probes arrive: the end of start-up
    (at 2,000 tunnels the agent pauses its probes for a second or two after the first
    install). A rate never reached is reported, and the window is measured anyway."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        before, at = far.in_echos(), time.monotonic()
        time.sleep(1.0)
        if (far.in_echos() - before) / (time.monotonic() - at) >= 0.95 * n / INTERVAL_S:
            return round(time.monotonic() - t0, 1)
    return f"95% of the probe rate not reached within {timeout:g} s"


def steady(run: Run, n: int, seconds: float, far: FarCounter) -> dict[str, Any]:
    pid = run.agent.pid
    samples: list[tuple[float, float, float, int, int]] = []
    end = time.monotonic() + seconds
    while True:
        kids = descendants(pid)
        kid_cpu = 0.0
        for k in kids:
            with contextlib.suppress(OSError, IndexError):
                kid_cpu += cpu_seconds(k)
        samples.append(
            (
                time.monotonic(),
                cpu_seconds(pid),
                kid_cpu,
                far.in_echos(),
                icmp_counter(pid, "OutEchos"),
            )
        )
        if time.monotonic() >= end:
            break
        time.sleep(1.0)
    (t0, c0, k0, e0, o0), (t1, c1, k1, e1, o1) = samples[0], samples[-1]
    wall = t1 - t0
    per_s = [(b[3] - a[3]) / (b[0] - a[0]) for a, b in itertools.pairwise(samples)]
    rss, hwm = memory_mb(pid)
    configured = n / INTERVAL_S
    return {
        "window_s": round(wall, 1),
        "cpu_share": round((c1 - c0) / wall, 3),
        "children_cpu_share": round((k1 - k0) / wall, 3),
        "rss_mb": rss,
        "peak_rss_mb": hwm,
        "probes_configured_per_s": configured,
        "probes_arriving_per_s": round((e1 - e0) / wall, 1),
        "probes_arriving_min_1s": round(min(per_s), 1) if per_s else None,
        "probes_arriving_each_s": [round(x) for x in per_s],
        "probes_sent_per_s": round((o1 - o0) / wall, 1),
        "probes_pct": round(100 * (e1 - e0) / wall / configured, 1),
    }


def scale_case(n: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"tunnels": n}
    t0 = time.monotonic()
    with stand_ins(n, "vtfb") as lab:
        row["stand_ins_built_s"] = round(time.monotonic() - t0, 2)
        normal = active_standby(lab.pairs, STATICS, args.standbys)
        failed = active_standby(lab.pairs[1:], STATICS, args.standbys, args.groups_over(lab))
        far = FarCounter(lab)
        try:
            with agent_on(
                lab, agent_config(lab.pairs, STATICS), tmp / f"n{n}", args, normal, failed
            ) as run:
                say(f"N={n}: agent pid {run.agent.pid}, waiting for {len(normal)} routes")
                seen = wait_routes(lab.near, normal, args.timeout, run.agent.alive)
                if seen is None:
                    row["first_install_s"] = f"not installed within {args.timeout:g} s"
                    say(f"N={n}: routes not installed within {args.timeout:g} s")
                else:
                    row["first_install_s"] = round(seen - run.agent.started_at, 2)
                if "steady" in args.cases:
                    time.sleep(args.settle)
                    row["rate_reached_s"] = full_rate(far, n, args.timeout)
                    say(f"N={n}: steady window {args.seconds:g} s")
                    row.update(steady(run, n, args.seconds, far))
                if "cut" in args.cases and seen is not None:
                    cuts = []
                    for k in range(args.cuts):
                        c = cut_once(run)
                        say(f"N={n}: cut {k + 1}: {c}")
                        cuts.append(c)
                        if c.error:
                            break
                    row["cut"] = summarize(cuts)
                    row["cut_samples"] = [asdict(c) for c in cuts]
                if "sigterm" in args.cases:
                    took = run.agent.stop(grace=args.timeout)
                    row["sigterm_exit_s"] = (
                        round(took, 3)
                        if took is not None
                        else f"no exit within {args.timeout:g} s (killed)"
                    )
                    row["exit_status"] = run.agent.exit_status
                    row["left_behind_after_exit"] = len(run.agent.left_behind)
                row["log_tail"] = run.agent.tail(5)
        finally:
            far.stop()
    return row


def prefixes_case(count: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"prefixes": count, "tunnels": 2}
    nets = [bulk_prefix(i) for i in range(count)]
    with stand_ins(2, "vtfp") as lab:
        normal = active_standby(lab.pairs, nets, args.standbys)
        failed = active_standby(lab.pairs[1:], nets, args.standbys, args.groups_over(lab))
        with agent_on(
            lab, agent_config(lab.pairs, nets), tmp / f"p{count}", args, normal, failed
        ) as run:
            say(f"{count} prefixes: waiting for {len(normal)} routes")
            seen = wait_routes(lab.near, normal, args.timeout, run.agent.alive)
            if seen is None:
                row["first_install_s"] = f"not installed within {args.timeout:g} s"
                row["installed_routes"] = len(route_set(lab.near, PROTO))
            else:
                row["first_install_s"] = round(seen - run.agent.started_at, 2)
                time.sleep(args.settle)
                c = cut_once(run)
                say(f"{count} prefixes: cut: {c}")
                row["cut"] = asdict(c)
                row["monitor_overruns"] = run.watch.overruns
            row["log_tail"] = run.agent.tail(5)
    return row


@contextlib.contextmanager
def far_bird(lab: StandIns, burst: int, workdir: Path) -> Iterator[Bird]:
    statics = "".join(f"    route {burst_prefix(i)} blackhole;\n" for i in range(burst))
    config = f"protocol static burst {{\n    ipv4;\n    disabled;\n{statics}}}\n" + "".join(
        bgp_peer_block(
            p.name,
            str(p.peer),
            65002,
            str(p.local),
            65001,
            export4='where proto = "burst"' if p.index == 2 else "none",
        )
        for p in lab.pairs
    )
    with bird(lab.far, config, workdir) as b:
        yield b


def burst_case(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    n, size = args.burst_tunnels, args.burst_size
    row: dict[str, Any] = {"tunnels": n, "burst_prefixes": size}
    learned = [burst_prefix(i) for i in range(size)]
    with stand_ins(n, "vtfg") as lab, far_bird(lab, size, tmp / "bird") as b:
        normal = active_standby(lab.pairs, STATICS, args.standbys)
        failed = active_standby(lab.pairs[1:], STATICS, args.standbys, args.groups_over(lab))
        with_burst = failed | via(lab[2], 10, learned)
        cfg = agent_config(lab.pairs, STATICS, bgp_workdir=tmp / "exabgp", exabgp=EXABGP)
        with agent_on(lab, cfg, tmp / "burst", args, normal, failed) as run:
            seen = wait_routes(lab.near, normal, args.timeout, run.agent.alive)
            b.wait_for(
                "BGP over tun2", lambda: b.protocol_state("tun2") == "Established", args.timeout
            )
            if seen is None:
                row["error"] = f"routes not installed within {args.timeout:g} s"
                return row
            time.sleep(args.settle)
            plain: list[Cut] = []
            for k in range(args.cuts):
                c = cut_once(run)
                say(f"burst case: plain cut {k + 1}: {c}")
                plain.append(c)
                if c.error:
                    break
            bursts: list[Cut] = []
            for k in range(args.burst_cuts):
                # tun2's session may still be re-establishing after the last repair.
                b.wait_for(
                    "BGP over tun2", lambda: b.protocol_state("tun2") == "Established", args.timeout
                )
                c = cut_once(
                    run,
                    before_cut=lambda: b.birdc("enable", "burst"),
                    failed=with_burst,
                    repair=lambda: b.birdc("disable", "burst"),
                )
                say(f"burst case: cut {k + 1} with a {size}-prefix burst: {c}")
                bursts.append(c)
                if c.error:
                    break
            row["plain"] = summarize(plain)
            row["with_burst"] = summarize(bursts)
            row["samples"] = [asdict(c) for c in plain + bursts]
            base = [c.lag_ms for c in plain if c.lag_ms is not None]
            hit = [c.lag_ms for c in bursts if c.lag_ms is not None]
            if base and hit:
                row["decision_delay_ms"] = round(
                    statistics.median(hit) - statistics.median(base), 1
                )
            row["log_tail"] = run.agent.tail(5)
    return row


# -- report -----------------------------------------------------------------------------------
def host_facts() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "python": platform.python_version(),
    }


class LoadSampler:
    """The machine's 1-minute load average every 5 s over the run: the other load beside it."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self.started = datetime.now().isoformat(timespec="seconds")

    def _run(self) -> None:
        while True:
            self.samples.append(float(Path("/proc/loadavg").read_text().split()[0]))
            if self._done.wait(5.0):
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._done.set()
        self._thread.join()
        return {
            "started": self.started,
            "ended": datetime.now().isoformat(timespec="seconds"),
            "load1_mean": round(statistics.fmean(self.samples), 2),
            "load1_max": max(self.samples),
        }


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def print_tables(results: dict[str, Any]) -> None:
    load = results.get("load")
    if load:
        print(
            f"\n{load['started']} - {load['ended']}: machine load (1 min) "
            f"mean {load['load1_mean']}, max {load['load1_max']}"
        )
    rows = results.get("scale", [])
    if rows:
        print("\nN tunnels: steady state, cuts of the carrier, SIGTERM")
        head = (
            "N",
            "install s",
            "cpu",
            "rss MB",
            "peak MB",
            "probes/s",
            "conf/s",
            "%",
            "detect s",
            "lag ms",
            "first ms",
            "last ms",
            "sigterm s",
        )
        print(" ".join(f"{h:>10}" for h in head))
        for r in rows:
            c = r.get("cut", {})
            cells = (
                r["tunnels"],
                r.get("first_install_s"),
                r.get("cpu_share"),
                r.get("rss_mb"),
                r.get("peak_rss_mb"),
                r.get("probes_arriving_per_s"),
                r.get("probes_configured_per_s"),
                r.get("probes_pct"),
                c.get("detect_s_p50"),
                c.get("lag_ms_p50"),
                c.get("first_ms_p50"),
                c.get("last_ms_p50"),
                r.get("sigterm_exit_s"),
            )
            print(" ".join(f"{fmt(x)[:10]:>10}" for x in cells))
            for key in ("errors",):
                if c.get(key):
                    print(f"{'':>10} cut: {'; '.join(c[key])}")
            for key in ("first_install_s", "sigterm_exit_s"):
                if isinstance(r.get(key), str):
                    print(f"{'':>10} {key}: {r[key]}")
            if c:
                print(
                    f"{'':>10} cuts {c['ok']}/{c['cuts']} ok; p99: detect "
                    f"{fmt(c.get('detect_s_p99'))} s, lag {fmt(c.get('lag_ms_p99'))} ms, "
                    f"first {fmt(c.get('first_ms_p99'))} ms, last "
                    f"{fmt(c.get('last_ms_p99'))} ms"
                )
    for r in results.get("prefixes", []):
        c = r.get("cut", {})
        print(
            f"\n{r['prefixes']} static prefixes on 2 tunnels: first install "
            f"{fmt(r.get('first_install_s'))} s; decision -> first change "
            f"{fmt(c.get('first_ms'))} ms, -> last change {fmt(c.get('last_ms'))} ms "
            f"({c.get('changes', 0)} changes), all on the backup (polled) "
            f"{fmt(c.get('settled_ms'))} ms{'; ' + c['error'] if c.get('error') else ''}"
        )
    if "burst" in results:
        r = results["burst"]
        print(
            f"\nBGP burst: {r.get('burst_prefixes')} prefixes over tun2's session at the "
            f"cut of tun1 ({r.get('tunnels')} tunnels)"
        )
        for label in ("plain", "with_burst"):
            s = r.get(label, {})
            print(
                f"  {label:<10} cuts {s.get('ok', 0)}/{s.get('cuts', 0)}: detect p50 "
                f"{fmt(s.get('detect_s_p50'))} s, lag p50 {fmt(s.get('lag_ms_p50'))} ms, "
                f"first {fmt(s.get('first_ms_p50'))} ms, all moved "
                f"{fmt(s.get('settled_ms_p50'))} ms  {'; '.join(s.get('errors', []))}"
            )
        print(
            f"  decision delayed by the burst: {fmt(r.get('decision_delay_ms'))} ms"
            f"{'; ' + r['error'] if r.get('error') else ''}"
        )
    print("\nTargets (issue 11):")
    for key, text in TARGETS.items():
        print(f"  {key:<20} {text}")


def guarded(what: str, row: dict[str, Any], case: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A case's row; one that fails says how in its row, and the next case still runs."""
    try:
        return case()
    except Exception as exc:  # any failure of one case is that case's result
        say(f"{what}: failed: {type(exc).__name__}: {exc}")
        return {**row, "error": f"{type(exc).__name__}: {exc}"}


def _interrupt(_sig: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _kernel_has_nexthops() -> bool:
    """The agent routes via nexthop groups where the kernel has them (nexthop_groups: auto)."""
    done = subprocess.run(["ip", "nexthop", "show"], check=False, capture_output=True)
    return done.returncode == 0


def _no_groups(_lab: Any) -> int | None:
    return None


def _groups_over(groups: bool) -> Callable[[Any], int | None]:
    """How many tunnels a stand-in lab's groups span (None: plain routes)."""
    return (lambda lab: len(lab.pairs)) if groups else _no_groups


def run_cases(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Every case asked for, into results, with the machine's load beside them."""
    load = LoadSampler()
    load.start()
    with tempfile.TemporaryDirectory(prefix="vtf-agent-scale-") as d:
        tmp = Path(d)
        try:
            if {"steady", "cut", "sigterm"} & set(args.cases):
                results["scale"] = [
                    guarded(f"N={n}", {"tunnels": n}, lambda n=n: scale_case(n, args, tmp))
                    for n in args.sizes
                ]
            if "prefixes" in args.cases:
                results["prefixes"] = [
                    guarded(
                        f"{p} prefixes", {"prefixes": p}, lambda p=p: prefixes_case(p, args, tmp)
                    )
                    for p in args.prefixes
                ]
            if "burst" in args.cases:
                results["burst"] = guarded("burst", {}, lambda: burst_case(args, tmp))
        except KeyboardInterrupt:
            results["interrupted"] = True
            say("interrupted: cleaning up")
        finally:
            if args.keep_logs is not None:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for log in tmp.rglob("*.log"):
                    dest = args.keep_logs / f"{log.parent.name}-{log.name}"
                    dest.write_bytes(log.read_bytes())
    results["load"] = load.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000, 2000])
    ap.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    ap.add_argument("--seconds", type=float, default=20.0, help="steady window per N")
    ap.add_argument(
        "--settle", type=float, default=3.0, help="seconds after the first install before measuring"
    )
    ap.add_argument("--cuts", type=int, default=10, help="cuts per N (and plain cuts, burst)")
    ap.add_argument("--timeout", type=float, default=60.0, help="bound of every wait (s)")
    ap.add_argument("--prefixes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--burst-tunnels", type=int, default=10)
    ap.add_argument("--burst-size", type=int, default=10_000)
    ap.add_argument("--burst-cuts", type=int, default=5)
    ap.add_argument(
        "--agent",
        type=shlex.split,
        default=list(DEFAULT_COMMAND),
        help=f"agent command before 'run CONFIG' (default: {' '.join(DEFAULT_COMMAND)})",
    )
    ap.add_argument(
        "--standby-routes",
        default="auto",
        help="standbys the agent routes via: a number, 'all', or 'auto' (its schema's default)",
    )
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep-logs", type=Path, help="copy the agents' logs into this directory")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (namespaces, raw sockets, routes)", file=sys.stderr)
        return 2
    # Routes go via this many standbys (the agent's default), or via all of them.
    if args.standby_routes == "auto":
        args.standbys = standby_routes(args.agent)
    else:
        args.standbys = None if args.standby_routes == "all" else int(args.standby_routes)
    args.groups_over = _groups_over(_kernel_has_nexthops())
    date = datetime.now().astimezone()
    json_path = args.json or TOP / "labs/bench/results" / f"agent-scale-{date:%Y-%m-%d}.json"
    results: dict[str, Any] = {
        "date": date.isoformat(timespec="seconds"),
        "host": host_facts(),
        "agent": args.agent,
        "setup": {
            "kind": "gre",
            "sources": ["probe", "link"],
            "probe_interval_s": INTERVAL_S,
            "probe_timeout_s": TIMEOUT_S,
            "fall": FALL,
            "static_prefixes": len(STATICS),
            "link_control": "none",
            "standby_routes": args.standbys if args.standbys is not None else "all",
            "nexthop_groups": args.groups_over is not _no_groups,
            "dampening": False,
            "preempt_hold_down_s": 2,
            "cut": "nft drop of all traffic both ways on the far end of tun1",
            "between_cuts": "repair, then wait for the failback and the original routes",
        },
        "targets": TARGETS,
    }
    # SIGTERM (e.g. `timeout`) unwinds like Ctrl-C, so every context cleans up; SIGINT is set
    # too, since a shell without job control starts background commands with it ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    run_cases(args, results)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print_tables(results)
    print(f"\nJSON: {json_path}")
    return 1 if results.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
