"""Inside the lab's kernel: the agent's own failures, under UDP streams both ways.

Run by test_vm_faults.py through `labs/lab up --stack agent --then ...`. Streams run
lanA <-> lanB for the whole run (udp_stream.py, 50 datagrams/s each way); each phase
injects one fault, records what site A's kernel (`ip monitor route nexthop`), BIRD on
site B and the MQTT subscriber saw, and when. Phases, in the order given:

  agent_kill   kill -9 of the agent, then the same command again
  exabgp_kill  kill -9 of the agent's ExaBGP (the agent restarts it; graceful restart)
  hup_storm    100 SIGHUPs in one second, then a cut of isp1 and its repair
  broker_down  mosquitto stopped for 60 s across a failover and a failback
  charon_back  kill -9 of site A's charon, started again at once: its SAs return within
               vici.restart_grace_s
  charon_late  the same with IKE on isp1 blocked, so tun1's SA does not return in time
  flapping     isp1 cut and repaired at 0.5 Hz for 120 s
  three_order  (three-tunnel config) every path cut, isp3 back, then isp2, then isp1 10 s
               later: traffic on xfrm3, then vti2, then vti1

Writes JSON facts for the test to judge on the host.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from guest_agent import (
    EXABGP_PID,
    agent_log,
    agent_pid,
    exabgp_pids,
    gone,
    reestablished,
    restarting,
    sessions_since,
    start_agent,
    stop_agent,
    wait,
)
from lablib.nslab import Lab
from lablib.stream import longest_gap, read_stream
from lablib.topology import LAB_DIR, STATE_ROOT, TOP

Facts = dict[str, Any]
RATE = 50.0
STREAM = TOP / "labs" / "bench" / "udp_stream.py"
PY = str(TOP / ".venv" / "bin" / "python")


class Sampler:
    """Polls site B's kernel and BIRD in a thread: when 10.1.0.0/24 was missing there."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.missing: list[float] = []
        self.restarting: list[float] = []
        self.samples = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            now = time.time()
            if not self.lab.route_devs("siteB", "10.1.0.0/24"):
                self.missing.append(now)
            if restarting(self.lab):
                self.restarting.append(now)
            self.samples += 1
            self._done.wait(0.2)

    def stop(self) -> Facts:
        self._done.set()
        self._thread.join()
        return {"samples": self.samples, "missing": self.missing, "restarting": self.restarting}


class Monitor:
    """`ip -ts monitor route nexthop` in site A: every change to its routes and nexthops."""

    def __init__(self, lab: Lab) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.ns("siteA"), "ip", "-ts", "monitor", "route", "nexthop"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(1)  # subscribed before anything can change

    def stop(self) -> list[str]:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=10)
        # The kernel's own (addresses, link-local) are not the agent's doing.
        return [line for line in out.splitlines() if "proto kernel" not in line]


def window(facts: Facts, start: float, end: float) -> None:
    facts["start"], facts["end"] = start, end


def phase_agent_kill(lab: Lab, a: argparse.Namespace, log_lines: list[str]) -> Facts:
    facts: Facts = {"name": "agent_kill"}
    before = sessions_since(lab)
    mon, sampler = Monitor(lab), Sampler(lab)
    start = time.time()
    facts["exabgp_before"] = exabgp_pids()
    stop_agent(signal.SIGKILL)
    facts["exabgp_after_kill"] = exabgp_pids()
    time.sleep(1)
    start_agent(lab, a.config, log_lines)
    # The agent's new ExaBGP has both sessions, then a quiet spell: a late change would show.
    facts["sessions_back_s"] = wait("sessions after the restart", reestablished(lab, before), 90)
    time.sleep(5)
    facts["exabgp_after"] = exabgp_pids()
    facts["site_a_learned"] = lab.route_devs("siteA", "10.2.0.0/24")
    facts["monitor"] = mon.stop()
    facts["site_b"] = sampler.stop()
    window(facts, start, time.time())
    return facts


def phase_exabgp_kill(lab: Lab, a: argparse.Namespace, log_lines: list[str]) -> Facts:
    facts: Facts = {"name": "exabgp_kill"}
    before = sessions_since(lab)
    mon, sampler = Monitor(lab), Sampler(lab)
    start = time.time()
    pid = int(EXABGP_PID.read_text().split()[0])
    facts["killed"] = pid
    os.kill(pid, signal.SIGKILL)
    facts["sessions_back_s"] = wait(
        "sessions after exabgp's restart", reestablished(lab, before), 90
    )
    up_at = time.time()
    # Graceful restart ends when our End-of-RIB arrives, after the announcements.
    facts["fresh_after_up_s"] = wait("fresh routes at BIRD", lambda: not restarting(lab), 60)
    facts["up_at"] = up_at
    time.sleep(5)
    facts["exabgp_after"] = exabgp_pids()
    facts["monitor"] = mon.stop()
    facts["site_b"] = sampler.stop()
    window(facts, start, time.time())
    return facts


