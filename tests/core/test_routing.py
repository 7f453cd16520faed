"""Learned routes, ECMP, link control, start-up settle, reconfigure and dampening."""

from __future__ import annotations

import ipaddress

from agent.core import actions as act
from agent.core import dampening as damp
from agent.core import events as ev
from agent.core.engine import next_deadline
from agent.core.health import Health

from .sim import FakeRouter, Sim, make_config, tunnel

REMOTE = "10.2.0.0/24"


def started(**kw: object) -> Sim:
    sim = Sim(make_config(**kw))  # type: ignore[arg-type]
    sim.bring_up()
    return sim


def routes_for(sim: Sim, prefix: str) -> dict[int, set[str]]:
    return {
        r.metric: {h.interface for h in r.nexthops}
        for r in sim.state.asked.routes
        if r.prefix == prefix
    }


# --- learned BGP routes -------------------------------------------------------------------


def test_learned_prefix_is_routed_via_the_tunnel_that_learned_it() -> None:
    sim = started()
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="10.3.0.0/24"))
    assert sim.routing() == [
        act.InstallRoute(act.Route("10.3.0.0/24", 254, 10, (act.NextHop("vti1"),)))
    ]
    sim.step(ev.BgpRouteLearned(tunnel="tun2", prefix="10.3.0.0/24"))
    assert routes_for(sim, "10.3.0.0/24") == {10: {"vti1"}, 100: {"vti2"}}
    sim.step(ev.BgpRouteWithdrawn(tunnel="tun1", prefix="10.3.0.0/24"))
    assert sim.routing() == [
        act.RemoveRoute(act.Route("10.3.0.0/24", 254, 10, (act.NextHop("vti1"),)))
    ]
    assert routes_for(sim, "10.3.0.0/24") == {100: {"vti2"}}


def test_learned_prefix_inside_a_site_prefix_is_ignored() -> None:
    # An IPv6 session on tun2, so the site has an IPv6 prefix too.
    sim = started(tunnels=[tunnel(1), tunnel(2, bgp_neighbor="2001:db8:ff::2")])
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="10.1.0.128/25"))
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="2001:db8:a:1::/64"))
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="10.1.0.0/24"))
    assert routes_for(sim, "10.1.0.128/25") == {}
    assert [r for r in sim.state.asked.routes if r.prefix.startswith(("10.1.", "2001:"))] == []
    # A static remote prefix learned again is not routed twice.
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix=REMOTE))
    assert sim.routing() == []


def test_learned_prefix_is_kept_in_canonical_form() -> None:
    sim = started()
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="10.4.0.1/24"))
    assert routes_for(sim, "10.4.0.0/24") == {10: {"vti1"}}
    sim.step(ev.BgpRouteWithdrawn(tunnel="tun1", prefix="10.4.0.0/24"))
    assert routes_for(sim, "10.4.0.0/24") == {}


def test_malformed_prefix_from_a_peer_changes_nothing() -> None:
    sim = started()
    before = sim.state
    assert sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="not-a-prefix")) == []
    assert sim.step(ev.BgpRouteWithdrawn(tunnel="tun1", prefix="10.0.0.0/33")) == []
    assert sim.state is before


def test_neighbor_down_forgets_what_it_taught() -> None:
    sim = started()
    sim.step(ev.BgpNeighborUp(tunnel="tun1"))
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="10.3.0.0/24"))
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="10.5.0.0/24"))
    sim.step(ev.BgpNeighborDown(tunnel="tun1"))
    assert sorted(str(a) for a in sim.routing()) == [
        "remove route 10.3.0.0/24 dev vti1 metric 10",
        "remove route 10.5.0.0/24 dev vti1 metric 10",
    ]
    assert routes_for(sim, REMOTE) == {10: {"vti1"}, 100: {"vti2"}}


def test_learned_routes_are_ignored_unless_enabled() -> None:
    sim = started(learned=False)
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="10.3.0.0/24"))
    assert sim.routing() == []


