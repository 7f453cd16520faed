"""Two sites in namespaces: A runs the whole agent (core, netlink, ExaBGP), B a real BIRD2.

Two veth pairs stand in for the two tunnels (this kernel has no VTI): vti1/vti2 in A,
b1/b2 in B, 169.254.N.1 <-> 169.254.N.2. BIRD announces site B's prefixes over both
sessions and imports whatever A announces. SA liveness comes from `ScriptedSa`, a small
source the caller drives: the trigger under test is the SA event itself, not how VICI or
the kernel reports it (those sources have their own tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.adapters.exabgp import ExaBgpAdapter
from agent.adapters.links import LinkSource
from agent.adapters.netlink import DEFAULT_ROUTE_PROTOCOL, NetlinkActuator
from agent.config import Config, parse_config
from agent.core.events import ChildSaDown, ChildSaUp
from agent.ports import Actuator, Emit
from agent.runtime import Adapters, Runtime
from tests.support.bird import Bird, bird, site_b_config
from tests.support.netns_links import routes
from tests.support.system import netns, run

__all__ = [
    "EXABGP",
    "REMOTE4",
    "REMOTE6",
    "SITE",
    "SITE6",
    "STATIC",
    "Agent",
    "ScriptedSa",
    "Sites",
    "agent_config",
    "bird_config",
    "foreign_routes",
    "kernel_routes",
    "running_agent",
    "site_b_bird",
    "two_sites",
]

EXABGP = str(Path(sys.executable).with_name("exabgp"))
PROTO = str(DEFAULT_ROUTE_PROTOCOL)
SITE = "10.1.0.0/24"  # site A, announced by the agent
SITE6 = "2001:db8:a::/48"  # site A's IPv6 LAN, announced over the IPv4 sessions (dual stack)
REMOTE4 = "10.2.0.0/24"  # site B, announced by BIRD
REMOTE6 = "2001:db8:b::/48"  # site B, announced by BIRD (IPv6 NLRI over the IPv4 session)
STATIC = "10.9.0.0/24"  # site B, configured as a static remote prefix
HOLD_TIME_S = 9


@dataclass(frozen=True)
class Sites:
    a: str
    b: str

    @staticmethod
    def local(n: int) -> str:
        return f"169.254.{n}.1"

    @staticmethod
    def peer(n: int) -> str:
        return f"169.254.{n}.2"


@contextlib.contextmanager
def two_sites(prefix: str = "vtfi") -> Iterator[Sites]:
    with netns(f"{prefix}a") as a, netns(f"{prefix}b") as b:
        for n in (1, 2):
            run("ip", "-n", a, "link", "add", f"vti{n}", "type", "veth", "peer", "name", f"b{n}")
            run("ip", "-n", a, "link", "set", f"b{n}", "netns", b)
            run("ip", "-n", a, "addr", "add", f"{Sites.local(n)}/30", "dev", f"vti{n}")
            run("ip", "-n", b, "addr", "add", f"{Sites.peer(n)}/30", "dev", f"b{n}")
            # BIRD needs an IPv6 next hop of its own to send IPv6 prefixes over IPv4.
            run("ip", "-n", a, "addr", "add", f"2001:db8:ff:{n}::1/64", "dev", f"vti{n}", "nodad")
            run("ip", "-n", b, "addr", "add", f"2001:db8:ff:{n}::2/64", "dev", f"b{n}", "nodad")
            run("ip", "-n", a, "link", "set", f"vti{n}", "up")
            run("ip", "-n", b, "link", "set", f"b{n}", "up")
        yield Sites(a, b)


def bird_config() -> str:
    """Site B (AS 65002): announces REMOTE4 and REMOTE6 on both sessions, imports all."""
    return site_b_config(REMOTE4, REMOTE6, Sites.peer, Sites.local)


@contextlib.contextmanager
def site_b_bird(sites: Sites, workdir: Path) -> Iterator[Bird]:
    with bird(sites.b, bird_config(), workdir) as b:
        yield b


def agent_config(
    sites: Sites,
    workdir: Path,
    *,
    hold_down_s: float = 3.0,
    dampening: bool = True,
    static: tuple[str, ...] = (STATIC,),
    nexthop_groups: bool = False,
    dual_stack: bool = False,
) -> Config:
    """Active-standby over vti1 (primary) and vti2, SA + link liveness, learned routes on.

    Per-route writes unless `nexthop_groups` says otherwise, whatever this kernel has.
    `dual_stack`: each tunnel has an inner6 (its 2001:db8:ff:N::/64) and site A also
    announces SITE6, over the same IPv4 sessions.
    """
    statics = ", ".join(static)
    tunnels = "".join(
        f"""
  - name: tun{n}
    interface: vti{n}
    kind: vti
    key: {n}
    role: {"primary" if n == 1 else "backup"}
    underlay: {{local: 192.0.2.{n}, remote: 198.51.100.{n}}}
    inner: {{local: {Sites.local(n)}/30, peer: {Sites.peer(n)}}}
    {f'inner6: {{local: "2001:db8:ff:{n}::1/64", peer: "2001:db8:ff:{n}::2"}}' * dual_stack}
    sources: [xfrm, link]
