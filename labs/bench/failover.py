"""Failover benchmark: cut the active ISP path again and again, measure each outage.

Runs inside the lab's kernel (`labs/lab bench ...` boots the VM when needed). Per method
it brings the lab up with that site-A stack, runs a constant sequence-numbered UDP stream
both ways between the LAN hosts, cuts isp1 silently (tc drop both ways, links up) `--cuts`
times, then puts `--loss-pct` random loss on isp1 for `--loss-s` and counts failovers
(site B's route to site A's LAN leaving vti1), which are all false.

Outage of a cut = the longest gap between consecutive received datagrams, in send time,
from the cut until the lab is back on isp1. B->A is steered by what site A announces
(the methods differ there); A->B by site A's own routes (static in the stock stack).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lablib.nslab import Lab, LabError
from lablib.stream import longest_gap, read_stream
from lablib.topology import LAB_DIR, STATE_ROOT, TOP
from lablib.watchdog import Watchdog

# Snapshots the machine when a run stalls; started by main() once the results dir is known.
WATCHDOG = Watchdog(Path("/tmp"))
STREAM = Path(__file__).resolve().with_name("udp_stream.py")
PY = str(TOP / ".venv" / "bin" / "python")


@dataclass(frozen=True)
class Method:
    name: str
    stack: str  # lab stack for site A (labs/dual-vti/node.sh)
    description: str
    # Hook for the agent: a config override applied to site A's agent, once it runs.
    agent_profile: str | None = None


METHODS = {
    "stock": Method("stock", "stock", "BGP over VTI, hold 9 s, DPD 2 s (ExaBGP static)"),
    "healthcheck": Method(
        "healthcheck", "healthcheck", "ExaBGP healthcheck: ping via vti1, MED over tun2, fall 3"
    ),
    "agent-default": Method(
        "agent-default",
        "agent",
        "vti-failover defaults: probe 0.2 s, timeout 0.5 s, fall 5",
        agent_profile="default",
    ),
    "agent-fastest": Method(
        "agent-fastest",
        "agent",
        "vti-failover fastest: probe 0.05 s, timeout 0.1 s, fall 5",
        agent_profile="fastest",
    ),
}


# Method c's "fastest" settings: the quickest detection meant to ride out 5% loss each
# way (one false failover in 120 s in the run of 2026-12-02, none in the one before).
# Detection takes about timeout + (fall - 1) x interval = 0.3 s; five round trips lost in
# a row at ~10% loss is ~1e-5 per probe, ~1% over a minute at 20 probes/s. The loss window
# keeps its 10 s span (200 probes) and its 50% / 30% thresholds. For paths whose RTT stays
# well under the 0.1 s timeout.
FASTEST = {
    "probe": {"kind": "icmp", "interval_s": 0.05, "timeout_s": 0.1},
    "policy": {"rise": 3, "fall": 5, "loss_window": 200, "loss_down": 100, "loss_degraded": 60},
}


def agent_config(method: Method, kind: str) -> Path | None:
    """The agent config for a method: the lab's own, or a variant of it written to /tmp."""
    if method.agent_profile in (None, "default"):
        return None
    name = "vti-failover-xfrm.yaml" if kind == "xfrm" else "vti-failover.yaml"
    doc = yaml.safe_load((LAB_DIR / "siteA" / name).read_text())
    for tunnel in doc["tunnels"]:
        tunnel["probe"] = FASTEST["probe"]
    doc["policy"].update(FASTEST["policy"])
    out = Path("/tmp") / f"vti-failover-lab-{method.agent_profile}.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


