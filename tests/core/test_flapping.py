"""A flapping path costs a bounded number of route changes: the lab's site A, simulated.

isp1 goes down for 1 s and up for 1 s (0.5 Hz) for two minutes, with the lab's policy
(labs/dual-vti/siteA/vti-failover.yaml). The evidence is what the adapters emit: probes
answered or lost at their timeout (lost at once while the agent holds vti1 down), the
link source echoing the agent's own link changes, charon's DPD (it never declares the
peer dead: each 1 s up lets a retransmit through) and BGP sessions with a 9 s hold time.
The unit of cost is one clean failover (a silent cut that lasts), measured alike.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agent.config import Config
from agent.core import actions as act

from .world import Underlay, World, always_up, cut, flapping

LAB = Path(__file__).parents[2] / "labs/dual-vti/siteA/vti-failover.yaml"
REMOTE = "10.2.0.0/24"
# Site B's prefixes, learned over both sessions (the lab's BIRD announces the first).
LEARNED = (REMOTE, "10.2.1.0/24")
START = 20.0  # sessions up and the agent settled long before
FLAP_S = 120.0
CUT_S = 60.0


def lab(groups: bool) -> Config:
    raw = yaml.safe_load(LAB.read_text())
    raw["netlink"] = {"nexthop_groups": groups}
    return Config.model_validate(raw)


def world(groups: bool, tun1: Underlay) -> World:
    w = World(lab(groups), {"tun1": tun1, "tun2": always_up}, {"tun1": LEARNED, "tun2": LEARNED})
    w.run(START)
    assert w.sim.state.carriers == ("tun1",)
    return w


def one_failover(groups: bool) -> int:
    """Route and BGP changes of one clean failover: isp1 cut silently for a minute."""
    w = world(groups, cut(START, START + CUT_S))
    w.run(START + CUT_S)
    assert [via for _, via in w.moves_after(START)] == [{"vti2"}]
    return w.route_changes(START)


@pytest.mark.parametrize("groups", [False, True], ids=["routes", "nexthop-groups"])
def test_half_hertz_flapping_moves_traffic_twice_for_two_failovers_worth(groups: bool) -> None:
    unit = one_failover(groups)
    # Group writes or routes, plus one announce and one withdraw, in each family (the lab's
    # site A is dual stack: IPv6 rides each IPv4 session).
    assert unit == (6 if groups else 10)
    w = world(groups, flapping(START, START + FLAP_S))
    w.run(START + FLAP_S)
    # One move while it flaps: away from tun1, for good.
    assert [via for _, via in w.moves_after(START)] == [{"vti2"}]
    # It stops; dampening lets tun1 go, it is proven after the hold-down and takes back.
    w.run(START + FLAP_S + 600)
    moves = w.moves_after(START)
    assert [via for _, via in moves] == [{"vti2"}, {"vti1"}]
    assert moves[-1][0] > START + FLAP_S
    assert w.route_changes(START) <= 2 * unit
    alerts = [a for _, a in w.actions if isinstance(a, act.PublishAlert)]
    assert [(a.kind, a.to_tunnels) for a in alerts if not a.neighbor] == [
        ("failover", ("tun2",)),
        ("failback", ("tun1",)),
    ]
    # Each session drop is told once, and each return once, with how long it was down.
    sessions = [a for a in alerts if a.neighbor]
    assert [a.at for a in sessions if a.kind == "bgp-session-lost"] == [
        t for t, _ in w.sessions_lost
    ]
    assert [a.kind for a in sessions] == [
        "bgp-session-lost",
        "bgp-session-restored",
    ] * len(w.sessions_lost)
    assert all(a.tunnel == "tun1" for a in sessions)
    assert all(a.down_for_s for a in sessions if a.kind == "bgp-session-restored")


@pytest.mark.parametrize("groups", [False, True], ids=["routes", "nexthop-groups"])
def test_flapping_never_touches_the_stable_tunnel(groups: bool) -> None:
    w = world(groups, flapping(START, START + FLAP_S))
    w.run(START + FLAP_S + 600)
    # vti2 was raised at the start (a no-op for a link already up) and never again.
    assert [(t < START, type(a)) for t, a in w.link_changes("vti2")] == [(True, act.SetLinkUp)]
    assert all(name != "tun2" for _, name in w.sessions_lost)
    assert not any(isinstance(a, act.WithdrawPrefix) and a.tunnel == "tun2" for _, a in w.actions)
    # Traffic always had a path: every move lands somewhere.
    assert all(via for _, via in w.moves_after(START))


def test_a_suppressed_tunnel_keeps_its_link_down_until_it_is_reusable() -> None:
    w = world(False, flapping(START, START + FLAP_S))
    w.run(START + FLAP_S + 600)
    spans = [(t, s) for t, name, s in w.damped if name == "tun1"]
    (on, _), (off, _) = spans
    assert [s for _, s in spans] == [True, False]
    assert START < on < START + FLAP_S < off
    raised = [t for t, a in w.link_changes("vti1") if isinstance(a, act.SetLinkUp)]
    # No probation while suppressed (it could not give tun1 traffic, only flap its link and
    # its BGP session once more): the link goes up again at reuse, not before.
    assert not [t for t in raised if on <= t < off]
    assert off in raised
    # Before suppression each probation cost tun1's session (10 s down > 9 s hold time),
    # never more than once per flap.
    flaps = len([t for t, a in w.link_changes("vti1") if isinstance(a, act.SetLinkDown)])
    assert len([t for t, name in w.sessions_lost if name == "tun1"]) <= flaps