"""
        for n in (1, 2)
    )
    site = f"{SITE}, {SITE6}" if dual_stack else SITE
    text = f"""
agent_id: site-a
tunnels:{tunnels}
site_prefixes: [{site}]
remote_prefixes:
  static: [{statics}]
  learned_from_bgp: true
bgp:
  local_as: 65001
  peer_as: 65002
  router_id: 10.1.0.1
  hold_time_s: {HOLD_TIME_S}
  active: {{med: 100}}
  standby: {{med: 200, as_path_prepend: 2}}
exabgp:
  mode: supervise
  executable: ip netns exec {sites.a} {EXABGP}
  workdir: {workdir}
  ack_timeout_s: 5
policy:
  mode: active-standby
  preempt: true
  preempt_hold_down_s: {hold_down_s}
  # A veth passes our admin-down to the far end as lost carrier, which a VTI never does:
  # BIRD would then drop the session and hide whether we withdrew. Routes and BGP only.
  link_control: none
  dampening: {{enabled: {"true" if dampening else "false"}}}
netlink: {{nexthop_groups: {str(nexthop_groups).lower()}}}
"""
    return parse_config(text)


class ScriptedSa:
    """An SA source the test drives: both SAs up at start, then ChildSaDown/Up on request."""

    name = "xfrm"

    def __init__(self, tunnels: tuple[str, ...]) -> None:
        self.tunnels = tunnels
        self._emit: Emit | None = None
        self.ready = asyncio.Event()

    async def run(self, emit: Emit) -> None:
        self._emit = emit
        for t in self.tunnels:
            emit(ChildSaUp(at=time.monotonic(), tunnel=t, source="xfrm"))
        self.ready.set()
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            self._emit = None

    def down(self, tunnel: str) -> float:
        """Put ChildSaDown on the agent's queue; returns when (monotonic) it was enqueued."""
        assert self._emit is not None, "the agent is not running"
        at = time.monotonic()
        self._emit(ChildSaDown(at=at, tunnel=tunnel, source="xfrm", reason="scripted"))
        return at

    def up(self, tunnel: str) -> float:
        assert self._emit is not None, "the agent is not running"
        at = time.monotonic()
        self._emit(ChildSaUp(at=at, tunnel=tunnel, source="xfrm"))
        return at


@dataclass
class Agent:
    runtime: Runtime
    sa: ScriptedSa
    exabgp: ExaBgpAdapter
    netlink: NetlinkActuator


Wrap = Callable[[Actuator], Actuator]


@contextlib.asynccontextmanager
async def running_agent(
    sites: Sites,
    cfg: Config,
    *,
    wrap_netlink: Wrap | None = None,
    wrap_exabgp: Wrap | None = None,
    extra: Sequence[Actuator] = (),
) -> AsyncIterator[Agent]:
    """The real Runtime in this process, acting in site A's namespace; stopped on exit.

    `wrap_*` (benchmarks) wrap an actuator to time its apply(); the ExaBGP object stays
    the source as it is. `extra` actuators (a metrics exporter) see every action too.
    """
    made: list[tuple[ScriptedSa, ExaBgpAdapter, NetlinkActuator]] = []

    def build(c: Config) -> Adapters:
        sa = ScriptedSa(tuple(t.name for t in c.tunnels))
        links = LinkSource({t.name: t.interface for t in c.tunnels}, netns=sites.a)
        nl = NetlinkActuator(
            route_protocol=c.netlink.route_protocol,
            resync_interval_s=c.netlink.resync_interval_s,
            netns=sites.a,
        )
        exa = ExaBgpAdapter(c)
        actuators: list[Actuator] = [
            wrap_netlink(nl) if wrap_netlink else nl,
            wrap_exabgp(exa) if wrap_exabgp else exa,
            *extra,
        ]
        made.append((sa, exa, nl))
        return Adapters(sources=[sa, links, exa], actuators=actuators)

    rt = Runtime(cfg, build)
    sa, exa, nl = made[0]
    agent = Agent(runtime=rt, sa=sa, exabgp=exa, netlink=nl)
    task = asyncio.create_task(rt.run(), name=f"agent-{uuid.uuid4().hex[:6]}")
    try:
        async with asyncio.timeout(10):
            await agent.sa.ready.wait()
        yield agent
    finally:
        rt.stop()
        status = await asyncio.wait_for(task, 20)
        assert status == 0, f"agent exited with status {status}"


def kernel_routes(ns: str) -> list[tuple[str, str, int]]:
    """The agent's routes in the namespace (its protocol id), as (prefix, device, metric)."""
    got = routes(ns, "proto", PROTO) + routes(ns, "proto", PROTO, family="-6")
    return sorted((r["dst"], _devices(r), r["metric"]) for r in got)


def _devices(route: dict[str, Any]) -> str:
    """The route's device; several (an ECMP route or group) joined by commas."""
    if "dev" in route:
        return str(route["dev"])
    return ",".join(sorted(str(h.get("dev", "?")) for h in route.get("nexthops", []))) or "-"


def foreign_routes(ns: str) -> list[tuple[str, str, int]]:
    got = routes(ns, "proto", "boot")
    return sorted((r["dst"], r["dev"], r["metric"]) for r in got)