def test_without_bgp_nothing_is_announced() -> None:
    sim = started(bgp=False)
    assert not any(isinstance(a, act.AnnouncePrefix) for _, a in sim.log)
    assert routes_for(sim, REMOTE) == {10: {"vti1"}, 100: {"vti2"}}


def test_gre_routes_via_the_inner_peer_and_ipv6_by_device() -> None:
    gre = [
        tunnel(1, kind="gre", key=None),
        tunnel(2, kind="gre", key=None),
    ]
    cfg = make_config(tunnels=gre, bgp=False)
    sim = Sim(cfg)
    sim.bring_up()
    sim.step(ev.LinkChanged(tunnel="tun1", present=True, admin_up=True, oper_up=True))
    (r,) = [r for r in sim.state.asked.routes if r.metric == 10]
    assert r.nexthops == (act.NextHop("vti1", "169.254.1.2"),)
    assert str(r) == "10.2.0.0/24 via 169.254.1.2 dev vti1 metric 10"


# --- active-active --------------------------------------------------------------------------


def test_active_active_is_one_ecmp_route() -> None:
    sim = started(mode="active-active")
    assert sim.state.carriers == ("tun1", "tun2")
    (r,) = sim.state.asked.routes
    assert r == act.Route(REMOTE, 254, 10, (act.NextHop("vti1"), act.NextHop("vti2")))
    assert str(r) == "10.2.0.0/24 nexthop dev vti1 nexthop dev vti2 metric 10"
    meds = {a.tunnel: a.med for a in sim.state.asked.announcements.values()}
    assert meds == {"tun1": 100, "tun2": 100}


def test_active_active_member_loss_replaces_the_route_without_removing_it() -> None:
    sim = started(mode="active-active")
    router = FakeRouter()
    for _, a in sim.log:
        router.apply(a)
    seen = []
    for a in sim.step(ev.ChildSaDown(tunnel="tun2")):
        router.apply(a)
        seen.append(router.via(REMOTE))
    assert all(seen)
    assert router.via(REMOTE) == {"vti1"}
    assert sim.of(act.RemoveRoute) == []
    (alert,) = sim.of(act.PublishAlert)
    assert (alert.kind, alert.from_tunnels, alert.to_tunnels) == ("failover", ("tun2",), ("tun1",))


def test_active_active_rejoin_waits_for_the_hold_down() -> None:
    sim = started(mode="active-active")
    sim.step(ev.ChildSaDown(tunnel="tun2"))
    sim.step(ev.ChildSaUp(tunnel="tun2"))
    sim.probes("tun2", 3)
    back = sim.now
    assert sim.state.carriers == ("tun1",)
    # On its way back tun2 has no route at all, not even a standby one, until proven.
    assert routes_for(sim, REMOTE) == {10: {"vti1"}}
    sim.advance(back + 30)
    assert sim.state.carriers == ("tun1", "tun2")
    assert routes_for(sim, REMOTE) == {10: {"vti1", "vti2"}}


def test_active_active_drops_a_degraded_member_while_another_is_clean() -> None:
    sim = started(mode="active-active")
    sim.probes("tun2", 1, rtt=400.0)
    assert sim.state.carriers == ("tun1",)
    # A lossy tunnel gains no role: it left the carriers and does not stand by either.
    assert routes_for(sim, REMOTE) == {10: {"vti1"}}


def test_active_active_all_degraded_still_carry() -> None:
    sim = started(mode="active-active")
    sim.probes("tun1", 1, rtt=400.0)
    assert sim.state.carriers == ("tun2",)
    sim.probes("tun2", 1, rtt=400.0)
    # Both lossy: the one carrying stays; the other joins once stable for the hold-down.
    assert sim.state.carriers == ("tun2",)
    sim.advance(sim.now + 30)
    assert sim.state.carriers == ("tun1", "tun2")


