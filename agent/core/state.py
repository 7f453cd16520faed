"""The core's whole state: one frozen value, replaced by every step."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.config import Config
from agent.core import actions as act
from agent.core import dampening as damp
from agent.core import health as hl
from agent.core import imports as imp
from agent.core.index import CoreIndex
from agent.core.routing import Desired, Roles

__all__ = ["CoreState"]


@dataclass(frozen=True)
class CoreState:
    cfg: Config
    ix: CoreIndex
    started_at: float
    settle_by: float
    settled: bool = False
    # When the first decision was made (meaningful once settled): a tunnel usable since
    # then counts as proven (policy.proven_at).
    settled_at: float = 0.0
    health: Mapping[str, hl.TunnelHealth] = field(default_factory=dict)
    damping: Mapping[str, damp.DampState] = field(default_factory=dict)
    # When each tunnel last became usable (eligible and not suppressed).
    usable_since: Mapping[str, float] = field(default_factory=dict)
    carriers: tuple[str, ...] = ()
    # Every tunnel standing by (routed or only announced), best first.
    standbys: tuple[str, ...] = ()
    both_down: bool = False
    # What each neighbor taught that the import policy let in, and what it refused.
    learned: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # Per tunnel, learned prefixes kept while our BGP speaker restarts, and until when
    # (see stale.py): not yet announced again by the new session.
    stale_learned: Mapping[str, tuple[float, frozenset[str]]] = field(default_factory=dict)
    imports: Mapping[str, imp.Ledger] = field(default_factory=dict)
    # What the core last asked the actuators for: the base of every diff.
    asked: Desired = field(default_factory=Desired)
    # The roles asked.by_prefix was built for (None: rebuild it), and those of
    # asked.announcements: what lets a decision that moves nothing skip the tables.
    routes_for: Roles | None = None
    announced_for: Roles | None = None
    reported: Mapping[str, act.PublishTunnelState] = field(default_factory=dict)
    # Routes left by a previous run are swept once the desired set is complete: per family
    # when every BGP neighbor sent End-of-RIB for it, or at sweep_by at the latest.
    sweep_by: float = 0.0
    end_of_rib: Mapping[str, frozenset[str]] = field(default_factory=dict)
    swept: frozenset[str] = frozenset()
    # Every deadline known at the last decision (sorted) and when that decision was made:
    # until the first deadline after it, an event that changes no verdict changes nothing.
    deadlines: tuple[float, ...] = ()
    decided_at: float = 0.0
    # When each tunnel's BGP session was lost, while it stays lost: a session is "lost"
    # only once it had been up, and "restored" only after it was lost.
    bgp_lost_at: Mapping[str, float] = field(default_factory=dict)
    # Components (sources, the supervised exabgp) lost and not yet back, with since when.
    components_lost: Mapping[str, float] = field(default_factory=dict)
    # The alert of the last decision that moved traffic (failover, failback, both-down,
    # recovered): what `status` shows as the last move and why, long after the alert went.
    last_move: act.PublishAlert | None = None
