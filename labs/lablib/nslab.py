"""Builds and tears down the lab in network namespaces, and reads and changes its state."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from lablib.topology import LAB_DIR, STATE_ROOT, TOP, Topology, load_topology

__all__ = ["FAMILIES", "KINDS", "STACKS", "Lab", "LabError"]

STACKS = ("stock", "healthcheck", "agent")
KINDS = ("vti", "xfrm")
# The underlays' family (node.sh LAB_FAMILY): dual = isp1 IPv4, isp2 and isp3 IPv6.
FAMILIES = ("ipv4", "ipv6", "dual")
# Underlay ends a cut acts on: (node, interface) per ISP path.
ISP_ENDS = {
    "isp1": (("siteA", "isp1"), ("siteB", "isp1")),
    "isp2": (("siteA", "isp2"), ("siteB", "isp2")),
    "isp3": (("siteA", "isp3"), ("siteB", "isp3")),
}


class LabError(RuntimeError):
    """The lab could not be built or did not reach the expected state."""


def _run(
    cmd: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    try:
        res = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout}s: {' '.join(cmd)}") from exc
    if check and res.returncode != 0:
        raise LabError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


class Lab:
    """The running (or to-be-built) lab on this kernel."""

    def __init__(
        self,
        stack: str = "stock",
        kind: str = "vti",
        agent_config: Path | None = None,
        family: str = "ipv4",
    ) -> None:
        if stack not in STACKS:
            raise LabError(f"unknown stack {stack!r} (one of {', '.join(STACKS)})")
        if kind not in KINDS:
            raise LabError(f"unknown tunnel kind {kind!r} (one of {', '.join(KINDS)})")
        if family not in FAMILIES:
            raise LabError(f"unknown underlay family {family!r} (one of {', '.join(FAMILIES)})")
        self.stack = stack
        self.kind = kind
        self.family = family
        self.agent_config = agent_config
        self.topo: Topology = load_topology()

    # -- plumbing --------------------------------------------------------------------------
    def ns(self, node: str) -> str:
        return self.topo.netns(node)

    def state(self, node: str) -> Path:
        return STATE_ROOT / node

    def sh(
        self, node: str, *cmd: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return _run(["ip", "netns", "exec", self.ns(node), *cmd], check=check, timeout=timeout)

    def spawn(self, node: str, name: str, *cmd: str) -> subprocess.Popen[bytes]:
        """A long-running process in a node, its output in the node's state dir."""
        log = (self.state(node) / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(node), *cmd],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        (self.state(node) / f"{name}.pid").write_text(f"{proc.pid}\n")
        return proc

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            LAB_STATE_ROOT=str(STATE_ROOT),
            LAB_TUNNEL_KIND=self.kind,
            LAB_FAMILY=self.family,
            LAB_VENV=str(TOP / ".venv"),
        )
        if self.agent_config is not None:
            env["LAB_AGENT_CONFIG"] = str(self.agent_config)
        return env

    # -- lifecycle -------------------------------------------------------------------------
    def up(self, progress: Callable[[str], None] = print) -> None:
        """Namespaces, veth underlays, then each node's node.sh: responder before initiator."""
        self.down()
        STATE_ROOT.mkdir(parents=True, exist_ok=True)
        (STATE_ROOT / "lab.json").write_text(
            json.dumps({"stack": self.stack, "kind": self.kind, "family": self.family})
        )
        for node in self.topo.nodes:
            _run(["ip", "netns", "add", self.ns(node)])
            self.state(node).mkdir(parents=True, exist_ok=True)
        for link in self.topo.links:
            _run(
                [
                    "ip",
                    "link",
                    "add",
                    link.a_if,
                    "netns",
                    self.ns(link.a_node),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    link.b_if,
                    "netns",
                    self.ns(link.b_node),
                ]
            )
        progress(f"namespaces and underlays: {', '.join(self.ns(n) for n in self.topo.nodes)}")
        for node in self.topo.nodes:
            args = list(self.topo.node_args[node])
            if node == "siteA":
                args = [args[0], self.stack]
            started = time.monotonic()
            res = _run(
                ["ip", "netns", "exec", self.ns(node), "bash", str(LAB_DIR / "node.sh"), *args],
                env=self._env(),
                timeout=180,
                check=False,
            )
            if res.returncode != 0:
                raise LabError(
                    f"node.sh {' '.join(args)} failed ({res.returncode}):\n"
                    f"{res.stdout}{res.stderr}\n{self.logs(node)}"
                )
            progress(f"{res.stdout.strip()} in {time.monotonic() - started:.1f}s")

    def down(self) -> None:
        """Stop every process of the lab's namespaces and delete them; safe to repeat."""
        pids: set[int] = set()
        if STATE_ROOT.is_dir():
            for pidfile in STATE_ROOT.glob("*/*.pid"):
                try:
                    pids.add(int(pidfile.read_text().split()[0]))
                except (ValueError, IndexError, OSError):
                    continue
        for node in self.topo.nodes:
            res = _run(["ip", "netns", "pids", self.ns(node)], check=False)
            pids.update(int(p) for p in res.stdout.split() if p.isdigit())
        _signal_all(pids, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            pids = {p for p in pids if _alive(p)}
            time.sleep(0.1)
        _signal_all(pids, signal.SIGKILL)
        for node in self.topo.nodes:
            _run(["ip", "netns", "del", self.ns(node)], check=False)
        shutil.rmtree(STATE_ROOT, ignore_errors=True)

    def log_files(self, node: str) -> list[Path]:
        """The node's daemon logs (node.sh starts each daemon with one)."""
        return sorted(self.state(node).glob("*.log"))

    def logs(self, node: str, lines: int = 15) -> str:
        out = []
        for log in self.log_files(node):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {node}/{log.name}\n" + "\n".join(tail))
        return "\n".join(out)

    # -- observing -------------------------------------------------------------------------
    def vici_uri(self, node: str) -> str:
        return f"unix://{self.state(node)}/run/charon.vici"

    def swanctl(self, node: str, *args: str) -> str:
        env = dict(os.environ, STRONGSWAN_CONF=str(LAB_DIR / "strongswan.conf"))
        res = _run(["swanctl", *args, "--uri", self.vici_uri(node)], check=False, env=env)
        return res.stdout

    def child_installed(self, node: str, child: str) -> bool:
        return "INSTALLED" in self.swanctl(node, "--list-sas", "--ike", child)

    def link(self, node: str, dev: str) -> dict[str, object]:
        """The interface as `ip -j -s link` sees it (operstate, flags, stats64)."""
        res = self.sh(node, "ip", "-j", "-s", "link", "show", "dev", dev)
        link: dict[str, object] = json.loads(res.stdout)[0]
        return link

    def bird(self, *cmd: str) -> str:
        ctl = str(self.state("siteB") / "bird.ctl")
        return _run(["birdc", "-s", ctl, *cmd], check=False).stdout

    def bgp_sessions(self) -> dict[str, str]:
        """BIRD's BGP protocols and their info column (Established, Active ..., Connect ...)."""
        sessions = {}
        for line in self.bird("show", "protocols").splitlines():
            # name proto table state since-date since-time info... (siteB/bird.conf timeformat)
            words = line.split()
            if len(words) >= 6 and words[1] == "BGP":
                sessions[words[0]] = " ".join(words[6:]) or words[3]
        return sessions

    def route_devs(self, node: str, prefix: str) -> list[str]:
        """The kernel's routes for a prefix in a node, best first (by metric)."""
        family = ["-6"] if ":" in prefix else []
        res = self.sh(node, "ip", *family, "-j", "route", "show", prefix)
        routes = sorted(json.loads(res.stdout or "[]"), key=lambda r: r.get("metric", 0))
        devs = []
        for r in routes:
            if "dev" in r:
                devs.append(r["dev"])
            for hop in r.get("nexthops", []):
                devs.append(hop["dev"])
        return devs

    def bird_route_text(self, prefix: str) -> str:
        return self.bird("show", "route", "for", prefix, "all")

    def wait_for(
        self, what: str, ok: Callable[[], bool], timeout: float, interval: float = 0.5
    ) -> float:
        """Seconds until ok() held; LabError with the logs after timeout."""
        start = time.monotonic()
        while not ok():
            if time.monotonic() - start > timeout:
                raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(interval)
        return time.monotonic() - start

    def wait_ready(self, timeout: float = 120) -> float:
        """Both SAs up, both BGP sessions Established, site B routing site A's LAN via vti1."""

        def ready() -> bool:
            sessions = self.bgp_sessions()
            return (
                sessions.get("tun1") == "Established"
                and sessions.get("tun2") == "Established"
                and self.route_devs("siteB", "10.1.0.0/24")[:1] == ["vti1"]
            )

        return self.wait_for("both BGP sessions and site B's route via vti1", ready, timeout)

    # -- acting ----------------------------------------------------------------------------
    def cut(self, isp: str) -> None:
        """Silently black-hole an ISP path: links stay up, nothing crosses either way.

        Both directions die at one instant: one tc batch on site A's end drops everything
        it receives (ingress) and everything it sends (egress), as a dead line in the middle
        would. Two ends cut one after the other would start the outage sooner one way.
        """
        node, dev = ISP_ENDS[isp][0]
        batch = self.state(node) / f"cut-{isp}.tc"
        batch.write_text(
            f"qdisc add dev {dev} clsact\n"
            f"filter add dev {dev} ingress matchall action drop\n"
            f"filter add dev {dev} egress matchall action drop\n"
        )
        self.sh(node, "tc", "-batch", str(batch))

    def repair(self, isp: str) -> None:
        node, dev = ISP_ENDS[isp][0]
        self.sh(node, "tc", "qdisc", "del", "dev", dev, "clsact", check=False)

    def lossy(self, isp: str, percent: float) -> None:
        """Random loss on both ends of a path (egress netem): a bad line, not a dead one."""
        for node, dev in ISP_ENDS[isp]:
            self.sh(
                node, "tc", "qdisc", "replace", "dev", dev, "root", "netem", "loss", f"{percent}%"
            )

    def clean(self, isp: str) -> None:
        for node, dev in ISP_ENDS[isp]:
            self.sh(node, "tc", "qdisc", "del", "dev", dev, "root", check=False)

    @staticmethod
    def running() -> dict[str, str] | None:
        """The stack and kind of the lab that `up` left running on this kernel, if any."""
        try:
            info: dict[str, str] = json.loads((STATE_ROOT / "lab.json").read_text())
        except (OSError, ValueError):
            return None
        return info


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return re.search(r"\) Z ", stat) is None


def _signal_all(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            continue