def on(lab: Lab, dev: str) -> bool:
    return (lab.route_devs("siteA", "10.2.0.0/24") or ["none"])[0] == dev and (
        lab.route_devs("siteB", "10.1.0.0/24") or ["none"]
    )[0] == dev


def phase_hup_storm(lab: Lab, a: argparse.Namespace, log_lines: list[str]) -> Facts:
    facts: Facts = {"name": "hup_storm"}
    start = time.time()
    pid = agent_pid()
    for _ in range(100):
        os.kill(pid, signal.SIGHUP)
        time.sleep(0.01)
    facts["storm_s"] = round(time.time() - start, 2)
    time.sleep(5)
    facts["agent_alive"] = not gone(pid)()
    facts["exabgp_after"] = exabgp_pids()
    # Still doing its job: a cut fails over, the repair fails back. What the kernel saw
    # of it is what one failover and one failback cost (the flapping phase's yardstick).
    mon = Monitor(lab)
    cut = time.time()
    lab.cut("isp1")
    facts["failover_s"] = wait("failover to vti2", lambda: on(lab, "vti2"), 60)
    lab.repair("isp1")
    facts["failback_s"] = wait("failback to vti1", lambda: on(lab, "vti1"), 120)
    time.sleep(10)  # the standby's routes and session settle again
    facts["monitor_failover_failback"] = mon.stop()
    facts["cut_at"] = cut
    window(facts, start, time.time())
    return facts


def swanctl_conf() -> Path:
    """Site A's swanctl.conf as node.sh loaded it (the xfrm variant writes its own)."""
    derived = STATE_ROOT / "siteA" / "swanctl.conf"
    return derived if derived.exists() else LAB_DIR / "siteA" / "swanctl.conf"


