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


def test_a_prefix_some_tunnels_lack_uses_only_the_groups_of_those_that_have_it() -> None:
    sim, _ = started()
    sim.step(ev.BgpRoutesChanged(tunnel="tun2", announced=("10.5.0.0/24",)))
    # Only the standby has it: the standby slot's group, no carrier route (tun1 lacks it).
    assert [str(a) for a in sim.of(act.InstallRoute)] == [
        "install route 10.5.0.0/24 group 2 metric 100"
    ]
    sim.step(ev.BgpRoutesChanged(tunnel="tun1", announced=("10.5.0.0/24",)))
    assert [str(a) for a in sim.of(act.InstallRoute)] == [
        "install route 10.5.0.0/24 group 1 metric 10"
    ]
    # After a failover tun2 carries it; tun1, gone, has nothing more to do with it.
    sim.step(ev.BgpRoutesChanged(tunnel="tun1", withdrawn=("10.5.0.0/24",)))
    sim.step(ev.ChildSaDown(tunnel="tun1", at=sim.now))
    assert {r.group for r in sim.state.asked.by_prefix["10.5.0.0/24"]} == {1, 2}
    assert sim.state.asked.groups[1] == (4, (act.NextHop("vti2"),))


def test_a_slot_with_a_tunnel_that_lacks_the_prefix_routes_by_holder() -> None:
    sim, _ = started(tunnels=[tunnel(1), tunnel(2), tunnel(3)])
    sim.bring_up(("tun3",))
    sim.advance(sim.now + 5)
    # tun3 (second standby) alone has it: slot 2 holds tun3 itself, so it rides group 3.
    sim.step(ev.BgpRoutesChanged(tunnel="tun3", announced=("10.6.0.0/24",)))
    assert [str(a) for a in sim.of(act.InstallRoute)] == [
        "install route 10.6.0.0/24 group 3 metric 101"
    ]
    # tun2 dies: tun3 is the first standby now (slot 1); slot 2, nobody's own, falls
    # back to the carrier, which lacks the prefix: no route there.
    sim.step(ev.ChildSaDown(tunnel="tun2", at=sim.now))
    assert sorted(str(r) for r in sim.state.asked.by_prefix["10.6.0.0/24"]) == [
        "10.6.0.0/24 group 2 metric 100"
    ]


def test_ipv6_prefixes_get_groups_of_their_own() -> None:
    sim, router = started()
    for name in ("tun1", "tun2"):
        for a in sim.step(ev.BgpRoutesChanged(tunnel=name, announced=("2001:db8:b::/48",))):
            router.apply(a)
    assert router.routes[("2001:db8:b::/48", 254, 10)].group == 129
    assert router.routes[("2001:db8:b::/48", 254, 100)].group == 130
    assert sim.state.asked.groups[129] == (6, (act.NextHop("vti1"),))


def test_a_tunnel_in_its_own_table_has_its_own_groups() -> None:
    sim, _ = started(tunnels=[tunnel(1), tunnel(2, table=100)])
    # Tables in order (100, 254): table 100's groups are numbered from 1, 254's from 257.
    assert {r.group for r in sim.state.asked.routes if r.table == 100} == {1}
    assert {r.group for r in sim.state.asked.routes if r.table == 254} == {257}


def test_a_prefix_only_a_drained_tunnel_had_leaves_the_fib() -> None:
    sim, _ = started()
    sim.step(ev.BgpRoutesChanged(tunnel="tun2", announced=("10.7.0.0/24",)))
    assert "10.7.0.0/24" in sim.state.asked.by_prefix
    sim.step(ev.AdminDisabled(tunnel="tun2", at=sim.now))
    assert "10.7.0.0/24" not in sim.state.asked.by_prefix
    assert "remove route 10.7.0.0/24 group 2 metric 100" in [str(a) for a in sim.routing()]


def test_a_group_the_kernel_emptied_takes_its_routes_and_they_are_asked_for_again() -> None:
    # No standby slot: the carrier's group is its only member's. Its carrier gone, the
    # kernel deletes vti1's nexthop, the emptied group and the route on it.
    sim, router = started(standby_routes=0)
    router.flush_nexthops("vti1")
    assert router.routes == {}
    seen = drive(
        sim, router, ev.LinkChanged(tunnel="tun1", present=True, admin_up=True, oper_up=False)
    )
    assert seen[-1] == {"vti2"}
    assert "install route 10.2.0.0/24 group 1 metric 10" in [str(a) for a in sim.routing()]
