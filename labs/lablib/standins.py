"""Tunnel stand-ins at scale: N veth pairs from an agent namespace to one far namespace.

This kernel has no VTI; a veth pair carries routes and probes the same way. Pair i is
`t<i>` (10.64.0.0/12, its own /30, .1) in the near namespace, where the agent runs, and
`p<i>` (.2) in the far one, whose kernel answers the probes. Neighbours are permanent, so
nothing but the agent's own traffic is on the wire and no ARP can be lost with a cut.
A silent cut drops everything on one pair in the far namespace (nftables, both ways): the
agent sees its link up and only the answers missing. Links, addresses and neighbours go in
with `ip -batch`, so 2,000 pairs take a couple of seconds.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "BASE",
    "Pair",
    "RouteSet",
    "StandIns",
    "active_standby",
    "agent_config",
    "route_set",
    "stand_ins",
    "via",
    "wait_routes",
]

BASE = ipaddress.IPv4Network("10.64.0.0/12")
# Links per `ip -batch` run: one run per step keeps 2,000 pairs to a few seconds.
_BATCH = 5000

# (destination, device, metric) of every route of one protocol in a namespace.
RouteSet = frozenset[tuple[str, str, int]]


def _run(*cmd: str, stdin: str | None = None, timeout: float = 120) -> str:
    done = subprocess.run(
        cmd, input=stdin, text=True, capture_output=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _batch(ns: str, lines: Iterable[str]) -> None:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= _BATCH:
            _run("ip", "-n", ns, "-batch", "-", stdin="\n".join(chunk) + "\n")
            chunk = []
    if chunk:
        _run("ip", "-n", ns, "-batch", "-", stdin="\n".join(chunk) + "\n")


@dataclass(frozen=True)
class Pair:
    """Stand-in i (from 1): tunnel `tun<i>` over `t<i>` (near) <-> `p<i>` (far)."""

    index: int

    @property
    def name(self) -> str:
        return f"tun{self.index}"

    @property
    def near_if(self) -> str:
        return f"t{self.index}"

    @property
    def far_if(self) -> str:
        return f"p{self.index}"

    @property
    def local(self) -> ipaddress.IPv4Address:
        return BASE.network_address + 4 * (self.index - 1) + 1

    @property
    def peer(self) -> ipaddress.IPv4Address:
        return self.local + 1


@dataclass
class StandIns:
    near: str
    far: str
    pairs: tuple[Pair, ...]
    _cuts: set[int] = field(default_factory=set)

    def __getitem__(self, index: int) -> Pair:
        return self.pairs[index - 1]

    def far_exec(self, *cmd: str) -> list[str]:
        """A command line that runs `cmd` in the far namespace."""
        return ["ip", "netns", "exec", self.far, *cmd]

    def near_exec(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.near, *cmd]

    def cut(self, index: int) -> float:
        """Silently cut pair `index`: the far end drops all it receives and sends on it.

        Returns the wall-clock time (time.time()) at which the drop was in force.
        """
        far_if = self[index].far_if
        script = (
            f"table inet vtfcut{index} {{\n"
            f' chain input {{ type filter hook input priority -10; iifname "{far_if}" drop; }}\n'
            f' chain output {{ type filter hook output priority -10; oifname "{far_if}" drop; }}\n'
            "}\n"
        )
        _run("ip", "netns", "exec", self.far, "nft", "-f", "-", stdin=script, timeout=10)
        self._cuts.add(index)
        return time.time()

    def repair(self, index: int) -> None:
        if index in self._cuts:
            _run(
                "ip",
                "netns",
                "exec",
                self.far,
                "nft",
                "delete",
                "table",
                "inet",
                f"vtfcut{index}",
                timeout=10,
            )
            self._cuts.discard(index)

    def routes(self, protocol: int = 157) -> RouteSet:
        return route_set(self.near, protocol)


def route_set(ns: str, protocol: int = 157) -> RouteSet:
    """The namespace's IPv4 routes of `protocol` (main table), as (dst, device, metric).

    Text, not JSON: at 200,000 routes `ip -j` output is tens of megabytes. A route through a
    nexthop object prints its resolved device too (`nhid 7 via ... dev t2`), so this reads
    the same whether the agent writes plain routes or nexthop groups; a multipath route
    gives one entry per device.
    """
    out = _run("ip", "-n", ns, "route", "show", "proto", str(protocol), timeout=120)
    found: set[tuple[str, str, int]] = set()
    current: list[str] = []

    def flush() -> None:
        if not current:
            return
        words = " ".join(current).split()
        dst = words[0]
        metric = int(words[words.index("metric") + 1]) if "metric" in words else 0
        for i, w in enumerate(words[:-1]):
            if w == "dev":
                found.add((dst, words[i + 1], metric))

    for line in out.splitlines():
        if line[:1].isspace():
            current.append(line)
            continue
        flush()
        current = [line]
    flush()
    return frozenset(found)


def wait_routes(
    ns: str,
    want: RouteSet,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    protocol: int = 157,
) -> float | None:
    """time.time() when the namespace's routes of `protocol` were exactly `want`; None if not
    within timeout (or once `alive` says the agent is gone). Polls no faster than twice the
    time a dump takes: at 200k routes the dump competes with the agent for the CPU."""
    deadline = time.monotonic() + timeout
    while True:
        t0 = time.monotonic()
        if route_set(ns, protocol) == want:
            return time.time()
        took = time.monotonic() - t0
        if time.monotonic() > deadline or not alive():
            return None
        time.sleep(max(0.02, 2 * took))


def active_standby(
    order: Sequence[Pair],
    prefixes: Iterable[str],
    standbys: int | None = None,
    groups_over: int | None = None,
) -> RouteSet:
    """The agent's routes for carrier-first `order`, active-standby: metric 10 via the carrier,
    100 + rank via each of the first `standbys` standbys (None: every one; the agent's
    `policy.standby_routes`, see agentproc.standby_routes).

    `groups_over`: the agent routes via nexthop groups over this many tunnels in all; it
    keeps min(1 + standbys, that) slots, and a slot with nobody of its own holds the carrier.
    """
    nets = tuple(prefixes)
    ranked = list(order if standbys is None else order[: 1 + standbys])
    if groups_over is not None and order:
        slots = groups_over if standbys is None else min(1 + standbys, groups_over)
        ranked += [order[0]] * (slots - len(ranked))
    out: set[tuple[str, str, int]] = set()
    for rank, p in enumerate(ranked):
        metric = 10 if rank == 0 else 100 + rank - 1
        out |= {(net, p.near_if, metric) for net in nets}
    return frozenset(out)


def via(pair: Pair, metric: int, prefixes: Iterable[str]) -> RouteSet:
    """Routes to prefixes through one stand-in (what the agent installs for learned ones)."""
    return frozenset((net, pair.near_if, metric) for net in prefixes)


def agent_config(
    pairs: Sequence[Pair],
    statics: Sequence[str],
    *,
    interval_s: float = 0.2,
    timeout_s: float = 0.5,
    fall: int = 5,
    bgp_workdir: Path | None = None,
    exabgp: str = "exabgp",
    hold_time_s: int = 9,
) -> str:
    """An agent config over the stand-ins, as a new user writes one: kind gre, sources
    [probe, link], tun<i> at priority i, the static remote prefixes, not dry-run.

    With bgp_workdir: BGP to AS 65002 over every tunnel (ExaBGP supervised by the agent) and
    learned_from_bgp. Three choices keep cycles short and the measure on routes:
    link_control none (a veth set admin-down also makes the kernel flush its routes),
    dampening off (repeated cuts would suppress tun1), a 2 s preempt hold-down.
    """
    lines = ["agent_id: standins", "tunnels:"]
    for p in pairs:
        lines.append(
            f"  - {{name: {p.name}, interface: {p.near_if}, kind: gre, priority: {p.index}, "
            "underlay: {local: 192.0.2.1, remote: 192.0.2.2}, "
            f"inner: {{local: {p.local}/30, peer: {p.peer}}}, sources: [probe, link], "
            f"probe: {{kind: icmp, interval_s: {interval_s}, timeout_s: {timeout_s}}}}}"
        )
    lines += ["remote_prefixes:", "  static:", *(f"    - {net}" for net in statics)]
    if bgp_workdir is not None:
        lines += [
            "  learned_from_bgp: true",
            # The prefixes run sends up to 100,000 per neighbor: past the default limit.
            "  import: {max_prefixes: null}",
            "bgp: {local_as: 65001, peer_as: 65002, router_id: 10.1.0.1, "
            f"hold_time_s: {hold_time_s}}}",
            f"exabgp: {{mode: supervise, executable: {exabgp}, workdir: {bgp_workdir}, "
            "ack_timeout_s: 30}",
        ]
    lines += [
        "policy:",
        f"  fall: {fall}",
        "  link_control: none",
        "  preempt_hold_down_s: 2",
        "  dampening: {enabled: false}",
    ]
    return "\n".join(lines) + "\n"


def _macs(ns: str) -> dict[str, str]:
    links = json.loads(_run("ip", "-n", ns, "-j", "link", "show"))
    return {link["ifname"]: link["address"] for link in links}


@contextlib.contextmanager
def stand_ins(n: int, prefix: str = "vtfs") -> Iterator[StandIns]:
    """Two fresh namespaces with n answering pairs; both deleted afterwards (also on error).

    IPv6 is off in both: 2,000 links doing duplicate address detection and router
    solicitations would be traffic the agent never asked for.
    """
    if not 1 <= n <= BASE.num_addresses // 4:
        raise ValueError(f"{n} stand-ins: 1 to {BASE.num_addresses // 4}")
    tag = uuid.uuid4().hex[:6]
    near, far = f"{prefix}a-{tag}", f"{prefix}b-{tag}"
    made: list[str] = []
    try:
        for ns in (near, far):
            _run("ip", "netns", "add", ns)
            made.append(ns)
            _run(
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            )
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        pairs = tuple(Pair(i) for i in range(1, n + 1))
        _batch(
            near,
            (f"link add {p.near_if} type veth peer name {p.far_if} netns {far}" for p in pairs),
        )
        _batch(
            near,
            (
                line
                for p in pairs
                for line in (f"addr add {p.local}/30 dev {p.near_if}", f"link set {p.near_if} up")
            ),
        )
        _batch(
            far,
            (
                line
                for p in pairs
                for line in (f"addr add {p.peer}/30 dev {p.far_if}", f"link set {p.far_if} up")
            ),
        )
        near_macs, far_macs = _macs(near), _macs(far)
        _batch(
            near,
            (
                f"neigh replace {p.peer} lladdr {far_macs[p.far_if]} dev {p.near_if} nud permanent"
                for p in pairs
            ),
        )
        _batch(
            far,
            (
                f"neigh replace {p.local} lladdr {near_macs[p.near_if]} dev {p.far_if} "
                "nud permanent"
                for p in pairs
            ),
        )
        lab = StandIns(near, far, pairs)
        for p in {pairs[0], pairs[-1]}:
            deadline = time.monotonic() + 10
            while (
                subprocess.run(
                    lab.near_exec("ping", "-c1", "-W1", "-n", str(p.peer)),
                    capture_output=True,
                    check=False,
                ).returncode
                != 0
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"stand-in {p.index}: {p.peer} never answered")
                time.sleep(0.1)
        yield lab
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
