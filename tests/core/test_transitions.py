"""Every health state x every event type: step once, then assert where the tunnel is."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agent.core import events as ev
from agent.core.health import Health

from .sim import Sim, make_config

H = Health


def in_state(state: Health) -> Sim:
    """tun1 in `state`, tun2 UP beside it, reached by events only."""
    sim = Sim(make_config())
    if state is H.INIT:
        sim.bring_up(["tun2"])
        sim.step(ev.ChildSaUp(tunnel="tun1"))
    else:
        sim.bring_up()
    if state is H.DEGRADED:
        sim.probes("tun1", 1, rtt=400.0)
    elif state is H.DOWN:
        sim.probes("tun1", 3, ok=False)
    elif state is H.ADMIN_DOWN:
        sim.step(ev.AdminDisabled(tunnel="tun1"))
    assert sim.health("tun1") is state
    return sim


EVENTS: dict[str, Callable[[], ev.Event]] = {
    "ChildSaUp": lambda: ev.ChildSaUp(tunnel="tun1"),
    "ChildSaDown": lambda: ev.ChildSaDown(tunnel="tun1"),
    "ChildSaRekeyed": lambda: ev.ChildSaRekeyed(tunnel="tun1"),
    "ProbeSucceeded": lambda: ev.ProbeSucceeded(tunnel="tun1", rtt_ms=5.0),
    "ProbeLost": lambda: ev.ProbeLost(tunnel="tun1"),
    "InboundTrafficSeen": lambda: ev.InboundTrafficSeen(tunnel="tun1", packets=10),
    "LinkChanged": lambda: ev.LinkChanged(
        tunnel="tun1", present=True, admin_up=True, oper_up=False
    ),
    "BgpNeighborUp": lambda: ev.BgpNeighborUp(tunnel="tun1"),
    "BgpNeighborDown": lambda: ev.BgpNeighborDown(tunnel="tun1"),
    "BgpRouteLearned": lambda: ev.BgpRouteLearned(tunnel="tun1", prefix="10.9.0.0/24"),
    "BgpRouteWithdrawn": lambda: ev.BgpRouteWithdrawn(tunnel="tun1", prefix="10.9.0.0/24"),
    "BgpRoutesChanged": lambda: ev.BgpRoutesChanged(
        tunnel="tun1", announced=("10.9.0.0/24",), withdrawn=("10.8.0.0/24",)
    ),
    "BgpEndOfRib": lambda: ev.BgpEndOfRib(tunnel="tun1", family="ipv6"),
    "AdminDisabled": lambda: ev.AdminDisabled(tunnel="tun1", reason="maintenance"),
    "AdminEnabled": lambda: ev.AdminEnabled(tunnel="tun1"),
    "SourceLost": lambda: ev.SourceLost(source="vici", detail="charon gone"),
    "SourceRecovered": lambda: ev.SourceRecovered(source="vici"),
    "ComponentRestarted": lambda: ev.ComponentRestarted(
        component="exabgp", reason="exited with status -9"
    ),
    "TimerFired": ev.TimerFired,
    "ReportIntervalElapsed": ev.ReportIntervalElapsed,
}

STATES = (H.INIT, H.UP, H.DEGRADED, H.DOWN, H.ADMIN_DOWN)
_ = None  # reason not checked: the state did not change, so neither did the reason

# event -> expected (state, reason) for tun1 in INIT, UP, DEGRADED, DOWN, ADMIN_DOWN.
TABLE: dict[str, tuple[tuple[Health, str | None], ...]] = {
    "ChildSaUp": ((H.INIT, _), (H.UP, _), (H.DEGRADED, _), (H.DOWN, _), (H.ADMIN_DOWN, _)),
    "ChildSaDown": (
        (H.DOWN, "child-sa-down"),
        (H.DOWN, "child-sa-down"),
        (H.DOWN, "child-sa-down"),
        (H.DOWN, "child-sa-down"),  # already DOWN by probes: the hard cause is the news
        (H.ADMIN_DOWN, "admin"),
    ),
    "ChildSaRekeyed": ((H.INIT, _), (H.UP, _), (H.DEGRADED, _), (H.DOWN, _), (H.ADMIN_DOWN, _)),
    "ProbeSucceeded": (
        (H.INIT, "starting"),
        (H.UP, _),
        (H.UP, "5 probes answered"),
        (H.DOWN, _),
        (H.ADMIN_DOWN, _),
    ),
    "ProbeLost": ((H.INIT, _), (H.UP, _), (H.DEGRADED, _), (H.DOWN, _), (H.ADMIN_DOWN, _)),
    "InboundTrafficSeen": (
        (H.INIT, _),
        (H.UP, _),
        (H.DEGRADED, _),
        (H.DOWN, _),
        (H.ADMIN_DOWN, _),
    ),
    "LinkChanged": (
        (H.DOWN, "link-down"),
        (H.DOWN, "link-down"),
        (H.DOWN, "link-down"),
        (H.DOWN, "link-down"),
        (H.ADMIN_DOWN, _),
    ),
    "BgpNeighborUp": ((H.INIT, _), (H.UP, _), (H.DEGRADED, _), (H.DOWN, _), (H.ADMIN_DOWN, _)),
    "BgpNeighborDown": ((H.INIT, _), (H.UP, _), (H.DEGRADED, _), (H.DOWN, _), (H.ADMIN_DOWN, _)),
    "BgpRouteLearned": ((H.INIT, _), (H.UP, _), (H.DEGRADED, _), (H.DOWN, _), (H.ADMIN_DOWN, _)),
    "BgpRoutesChanged": ((H.INIT, _), (H.UP, _), (H.DEGRADED, _), (H.DOWN, _), (H.ADMIN_DOWN, _)),
    "BgpEndOfRib": ((H.INIT, _), (H.UP, _), (H.DEGRADED, _), (H.DOWN, _), (H.ADMIN_DOWN, _)),
    "BgpRouteWithdrawn": (
        (H.INIT, _),
        (H.UP, _),
        (H.DEGRADED, _),
        (H.DOWN, _),
        (H.ADMIN_DOWN, _),
    ),
    "AdminDisabled": (
        (H.ADMIN_DOWN, "maintenance"),
        (H.ADMIN_DOWN, "maintenance"),
        (H.ADMIN_DOWN, "maintenance"),
        (H.ADMIN_DOWN, "maintenance"),
        (H.ADMIN_DOWN, "admin"),  # already drained: the first reason stands
    ),
    "AdminEnabled": (
        (H.INIT, "starting"),
        (H.UP, _),
        (H.DEGRADED, _),
        (H.DOWN, _),
        (H.INIT, "admin-enabled"),
    ),
    # Blindness is not death: losing the SA source never takes a tunnel down.
    "SourceLost": ((H.INIT, _), (H.UP, _), (H.DEGRADED, _), (H.DOWN, _), (H.ADMIN_DOWN, _)),
    "SourceRecovered": ((H.INIT, _), (H.UP, _), (H.DEGRADED, _), (H.DOWN, _), (H.ADMIN_DOWN, _)),
    "ComponentRestarted": (
        (H.INIT, _),
        (H.UP, _),
        (H.DEGRADED, _),
        (H.DOWN, _),
        (H.ADMIN_DOWN, _),
    ),
    "TimerFired": ((H.INIT, _), (H.UP, _), (H.DEGRADED, _), (H.DOWN, _), (H.ADMIN_DOWN, _)),
    # A report, never a change of health.
    "ReportIntervalElapsed": (
        (H.INIT, _),
        (H.UP, _),
        (H.DEGRADED, _),
        (H.DOWN, _),
        (H.ADMIN_DOWN, _),
    ),
}

CASES = [
    pytest.param(state, name, *TABLE[name][i], id=f"{state.value}-{name}")
    for name in EVENTS
    for i, state in enumerate(STATES)
]


def test_table_covers_every_event_type() -> None:
    declared = {n for n in ev.__all__ if n != "Event"}
    assert set(EVENTS) == declared == set(TABLE)


@pytest.mark.parametrize(("start", "event", "state", "reason"), CASES)
def test_transition(start: Health, event: str, state: Health, reason: str | None) -> None:
    sim = in_state(start)
    before = sim.state.health["tun1"]
    sim.step(EVENTS[event]())
    after = sim.state.health["tun1"]
    assert after.state is state
    if reason is not None:
        assert after.reason == reason
    if state is start and reason is None:
        assert after.reason == before.reason


@pytest.mark.parametrize("start", [H.INIT, H.UP, H.DEGRADED])
def test_link_removed_is_down_at_once(start: Health) -> None:
    sim = in_state(start)
    sim.step(ev.LinkChanged(tunnel="tun1", present=False, admin_up=False, oper_up=False))
    assert (sim.health("tun1"), sim.state.health["tun1"].reason) == (H.DOWN, "link-removed")


def test_sa_source_lost_makes_sa_unknown_not_down() -> None:
    sim = in_state(H.UP)
    sim.step(ev.SourceLost(source="vici"))
    assert sim.state.health["tun1"].sa.value == "unknown"
    assert sim.state.reported["tun1"].sa == "unknown"
    assert sim.health("tun1") is H.UP
    assert sim.state.carriers == ("tun1",)
