"""Failover, failback, make-before-break and alerts, checked on a fake router."""

from __future__ import annotations

from agent.core import actions as act
from agent.core import events as ev
from agent.core.engine import next_deadline
from agent.core.health import Health

from .sim import FakeRouter, Sim, make_config

REMOTE = "10.2.0.0/24"
SITE = "10.1.0.0/24"


def drive(sim: Sim, router: FakeRouter, event: ev.Event) -> list[tuple[set[str], str | None]]:
    """Step, apply each action to the router, and record what traffic sees after each."""
    seen = []
    for a in sim.step(event):
        router.apply(a)
        seen.append((router.via(REMOTE), router.best_announcer(SITE)))
    return seen


def started(**policy: object) -> tuple[Sim, FakeRouter]:
    sim = Sim(make_config(**policy))
    sim.bring_up()
    router = FakeRouter()
    for _, a in sim.log:
        router.apply(a)
    return sim, router


def test_both_up_primary_carries_backup_stands_by() -> None:
    sim, router = started()
    assert sim.state.carriers == ("tun1",)
    assert router.via(REMOTE) == {"vti1"}
    assert router.best_announcer(SITE) == "tun1"
    standby = router.routes[(REMOTE, 254, 100)]
    assert standby.nexthops == (act.NextHop("vti2"),)
    assert router.adj_out[("169.254.2.2", SITE)].med == 200
    assert router.adj_out[("169.254.2.2", SITE)].as_path_prepend == 2


def test_failover_never_leaves_the_prefix_without_a_path() -> None:
    sim, router = started()
    seen = drive(sim, router, ev.ChildSaDown(tunnel="tun1", at=sim.now))
    assert all(via for via, _ in seen), seen
    assert all(who is not None for _, who in seen), seen
    assert router.via(REMOTE) == {"vti2"}
    assert router.best_announcer(SITE) == "tun2"
    assert router.links["vti1"] is False
    # Exactly what a router needs, in make-before-break order: the new carrier's route
    # replaces the old at metric 10, announcements move, then the old side is torn down.
    # One site prefix: one announcement moves and one is withdrawn.
    assert [type(a).__name__ for a in sim.routing()] == [
        "InstallRoute",
        "AnnouncePrefix",
        "WithdrawPrefix",
        "RemoveRoute",
        "SetLinkDown",
    ]
    assert sim.of(act.RemoveRoute) == [
        act.RemoveRoute(act.Route(REMOTE, 254, 100, (act.NextHop("vti2"),)))
    ]


def test_failover_alert_names_both_sides_and_the_reason() -> None:
    sim, _ = started()
    sim.probes("tun1", 3, ok=False)
    (alert,) = sim.of(act.PublishAlert)
    assert (alert.kind, alert.from_tunnels, alert.to_tunnels) == ("failover", ("tun1",), ("tun2",))
    assert alert.reason == "tun1 probe-loss 3 in a row"
    # From the first lost probe to the decision: two more probe intervals.
    assert alert.detected_after_s is not None
    assert abs(alert.detected_after_s - 0.4) < 1e-6


def test_detected_after_counts_from_the_current_run_of_losses() -> None:
    sim, _ = started(loss_degraded=5)
    sim.probes("tun1", 1, ok=False)  # a lone lost probe, then answers again
    sim.probes("tun1", 2)
    sim.now += 100
    sim.probes("tun1", 3, ok=False)
    (alert,) = sim.of(act.PublishAlert)
    assert alert.kind == "failover"
    assert alert.detected_after_s is not None
    assert abs(alert.detected_after_s - 0.4) < 1e-6


def test_sa_removal_fails_over_at_once_with_zero_detection_time() -> None:
    sim, _ = started()
    sim.now += 5
    sim.step(ev.ChildSaDown(tunnel="tun1", at=sim.now))
    (alert,) = sim.of(act.PublishAlert)
    assert alert.reason == "tun1 child-sa-down"
    assert alert.detected_after_s == 0.0


def test_failback_waits_for_the_preempt_hold_down_then_fires_on_time() -> None:
    sim, router = started()
    sim.step(ev.ChildSaDown(tunnel="tun1", at=sim.now))
    sim.now += 20
    sim.step(ev.ChildSaUp(tunnel="tun1", at=sim.now))
    sim.probes("tun1", 3)
    back = sim.now
    assert sim.health("tun1") is Health.UP
    assert sim.state.carriers == ("tun2",)
    assert next_deadline(sim.state, sim.now) == back + 30
    assert sim.advance(back + 29.999) == []
    assert sim.state.carriers == ("tun2",)
    fired = sim.advance(back + 30)
    for a in fired:
        router.apply(a)
    assert sim.state.carriers == ("tun1",)
    assert router.via(REMOTE) == {"vti1"}
    assert router.best_announcer(SITE) == "tun1"
    (alert,) = [a for a in fired if isinstance(a, act.PublishAlert)]
    assert (alert.kind, alert.from_tunnels, alert.to_tunnels) == ("failback", ("tun2",), ("tun1",))
    assert alert.reason == "tun1 healthy for 30s (preempt hold-down)"


