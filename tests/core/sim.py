"""A fake clock and a config builder that drive the pure core like the runtime does."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from agent.config import Config
from agent.core import actions as act
from agent.core import engine
from agent.core import events as ev
from agent.core.health import Health


def tunnel(n: int, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": f"tun{n}",
        "interface": f"vti{n}",
        "kind": "vti",
        "underlay": {"local": f"192.0.2.{n}", "remote": f"198.51.100.{n}"},
        "key": n,
        "ike": {"connection": f"tun{n}", "child": f"tun{n}"},
        "inner": {"local": f"169.254.{n}.1/30", "peer": f"169.254.{n}.2"},
        "role": "primary" if n == 1 else "backup",
        "sources": ["vici", "probe", "link"],
    }
    base.update(over)
    return base


def make_config(
    n_tunnels: int = 2,
    *,
    tunnels: list[dict[str, Any]] | None = None,
    bgp: bool = True,
    learned: bool = True,
    groups: bool = False,
    imports: dict[str, Any] | None = None,
    **policy: Any,
) -> Config:
    """Two VTIs (tun1 primary, tun2 backup) with short windows, overridable per test."""
    pol: dict[str, Any] = {
        "rise": 3,
        "fall": 3,
        "loss_window": 10,
        "loss_down": 6,
        "loss_degraded": 3,
        "rtt_degraded_ms": 250,
        # One sample decides, so a test shows RTT degradation with one slow answer.
        "rtt_samples": 1,
        "preempt_hold_down_s": 30,
        "probation_after_s": 10,
    }
    pol.update(policy)
    tunnels = tunnels if tunnels is not None else [tunnel(i + 1) for i in range(n_tunnels)]
    # The IPv6 site prefix only where an IPv6 session can announce it (a config check).
    site = ["10.1.0.0/24"]
    if any(":" in str(t.get("bgp_neighbor", "")) for t in tunnels):
        site.append("2001:db8:a::/48")
    raw: dict[str, Any] = {
        "agent_id": "site-a",
        "tunnels": tunnels,
        "site_prefixes": site,
        "remote_prefixes": {
            "static": ["10.2.0.0/24"],
            "learned_from_bgp": bgp and learned,
            "import": imports or {},
        },
        "policy": pol,
        "netlink": {"nexthop_groups": groups},
    }
    if bgp:
        raw["bgp"] = {
            "local_as": 65001,
            "peer_as": 65002,
            "router_id": "10.1.0.1",
            "active": {"med": 100},
            "standby": {"med": 200, "as_path_prepend": 2},
        }
    return Config.model_validate(raw)


@dataclass
class Sim:
    """The core plus a clock; `log` keeps every action, `last` those of the latest step."""

    cfg: Config
    now: float = 0.0
    state: engine.CoreState = field(init=False)
    log: list[tuple[float, act.Action]] = field(default_factory=list)
    last: list[act.Action] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state = engine.initial_state(self.cfg, self.now)

    def step(self, event: ev.Event, at: float | None = None) -> list[act.Action]:
        """Fire due timers up to `at` (like the runtime), then apply the event."""
        if at is not None:
            self.advance(at)
        self.state, self.last = engine.step(self.state, event, self.now)
        self.log += [(self.now, a) for a in self.last]
        return self.last

    def advance(self, to: float) -> list[act.Action]:
        fired: list[act.Action] = []
        while (deadline := engine.next_deadline(self.state, self.now)) is not None and (
            deadline <= to
        ):
            self.now = deadline
            fired += self.step(ev.TimerFired(at=deadline))
        self.now = max(self.now, to)
        return fired

    def reconfigure(self, cfg: Config) -> list[act.Action]:
        self.cfg = cfg
        self.state, self.last = engine.reconfigure(self.state, cfg, self.now)
        self.log += [(self.now, a) for a in self.last]
        return self.last

    def health(self, name: str) -> Health:
        return self.state.health[name].state

    def probes(
        self, name: str, n: int, *, ok: bool = True, rtt: float = 5.0, every: float = 0.2
    ) -> None:
        for _ in range(n):
            self.now += every
            self.advance(self.now)
            if ok:
                self.step(ev.ProbeSucceeded(tunnel=name, rtt_ms=rtt, at=self.now))
            else:
                self.step(ev.ProbeLost(tunnel=name, at=self.now))

    def bring_up(self, names: Iterable[str] = ("tun1", "tun2")) -> None:
        """SA up and `rise` answered probes for each tunnel: the usual start."""
        names = tuple(names)
        for name in names:
            self.step(ev.ChildSaUp(tunnel=name, at=self.now))
        for _ in range(self.cfg.policy.rise):
            self.now += 0.2
            for name in names:
                self.step(ev.ProbeSucceeded(tunnel=name, rtt_ms=5.0, at=self.now))
        if self.cfg.bgp is not None and self.cfg.remote_prefixes.learned_from_bgp:
            # The sessions come up and each neighbor sends its table, then End-of-RIB.
            for name in names:
                for family in ("ipv4", "ipv6"):
                    self.step(ev.BgpEndOfRib(tunnel=name, family=family, at=self.now))

    def of(self, kind: type[act.Action]) -> list[Any]:
        return [a for a in self.last if isinstance(a, kind)]

    def alerts(self) -> list[act.PublishAlert]:
        return [a for _, a in self.log if isinstance(a, act.PublishAlert)]

    def routing(self) -> list[act.Action]:
        """The last step's actions that change links, routes or announcements."""
        return [
            a for a in self.last if not isinstance(a, act.PublishAlert | act.PublishTunnelState)
        ]

    def carrier_routes(self) -> dict[str, set[str]]:
        """prefix -> interfaces of the lowest-metric route the core asked for."""
        best: dict[str, tuple[int, set[str]]] = {}
        groups = self.state.asked.groups
        for r in self.state.asked.routes:
            cur = best.get(r.prefix)
            hops = groups[r.group][1] if r.group else r.nexthops
            if cur is None or r.metric < cur[0]:
                best[r.prefix] = (r.metric, {h.interface for h in hops})
        return {p: ifs for p, (_, ifs) in best.items()}