@dataclass
class Result:
    name: str
    description: str
    cuts: int = 0
    outage_s: list[float] = field(default_factory=list)
    outage_a_to_b_s: list[float] = field(default_factory=list)
    # The same cuts, measured on IPv6 streams over the same tunnels (agent methods: the
    # stock stacks announce and route IPv4 only).
    outage6_s: list[float] = field(default_factory=list)
    outage6_a_to_b_s: list[float] = field(default_factory=list)
    median_s: float | None = None
    p95_s: float | None = None
    max_s: float | None = None
    false_failovers: int | None = None
    loss_period_s: float = 0.0
    note: str = ""


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def off_isp1(lab: Lab) -> str:
    """What keeps the lab from being back on isp1 (both ways), or "" once it is."""
    sessions = lab.bgp_sessions()
    missing = []
    for tun in ("tun1", "tun2"):
        if sessions.get(tun) != "Established":
            missing.append(f"site B's {tun} session {sessions.get(tun) or 'absent'}")
    b_to_a = lab.route_devs("siteB", "10.1.0.0/24")[:1]
    # Both directions: site A's own route too, or an A->B outage could be measured
    # from a cut of a path that carried nothing.
    a_to_b = lab.route_devs("siteA", "10.2.0.0/24")[:1]
    if b_to_a != ["vti1"]:
        missing.append(f"site B routes site A's LAN via {b_to_a or 'nothing'}")
    if a_to_b != ["vti1"]:
        missing.append(f"site A routes site B's LAN via {a_to_b or 'nothing'}")
    if not lab.child_installed("siteA", "tun1"):
        missing.append("tun1's CHILD_SA not installed")
    # Every method announces site A's LAN over tun2 too (worse MED) before a failure; a
    # cut before that path exists measures start-up, not failover. ExaBGP's healthcheck,
    # a second Python process, has taken 90 s to make its first announcement in the VM.
    if "tun2" not in {path.protocol for path in site_b_paths(lab)}:
        missing.append("site B has no path over tun2 yet")
    return "; ".join(missing)


def wait_back_on_isp1(lab: Lab, say: Callable[[str], None], timeout: float) -> float:
    """Seconds until the lab is back on isp1, saying every minute what it still waits for."""
    start = last_said = time.monotonic()
    while reason := off_isp1(lab):
        WATCHDOG.poke()
        now = time.monotonic()
        if now - start > timeout:
            raise LabError(f"not back on isp1 after {timeout:.0f}s: {reason}")
        if now - last_said >= 60:
            say(f"    still waiting ({now - start:.0f}s): {reason}")
            last_said = now
        time.sleep(0.5)
    return time.monotonic() - start


def run_method(method: Method, a: argparse.Namespace, log: list[str]) -> Result:
    res = Result(method.name, method.description)
    lab = Lab(method.stack, a.kind, agent_config=agent_config(method, a.kind))
    say = _sayer(log)
    say(f"{method.name}: bringing the lab up ({a.kind}, stack {method.stack})")
    lab.up(progress=lambda s: say(f"  {s}"))
    try:
        lab.wait_ready()
        six = method.stack == "agent"
        _start_streams(lab, a.rate, six)
        time.sleep(3)
        windows = []
        for i in range(a.cuts):
            ready = wait_back_on_isp1(lab, say, a.failback_timeout_s)
            if i == 0:
                say(f"  ready to cut {ready:.1f}s after the streams started")
            time.sleep(a.settle_s)
            say(f"  before cut {i + 1}, site B's paths: {describe_paths(site_b_paths(lab))}")
            t_cut = time.time()
            lab.cut("isp1")
            time.sleep(a.cut_s)
            lab.repair("isp1")
            back = wait_back_on_isp1(lab, say, a.failback_timeout_s)
            windows.append((t_cut, time.time() + 1.0))
            say(
                f"  cut {i + 1}/{a.cuts}: {a.cut_s:.0f}s cut, back on isp1 {back:.1f}s after repair"
            )
        time.sleep(a.settle_s)
        res.false_failovers, res.loss_period_s = count_false_failovers(lab, a, say)
        time.sleep(1.5)
        _stop_streams()
        if a.json:
            # The raw streams, so an odd number can be looked at after the lab is gone.
            for node in ("lanA", "lanB"):
                shutil.copy(_rx(node), a.json.parent / f"{method.name}-{node}.rx")
        res.cuts = len(windows)
        _outages(res, windows, a.rate, six)
        if res.outage_s:
            res.median_s = round(statistics.median(res.outage_s), 3)
            res.p95_s = p95(res.outage_s)
            res.max_s = max(res.outage_s)
    except LabError as exc:
        res.note = f"failed: {exc}"
        say(res.note)
        for node in ("siteA", "siteB"):
            say(lab.logs(node, lines=80))
    finally:
        if a.json:
            keep_logs(lab, a.json.parent, method.name)
        lab.down()
    return res


