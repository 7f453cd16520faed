"""Routing via nexthop groups: a failover moves groups, never routes, whatever the table size."""

from __future__ import annotations

from agent.core import actions as act
from agent.core import events as ev

from .sim import FakeRouter, Sim, make_config, tunnel

REMOTE = "10.2.0.0/24"
SITE = "10.1.0.0/24"


def started(**over: object) -> tuple[Sim, FakeRouter]:
    sim = Sim(make_config(groups=True, **over))  # type: ignore[arg-type]
    sim.bring_up()
    router = FakeRouter()
    for _, a in sim.log:
        router.apply(a)
    return sim, router


def drive(sim: Sim, router: FakeRouter, event: ev.Event) -> list[set[str]]:
    seen = []
    for a in sim.step(event):
        router.apply(a)
        seen.append(router.via(REMOTE))
    return seen


def test_routes_point_at_slot_groups() -> None:
    _sim, router = started()
    assert router.routes[(REMOTE, 254, 10)].group == 1
    assert str(router.routes[(REMOTE, 254, 10)]) == "10.2.0.0/24 group 1 metric 10"
    assert router.routes[(REMOTE, 254, 100)].group == 2
    assert router.groups[1] == (act.NextHop("vti1"),)
    assert router.groups[2] == (act.NextHop("vti2"),)
    assert router.via(REMOTE) == {"vti1"}


def test_a_failover_is_one_group_write_and_never_leaves_a_gap() -> None:
    sim, router = started()
    seen = drive(sim, router, ev.ChildSaDown(tunnel="tun1", at=sim.now))
    assert all(seen), seen
    assert router.via(REMOTE) == {"vti2"}
    # One group per IP family (learned IPv6 prefixes would ride the second).
    assert [str(a) for a in sim.routing()] == [
        "set nexthop group 1 (ipv4) dev vti2",
        "set nexthop group 129 (ipv6) dev vti2",
        "announce 10.1.0.0/24 to 169.254.2.2 (tun2) med 99",
        "withdraw 10.1.0.0/24 from 169.254.1.2 (tun1)",
        "set link vti1 down  (tun1)",
    ]
    # The standby slot has nobody of its own: it holds the carrier, so its route stays.
    assert router.groups[2] == (
        act.NextHop(
            "vti2",
        ),
    )


def test_ten_thousand_prefixes_move_with_the_same_one_write() -> None:
    statics = [f"10.{100 + i // 250}.{i % 250}.0/24" for i in range(10_000)]
    sim, router = started(learned=False)
    cfg = sim.cfg.model_copy(
        update={"remote_prefixes": sim.cfg.remote_prefixes.model_copy(update={"static": statics})}
    )
    for a in sim.reconfigure(cfg):
        router.apply(a)
    assert len(router.routes) == 20_000
    sim.step(ev.ChildSaDown(tunnel="tun1", at=sim.now))
    moves = [a for a in sim.routing() if isinstance(a, act.SetNexthopGroup | act.InstallRoute)]
    assert [str(a) for a in moves] == ["set nexthop group 1 (ipv4) dev vti2"]
    for a in sim.last:
        router.apply(a)
    assert router.via(statics[-1]) == {"vti2"}


def test_failback_moves_the_groups_back() -> None:
    sim, router = started(preempt_hold_down_s=5)
    drive(sim, router, ev.ChildSaDown(tunnel="tun1", at=sim.now))
    drive(sim, router, ev.ChildSaUp(tunnel="tun1", at=sim.now))
    for a in sim.advance(sim.now + 11):  # probation raises the link
        router.apply(a)
    for _ in range(3):
        sim.now += 0.2
        drive(sim, router, ev.ProbeSucceeded(tunnel="tun1", rtt_ms=5.0, at=sim.now))
    for a in sim.advance(sim.now + 6):
        router.apply(a)
    assert router.via(REMOTE) == {"vti1"}
    assert router.groups[1] == (act.NextHop("vti1"),)
    assert router.groups[2] == (act.NextHop("vti2"),)
    assert not any(isinstance(a, act.InstallRoute) for a in sim.last)


def test_both_down_removes_routes_before_their_groups() -> None:
    sim, router = started()
    drive(sim, router, ev.ChildSaDown(tunnel="tun1", at=sim.now))
    drive(sim, router, ev.ChildSaDown(tunnel="tun2", at=sim.now))
    kinds = [type(a).__name__ for a in sim.routing()]
    assert kinds.index("RemoveNexthopGroup") > max(
        i for i, k in enumerate(kinds) if k == "RemoveRoute"
    )
    assert router.routes == {}
    assert router.groups == {}
    assert "remove nexthop group 1" in [str(a) for a in sim.routing()]


def test_a_prefix_only_one_tunnel_has_routes_via_that_tunnel_alone() -> None:
    sim, _router = started()
    sim.step(ev.BgpRoutesChanged(tunnel="tun2", announced=("10.5.0.0/24",)))
    (route,) = sim.of(act.InstallRoute)
    assert (route.route.group, route.route.nexthops) == (0, (act.NextHop("vti2"),))
    # Once both have it, it rides the groups like the static prefix.
    sim.step(ev.BgpRoutesChanged(tunnel="tun1", announced=("10.5.0.0/24",)))
    assert {a.route.group for a in sim.of(act.InstallRoute)} == {1, 2}
    assert [a.route.nexthops for a in sim.of(act.InstallRoute)] == [(), ()]


def test_ipv6_prefixes_get_groups_of_their_own() -> None:
    sim, router = started()
    sim.step(ev.BgpRoutesChanged(tunnel="tun1", announced=("2001:db8:b::/48",)))
    sim.step(ev.BgpRoutesChanged(tunnel="tun2", announced=("2001:db8:b::/48",)))
    for a in sim.last:
        router.apply(a)
    assert router.routes[("2001:db8:b::/48", 254, 10)].group == 129
    assert sim.state.asked.groups[129] == (6, (act.NextHop("vti1"),))


def test_a_tunnel_in_its_own_table_has_its_own_groups() -> None:
    sim, _ = started(tunnels=[tunnel(1), tunnel(2, table=100)])
    # Tables in order (100, 254): table 100's groups are numbered from 1, 254's from 257.
    assert {r.group for r in sim.state.asked.routes if r.table == 100} == {1}
    assert {r.group for r in sim.state.asked.routes if r.table == 254} == {257}
