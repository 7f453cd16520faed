"""A charon that crashed and came back: its SAs are awaited for `vici.restart_grace_s`.

The kernel keeps the old SAs (traffic flows, probes answer) while the new charon
negotiates its own; until then its `list-sas` says "none". Inside the grace that is not
a dead tunnel; past it, it is.
"""

from __future__ import annotations

from typing import Any

from agent.core import actions as act
from agent.core import events as ev
from agent.core.health import Health, SaView

from .sim import Sim, make_config, tunnel

GRACE = 15.0


def started(grace: float = GRACE, **kw: Any) -> Sim:
    cfg = make_config(**kw)
    cfg = cfg.model_copy(update={"vici": cfg.vici.model_copy(update={"restart_grace_s": grace})})
    sim = Sim(cfg)
    sim.bring_up()
    sim.probes("tun1", 1)
    return sim


def restart_charon(sim: Sim, *, gone_s: float = 2.0) -> float:
    """charon is gone for gone_s, then answers again with no SA yet (its full snapshot)."""
    sim.step(ev.SourceLost(source="vici", detail="connection refused", at=sim.now))
    keep_probing(sim, gone_s)
    back = sim.now
    sim.step(ev.SourceRecovered(source="vici", at=back))
    for name in ("tun1", "tun2"):
        sim.step(ev.ChildSaDown(tunnel=name, reason="vici list-sas", at=back))
    return back


def keep_probing(sim: Sim, seconds: float, names: tuple[str, ...] = ("tun1", "tun2")) -> None:
    """Both tunnels keep answering (the kernel still has the old SAs)."""
    end = sim.now + seconds
    while sim.now < end:
        # Timers due before the next answer fire first, at their own time.
        sim.advance(sim.now + 0.2)
        for name in names:
            sim.step(ev.ProbeSucceeded(tunnel=name, rtt_ms=5.0, at=sim.now))


def routing_changes(sim: Sim, since: float) -> list[act.Action]:
    return [
        a
        for at, a in sim.log
        if at >= since and not isinstance(a, act.PublishAlert | act.PublishTunnelState)
    ]


def test_sas_back_within_the_grace_change_nothing() -> None:
    sim = started()
    start = sim.now
    back = restart_charon(sim)
    keep_probing(sim, 5.0)
    assert sim.state.health["tun1"].sa is SaView.UNKNOWN
    assert sim.state.health["tun1"].sa_awaited == {"vici"}
    for name in ("tun1", "tun2"):
        sim.step(ev.ChildSaUp(tunnel=name, at=sim.now))
    keep_probing(sim, 2 * GRACE)
    assert sim.now > back + GRACE
    assert [sim.health(n) for n in ("tun1", "tun2")] == [Health.UP, Health.UP]
    assert sim.state.carriers == ("tun1",)
    assert routing_changes(sim, start) == []
    h = sim.state.health["tun1"]
    assert (h.sa, h.sa_grace_until, h.sa_awaited) == (SaView.UP, (), frozenset())


def test_an_sa_still_missing_when_the_grace_ends_fails_over_then() -> None:
    sim = started()
    back = restart_charon(sim)
    keep_probing(sim, 3.0)
    sim.step(ev.ChildSaUp(tunnel="tun2", at=sim.now))
    keep_probing(sim, GRACE - 3.0 - 0.5)
    assert sim.state.carriers == ("tun1",)
    keep_probing(sim, 1.0)
    h = sim.state.health["tun1"]
    assert (h.state, h.reason, h.sa) == (Health.DOWN, "child-sa-down", SaView.DOWN)
    assert h.trouble_since == back + GRACE
    assert sim.state.carriers == ("tun2",)
    failover = [a for a in sim.alerts() if a.kind == "failover"]
    assert [(a.at, a.to_tunnels) for a in failover] == [(back + GRACE, ("tun2",))]


def test_the_grace_ends_at_its_deadline_with_no_other_event() -> None:
    sim = started()
    back = restart_charon(sim)
    sim.advance(back + GRACE + 1)
    assert sim.health("tun1") is Health.DOWN
    assert sim.state.health["tun1"].sa_grace_until == ()


def test_a_rekey_within_the_grace_is_the_sa_back() -> None:
    sim = started()
    restart_charon(sim)
    for name in ("tun1", "tun2"):
        sim.step(ev.ChildSaRekeyed(tunnel=name, at=sim.now))
    keep_probing(sim, 2 * GRACE)
    assert sim.health("tun1") is Health.UP
    assert sim.state.carriers == ("tun1",)


def test_without_a_grace_a_missing_sa_is_down_at_once() -> None:
    sim = started(grace=0.0)
    back = restart_charon(sim)
    h = sim.state.health["tun1"]
    assert (h.state, h.sa, h.sa_grace_until) == (Health.DOWN, SaView.DOWN, ())
    assert h.since == back


def test_an_sa_lost_after_the_grace_is_down_at_once() -> None:
    sim = started()
    back = restart_charon(sim)
    for name in ("tun1", "tun2"):
        sim.step(ev.ChildSaUp(tunnel=name, at=sim.now))
    keep_probing(sim, GRACE + 1)
    sim.step(ev.ChildSaDown(tunnel="tun1", reason="vici child-updown", at=sim.now))
    assert sim.health("tun1") is Health.DOWN
    assert sim.now > back + GRACE


def test_a_grace_with_nothing_said_ends_quietly_and_a_loss_keeps_its_clock() -> None:
    sim = started()
    sim.step(ev.SourceLost(source="vici", at=sim.now))
    back = sim.now
    sim.step(ev.SourceRecovered(source="vici", at=back))
    # charon says nothing of tun1 yet; probes are lost meanwhile, then answered again.
    sim.step(ev.ChildSaDown(tunnel="tun2", at=back))
    sim.now += 1.0
    sim.step(ev.ProbeLost(tunnel="tun2", at=sim.now))
    lost_at = sim.now
    keep_probing(sim, GRACE + 1, names=("tun1",))
    assert sim.state.health["tun1"].sa_grace_until == ()
    assert sim.state.health["tun1"].sa is SaView.UNKNOWN
    assert sim.health("tun1") is Health.UP
    h = sim.state.health["tun2"]
    assert (h.state, h.sa, h.trouble_since) == (Health.DOWN, SaView.DOWN, lost_at)


def test_charon_back_twice_restarts_the_grace() -> None:
    sim = started()
    restart_charon(sim)
    keep_probing(sim, GRACE - 2)
    second = restart_charon(sim)
    keep_probing(sim, 4.0)
    assert sim.health("tun1") is Health.UP
    assert sim.state.health["tun1"].sa_grace_until == (("vici", second + GRACE),)


def test_only_charon_gets_a_grace_not_the_kernels_xfrm_view() -> None:
    sim = started(tunnels=[tunnel(1, sources=["xfrm", "probe"]), tunnel(2)])
    sim.step(ev.ChildSaUp(tunnel="tun1", source="xfrm", at=sim.now))
    sim.step(ev.SourceLost(source="xfrm", at=sim.now))
    sim.step(ev.SourceRecovered(source="xfrm", at=sim.now))
    sim.step(ev.ChildSaDown(tunnel="tun1", source="xfrm", at=sim.now))
    assert sim.health("tun1") is Health.DOWN
