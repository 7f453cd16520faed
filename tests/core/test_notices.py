"""What operators hear of BGP sessions and components: one alert per change, with a reason."""

from __future__ import annotations

import pytest

from agent.core import actions as act
from agent.core import events as ev

from .sim import Sim, make_config


def started(**kw: object) -> Sim:
    sim = Sim(make_config(**kw))  # type: ignore[arg-type]
    sim.bring_up()
    return sim


def told(sim: Sim) -> list[act.PublishAlert]:
    """The alerts of the latest step that are about sessions or components."""
    return [a for a in sim.of(act.PublishAlert) if a.neighbor or a.component]


def session_up(sim: Sim, name: str = "tun1") -> None:
    sim.now += 0.5
    sim.step(ev.BgpNeighborUp(tunnel=name, at=sim.now))


def session_down(sim: Sim, name: str = "tun1", reason: str = "hold timer expired") -> None:
    sim.now += 0.5
    sim.step(ev.BgpNeighborDown(tunnel=name, reason=reason, at=sim.now))


def test_a_session_coming_up_at_start_is_not_news() -> None:
    sim = started()
    session_up(sim)
    assert told(sim) == []
    assert sim.state.bgp_lost_at == {}


def test_a_session_that_never_came_up_is_not_lost() -> None:
    sim = started()
    session_down(sim, reason="connection refused")
    assert told(sim) == []
    session_up(sim)
    assert told(sim) == []


def test_a_session_lost_then_restored_is_told_once_each_way() -> None:
    sim = started()
    session_up(sim)
    session_down(sim, reason="peer reset: hold timer expired")
    lost_at = sim.now
    (lost,) = told(sim)
    assert (lost.kind, lost.tunnel, lost.neighbor, lost.reason) == (
        "bgp-session-lost",
        "tun1",
        "169.254.1.2",
        "peer reset: hold timer expired",
    )
    assert (lost.from_tunnels, lost.to_tunnels, lost.down_for_s) == (("tun1",), (), None)
    assert lost.detected_after_s == 0.0
    # ExaBGP's own report after its link closed, or a second notice: nothing new.
    session_down(sim, reason="exabgp connection closed")
    assert told(sim) == []
    sim.now += 2.0
    session_up(sim)
    (back,) = told(sim)
    assert (back.kind, back.tunnel, back.to_tunnels, back.reason) == (
        "bgp-session-restored",
        "tun1",
        ("tun1",),
        "session up",
    )
    assert back.down_for_s == pytest.approx(sim.now - lost_at)
    session_up(sim)
    assert told(sim) == []
    assert sim.state.bgp_lost_at == {}


def test_each_neighbor_is_told_once_when_exabgp_restarts() -> None:
    sim = started()
    for name in ("tun1", "tun2"):
        session_up(sim, name)
    # The link to ExaBGP closes (every session down), then ExaBGP says the same per neighbor.
    kinds = []
    for reason in ("exabgp connection closed", "peer reset"):
        for name in ("tun1", "tun2"):
            session_down(sim, name, reason)
            kinds += [(a.kind, a.tunnel, a.reason) for a in told(sim)]
    for name in ("tun1", "tun2"):
        session_up(sim, name)
        kinds += [(a.kind, a.tunnel, a.reason) for a in told(sim)]
    assert kinds == [
        ("bgp-session-lost", "tun1", "exabgp connection closed"),
        ("bgp-session-lost", "tun2", "exabgp connection closed"),
        ("bgp-session-restored", "tun1", "session up"),
        ("bgp-session-restored", "tun2", "session up"),
    ]


def test_a_down_without_reason_or_time_still_says_what_happened() -> None:
    sim = started()
    sim.step(ev.BgpNeighborUp(tunnel="tun1"))
    sim.step(ev.BgpNeighborDown(tunnel="tun1"))
    (lost,) = told(sim)
    assert (lost.reason, lost.detected_after_s) == ("session down", None)
    assert str(lost) == "alert bgp-session-lost: tun1 neighbor 169.254.1.2 (session down)"


