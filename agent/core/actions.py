"""Actions: what the core wants done, in the imperative, as frozen values.

Each renders as one line a network engineer can read (dry-run prints exactly that).
Actuators translate them into netlink calls, ExaBGP lines and MQTT messages.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Action",
    "AnnouncePrefix",
    "InstallRoute",
    "NextHop",
    "PublishAlert",
    "PublishTunnelState",
    "RemoveNexthopGroup",
    "RemoveRoute",
    "Route",
    "SetLinkDown",
    "SetLinkUp",
    "SetNexthopGroup",
    "SweepRoutes",
    "WithdrawPrefix",
]


@dataclass(frozen=True, order=True)
class NextHop:
    interface: str
    gateway: str | None = None

    def __str__(self) -> str:
        return (
            f"via {self.gateway} dev {self.interface}" if self.gateway else f"dev {self.interface}"
        )


@dataclass(frozen=True, order=True)
class Route:
    """A route the agent owns; (prefix, table, metric) is its identity in the kernel.

    It goes either via its own next hops or, with `group` (not 0), via the nexthop group
    of that number: moving a group moves every route on it at once.
    """

    prefix: str
    table: int
    metric: int
    nexthops: tuple[NextHop, ...]
    group: int = 0

    def __str__(self) -> str:
        hops = " ".join(str(h) for h in self.nexthops)
        if len(self.nexthops) > 1:
            hops = " ".join(f"nexthop {h}" for h in self.nexthops)
        if self.group:
            hops = f"group {self.group}"
        table = "" if self.table == 254 else f" table {self.table}"
        return f"{self.prefix} {hops} metric {self.metric}{table}"


@dataclass(frozen=True)
class Action:
    pass


@dataclass(frozen=True)
class SetLinkUp(Action):
    interface: str
    tunnel: str

    def __str__(self) -> str:
        return f"set link {self.interface} up  ({self.tunnel})"


@dataclass(frozen=True)
class SetLinkDown(Action):
    interface: str
    tunnel: str

    def __str__(self) -> str:
        return f"set link {self.interface} down  ({self.tunnel})"


@dataclass(frozen=True)
class SetNexthopGroup(Action):
    """Point nexthop group `group` (of IP version `version`) at these next hops.

    Every route on the group follows in one write; a group is set before any route that
    uses it and removed only after the last of them.
    """

    group: int
    version: int
    nexthops: tuple[NextHop, ...]

    def __str__(self) -> str:
        hops = " ".join(str(h) for h in self.nexthops)
        return f"set nexthop group {self.group} (ipv{self.version}) {hops}"


@dataclass(frozen=True)
class RemoveNexthopGroup(Action):
    group: int

    def __str__(self) -> str:
        return f"remove nexthop group {self.group}"


@dataclass(frozen=True)
class InstallRoute(Action):
    """Install the route, replacing any route of the same (prefix, table, metric).

    The kernel keeps one route per identity, so moving a prefix from one next hop to
    another is a single atomic replace; the core then emits no RemoveRoute for that identity.
    """

    route: Route

    def __str__(self) -> str:
        return f"install route {self.route}"


@dataclass(frozen=True)
class RemoveRoute(Action):
    """Remove the route of this (prefix, table, metric): no route of that identity is wanted."""

    route: Route

    def __str__(self) -> str:
        return f"remove route {self.route}"


@dataclass(frozen=True)
class SweepRoutes(Action):
    """Every route of this family the core wants has now been asked for: remove any other
    route of ours (left by a previous run for a prefix nobody announces any more)."""

    family: str

    def __str__(self) -> str:
        return f"sweep {self.family} routes of ours that are no longer wanted"


@dataclass(frozen=True)
class AnnouncePrefix(Action):
    """Announce (or re-announce with new attributes) a site prefix to one neighbor."""

    neighbor: str
    tunnel: str
    prefix: str
    med: int
    as_path_prepend: int = 0
    communities: tuple[str, ...] = ()
    # None: next-hop self. An address: a prefix of the other family than the session's
    # (MP-BGP), sent with this next hop on the tunnel (the tunnel's inner6).
    next_hop: str | None = None

    def __str__(self) -> str:
        extra = f" prepend {self.as_path_prepend}" if self.as_path_prepend else ""
        if self.communities:
            extra += f" community [{' '.join(self.communities)}]"
        if self.next_hop is not None:
            extra += f" next-hop {self.next_hop}"
        return f"announce {self.prefix} to {self.neighbor} ({self.tunnel}) med {self.med}{extra}"


@dataclass(frozen=True)
class WithdrawPrefix(Action):
    neighbor: str
    tunnel: str
    prefix: str
    next_hop: str | None = None  # as announced (see AnnouncePrefix)

    def __str__(self) -> str:
        return f"withdraw {self.prefix} from {self.neighbor} ({self.tunnel})"


@dataclass(frozen=True)
class PublishAlert(Action):
    """One operator-facing event.

    Decisions (failover, failback, degraded, both-down, recovered) name the tunnels traffic
    left and went to. A BGP session's change (bgp-session-lost, bgp-session-restored) names
    its tunnel and neighbor; a component's (component-lost, component-restored,
    component-restarted) names the component.
    """

    kind: str
    at: float
    from_tunnels: tuple[str, ...]
    to_tunnels: tuple[str, ...]
    reason: str
    # Seconds from the first sign of trouble (or of recovery) to this decision.
    detected_after_s: float | None = None
    tunnel: str = ""
    neighbor: str = ""
    component: str = ""
    # For a session or component that is back: how long it had been gone.
    down_for_s: float | None = None

    def __str__(self) -> str:
        took = "" if self.detected_after_s is None else f" after {self.detected_after_s:.3f}s"
        gone = "" if self.down_for_s is None else f", down {self.down_for_s:.3f}s"
        if self.component:
            return f"alert {self.kind}: {self.component} ({self.reason}{gone})"
        if self.neighbor:
            what = f"{self.tunnel} neighbor {self.neighbor}"
            return f"alert {self.kind}: {what} ({self.reason}{gone}){took}"
        src = ",".join(self.from_tunnels) or "-"
        dst = ",".join(self.to_tunnels) or "-"
        return f"alert {self.kind}: {src} -> {dst} ({self.reason}){took}"


@dataclass(frozen=True)
class PublishTunnelState(Action):
    """The tunnel's summary changed: publish it (retained) for dashboards."""

    tunnel: str
    health: str
    sa: str
    carrying: bool
    announced: bool
    metric: int | None
    since: float
    reason: str
    loss: str = ""
    rtt_ms: float | None = None
    # The BGP session over the tunnel: "up" or "down"; None without BGP.
    bgp: str | None = None
    # Learned prefixes the import policy refused since the agent started: (reason, count).
    learned_rejected: tuple[tuple[str, int], ...] = ()

    def __str__(self) -> str:
        role = "carrying" if self.carrying else ("standby" if self.metric is not None else "idle")
        return f"state {self.tunnel}: {self.health} sa={self.sa} {role} ({self.reason})"
