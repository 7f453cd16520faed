"""A site over simulated time: the evidence the adapters would emit for each underlay's history.

Each tunnel's underlay is a function of time (path up or not). From it come what the
sources report in the lab: probes every `probe.interval_s` (answered when the path is up,
lost at their timeout when it is not, lost at once when the agent holds the link down,
as a failed send), the link source echoing the link changes the agent made (a VTI has no
carrier, so a cut underlay changes no link state), charon's DPD (the SA goes after the
path has been dead for DPD's delay plus its retransmits, and comes back once the path
does), and one BGP session per tunnel that drops after `bgp.hold_time_s` without a
keepalive and, when it comes back, resends its table and End-of-RIB. The real core steps
through all of it; every action goes to a FakeRouter, and what traffic sees is recorded.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from agent.config import Config
from agent.core import actions as act
from agent.core import engine
from agent.core import events as ev

from .sim import FakeRouter, Sim

Underlay = Callable[[float], bool]

# The lab's strongSwan: dpd_delay 2 s, then retransmits at 1.0, 1.4, 1.96 and 2.74 s
# (retransmit_timeout 1.0, base 1.4, tries 3) before the peer is declared dead.
DPD_DEAD_AFTER_S = 2.0 + 1.0 + 1.4 + 1.96 + 2.74
ROUTE_CHANGES = (
    act.InstallRoute,
    act.RemoveRoute,
    act.SetNexthopGroup,
    act.RemoveNexthopGroup,
    act.AnnouncePrefix,
    act.WithdrawPrefix,
)


def always_up(_: float) -> bool:
    return True


def flapping(start: float, stop: float, down_s: float = 1.0, up_s: float = 1.0) -> Underlay:
    """Down for down_s, up for up_s, from start until stop; up otherwise."""

    def up(t: float) -> bool:
        return not (start <= t < stop and (t - start) % (down_s + up_s) < down_s)

    return up


def cut(start: float, stop: float) -> Underlay:
    def up(t: float) -> bool:
        return not start <= t < stop

    return up


@dataclass
class _Session:
    established: bool = False
    heard_at: float = 0.0


@dataclass
class World:
    cfg: Config
    underlay: Mapping[str, Underlay]
    # What the far side announces over each tunnel's BGP session.
    announces: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    watch: str = "10.2.0.0/24"
    sim: Sim = field(init=False)
    router: FakeRouter = field(default_factory=FakeRouter)
    # (time, action) for every action, and (time, interfaces) whenever traffic to `watch` moved.
    actions: list[tuple[float, act.Action]] = field(default_factory=list)
    moves: list[tuple[float, frozenset[str]]] = field(default_factory=list)
    # Times at which a tunnel's own BGP session went down.
    sessions_lost: list[tuple[float, str]] = field(default_factory=list)
    # (time, tunnel, suppressed) whenever dampening suppressed a tunnel or released it.
    damped: list[tuple[float, str, bool]] = field(default_factory=list)
    _queue: list[tuple[float, int, Callable[[float], None]]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _sa_up: dict[str, bool] = field(default_factory=dict)
    _dead_since: dict[str, float | None] = field(default_factory=dict)
    _sessions: dict[str, _Session] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sim = Sim(self.cfg)
        for t in self.cfg.tunnels:
            self._sa_up[t.name] = True
            self._dead_since[t.name] = None
            self._sessions[t.name] = _Session()
            self._emit(ev.ChildSaUp(tunnel=t.name, at=0.0), 0.0)
            self._at(t.probe.interval_s, self._prober(t.name))

    # --- the schedule ------------------------------------------------------------------------

    def _at(self, when: float, fn: Callable[[float], None]) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), fn))

    def run(self, until: float) -> None:
        while self._queue and self._queue[0][0] <= until:
            when, _, fn = heapq.heappop(self._queue)
            self._timers(when)
            fn(when)
        self._timers(until)

    def _timers(self, to: float) -> None:
        """The runtime's timer: fire every core deadline due by `to`, in order."""
        while (due := engine.next_deadline(self.sim.state, self.sim.now)) is not None and (
            due <= to
        ):
            self.sim.now = due
            self._apply(due, self.sim.step(ev.TimerFired(at=due)))
        self.sim.now = max(self.sim.now, to)

    def _emit(self, event: ev.Event, when: float) -> None:
        self._timers(when)
        self._apply(when, self.sim.step(event))

    def _later(self, event: ev.Event) -> Callable[[float], None]:
        return lambda t: self._emit(event, t)

    def _apply(self, when: float, actions: Iterable[act.Action]) -> None:
        for a in actions:
            self.router.apply(a)
            self.actions.append((when, a))
            if isinstance(a, act.SetLinkUp | act.SetLinkDown):
                # The link source reports the change a moment later; the core knows its echo.
                up = isinstance(a, act.SetLinkUp)
                event = ev.LinkChanged(
                    tunnel=a.tunnel, present=True, admin_up=up, oper_up=up, at=when + 0.001
                )
                self._at(when + 0.001, self._later(event))
        for name, d in self.sim.state.damping.items():
            now = d.suppressed_since is not None
            if now != next((s for _, n, s in reversed(self.damped) if n == name), False):
                self.damped.append((when, name, now))
        via = frozenset(self.router.via(self.watch))
        if not self.moves or self.moves[-1][1] != via:
            self.moves.append((when, via))

    # --- the sources -------------------------------------------------------------------------

    def _link_up(self, name: str) -> bool:
        return self.router.links.get(self.cfg.tunnel(name).interface, True)

    def _prober(self, name: str) -> Callable[[float], None]:
        probe = self.cfg.tunnel(name).probe

        def send(t: float) -> None:
            self._at(t + probe.interval_s, send)
            self._dpd(name, t)
            self._bgp(name, t)
            if not self._link_up(name):
                self._emit(ev.ProbeLost(tunnel=name, at=t), t)
            elif self.underlay[name](t):
                answer = ev.ProbeSucceeded(tunnel=name, rtt_ms=5.0, at=t)
                self._at(t + 0.005, lambda now: self._emit(answer, now))
            else:
                lost = ev.ProbeLost(tunnel=name, at=t + probe.timeout_s)
                self._at(t + probe.timeout_s, lambda now: self._emit(lost, now))

        return send

    def _dpd(self, name: str, t: float) -> None:
        if self.underlay[name](t):
            self._dead_since[name] = None
            if not self._sa_up[name]:
                # dpd_action = restart: charon sets the tunnel up again once the path answers.
                self._sa_up[name] = True
                self._emit(ev.ChildSaUp(tunnel=name, at=t), t)
            return
        since = self._dead_since[name]
        if since is None:
            self._dead_since[name] = t
        elif self._sa_up[name] and t - since >= DPD_DEAD_AFTER_S:
            self._sa_up[name] = False
            self._emit(ev.ChildSaDown(tunnel=name, at=t), t)

    def _bgp(self, name: str, t: float) -> None:
        assert self.cfg.bgp is not None
        s = self._sessions[name]
        if self.underlay[name](t) and self._link_up(name):
            s.heard_at = t
            if not s.established:
                s.established = True
                self._emit(ev.BgpNeighborUp(tunnel=name, at=t), t)
                announced = self.announces.get(name, ())
                self._emit(ev.BgpRoutesChanged(tunnel=name, announced=announced, at=t), t)
                self._emit(ev.BgpEndOfRib(tunnel=name, family="ipv4", at=t), t)
                self._emit(ev.BgpEndOfRib(tunnel=name, family="ipv6", at=t), t)
        elif s.established and t - s.heard_at >= self.cfg.bgp.hold_time_s:
            s.established = False
            self.sessions_lost.append((t, name))
            self._emit(ev.BgpNeighborDown(tunnel=name, at=t), t)

    # --- what happened -----------------------------------------------------------------------

    def route_changes(self, start: float = 0.0, stop: float = float("inf")) -> int:
        """Route, nexthop group and BGP writes the agent made in [start, stop)."""
        return sum(1 for t, a in self.actions if start <= t < stop and isinstance(a, ROUTE_CHANGES))

    def link_changes(self, interface: str) -> list[tuple[float, act.Action]]:
        return [
            (t, a)
            for t, a in self.actions
            if isinstance(a, act.SetLinkUp | act.SetLinkDown) and a.interface == interface
        ]

    def moves_after(self, start: float) -> list[tuple[float, frozenset[str]]]:
        """Where traffic went, each time it moved after `start`."""
        return [(t, via) for t, via in self.moves if t >= start]
