"""Loss windows, RTT, blind sources, and the lines a dry run prints for each action."""

from __future__ import annotations

from dataclasses import replace

from agent.core import actions as act
from agent.core import events as ev
from agent.core.health import Health

from .sim import Sim, make_config


def started(**kw: object) -> Sim:
    sim = Sim(make_config(**kw))  # type: ignore[arg-type]
    sim.bring_up()
    return sim


def test_intermittent_loss_degrades_then_takes_the_tunnel_down_by_window() -> None:
    sim = started(fall=5)
    states = []
    for _ in range(3):
        sim.probes("tun1", 2, ok=False)
        sim.probes("tun1", 1)
        states.append((sim.health("tun1"), sim.state.health["tun1"].reason))
    assert states == [
        (Health.UP, "3 probes answered"),
        (Health.DEGRADED, "probe-loss 3/7"),
        (Health.DOWN, "probe-loss 6/10"),
    ]
    assert sim.state.carriers == ("tun2",)


def test_degraded_by_rtt_recovers_on_a_fast_answer() -> None:
    sim = started()
    sim.probes("tun2", 1, rtt=251.0)
    assert (sim.health("tun2"), sim.state.health["tun2"].reason) == (
        Health.DEGRADED,
        "rtt 251ms > 250ms",
    )
    sim.probes("tun2", 1, rtt=250.0)
    assert sim.health("tun2") is Health.UP


def test_rtt_is_judged_on_the_median_of_recent_answers() -> None:
    sim = started(rtt_samples=5)
    sim.probes("tun2", 4, rtt=5.0)
    # One slow answer among fast ones is a busy moment, not a slow path.
    sim.probes("tun2", 1, rtt=900.0)
    assert sim.health("tun2") is Health.UP
    sim.probes("tun2", 2, rtt=300.0)
    assert (sim.health("tun2"), sim.state.health["tun2"].reason) == (
        Health.DEGRADED,
        "rtt 300ms > 250ms",
    )
    sim.probes("tun2", 2, rtt=5.0)
    assert sim.health("tun2") is Health.DEGRADED
    sim.probes("tun2", 1, rtt=5.0)
    assert sim.health("tun2") is Health.UP


def test_rtt_threshold_off_never_degrades() -> None:
    sim = started(rtt_degraded_ms=None)
    sim.probes("tun1", 3, rtt=5000.0)
    assert sim.health("tun1") is Health.UP


def test_losing_a_source_a_tunnel_does_not_use_changes_nothing() -> None:
    sim = started()
    sim.step(ev.SourceLost(source="xfrm", detail="netlink socket closed"))
    # Operators hear of it; routing does not.
    assert [(a.kind, a.component) for a in sim.last] == [("component-lost", "xfrm")]
    assert sim.state.reported["tun1"].sa == "up"


def test_up_only_after_rise_consecutive_answers() -> None:
    sim = Sim(make_config(rise=4))
    sim.bring_up(["tun2"])
    sim.step(ev.ChildSaUp(tunnel="tun1"))
    sim.probes("tun1", 3)
    sim.probes("tun1", 1, ok=False)
    sim.probes("tun1", 3)
    assert sim.health("tun1") is Health.INIT
    sim.probes("tun1", 1)
    assert sim.health("tun1") is Health.UP


def test_a_new_sa_restarts_probation() -> None:
    sim = started()
    sim.step(ev.ChildSaDown(tunnel="tun1"))
    sim.probes("tun1", 2)
    sim.step(ev.ChildSaUp(tunnel="tun1"))
    sim.probes("tun1", 2)
    assert sim.health("tun1") is Health.DOWN
    sim.probes("tun1", 1)
    assert sim.health("tun1") is Health.UP


def test_dry_run_lines() -> None:
    route = act.Route("10.2.0.0/24", 100, 10, (act.NextHop("gre1", "169.254.1.2"),))
    lines = [
        str(act.SetLinkUp("vti1", "tun1")),
        str(act.SetLinkDown("vti1", "tun1")),
        str(act.InstallRoute(route)),
        str(act.RemoveRoute(route)),
        str(
            act.AnnouncePrefix(
                neighbor="169.254.2.2",
                tunnel="tun2",
                prefix="10.1.0.0/24",
                med=200,
                as_path_prepend=2,
                communities=("65001:666",),
            )
        ),
        str(
            act.AnnouncePrefix(neighbor="169.254.1.2", tunnel="tun1", prefix="10.1.0.0/24", med=100)
        ),
        str(act.WithdrawPrefix(neighbor="169.254.1.2", tunnel="tun1", prefix="10.1.0.0/24")),
        str(act.PublishAlert("failover", 3.0, ("tun1",), ("tun2",), "tun1 child-sa-down", 0.25)),
        str(act.PublishAlert("both-down", 3.0, (), (), "both-down")),
    ]
    assert lines == [
        "set link vti1 up  (tun1)",
        "set link vti1 down  (tun1)",
        "install route 10.2.0.0/24 via 169.254.1.2 dev gre1 metric 10 table 100",
        "remove route 10.2.0.0/24 via 169.254.1.2 dev gre1 metric 10 table 100",
        "announce 10.1.0.0/24 to 169.254.2.2 (tun2) med 200 prepend 2 community [65001:666]",
        "announce 10.1.0.0/24 to 169.254.1.2 (tun1) med 100",
        "withdraw 10.1.0.0/24 from 169.254.1.2 (tun1)",
        "alert failover: tun1 -> tun2 (tun1 child-sa-down) after 0.250s",
        "alert both-down: - -> - (both-down)",
    ]


