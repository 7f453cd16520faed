"""Events: what the world told the agent, in the past tense, as frozen values.

Adapters create these; only the core interprets them. `at` is when the adapter observed
the fact (monotonic seconds), so the core can say how long acting took.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "AdminDisabled",
    "AdminEnabled",
    "BgpEndOfRib",
    "BgpNeighborDown",
    "BgpNeighborUp",
    "BgpRouteLearned",
    "BgpRouteWithdrawn",
    "BgpRoutesChanged",
    "ChildSaDown",
    "ChildSaRekeyed",
    "ChildSaUp",
    "ComponentRestarted",
    "Event",
    "InboundTrafficSeen",
    "LinkChanged",
    "ProbeLost",
    "ProbeSucceeded",
    "ReportIntervalElapsed",
    "SourceLost",
    "SourceRecovered",
    "TimerFired",
]


@dataclass(frozen=True, kw_only=True)
class Event:
    at: float = 0.0


@dataclass(frozen=True, kw_only=True)
class ChildSaUp(Event):
    """An SA for the tunnel is installed (VICI child-updown up, or kernel XFRM SA added)."""

    tunnel: str
    source: str = "vici"


@dataclass(frozen=True, kw_only=True)
class ChildSaDown(Event):
    """The tunnel's last SA is gone: deleted, expired or its IKE SA died."""

    tunnel: str
    source: str = "vici"
    reason: str = "child-sa-down"


@dataclass(frozen=True, kw_only=True)
class ChildSaRekeyed(Event):
    """A new SA replaced the old one; the tunnel never lost its SA."""

    tunnel: str
    source: str = "vici"


@dataclass(frozen=True, kw_only=True)
class ProbeSucceeded(Event):
    tunnel: str
    rtt_ms: float


@dataclass(frozen=True, kw_only=True)
class ProbeLost(Event):
    tunnel: str


@dataclass(frozen=True, kw_only=True)
class InboundTrafficSeen(Event):
    """The tunnel's inbound SA counters grew: the far end is sending through it."""

    tunnel: str
    packets: int


@dataclass(frozen=True, kw_only=True)
class LinkChanged(Event):
    """The tunnel interface's netlink state; present=False when it vanished."""

    tunnel: str
    present: bool
    admin_up: bool
    oper_up: bool


@dataclass(frozen=True, kw_only=True)
class BgpNeighborUp(Event):
    tunnel: str


@dataclass(frozen=True, kw_only=True)
class BgpNeighborDown(Event):
    """The session with the tunnel's neighbor ended; `reason` as ExaBGP gave it.

    `speaker_lost`: it ended because our own BGP speaker (exabgp) went away, not because
    the neighbor or the path did.
    """

    tunnel: str
    reason: str = ""
    speaker_lost: bool = False


@dataclass(frozen=True, kw_only=True)
class BgpRouteLearned(Event):
    """The tunnel's BGP neighbor announced a prefix (a re-announcement replaces it)."""

    tunnel: str
    prefix: str


@dataclass(frozen=True, kw_only=True)
class BgpEndOfRib(Event):
    """The neighbor finished sending its routes of one family ("ipv4" or "ipv6")."""

    tunnel: str
    family: str = "ipv4"


@dataclass(frozen=True, kw_only=True)
class BgpRouteWithdrawn(Event):
    tunnel: str
    prefix: str


@dataclass(frozen=True, kw_only=True)
class BgpRoutesChanged(Event):
    """One UPDATE from the tunnel's neighbor: the prefixes it withdrew, then those it announced.

    A table arrives as thousands of prefixes in a few hundred UPDATEs: one event each keeps
    a burst from costing one step per prefix.
    """

    tunnel: str
    announced: tuple[str, ...] = ()
    withdrawn: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class AdminDisabled(Event):
    """An operator drained the tunnel for maintenance.

    Draining the last tunnel in service is refused unless `force` says it is meant.
    """

    tunnel: str
    reason: str = "admin"
    force: bool = False


@dataclass(frozen=True, kw_only=True)
class AdminEnabled(Event):
    tunnel: str


@dataclass(frozen=True, kw_only=True)
class SourceLost(Event):
    """A liveness source can no longer see (charon gone, netlink socket failed).

    What it said before is now unknown, not down: blindness is not a dead tunnel.
    """

    source: str
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class SourceRecovered(Event):
    source: str


@dataclass(frozen=True, kw_only=True)
class ComponentRestarted(Event):
    """The agent started a component of its own again (a supervised exabgp that exited).

    `reason` says why it had ended and how long the restart waited.
    """

    component: str
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class ReportIntervalElapsed(Event):
    """Time to tell each tunnel's loss and RTT (mqtt.quality_interval_s): they change with
    every probe, so reports carry them only at this pace."""


@dataclass(frozen=True, kw_only=True)
class TimerFired(Event):
    """A deadline the core asked for (hold-down, dampening reuse, probation) has passed."""

    reasons: tuple[str, ...] = field(default=())