def _start_streams(lab: Lab, rate: float, six: bool) -> None:
    """UDP both ways between the LAN hosts; with `six`, an IPv6 pair of streams beside."""
    for node, dst in (("lanA", "10.2.0.10"), ("lanB", "10.1.0.10")):
        lab.spawn(node, "recv", PY, str(STREAM), "recv", "5000", str(_rx(node)))
        lab.spawn(node, "send", PY, str(STREAM), "send", dst, "5000", "--rate", str(rate))
    if six:
        for node, dst in (("lanA", "2001:db8:2::10"), ("lanB", "2001:db8:1::10")):
            lab.spawn(node, "recv6", PY, str(STREAM), "recv", "5006", str(_rx(node, 6)), "--ipv6")
            lab.spawn(node, "send6", PY, str(STREAM), "send", dst, "5006", "--rate", str(rate))


def _stop_streams() -> None:
    """Senders first, so the receivers log every datagram still on its way."""
    for name in ("send", "send6"):
        for node in ("lanA", "lanB"):
            _stop(node, name)
    time.sleep(1.0)
    for name in ("recv", "recv6"):
        for node in ("lanA", "lanB"):
            _stop(node, name)
    time.sleep(1.0)


def _outages(res: Result, windows: list[tuple[float, float]], rate: float, six: bool) -> None:
    b_to_a, a_to_b = read_stream(_rx("lanA")), read_stream(_rx("lanB"))
    res.outage_s = [longest_gap(b_to_a, s, e, rate) for s, e in windows]
    res.outage_a_to_b_s = [longest_gap(a_to_b, s, e, rate) for s, e in windows]
    if six:
        b_to_a6, a_to_b6 = read_stream(_rx("lanA", 6)), read_stream(_rx("lanB", 6))
        res.outage6_s = [longest_gap(b_to_a6, s, e, rate) for s, e in windows]
        res.outage6_a_to_b_s = [longest_gap(a_to_b6, s, e, rate) for s, e in windows]


@dataclass
class BirdPath:
    protocol: str
    med: str = "-"
    best: bool = False


def parse_bird_paths(text: str) -> list[BirdPath]:
    """The paths in `birdc show route for PREFIX all`, in BIRD's order."""
    paths: list[BirdPath] = []
    for line in text.splitlines():
        if header := re.search(r"unicast \[(\S+)", line):
            paths.append(BirdPath(header.group(1), best=re.search(r"\] \*", line) is not None))
        elif (med := re.search(r"BGP\.med: (\d+)", line)) and paths:
            paths[-1].med = med.group(1)
    return paths


def site_b_paths(lab: Lab) -> list[BirdPath]:
    """Site B's BGP paths to site A's LAN."""
    return parse_bird_paths(lab.bird_route_text("10.1.0.0/24"))


def describe_paths(paths: list[BirdPath]) -> str:
    """`tun1 med 100 (best), tun2 med 200`, for the log."""
    text = ", ".join(f"{p.protocol} med {p.med}{' (best)' if p.best else ''}" for p in paths)
    return text or "none"


def keep_logs(lab: Lab, out: Path, method: str) -> None:
    """The sites' daemon logs beside the results, to explain an odd cut afterwards."""
    for node in ("siteA", "siteB"):
        for log in lab.log_files(node):
            shutil.copy(log, out / f"{method}-{node}-{log.name}")


def count_false_failovers(lab: Lab, a: argparse.Namespace, say: object) -> tuple[int, float]:
    """Failovers away from vti1 while isp1 only loses `loss_pct` of its packets."""
    lab.lossy("isp1", a.loss_pct)
    flips, prev = 0, "vti1"
    start = time.monotonic()
    try:
        while time.monotonic() - start < a.loss_s:
            WATCHDOG.poke()
            best = (lab.route_devs("siteB", "10.1.0.0/24") or ["none"])[0]
            if prev == "vti1" and best != "vti1":
                flips += 1
            prev = best
            time.sleep(0.5)
    finally:
        lab.clean("isp1")
    if callable(say):
        say(f"  {a.loss_pct}% loss on isp1 for {a.loss_s:.0f}s: {flips} failover(s)")
    return flips, round(time.monotonic() - start, 1)


def _rx(node: str, version: int = 4) -> Path:
    return STATE_ROOT / node / ("stream.rx" if version == 4 else "stream6.rx")


def _stop(node: str, name: str) -> None:
    try:
        pid = int((STATE_ROOT / node / f"{name}.pid").read_text())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pass


