"""Learned routes kept while our own BGP speaker restarts (graceful restart, RFC 4724).

exabgp dies: every session ends with `speaker_lost`. What each neighbor taught stays in
the FIB, stale, until the new session announces it again, its End-of-RIB says the rest
is gone, or bgp.graceful_restart_s runs out. A session the neighbor or the path ended
still takes everything with it at once.
"""

from __future__ import annotations

from typing import Any

from agent.core import actions as act
from agent.core import events as ev

from .sim import Sim, make_config

V4, V4B, V6 = "10.2.9.0/24", "10.2.8.0/24", "2001:db8:b:9::/64"


def started(**kw: Any) -> Sim:
    sim = Sim(make_config(**kw))
    sim.bring_up()
    for name in ("tun1", "tun2"):
        sim.step(ev.BgpNeighborUp(tunnel=name, at=sim.now))
        sim.step(ev.BgpRoutesChanged(tunnel=name, announced=(V4, V4B, V6), at=sim.now))
    return sim


def routed(sim: Sim, prefix: str) -> set[str]:
    return {h.interface for r in sim.state.asked.routes if r.prefix == prefix for h in r.nexthops}


def speaker_lost(sim: Sim) -> None:
    for name in ("tun1", "tun2"):
        sim.step(
            ev.BgpNeighborDown(
                tunnel=name, reason="exabgp connection closed", speaker_lost=True, at=sim.now
            )
        )


def removed(sim: Sim, since: float) -> list[str]:
    return [a.route.prefix for t, a in sim.log if t >= since and isinstance(a, act.RemoveRoute)]


def test_a_speaker_restart_keeps_learned_routes_until_the_new_session_has_said_all() -> None:
    sim = started()
    assert routed(sim, V6) == {"vti1", "vti2"}
    lost_at = sim.now
    speaker_lost(sim)
    assert removed(sim, lost_at) == []
    assert sim.state.stale_learned["tun1"][1] == {V4, V4B, V6}
    # The new session: tun1 announces two of the three again, then End-of-RIB per family.
    sim.now += 5
    sim.step(ev.BgpNeighborUp(tunnel="tun1", at=sim.now))
    sim.step(ev.BgpRoutesChanged(tunnel="tun1", announced=(V4, V6), at=sim.now))
    assert sim.state.stale_learned["tun1"][1] == {V4B}
    sim.step(ev.BgpEndOfRib(tunnel="tun1", family="ipv6", at=sim.now))
    assert removed(sim, lost_at) == []
    sim.step(ev.BgpEndOfRib(tunnel="tun1", family="ipv4", at=sim.now))
    # What it did not announce again is gone from tun1, and only that.
    assert routed(sim, V4B) == {"vti2"}
    assert routed(sim, V4) == routed(sim, V6) == {"vti1", "vti2"}
    assert "tun1" not in sim.state.stale_learned


def test_stale_routes_go_when_the_restart_time_runs_out() -> None:
    sim = started()
    lost_at = sim.now
    speaker_lost(sim)
    sim.step(ev.BgpRoutesChanged(tunnel="tun2", announced=(V4, V4B, V6), at=sim.now))
    assert "tun2" not in sim.state.stale_learned
    sim.advance(lost_at + 119)
    assert routed(sim, V6) == {"vti1", "vti2"}
    sim.advance(lost_at + 121)
    assert routed(sim, V6) == {"vti2"}
    assert sim.state.stale_learned == {}


def test_a_session_the_neighbor_ended_still_takes_its_routes_at_once() -> None:
    sim = started()
    speaker_lost(sim)
    sim.step(ev.BgpNeighborDown(tunnel="tun1", reason="hold timer expired", at=sim.now))
    assert routed(sim, V6) == {"vti2"}
    assert "tun1" not in sim.state.stale_learned


def test_without_graceful_restart_a_speaker_loss_flushes_as_before() -> None:
    cfg = make_config()
    assert cfg.bgp is not None
    sim = Sim(cfg.model_copy(update={"bgp": cfg.bgp.model_copy(update={"graceful_restart_s": 0})}))
    sim.bring_up()
    sim.step(ev.BgpNeighborUp(tunnel="tun1", at=sim.now))
    sim.step(ev.BgpRoutesChanged(tunnel="tun1", announced=(V6,), at=sim.now))
    sim.step(ev.BgpNeighborDown(tunnel="tun1", speaker_lost=True, at=sim.now))
    assert routed(sim, V6) == set()
    assert sim.state.stale_learned == {}


def test_a_speaker_loss_with_nothing_learned_keeps_nothing() -> None:
    sim = Sim(make_config())
    sim.bring_up()
    sim.step(ev.BgpNeighborDown(tunnel="tun1", speaker_lost=True, at=sim.now))
    assert sim.state.stale_learned == {}


def test_an_end_of_rib_of_a_family_with_nothing_stale_changes_nothing() -> None:
    sim = started()
    speaker_lost(sim)
    sim.step(ev.BgpRoutesChanged(tunnel="tun1", announced=(V6, "bad prefix"), at=sim.now))
    before = sim.state.stale_learned["tun1"]
    sim.step(ev.BgpEndOfRib(tunnel="tun1", family="ipv6", at=sim.now))
    assert sim.state.stale_learned["tun1"] == before
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="10.99.0.0/24", at=sim.now))
    assert sim.state.stale_learned["tun1"] == before
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix=V4, at=sim.now))
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix=V4B, at=sim.now))
    assert "tun1" not in sim.state.stale_learned
    sim.step(ev.BgpEndOfRib(tunnel="tun1", family="ipv4", at=sim.now))
    assert routed(sim, V4B) == {"vti1", "vti2"}


def test_a_stale_prefix_withdrawn_meanwhile_is_not_dropped_twice() -> None:
    sim = started()
    speaker_lost(sim)
    sim.step(ev.BgpRouteWithdrawn(tunnel="tun1", prefix=V4B, at=sim.now))
    sim.step(ev.BgpEndOfRib(tunnel="tun1", family="ipv4", at=sim.now))
    assert routed(sim, V4B) == {"vti2"}
    assert sim.state.stale_learned["tun1"][1] == {V6}


def test_an_end_of_rib_after_every_stale_prefix_was_withdrawn_changes_no_route() -> None:
    sim = started()
    speaker_lost(sim)
    for prefix in (V4, V4B):
        sim.step(ev.BgpRouteWithdrawn(tunnel="tun1", prefix=prefix, at=sim.now))
    sim.step(ev.BgpEndOfRib(tunnel="tun1", family="ipv4", at=sim.now))
    assert sim.of(act.RemoveRoute) == []
    assert sim.state.stale_learned["tun1"][1] == {V6}


def test_a_restart_waits_for_end_of_rib_as_long_as_the_peers_keep_our_routes() -> None:
    def sweep_wait(hold: int, restart: int) -> float:
        cfg = make_config()
        assert cfg.bgp is not None
        bgp = cfg.bgp.model_copy(update={"hold_time_s": hold, "graceful_restart_s": restart})
        state = Sim(cfg.model_copy(update={"bgp": bgp})).state
        return state.sweep_by - state.settle_by

    # The lab's 9 s hold time: the restart time (120 s) rules, not 3 hold times (27 s).
    assert sweep_wait(9, 120) == 120
    assert sweep_wait(9, 0) == 27
    assert sweep_wait(90, 120) == 270