def restart_charon(lab: Lab) -> float:
    """kill -9 of site A's charon, then a new one as node.sh starts it, its config loaded
    (so it initiates every tunnel); returns when the new one first answered on VICI."""
    state = STATE_ROOT / "siteA"
    pid = int((state / "charon.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    wait("charon exit", gone(pid), 20)
    os.environ["STRONGSWAN_CONF"] = str(LAB_DIR / "strongswan.conf")
    script = 'mount --bind "$0" /run && exec /usr/lib/ipsec/charon'
    lab.spawn("siteA", "charon", "unshare", "-m", "sh", "-c", script, str(state / "run"))
    wait("charon's vici socket", lambda: "uptime" in lab.swanctl("siteA", "--stats"), 30)
    answered = time.time()
    lab.swanctl("siteA", "--load-all", "--file", str(swanctl_conf()))
    return answered


def block_ike(lab: Lab, isp: str) -> None:
    """IKE (UDP 500/4500) from site A over one path dropped; ESP still passes."""
    rules = (
        "table inet lab_ike {\n"
        "  chain out { type filter hook output priority 0;\n"
        f'    oifname "{isp}" udp dport {{ 500, 4500 }} drop\n'
        "  }\n"
        "}\n"
    )
    path = STATE_ROOT / "siteA" / "block-ike.nft"
    path.write_text(rules)
    lab.sh("siteA", "nft", "-f", str(path))


def unblock_ike(lab: Lab) -> None:
    lab.sh("siteA", "nft", "delete", "table", "inet", "lab_ike", check=False)


def phase_charon_back(lab: Lab, a: argparse.Namespace, log_lines: list[str]) -> Facts:
    facts: Facts = {"name": "charon_back"}
    mon = Monitor(lab)
    start = time.time()
    back = restart_charon(lab)
    facts["answers_s"] = round(back - start, 1)
    facts["sas_back_s"] = wait(
        "both SAs from the new charon",
        lambda: lab.child_installed("siteA", "tun1") and lab.child_installed("siteA", "tun2"),
        60,
    )
    # Past the grace (15 s) by a margin: a late "down" would have shown by then.
    time.sleep(max(0.0, back + 25 - time.time()))
    facts["on_vti1"] = on(lab, "vti1")
    facts["monitor"] = mon.stop()
    window(facts, start, time.time())
    return facts


def phase_charon_late(lab: Lab, a: argparse.Namespace, log_lines: list[str]) -> Facts:
    facts: Facts = {"name": "charon_late"}
    start = time.time()
    block_ike(lab, "isp1")
    back = restart_charon(lab)
    facts["back_at"] = back
    facts["tun2_back_s"] = wait(
        "tun2's SA from the new charon", lambda: lab.child_installed("siteA", "tun2"), 60
    )
    wait("failover to vti2", lambda: on(lab, "vti2"), 90)
    facts["failover_after_back_s"] = round(time.time() - back, 1)
    unblock_ike(lab)
    facts["failback_s"] = wait("failback to vti1", lambda: on(lab, "vti1"), 240)
    window(facts, start, time.time())
    return facts


def phase_flapping(lab: Lab, a: argparse.Namespace, log_lines: list[str]) -> Facts:
    facts: Facts = {"name": "flapping"}
    before = sessions_since(lab)
    mon = Monitor(lab)
    start = time.time()
    for cycle in range(60):  # 0.5 Hz for 120 s: 1 s cut, 1 s repaired
        lab.cut("isp1")
        time.sleep(max(0.0, start + 2 * cycle + 1 - time.time()))
        lab.repair("isp1")
        time.sleep(max(0.0, start + 2 * cycle + 2 - time.time()))
    facts["flapped_s"] = round(time.time() - start, 1)
    time.sleep(30)  # what the flapping still causes after it stopped
    facts["monitor"] = mon.stop()
    since = sessions_since(lab)
    facts["tun2_session"] = {
        "before": before.get("tun2"),
        "after": since.get("tun2"),
        "state": lab.bgp_sessions().get("tun2"),
    }
    facts["site_a_route"] = lab.route_devs("siteA", "10.2.0.0/24")
    window(facts, start, time.time())
    return facts


def carried_by(lab: Lab) -> str:
    """The tunnel both sites route through, or "split"/"none"."""
    a = (lab.route_devs("siteA", "10.2.0.0/24") or ["none"])[0]
    b = (lab.route_devs("siteB", "10.1.0.0/24") or ["none"])[0]
    return a if a == b else "split"


def phase_three_order(lab: Lab, a: argparse.Namespace, log_lines: list[str]) -> Facts:
    facts: Facts = {"name": "three_order"}
    start = time.time()
    for isp in ("isp1", "isp2", "isp3"):
        lab.cut(isp)
    facts["all_down_s"] = wait(
        "no route at site A", lambda: not lab.route_devs("siteA", "10.2.0.0/24"), 60
    )
    lab.repair("isp3")
    facts["on_xfrm3_s"] = wait("traffic on xfrm3", lambda: carried_by(lab) == "xfrm3", 90)
    seen: list[tuple[float, str]] = []
    lab.repair("isp2")
    repaired2 = time.time()
    time.sleep(10)
    lab.repair("isp1")
    repaired1 = time.time()

    def settled_on_vti1() -> bool:
        now = carried_by(lab)
        if not seen or seen[-1][1] != now:
            seen.append((round(time.time() - repaired2, 1), now))
        return now == "vti1"

    wait("traffic on vti1", settled_on_vti1, 180)
    facts["carriers_after_repair"] = seen
    facts["isp1_after_isp2_s"] = round(repaired1 - repaired2, 1)
    window(facts, start, time.time())
    return facts


def phase_broker_down(lab: Lab, a: argparse.Namespace, log_lines: list[str]) -> Facts:
    facts: Facts = {"name": "broker_down"}
    start = time.time()
    broker = int((STATE_ROOT / "siteA" / "mosquitto.pid").read_text().split()[0])
    os.kill(broker, signal.SIGTERM)
    wait("broker exit", gone(broker), 20)
    down_at = time.time()
    lab.cut("isp1")
    facts["failover_s"] = wait("failover to vti2 without a broker", lambda: on(lab, "vti2"), 60)
    lab.repair("isp1")
    facts["failback_s"] = wait("failback to vti1 without a broker", lambda: on(lab, "vti1"), 120)
    time.sleep(max(0.0, 60 - (time.time() - down_at)))
    lab.spawn("siteA", "mosquitto", "mosquitto", "-c", str(LAB_DIR / "siteA" / "mosquitto.conf"))
    # The second subscriber must be listening before the agent is back (its backoff can be
    # short): retry it until a marker it subscribed to reaches its log.
    sub2 = STATE_ROOT / "siteA" / "mqtt-sub2.log"
    running: list[subprocess.Popen[bytes]] = []

    def listening() -> bool:
        if not running or running[-1].poll() is not None:
            # Not there yet, or it gave up on a broker still starting: again.
            running.append(
                lab.spawn("siteA", "mqtt-sub2", "mosquitto_sub", "-h", "127.0.0.1", "-v", "-t", "#")
            )
            time.sleep(0.5)
        lab.sh("siteA", "mosquitto_pub", "-h", "127.0.0.1", "-t", "lab/marker", "-m", "1",
               check=False)  # fmt: skip
        return "lab/marker" in sub2.read_text(errors="replace")

    facts["subscriber_after_s"] = wait("the second subscriber", listening, 30)
    facts["down_s"] = round(time.time() - down_at, 1)
    back_at = time.time()

    def delivered() -> bool:
        # What the agent kept while the broker was away, sent once it is connected again.
        kinds = {e["kind"] for e in mqtt_events(sub2) if e["at_epoch"] >= down_at}
        return {"failover", "failback"} <= kinds

    # The agent's reconnect backoff (mqtt.reconnect_max_s, 30 s) may have just begun a
    # wait when the broker came back: its next try can be up to that much later.
    with contextlib.suppress(TimeoutError):
        wait("the kept events on the second subscriber", delivered, 90)
    facts["delivered_after_s"] = round(time.time() - back_at, 1)
    window(facts, start, time.time())
    facts["decided_at"] = [down_at, time.time()]
    return facts


def lost(rows: list[tuple[int, float]], start: float, end: float) -> int:
    """Datagrams sent between start and end (by their sequence numbers) that never arrived."""
    seqs = [seq for seq, sent in rows if start <= sent <= end]
    return (max(seqs) - min(seqs) + 1 - len(seqs)) if seqs else -1


PHASES = {
    "agent_kill": phase_agent_kill,
    "exabgp_kill": phase_exabgp_kill,
    "hup_storm": phase_hup_storm,
    "broker_down": phase_broker_down,
    "charon_back": phase_charon_back,
    "charon_late": phase_charon_late,
    "flapping": phase_flapping,
    "three_order": phase_three_order,
}
# What a run does unless told: every phase of the two-tunnel lab.
TWO_TUNNEL_PHASES = [n for n in PHASES if n != "three_order"]


def mqtt_events(*logs: Path) -> list[Facts]:
    """site-a's event messages from the subscribers' logs, each with `at_epoch` added."""
    events = []
    for log in logs:
        if not log.exists():
            continue
        for line in log.read_text().splitlines():
            topic, _, payload = line.partition(" ")
            if topic == "vti-failover/site-a/event":
                try:
                    event = json.loads(payload)
                except ValueError:
                    continue
                event["at_epoch"] = datetime.fromisoformat(event["at"]).timestamp()
                event["log"] = log.name
                events.append(event)
    return events


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("facts", type=Path)
    p.add_argument("--config", type=Path, required=True, help="the config the lab started with")
    p.add_argument("--phases", default=",".join(TWO_TUNNEL_PHASES))
    a = p.parse_args()
    running = Lab.running()
    assert running is not None, "no lab is up"
    lab = Lab(running["stack"], running["kind"])
    lab.spawn("siteA", "mqtt-sub", "mosquitto_sub", "-h", "127.0.0.1", "-v", "-t", "#")
    for node in ("lanA", "lanB"):
        lab.spawn(node, "recv", PY, str(STREAM), "recv", "5000", str(STATE_ROOT / node / "rx"))
    lab.spawn("lanB", "send", PY, str(STREAM), "send", "10.1.0.10", "5000", "--rate", str(RATE))
    lab.spawn("lanA", "send", PY, str(STREAM), "send", "10.2.0.10", "5000", "--rate", str(RATE))
    time.sleep(5)
    facts: Facts = {"phases": [], "rate": RATE}
    log_lines: list[str] = []
    try:
        for name in a.phases.split(","):
            began = time.time()
            print(f"guest_faults: {name} ...", flush=True)
            facts["phases"].append(PHASES[name](lab, a, log_lines))
            print(f"guest_faults: {name} done in {time.time() - began:.0f} s", flush=True)
            # What is known so far, should the VM be stopped before the end.
            a.facts.write_text(json.dumps(facts, indent=2))
            time.sleep(3)
    except TimeoutError as exc:
        facts["error"] = str(exc)
    finally:
        time.sleep(1)
        to_a = read_stream(STATE_ROOT / "lanA" / "rx")
        to_b = read_stream(STATE_ROOT / "lanB" / "rx")
        for ph in facts["phases"]:
            if "start" in ph:
                for way, rows in (("to_a", to_a), ("to_b", to_b)):
                    ph[f"gap_{way}_s"] = longest_gap(rows, ph["start"], ph["end"], RATE)
                    ph[f"lost_{way}"] = lost(rows, ph["start"], ph["end"])
        facts["received"] = {"to_a": len(to_a), "to_b": len(to_b)}
        state = STATE_ROOT / "siteA"
        facts["events"] = mqtt_events(state / "mqtt-sub.log", state / "mqtt-sub2.log")
        facts["agent_log"] = (log_lines + agent_log().read_text().splitlines())[-400:]
        a.facts.write_text(json.dumps(facts, indent=2))


if __name__ == "__main__":
    main()