def _sayer(log: list[str]):  # type: ignore[no-untyped-def]
    def say(line: str) -> None:
        stamped = f"{time.strftime('%H:%M:%S')} {line}"
        print(stamped, flush=True)
        log.append(stamped)
        WATCHDOG.poke(line.strip())

    return say


def table(results: list[Result]) -> str:
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    head = (
        f"{'method':<15} {'cuts':>4} {'median s':>9} {'p95 s':>7} {'max s':>7} "
        f"{'A->B med s':>10} {'false f/o':>9}  note"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        ab = statistics.median(r.outage_a_to_b_s) if r.outage_a_to_b_s else None
        ff = "-" if r.false_failovers is None else str(r.false_failovers)
        lines.append(
            f"{r.name:<15} {r.cuts:>4} {fmt(r.median_s):>9} {fmt(r.p95_s):>7} {fmt(r.max_s):>7} "
            f"{fmt(ab):>10} {ff:>9}  {r.note or r.description}"
        )
        if r.outage6_s:
            six = sorted(r.outage6_s)
            ab6 = statistics.median(r.outage6_a_to_b_s) if r.outage6_a_to_b_s else None
            lines.append(
                f"{'  (IPv6)':<15} {len(six):>4} {fmt(statistics.median(six)):>9} "
                f"{fmt(p95(six)):>7} {fmt(six[-1]):>7} {fmt(ab6):>10} {'':>9}  same cuts, IPv6"
            )
    return "\n".join(lines)


def write_json(
    a: argparse.Namespace, started: datetime, results: list[Result], log: list[str]
) -> None:
    doc = {
        "started": started.isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "machine": platform.node(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "methods": [asdict(r) for r in results],
        "log": log,
    }
    a.json.write_text(json.dumps(doc, indent=2) + "\n")


def host_description() -> str:
    """`x86_64, 2 cores, <CPU model>, kernel <release>` for the machine this runs on."""
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{model.group(1).strip() if model else 'unknown CPU'}, kernel {platform.release()}"
    )


def merge(parts: list[Path], out: Path | None) -> int:
    """One table and one JSON from several runs' results, in the order given."""
    docs = [json.loads(part.read_text()) for part in parts]
    results = [Result(**m) for doc in docs for m in doc["methods"]]
    print()
    print(table(results))
    if out:
        doc = dict(docs[0])
        doc["methods"] = [asdict(r) for r in results]
        methods = ",".join(r.name for r in results)
        doc["settings"] = dict(doc["settings"], methods=methods, json=str(out))
        doc["parts"] = [
            {"file": str(part), "started": d["started"]}
            for part, d in zip(parts, docs, strict=True)
        ]
        # Merging runs on the host: what the VMs ran on.
        doc["host"] = host_description()
        doc["log"] = [line for d in docs for line in d["log"]]
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {out}")
    return 0 if all(not r.note.startswith("failed") for r in results) else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated, of: {', '.join(METHODS)}",
    )
    p.add_argument("--cuts", type=int, default=10, help="cuts per method (default 10)")
    p.add_argument("--cut-s", type=float, default=15.0, help="length of each cut")
    p.add_argument("--settle-s", type=float, default=3.0, help="pause before each cut")
    p.add_argument(
        "--failback-timeout-s",
        type=float,
        default=300.0,
        help="give up on a method when the lab is not back on isp1 this long after a repair",
    )
    p.add_argument("--rate", type=float, default=200.0, help="datagrams/s each way")
    p.add_argument("--loss-pct", type=float, default=5.0, help="loss of the lossy period")
    p.add_argument("--loss-s", type=float, default=120.0, help="length of the lossy period")
    p.add_argument("--kind", choices=("vti", "xfrm"), default="vti")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="run nothing: combine these results (one run per method) into --json",
    )
    a = p.parse_args()
    if a.merge:
        return merge(a.merge, a.json)
    names = [m.strip() for m in a.methods.split(",") if m.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        p.error(f"unknown method(s): {', '.join(unknown)}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
    log: list[str] = []
    started = datetime.now(UTC)
    if a.json:
        WATCHDOG.out_dir = a.json.parent
        WATCHDOG.start()
    results: list[Result] = []
    for name in names:
        results.append(run_method(METHODS[name], a, log))
        if a.json:
            # After every method, so a run cut short keeps what it measured.
            write_json(a, started, results, log)
    print()
    print(table(results))
    if a.json:
        print(f"\nwrote {a.json}")
    return 0 if all(not r.note.startswith("failed") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