# --- link control -----------------------------------------------------------------------------


def test_link_control_none_never_touches_links() -> None:
    sim = started(link_control="none")
    sim.step(ev.ChildSaDown(tunnel="tun1"))
    sim.step(ev.AdminDisabled(tunnel="tun2"))
    assert not any(isinstance(a, act.SetLinkUp | act.SetLinkDown) for _, a in sim.log)


def test_link_control_sa_down_holds_the_link_down_only_without_sa() -> None:
    sim = started(link_control="sa-down")
    sim.probes("tun1", 3, ok=False)
    assert sim.health("tun1") is Health.DOWN
    assert not any(isinstance(a, act.SetLinkDown) for a in sim.last)
    sim.step(ev.ChildSaDown(tunnel="tun1"))
    assert sim.routing() == [act.SetLinkDown("vti1", "tun1")]
    sim.step(ev.ChildSaUp(tunnel="tun1"))
    assert sim.routing() == [act.SetLinkUp("vti1", "tun1")]


def test_link_control_down_raises_the_link_for_probation_on_time() -> None:
    sim = started()
    sim.probes("tun1", 3, ok=False)
    down_at = sim.now
    assert sim.routing()[-1] == act.SetLinkDown("vti1", "tun1")
    assert next_deadline(sim.state, sim.now) == down_at + 10
    assert sim.advance(down_at + 9.99) == []
    fired = sim.advance(down_at + 10)
    assert [a for a in fired if isinstance(a, act.SetLinkUp)] == [act.SetLinkUp("vti1", "tun1")]
    assert sim.health("tun1") is Health.DOWN
    sim.probes("tun1", 3)
    assert sim.health("tun1") is Health.UP


def test_link_control_down_waits_for_the_sa_before_probation() -> None:
    sim = started()
    sim.step(ev.ChildSaDown(tunnel="tun1"))
    assert next_deadline(sim.state, sim.now) is None
    assert sim.advance(sim.now + 60) == []
    sim.step(ev.ChildSaUp(tunnel="tun1"))
    assert sim.routing() == [act.SetLinkUp("vti1", "tun1")]


def test_mark_tunnels_are_never_toggled() -> None:
    marks = [
        tunnel(1, kind="mark", key=None, mark=1),
        tunnel(2, kind="mark", key=None, mark=2),
    ]
    sim = Sim(make_config(tunnels=marks))
    sim.bring_up()
    sim.step(ev.ChildSaDown(tunnel="tun1"))
    assert not any(isinstance(a, act.SetLinkUp | act.SetLinkDown) for _, a in sim.log)
    assert sim.state.carriers == ("tun2",)


def test_a_recreated_interface_gets_its_admin_state_again() -> None:
    sim = started(link_control="sa-down")
    sim.step(ev.LinkChanged(tunnel="tun1", present=False, admin_up=False, oper_up=False))
    assert sim.health("tun1") is Health.DOWN
    assert not any(isinstance(a, act.SetLinkDown) for a in sim.last)
    # ip link add makes a new interface admin-down: the agent must raise it itself.
    sim.step(ev.LinkChanged(tunnel="tun1", present=True, admin_up=False, oper_up=False))
    assert sim.routing() == [act.SetLinkUp("vti1", "tun1")]
    sim.step(ev.LinkChanged(tunnel="tun1", present=True, admin_up=True, oper_up=True))
    sim.probes("tun1", 3)
    assert sim.health("tun1") is Health.UP


# --- start-up settle ------------------------------------------------------------------------


def test_no_routing_before_first_evidence_from_every_tunnel() -> None:
    sim = Sim(make_config())
    sim.bring_up(["tun1"])
    assert sim.health("tun1") is Health.UP
    assert [a for _, a in sim.log if not isinstance(a, act.PublishTunnelState)] == []
    sim.step(ev.ChildSaDown(tunnel="tun2"))
    assert sim.state.carriers == ("tun1",)
    assert act.SetLinkUp("vti1", "tun1") in sim.last