def test_state_lines_name_the_role() -> None:
    sim = started()
    assert str(sim.state.reported["tun2"]) == "state tun2: UP sa=up standby (3 probes answered)"
    assert sim.state.reported["tun2"].metric == 100
    sim.step(ev.ChildSaDown(tunnel="tun1"))
    rendered = {r.tunnel: str(r) for r in sim.state.reported.values()}
    assert rendered == {
        "tun1": "state tun1: DOWN sa=down idle (child-sa-down)",
        "tun2": "state tun2: UP sa=up carrying (3 probes answered)",
    }
    sim.step(ev.ChildSaUp(tunnel="tun1"))
    sim.probes("tun1", 3)
    # Back, but not proven yet (see policy.choose_standbys): no role at all.
    assert str(sim.state.reported["tun1"]) == "state tun1: UP sa=up idle (3 probes answered)"
    assert sim.state.reported["tun1"].metric is None


def test_losses_during_an_outage_do_not_degrade_the_repaired_tunnel() -> None:
    # Default-like window: many probes lost while DOWN must not hold the tunnel DEGRADED
    # once it answers again (it was repaired; the outage is not its quality now).
    sim = Sim(make_config(loss_window=50, loss_down=25, loss_degraded=10))
    sim.bring_up()
    sim.probes("tun1", 40, ok=False)
    assert sim.health("tun1") is Health.DOWN
    sim.probes("tun1", sim.cfg.policy.rise, ok=True)
    assert sim.health("tun1") is Health.UP
    assert sim.state.health["tun1"].losses == 0


def test_a_deleted_link_reports_removed_after_down() -> None:
    sim = Sim(make_config())
    sim.bring_up()
    sim.step(ev.LinkChanged(tunnel="tun1", present=True, admin_up=True, oper_up=False))
    assert sim.state.health["tun1"].reason == "link-down"
    sim.step(ev.LinkChanged(tunnel="tun1", present=False, admin_up=False, oper_up=False))
    assert sim.health("tun1") is Health.DOWN
    assert sim.state.health["tun1"].reason == "link-removed"


def test_loss_and_rtt_are_told_at_the_report_interval_and_kept_between() -> None:
    sim = started(loss_window=10)
    sim.step(ev.ReportIntervalElapsed(at=sim.now))
    first = {s.tunnel: (s.loss, s.rtt_ms) for s in sim.of(act.PublishTunnelState)}
    assert first == {"tun1": ("0/3", 5.0), "tun2": ("0/3", 5.0)}
    # Probes change the numbers, but only the next interval tells them.
    sim.probes("tun2", 1, ok=False)
    sim.probes("tun2", 2, rtt=40.0)
    assert sim.state.reported["tun2"].loss == "0/3"
    sim.step(ev.ReportIntervalElapsed(at=sim.now))
    assert [(s.tunnel, s.loss, s.rtt_ms) for s in sim.of(act.PublishTunnelState)] == [
        ("tun2", "1/6", 40.0)
    ]
    # A report for another reason keeps the last numbers told.
    sim.step(ev.AdminDisabled(tunnel="tun2", at=sim.now))
    (drained,) = [s for s in sim.of(act.PublishTunnelState) if s.tunnel == "tun2"]
    assert (drained.health, drained.loss, drained.rtt_ms) == ("ADMIN_DOWN", "1/6", 40.0)


def test_no_loss_report_before_the_first_decision_nor_without_probes() -> None:
    sim = Sim(make_config())
    assert sim.step(ev.ReportIntervalElapsed(at=sim.now)) == []
    sim.bring_up()
    sim.step(ev.ReportIntervalElapsed(at=sim.now))
    # Probe-less health (the window emptied, as on a fall to DOWN): nothing to say.
    sim.state = replace(
        sim.state,
        health={n: replace(h, window=(), rtts=()) for n, h in sim.state.health.items()},
    )
    sim.step(ev.ReportIntervalElapsed(at=sim.now))
    assert {(s.loss, s.rtt_ms) for s in sim.of(act.PublishTunnelState)} == {("", None)}
