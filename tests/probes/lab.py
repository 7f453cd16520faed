"""Tunnel stand-ins for probe tests: veth pairs from a near namespace to far ones.

The far kernel answers pings itself; loss is injected with nftables there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from agent.adapters.probes import ProbeSource
from agent.config import Config, ProbeKind, ProbeSettings, Source, Tunnel
from agent.core import engine
from agent.core.events import Event, ProbeLost, ProbeSucceeded
from agent.core.health import Health
from tests.support.system import run, sh_in


@dataclass(frozen=True)
class Link:
    """One veth pair: `near_if` in the near namespace, `far_if` in `far`, both families."""

    near: str
    far: str
    near_if: str
    far_if: str
    index: int

    @property
    def v4_near(self) -> str:
        return f"169.254.{self.index}.1"

    @property
    def v4_far(self) -> str:
        return f"169.254.{self.index}.2"

    @property
    def v6_near(self) -> str:
        return f"fd00:{self.index}::1"

    @property
    def v6_far(self) -> str:
        return f"fd00:{self.index}::2"


def _mac(ns: str, ifname: str) -> str:
    mac: str = json.loads(run("ip", "-n", ns, "-j", "link", "show", "dev", ifname).stdout)[0][
        "address"
    ]
    return mac


def add_link(near: str, far: str, index: int, near_if: str | None = None) -> Link:
    """A veth pair with IPv4 /30 and IPv6 /64 on both ends, reachable before it returns.

    Neighbours are permanent, so the only packets on the wire are the probes (and no
    neighbour discovery can be dropped along with them).
    """
    link = Link(near, far, near_if or f"t{index}", f"p{index}", index)
    run("ip", "-n", near, "link", "add", link.near_if, "type", "veth", "peer", "name",
        link.far_if, "netns", far)  # fmt: skip
    for ns, ifname, v4, v6 in (
        (near, link.near_if, link.v4_near, link.v6_near),
        (far, link.far_if, link.v4_far, link.v6_far),
    ):
        run("ip", "-n", ns, "addr", "add", f"{v4}/30", "dev", ifname)
        run("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", ifname, "nodad")
        run("ip", "-n", ns, "link", "set", ifname, "up")
    for ns, ifname, other_ns, other_if, v4, v6 in (
        (near, link.near_if, far, link.far_if, link.v4_far, link.v6_far),
        (far, link.far_if, near, link.near_if, link.v4_near, link.v6_near),
    ):
        mac = _mac(other_ns, other_if)
        for addr in (v4, v6):
            run("ip", "-n", ns, "neigh", "replace", addr, "lladdr", mac, "dev", ifname,
                "nud", "permanent")  # fmt: skip
    deadline = time.monotonic() + 5.0
    for addr in (link.v4_far, link.v6_far):
        while sh_in(near, "ping", "-c1", "-W1", "-n", addr, check=False).returncode != 0:
            assert time.monotonic() < deadline, f"{addr} never answered"
            time.sleep(0.1)
    return link


# A cut: the far end's input drops every echo request, so its kernel never replies.
# (This kernel has no netem; nftables at the far end does the same job.)
CUT = ("icmp type echo-request counter drop", "icmpv6 type echo-request counter drop")


def nft_dropped(ns: str) -> int:
    """Packets the counters of table probetest saw (rules count what they drop)."""
    out = run("ip", "netns", "exec", ns, "nft", "-j", "list", "table", "inet", "probetest").stdout
    total = 0
    for item in json.loads(out)["nftables"]:
        for expr in item.get("rule", {}).get("expr", []):
            if "counter" in expr:
                total += int(expr["counter"]["packets"])
    return total


@contextlib.contextmanager
def nft(ns: str, *rules: str) -> Iterator[None]:
    """An nftables table `probetest` in ns with an input chain holding rules; removed after."""
    script = "table inet probetest {\n chain input {\n  type filter hook input priority 0;\n"
    script += "".join(f"  {r}\n" for r in rules) + " }\n}\n"
    run_nft(ns, script)
    try:
        yield
    finally:
        sh_in(ns, "nft", "delete", "table", "inet", "probetest", check=False)


def run_nft(ns: str, script: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"],
        input=script,
        text=True,
        check=True,
        capture_output=True,
        timeout=10,
    )


def tunnel(
    name: str,
    interface: str,
    local: str,
    peer: str,
    *,
    interval_s: float = 0.1,
    timeout_s: float = 0.3,
    kind: ProbeKind = ProbeKind.ICMP,
    udp_port: int | None = None,
) -> Tunnel:
    """A probed tunnel (kind gre: no SA settings needed) over a veth stand-in."""
    prefix = 30 if ":" not in local else 64
    return Tunnel(
        name=name,
        interface=interface,
        kind="gre",
        underlay={"local": "192.0.2.1", "remote": "192.0.2.2"},
        inner={"local": f"{local}/{prefix}", "peer": peer},
        sources=(Source.PROBE,),
        probe=ProbeSettings(
            kind=kind, interval_s=interval_s, timeout_s=timeout_s, udp_port=udp_port
        ),
    )


@dataclass
class CoreFeed:
    """The real pure core fed with every event, each transition noted with its times."""

    state: engine.CoreState
    events: list[Event] = field(default_factory=list)
    # (emitted at, event.at, tunnel, new health)
    transitions: list[tuple[float, float, str, Health]] = field(default_factory=list)

    @classmethod
    def of(cls, *tunnels: Tunnel) -> CoreFeed:
        cfg = Config(agent_id="probetest", tunnels=tunnels)
        return cls(engine.initial_state(cfg, time.monotonic()))

    def __call__(self, event: Event) -> None:
        now = time.monotonic()
        self.events.append(event)
        name = str(getattr(event, "tunnel", ""))
        before = self.state.health[name].state if name in self.state.health else None
        self.state, _ = engine.step(self.state, event, now)
        after = self.state.health[name].state if name in self.state.health else None
        if after is not None and after != before:
            self.transitions.append((now, event.at, name, after))

    def health(self, tunnel: str) -> Health:
        return self.state.health[tunnel].state

    def of_tunnel(self, tunnel: str) -> tuple[list[ProbeSucceeded], list[ProbeLost]]:
        ok = [e for e in self.events if isinstance(e, ProbeSucceeded) and e.tunnel == tunnel]
        lost = [e for e in self.events if isinstance(e, ProbeLost) and e.tunnel == tunnel]
        return ok, lost

    async def wait_for(self, tunnel: str, health: Health, within: float) -> float:
        """Wait until the tunnel reaches health; returns the monotonic time it did."""
        deadline = time.monotonic() + within
        while self.health(tunnel) is not health:
            assert time.monotonic() < deadline, (
                f"{tunnel} still {self.health(tunnel)} after {within}s, not {health}"
            )
            await asyncio.sleep(0.01)
        return time.monotonic()


@contextlib.asynccontextmanager
async def running(source: ProbeSource, feed: CoreFeed) -> AsyncIterator[None]:
    task = asyncio.create_task(source.run(feed), name="probe-source")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