def test_the_session_shows_in_the_tunnel_report() -> None:
    sim = started()
    assert sim.state.reported["tun1"].bgp == "down"
    session_up(sim)
    assert [r.bgp for r in sim.of(act.PublishTunnelState) if r.tunnel == "tun1"] == ["up"]
    session_down(sim)
    assert [r.bgp for r in sim.of(act.PublishTunnelState) if r.tunnel == "tun1"] == ["down"]


def test_without_bgp_reports_carry_no_session() -> None:
    sim = started(bgp=False)
    assert sim.state.reported["tun1"].bgp is None


def test_a_tunnel_removed_by_a_reload_forgets_its_lost_session() -> None:
    sim = started()
    session_up(sim, "tun2")
    session_down(sim, "tun2")
    assert set(sim.state.bgp_lost_at) == {"tun2"}
    sim.reconfigure(make_config(1))
    assert sim.state.bgp_lost_at == {}


def test_a_source_lost_and_back_is_told_once_each_way() -> None:
    sim = started()
    sim.now += 1.0
    sim.step(ev.SourceLost(source="vici", detail="charon unreachable: refused", at=sim.now))
    (lost,) = told(sim)
    assert (lost.kind, lost.component, lost.reason) == (
        "component-lost",
        "vici",
        "charon unreachable: refused",
    )
    assert str(lost) == "alert component-lost: vici (charon unreachable: refused)"
    sim.step(ev.SourceLost(source="vici", detail="again", at=sim.now))
    assert told(sim) == []
    sim.now += 3.0
    sim.step(ev.SourceRecovered(source="vici", at=sim.now))
    (back,) = told(sim)
    assert (back.kind, back.component, back.reason, back.down_for_s) == (
        "component-restored",
        "vici",
        "reachable again",
        3.0,
    )
    assert str(back) == "alert component-restored: vici (reachable again, down 3.000s)"
    sim.step(ev.SourceRecovered(source="vici", at=sim.now))
    assert told(sim) == []
    assert sim.state.components_lost == {}


def test_a_source_lost_without_detail_is_named_by_its_kind() -> None:
    sim = started()
    sim.step(ev.SourceLost(source="xfrm"))
    assert [(a.kind, a.reason) for a in told(sim)] == [("component-lost", "component-lost")]


def test_a_supervised_exabgp_exit_and_restart() -> None:
    sim = started()
    sim.now += 1.0
    sim.step(
        ev.SourceLost(source="exabgp", detail="exited with status -9; restarting in 0.5s", at=1.0)
    )
    assert [(a.kind, a.component) for a in told(sim)] == [("component-lost", "exabgp")]
    # Its exit blinds no SA view: no tunnel changes.
    assert not sim.of(act.PublishTunnelState)
    sim.now += 0.5
    sim.step(
        ev.ComponentRestarted(
            component="exabgp", reason="exited with status -9; restarted after 0.5s", at=1.5
        )
    )
    (restarted,) = told(sim)
    assert (restarted.kind, restarted.reason, restarted.down_for_s) == (
        "component-restarted",
        "exited with status -9; restarted after 0.5s",
        0.5,
    )
    assert sim.state.components_lost == {}
    assert all("exabgp" not in h.blind_sources for h in sim.state.health.values())


def test_only_a_tunnels_own_sources_blind_it() -> None:
    sim = started()
    for source in ("control", "mqtt-commands", "exabgp"):
        sim.step(ev.SourceLost(source=source, detail="gone", at=sim.now))
    assert all(h.blind_sources == frozenset() for h in sim.state.health.values())
    sim.step(ev.SourceLost(source="vici", at=sim.now))
    assert all(h.blind_sources == {"vici"} for h in sim.state.health.values())


def test_a_restart_whose_exit_was_not_told_is_still_news() -> None:
    sim = started()
    sim.step(ev.ComponentRestarted(component="exabgp"))
    (restarted,) = told(sim)
    assert (restarted.kind, restarted.reason, restarted.down_for_s) == (
        "component-restarted",
        "component-restarted",
        None,
    )