def test_settle_deadline_decides_with_what_is_known() -> None:
    sim = Sim(make_config())
    sim.bring_up(["tun1"])
    settle_by = next_deadline(sim.state, sim.now)
    assert settle_by is not None
    assert sim.advance(settle_by - 0.01) == []
    fired = sim.advance(settle_by)
    assert act.InstallRoute(act.Route(REMOTE, 254, 10, (act.NextHop("vti1"),))) in fired
    assert sim.health("tun2") is Health.INIT
    assert sim.alerts() == []


def test_nothing_known_at_settle_is_both_down() -> None:
    sim = Sim(make_config())
    fired = sim.advance(100)
    (alert,) = [a for a in fired if isinstance(a, act.PublishAlert)]
    assert (alert.kind, alert.from_tunnels, alert.to_tunnels) == ("both-down", (), ())
    assert not any(isinstance(a, act.InstallRoute | act.AnnouncePrefix) for a in fired)


# --- reconfigure -----------------------------------------------------------------------------


def test_reconfigure_keeps_health_of_kept_tunnels_and_undoes_removed_ones() -> None:
    sim = started()
    sim.step(ev.ChildSaDown(tunnel="tun2"))  # tun2's link is now held down
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="10.3.0.0/24"))
    cfg = make_config(tunnels=[tunnel(1), tunnel(3)])
    acts = sim.reconfigure(cfg)
    assert sim.health("tun1") is Health.UP
    assert sim.health("tun3") is Health.INIT
    assert sim.state.carriers == ("tun1",)
    # tun2 is no longer ours: its held-down link is given back; tun1 is not touched.
    assert [a for a in acts if isinstance(a, act.SetLinkUp)] == [
        act.SetLinkUp("vti3", "tun3"),
        act.SetLinkUp("vti2", "tun2"),
    ]
    assert not any(isinstance(a, act.InstallRoute | act.RemoveRoute) for a in acts)
    assert "tun2" not in sim.state.reported
    assert routes_for(sim, "10.3.0.0/24") == {10: {"vti1"}}


def test_reconfigure_removes_routes_and_announcements_of_a_removed_carrier() -> None:
    sim = started()
    acts = sim.reconfigure(make_config(tunnels=[tunnel(2)]))
    assert sim.state.carriers == ("tun2",)
    withdrawn = {(a.neighbor, a.prefix) for a in acts if isinstance(a, act.WithdrawPrefix)}
    assert withdrawn == {("169.254.1.2", "10.1.0.0/24")}
    assert routes_for(sim, REMOTE) == {10: {"vti2"}}


def test_site_prefixes_go_only_to_sessions_of_their_family() -> None:
    cfg = make_config(tunnels=[tunnel(1), tunnel(2, bgp_neighbor="2001:db8:ff::2")])
    sim = Sim(cfg)
    sim.bring_up()
    announced = {(a.neighbor, a.prefix) for a in sim.state.asked.announcements.values()}
    assert announced == {("169.254.1.2", "10.1.0.0/24"), ("2001:db8:ff::2", "2001:db8:a::/48")}


def test_reconfigure_renamed_interface_releases_the_old_one() -> None:
    sim = started()
    sim.step(ev.ChildSaDown(tunnel="tun2"))
    acts = sim.reconfigure(make_config(tunnels=[tunnel(1), tunnel(2, interface="vti22")]))
    links = [a for a in acts if isinstance(a, act.SetLinkUp | act.SetLinkDown)]
    assert links == [act.SetLinkUp("vti2", "tun2"), act.SetLinkDown("vti22", "tun2")]