def test_failback_is_make_before_break_too() -> None:
    sim, router = started()
    sim.step(ev.ChildSaDown(tunnel="tun1", at=sim.now))
    sim.step(ev.ChildSaUp(tunnel="tun1", at=sim.now))
    sim.probes("tun1", 3)
    sim.advance(sim.now + 29)
    seen = []
    for a in sim.advance(sim.now + 2):
        router.apply(a)
        seen.append(router.via(REMOTE))
    assert all(seen), seen
    assert router.via(REMOTE) == {"vti1"}
    assert router.routes[(REMOTE, 254, 100)].nexthops == (act.NextHop("vti2"),)


def test_no_preempt_keeps_the_backup() -> None:
    sim, _ = started(preempt=False)
    sim.step(ev.ChildSaDown(tunnel="tun1", at=sim.now))
    sim.step(ev.ChildSaUp(tunnel="tun1", at=sim.now))
    sim.probes("tun1", 3)
    back = sim.now
    # The only deadline left is when tun1 has proven itself: it stands by then, no more.
    assert next_deadline(sim.state, sim.now) == back + 30
    sim.advance(sim.now + 1000)
    assert sim.state.carriers == ("tun2",)
    assert sim.state.reported["tun1"].metric == 100
    assert next_deadline(sim.state, sim.now) is None


def test_a_degraded_blip_restarts_the_hold_down() -> None:
    sim, _ = started()
    sim.probes("tun1", 1, rtt=400.0)
    assert sim.health("tun1") is Health.DEGRADED
    assert sim.state.carriers == ("tun2",)
    (alert,) = sim.of(act.PublishAlert)
    assert (alert.kind, alert.reason) == ("failover", "tun1 rtt 400ms > 250ms")
    sim.probes("tun1", 1)
    clean = sim.now
    assert sim.health("tun1") is Health.UP
    # Clean again, but not for 30 s: the carrier stays put instead of flapping back.
    assert sim.state.carriers == ("tun2",)
    sim.advance(clean + 29.9)
    assert sim.state.carriers == ("tun2",)
    sim.advance(clean + 30)
    assert sim.state.carriers == ("tun1",)


def test_degraded_carrier_without_a_clean_standby_keeps_traffic_and_alerts() -> None:
    sim, _ = started()
    sim.step(ev.ChildSaDown(tunnel="tun2", at=sim.now))
    sim.probes("tun1", 1, ok=False)
    sim.probes("tun1", 3)
    sim.probes("tun1", 1, ok=False)
    sim.probes("tun1", 3)
    assert sim.health("tun1") is Health.UP
    sim.probes("tun1", 1, ok=False)  # third loss in the 10-probe window
    assert sim.health("tun1") is Health.DEGRADED
    assert sim.state.carriers == ("tun1",)
    (alert,) = sim.of(act.PublishAlert)
    assert (alert.kind, alert.from_tunnels, alert.to_tunnels) == (
        "degraded",
        ("tun1",),
        ("tun1",),
    )
    assert alert.reason == "tun1 probe-loss 3/10"
    assert sim.routing() == []


def test_degraded_carrier_moves_to_a_clean_standby() -> None:
    sim, _ = started()
    sim.probes("tun1", 1, ok=False)
    sim.probes("tun1", 3)
    sim.probes("tun1", 1, ok=False)
    sim.probes("tun1", 3)
    sim.probes("tun1", 1, ok=False)
    assert sim.health("tun1") is Health.DEGRADED
    assert sim.state.carriers == ("tun2",)
    assert sim.state.reported["tun1"].carrying is False
    assert sim.state.reported["tun2"].carrying is True