@dataclass
class FakeRouter:
    """The kernel FIB and the BGP peers as an actuator would leave them, action by action.

    Routes are keyed by (prefix, table, metric) as in the kernel, InstallRoute replaces,
    and a link set down loses its routes, as Linux does; it loses its nexthops too, and a
    nexthop group left empty takes its routes with it.
    """

    links: dict[str, bool] = field(default_factory=dict)
    routes: dict[tuple[str, int, int], act.Route] = field(default_factory=dict)
    groups: dict[int, tuple[act.NextHop, ...]] = field(default_factory=dict)
    adj_out: dict[tuple[str, str], act.AnnouncePrefix] = field(default_factory=dict)

    def apply(self, a: act.Action) -> None:
        match a:
            case act.SetLinkUp(interface=i):
                self.links[i] = True
            case act.SetLinkDown(interface=i):
                self.links[i] = False
                self.flush_nexthops(i)
                self.routes = {
                    k: r
                    for k, r in self.routes.items()
                    if all(h.interface != i for h in r.nexthops)
                }
            case act.SetNexthopGroup(group=g, nexthops=hops):
                self.groups[g] = hops
            case act.RemoveNexthopGroup(group=g):
                assert not any(r.group == g for r in self.routes.values()), "group in use"
                del self.groups[g]
            case act.InstallRoute(route=r):
                assert not r.group or r.group in self.groups, "route before its group"
                self.routes[(r.prefix, r.table, r.metric)] = r
            case act.RemoveRoute(route=r):
                self.routes.pop((r.prefix, r.table, r.metric), None)
            case act.AnnouncePrefix(neighbor=n, prefix=p):
                self.adj_out[(n, p)] = a
            case act.WithdrawPrefix(neighbor=n, prefix=p):
                self.adj_out.pop((n, p), None)
            case _:
                pass

    def flush_nexthops(self, interface: str) -> None:
        """The device went down or lost its carrier: its nexthops go, and empty groups with
        every route on them."""
        self.groups = {
            g: kept
            for g, hops in self.groups.items()
            if (kept := tuple(h for h in hops if h.interface != interface))
        }
        self.routes = {
            k: r for k, r in self.routes.items() if not r.group or r.group in self.groups
        }

    def via(self, prefix: str) -> set[str]:
        """Interfaces the best (lowest-metric) route to prefix uses, if their links are up."""
        found = [r for r in self.routes.values() if r.prefix == prefix]
        if not found:
            return set()
        best = min(found, key=lambda r: r.metric)
        hops = self.groups[best.group] if best.group else best.nexthops
        return {h.interface for h in hops if self.links.get(h.interface, True)}

    def best_announcer(self, prefix: str) -> str | None:
        """The tunnel the peer would prefer for our prefix (lowest MED, shortest path)."""
        ads = [a for (_, p), a in self.adj_out.items() if p == prefix]
        if not ads:
            return None
        return min(ads, key=lambda a: (a.as_path_prepend, a.med)).tunnel