def test_reconfigure_to_link_control_none_gives_links_back() -> None:
    sim = started()
    sim.step(ev.ChildSaDown(tunnel="tun2"))
    acts = sim.reconfigure(make_config(link_control="none"))
    assert [a for a in acts if isinstance(a, act.SetLinkUp | act.SetLinkDown)] == [
        act.SetLinkUp("vti2", "tun2")
    ]
    assert sim.reconfigure(make_config(link_control="none")) == []


def test_reconfigure_priority_swap_moves_traffic_after_hold_down() -> None:
    sim = started()
    swapped = make_config(tunnels=[tunnel(1, priority=300), tunnel(2)])
    sim.reconfigure(swapped)
    assert sim.state.carriers == ("tun1",)
    sim.advance(sim.now + 30)
    assert sim.state.carriers == ("tun2",)
    assert [a.kind for a in sim.alerts()] == ["failback"]


# --- dampening --------------------------------------------------------------------------------


def flap(sim: Sim, name: str = "tun1") -> None:
    sim.step(ev.ChildSaDown(tunnel=name, at=sim.now))
    sim.step(ev.ChildSaUp(tunnel=name, at=sim.now))
    sim.probes(name, 3)


def test_a_flapping_tunnel_is_suppressed_until_it_is_stable() -> None:
    sim = started(preempt_hold_down_s=0)
    flap(sim)
    flap(sim)
    assert sim.state.carriers == ("tun1",)
    flap(sim)  # third flap: penalty 3000 > 2500
    assert sim.health("tun1") is Health.UP
    assert sim.state.carriers == ("tun2",)
    assert routes_for(sim, REMOTE) == {10: {"vti2"}}
    assert sim.state.reported["tun1"].metric is None
    reuse = next_deadline(sim.state, sim.now)
    assert reuse is not None
    assert reuse > sim.now + 100  # ~ 60 s x log2(3000/800)
    sim.advance(reuse - 1)
    assert sim.state.carriers == ("tun2",)
    sim.advance(reuse)
    assert sim.state.carriers == ("tun1",)


def test_dampening_disabled_never_suppresses() -> None:
    sim = started(preempt_hold_down_s=0, dampening={"enabled": False})
    for _ in range(5):
        flap(sim)
    assert sim.state.carriers == ("tun1",)


def test_max_suppress_releases_at_its_deadline_exactly() -> None:
    rules = make_config(
        dampening={"half_life_s": 3600, "max_suppress_s": 0.1, "penalty_per_flap": 5000}
    ).policy.dampening
    d = damp.flapped(damp.DampState(updated_at=0.7), rules, 0.7)
    assert damp.is_suppressed(d)
    at = damp.reuse_at(d, rules)
    assert at == 0.7 + 0.1
    assert not damp.is_suppressed(damp.settle(d, rules, at))
    assert damp.is_suppressed(damp.settle(d, rules, 0.79))


# --- other signals ----------------------------------------------------------------------------


def test_inbound_traffic_counts_as_life_when_enabled() -> None:
    sim = Sim(make_config(traffic_counts_as_life=True))
    sim.step(ev.ChildSaUp(tunnel="tun1"))
    sim.step(ev.ChildSaUp(tunnel="tun2"))
    for _ in range(3):
        sim.step(ev.InboundTrafficSeen(tunnel="tun1", packets=5))
    assert sim.health("tun1") is Health.UP


def test_sa_only_tunnel_is_up_on_its_sa() -> None:
    cfg = make_config(tunnels=[tunnel(1, sources=["vici"]), tunnel(2, sources=["vici"])])
    sim = Sim(cfg)
    sim.step(ev.ChildSaUp(tunnel="tun1"))
    sim.step(ev.ChildSaUp(tunnel="tun2"))
    assert sim.state.carriers == ("tun1",)
    sim.step(ev.SourceLost(source="vici"))
    assert sim.routing() == []
    assert sim.state.reported["tun1"].sa == "unknown"
    sim.step(ev.SourceRecovered(source="vici"))
    sim.step(ev.ChildSaDown(tunnel="tun1", source="vici"))
    # A charon just back may still be negotiating: its SA is awaited for the grace.
    assert sim.state.carriers == ("tun1",)
    sim.advance(sim.now + cfg.vici.restart_grace_s)
    assert sim.state.carriers == ("tun2",)
    sim.step(ev.ChildSaUp(tunnel="tun1"))
    sim.step(ev.ChildSaDown(tunnel="tun1", source="vici"))
    assert sim.health("tun1") is Health.DOWN