def test_both_down_withdraw_then_recovered() -> None:
    sim, router = started()
    drive(sim, router, ev.ChildSaDown(tunnel="tun1", at=sim.now))
    sim.now += 1
    drive(sim, router, ev.ChildSaDown(tunnel="tun2", at=sim.now))
    assert router.routes == {}
    assert router.adj_out == {}
    (alert,) = sim.of(act.PublishAlert)
    assert (alert.kind, alert.from_tunnels, alert.to_tunnels) == ("both-down", ("tun2",), ())
    assert alert.reason == "tun2 child-sa-down"
    assert not any(r.carrying for r in sim.state.reported.values())
    sim.now += 1
    drive(sim, router, ev.ChildSaUp(tunnel="tun2", at=sim.now))
    sim.probes("tun2", 3)
    for a in sim.last:
        router.apply(a)
    (alert,) = sim.of(act.PublishAlert)
    assert (alert.kind, alert.from_tunnels, alert.to_tunnels) == ("recovered", (), ("tun2",))
    assert alert.reason == "tun2 3 probes answered"
    assert router.via(REMOTE) == {"vti2"}
    assert router.best_announcer(SITE) == "tun2"


def test_both_down_keep_last_keeps_routes_links_and_announcements() -> None:
    sim, router = started(both_down="keep-last")
    drive(sim, router, ev.ChildSaDown(tunnel="tun1", at=sim.now))
    drive(sim, router, ev.ChildSaDown(tunnel="tun2", at=sim.now))
    assert [a.kind for a in sim.of(act.PublishAlert)] == ["both-down"]
    # The kept carrier's link stays up: a link set down would lose its routes.
    assert sim.routing() == []
    assert router.via(REMOTE) == {"vti2"}
    assert router.best_announcer(SITE) == "tun2"
    assert sim.state.reported["tun2"].carrying is True
    # tun1 recovers: one "recovered" alert, traffic moves to it.
    sim.step(ev.ChildSaUp(tunnel="tun1", at=sim.now))
    for a in sim.last:
        router.apply(a)
    sim.probes("tun1", 2)
    for a in sim.last:
        router.apply(a)
    sim.now += 0.2
    drive(sim, router, ev.ProbeSucceeded(tunnel="tun1", rtt_ms=5.0, at=sim.now))
    alerts = sim.of(act.PublishAlert)
    assert [(a.kind, a.to_tunnels) for a in alerts] == [("recovered", ("tun1",))]
    assert router.via(REMOTE) == {"vti1"}
    assert router.links["vti2"] is False  # tun2's SA is gone and it no longer carries


def test_keep_last_never_keeps_a_drained_tunnel() -> None:
    sim, router = started(both_down="keep-last")
    drive(sim, router, ev.ChildSaDown(tunnel="tun2", at=sim.now))
    # tun1 is the last usable tunnel: a drain of it must say it is meant.
    drive(sim, router, ev.AdminDisabled(tunnel="tun1", force=True, at=sim.now))
    assert router.routes == {}
    assert router.adj_out == {}
    assert router.links["vti1"] is False


def test_drain_moves_traffic_and_undrain_brings_it_back_without_probation() -> None:
    sim, router = started()
    drive(sim, router, ev.AdminDisabled(tunnel="tun1", reason="maintenance", at=sim.now))
    (alert,) = sim.of(act.PublishAlert)
    assert (alert.kind, alert.reason) == ("failover", "tun1 maintenance")
    assert sim.routing()[-1] == act.SetLinkDown("vti1", "tun1")
    assert router.via(REMOTE) == {"vti2"}
    # The kernel reports the link we set down; then probes over it fail while drained.
    sim.step(ev.LinkChanged(tunnel="tun1", present=True, admin_up=False, oper_up=False))
    assert sim.last == []
    sim.probes("tun1", 5, ok=False)
    sim.now += 600
    sim.step(ev.AdminEnabled(tunnel="tun1", at=sim.now))
    assert sim.health("tun1") is Health.INIT
    assert sim.routing() == [act.SetLinkUp("vti1", "tun1")]
    sim.step(ev.LinkChanged(tunnel="tun1", present=True, admin_up=True, oper_up=True))
    sim.probes("tun1", 3)
    assert sim.health("tun1") is Health.UP
    assert sim.state.carriers == ("tun2",)
    sim.advance(sim.now + 30)
    assert sim.state.carriers == ("tun1",)


def test_an_operator_setting_the_link_down_is_evidence() -> None:
    sim, _ = started()
    sim.step(ev.LinkChanged(tunnel="tun1", present=True, admin_up=False, oper_up=False))
    assert sim.health("tun1") is Health.DOWN
    assert sim.state.carriers == ("tun2",)


def test_timer_with_nothing_due_does_nothing() -> None:
    sim, _ = started()
    assert next_deadline(sim.state, sim.now) is None
    sim.now += 1000
    assert sim.step(ev.TimerFired(at=sim.now)) == []


def test_tunnel_unknown_to_the_config_is_ignored() -> None:
    sim, _ = started()
    before = sim.state
    assert sim.step(ev.ChildSaDown(tunnel="tun9")) == []
    assert sim.state is before