def test_link_only_tunnel_follows_its_link() -> None:
    cfg = make_config(tunnels=[tunnel(1, sources=["link"]), tunnel(2, sources=["link"])])
    sim = Sim(cfg)
    sim.step(ev.LinkChanged(tunnel="tun1", present=True, admin_up=True, oper_up=True))
    sim.step(ev.LinkChanged(tunnel="tun2", present=True, admin_up=True, oper_up=True))
    assert sim.state.carriers == ("tun1",)
    sim.step(ev.LinkChanged(tunnel="tun1", present=True, admin_up=True, oper_up=False))
    assert sim.state.carriers == ("tun2",)


def test_xfrm_source_down_wins_over_vici_up() -> None:
    sim = started()
    sim.step(ev.ChildSaUp(tunnel="tun1", source="xfrm"))
    sim.step(ev.ChildSaDown(tunnel="tun1", source="xfrm"))
    assert sim.health("tun1") is Health.DOWN
    assert sim.state.reported["tun1"].sa == "down"


def _sweeps(sim: Sim) -> list[tuple[float, str]]:
    return [(t, a.family) for t, a in sim.log if isinstance(a, act.SweepRoutes)]


def test_sweep_waits_for_end_of_rib_from_every_neighbor_per_family() -> None:
    sim = Sim(make_config())
    for name in ("tun1", "tun2"):
        sim.step(ev.ChildSaUp(tunnel=name, at=sim.now))
    sim.probes("tun1", 3)
    sim.probes("tun2", 3)
    assert sim.state.settled
    assert _sweeps(sim) == []
    sim.step(ev.BgpEndOfRib(tunnel="tun1", family="ipv4"))
    assert _sweeps(sim) == []  # tun2 may still be sending its IPv4 routes
    sim.step(ev.BgpRouteLearned(tunnel="tun2", prefix="10.7.0.0/24"))
    sim.step(ev.BgpEndOfRib(tunnel="tun2", family="ipv4"))
    # Swept only after the route just learned was asked for, in the same or an earlier step.
    assert _sweeps(sim) == [(sim.now, "ipv4")]
    assert act.SweepRoutes("ipv4") in sim.last
    assert routes_for(sim, "10.7.0.0/24")
    # IPv6 never gets End-of-RIB here: it is swept when the wait runs out, by a timer.
    assert next_deadline(sim.state, sim.now) == sim.state.sweep_by
    sim.advance(sim.state.sweep_by)
    assert _sweeps(sim)[-1] == (sim.state.sweep_by, "ipv6")
    assert next_deadline(sim.state, sim.now) is None


def test_without_learned_routes_the_sweep_follows_the_first_decision() -> None:
    sim = Sim(make_config(learned=False))
    sim.bring_up()
    names = [type(a).__name__ for _, a in sim.log if not isinstance(a, act.PublishTunnelState)]
    first_sweep = names.index("SweepRoutes")
    # Every wanted route was asked for before anything of ours is swept.
    assert "InstallRoute" in names[:first_sweep]
    assert "InstallRoute" not in names[first_sweep:]
    assert [f for _, f in _sweeps(sim)] == ["ipv4", "ipv6"]
    assert str(act.SweepRoutes("ipv4")) == "sweep ipv4 routes of ours that are no longer wanted"


# --- announcing over a takeover -------------------------------------------------------------


def _meds(sim: Sim) -> dict[str, int]:
    return {a.tunnel: a.med for a in sim.state.asked.announcements.values()}


def test_a_standing_in_carrier_beats_the_dead_tunnels_stale_route() -> None:
    # The far side still holds tun1's MED 100 route until its hold timer: our withdrawal
    # cannot cross the dead tunnel. tun2 must announce something strictly better.
    sim = started()
    assert _meds(sim) == {"tun1": 100, "tun2": 200}
    sim.step(ev.ChildSaDown(tunnel="tun1"))
    assert _meds(sim) == {"tun2": 99}
    sim.step(ev.ChildSaUp(tunnel="tun1"))
    sim.probes("tun1", 3)
    assert _meds(sim) == {"tun2": 99}  # tun1 back, unproven: nothing announced over it yet
    sim.advance(sim.now + sim.cfg.policy.preempt_hold_down_s)
    assert sim.state.carriers == ("tun1",)
    assert _meds(sim) == {"tun1": 100, "tun2": 200}


def test_third_in_line_beats_both_stale_routes() -> None:
    sim = Sim(make_config(tunnels=[tunnel(1), tunnel(2), tunnel(3, role="backup", priority=300)]))
    sim.bring_up(("tun1", "tun2", "tun3"))
    sim.step(ev.ChildSaDown(tunnel="tun1"))
    assert _meds(sim)["tun2"] == 99
    sim.step(ev.ChildSaDown(tunnel="tun2"))
    assert _meds(sim) == {"tun3": 98}


def test_active_active_survivors_beat_the_lost_members_route() -> None:
    sim = started(mode="active-active")
    sim.step(ev.ChildSaDown(tunnel="tun2"))
    assert _meds(sim) == {"tun1": 99}


def test_takeover_med_can_be_turned_off() -> None:
    cfg = make_config()
    assert cfg.bgp is not None
    sim = Sim(cfg.model_copy(update={"bgp": cfg.bgp.model_copy(update={"takeover_med": False})}))
    sim.bring_up()
    sim.step(ev.ChildSaDown(tunnel="tun1"))
    assert _meds(sim) == {"tun2": 100}


def test_dual_stack_tunnels_announce_ipv6_over_the_ipv4_session_with_inner6() -> None:
    six = {"local": "fd00:1::1/64", "peer": "fd00:1::2"}
    cfg = make_config(tunnels=[tunnel(1, inner6=six), tunnel(2)])
    cfg = cfg.model_copy(
        update={"site_prefixes": (*cfg.site_prefixes, ipaddress.ip_network("2001:db8:a::/48"))}
    )
    sim = Sim(cfg)
    sim.bring_up()
    announced = {(a.neighbor, a.prefix): a.next_hop for a in sim.state.asked.announcements.values()}
    # tun2 has no IPv6 on the tunnel: its IPv4 session carries only the IPv4 prefix.
    assert announced == {
        ("169.254.1.2", "10.1.0.0/24"): None,
        ("169.254.1.2", "2001:db8:a::/48"): "fd00:1::1",
        ("169.254.2.2", "10.1.0.0/24"): None,
    }
    sim.step(ev.ChildSaDown(tunnel="tun1", at=sim.now))
    withdrawn = {(w.prefix, w.next_hop) for w in sim.of(act.WithdrawPrefix)}
    assert withdrawn == {("10.1.0.0/24", None), ("2001:db8:a::/48", "fd00:1::1")}
    assert str(sim.of(act.AnnouncePrefix)[0]).startswith("announce 10.1.0.0/24 to 169.254.2.2")
    sim.step(ev.ChildSaUp(tunnel="tun1", at=sim.now))
    sim.probes("tun1", 3)
    sim.advance(sim.now + 31)
    six6 = [a for a in sim.state.asked.announcements.values() if a.next_hop]
    assert [str(a) for a in six6] == [
        "announce 2001:db8:a::/48 to 169.254.1.2 (tun1) med 100 next-hop fd00:1::1"
    ]
