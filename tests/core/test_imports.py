"""The import policy: what a neighbor may have installed, the limit, and what operators see.

Site A: tunnels tun1/tun2 with underlay 192.0.2.N -> 198.51.100.N, inner 169.254.N.0/30,
site prefix 10.1.0.0/24, static remote prefix 10.2.0.0/24.
"""

from __future__ import annotations

from typing import Any

import pytest

from agent.core import actions as act
from agent.core import events as ev
from agent.core import imports as imp
from agent.core.health import Health

from .sim import Sim, make_config, tunnel

GOOD = "10.7.0.0/24"


def started(**imports: Any) -> Sim:
    sim = Sim(make_config(imports=imports))
    sim.bring_up()
    sim.advance(sim.now + 5)
    return sim


def learned(sim: Sim, name: str = "tun1") -> set[str]:
    return set(sim.state.learned.get(name, frozenset()))


def routed(sim: Sim) -> set[str]:
    return {r.prefix for r in sim.state.asked.routes}


def counts(sim: Sim, name: str = "tun1") -> dict[str, int]:
    return dict(sim.state.reported[name].learned_rejected)


def alerts(sim: Sim, kind: str = "learned-rejected") -> list[str]:
    return [a.reason for a in sim.of(act.PublishAlert) if a.kind == kind]


REFUSED = [
    ("0.0.0.0/0", "default", "a default route"),
    ("::/0", "default", "a default route"),
    ("127.0.0.0/8", "martian", "inside loopback space"),
    ("127.0.0.1/32", "martian", "inside loopback space"),
    ("0.0.0.0/8", "martian", "inside 'this network' space"),
    ("169.254.0.0/16", "martian", "inside link-local space"),
    ("224.0.0.0/4", "martian", "inside multicast space"),
    ("239.1.2.0/24", "martian", "inside multicast space"),
    ("240.0.0.0/4", "martian", "inside reserved (and broadcast) space"),
    ("255.255.255.255/32", "martian", "inside reserved (and broadcast) space"),
    ("::/128", "martian", "inside unspecified space"),
    ("::1/128", "martian", "inside loopback space"),
    ("::ffff:0:0/96", "martian", "inside IPv4-mapped space"),
    ("::ffff:a00:0/104", "martian", "inside IPv4-mapped space"),
    ("fe80::/10", "martian", "inside link-local space"),
    ("fe80::/64", "martian", "inside link-local space"),
    ("ff02::/16", "martian", "inside multicast space"),
    ("198.51.100.1/32", "underlay", "covers tun1's underlay remote 198.51.100.1"),
    ("198.51.100.0/24", "underlay", "covers tun1's underlay remote 198.51.100.1"),
    ("192.0.2.2/32", "underlay", "covers tun2's underlay local 192.0.2.2"),
    ("128.0.0.0/1", "underlay", "covers tun1's underlay remote 198.51.100.1"),
    ("10.1.0.0/24", "site", "covers site prefix 10.1.0.0/24"),
    ("10.1.0.128/25", "site", "inside site prefix 10.1.0.0/24"),
    ("10.0.0.0/8", "site", "covers site prefix 10.1.0.0/24"),
]


@pytest.mark.parametrize(("prefix", "reason", "detail"), REFUSED)
def test_a_refused_prefix_is_never_routed_and_says_why(
    prefix: str, reason: str, detail: str
) -> None:
    sim = started()
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix=prefix))
    assert learned(sim) == set()
    assert prefix not in routed(sim)
    assert sim.routing() == []
    assert alerts(sim) == [f"refused 1 prefix learned from tun1: {prefix} ({reason}: {detail})"]
    assert counts(sim) == {reason: 1}


def test_inner_subnets_and_bgp_neighbors_are_the_tunnels_own() -> None:
    outside = tunnel(2, inner={"local": "10.255.2.1/30", "peer": "10.255.2.2"})
    sim = Sim(make_config(tunnels=[tunnel(1), outside]))
    rules = sim.state.ix.imports
    assert imp.rejection(rules, "10.255.2.0/30") == (
        imp.Rejection.TUNNEL,
        "covers tun2's inner subnet 10.255.2.0/30",
    )
    assert imp.rejection(rules, "10.255.2.2/32") == (
        imp.Rejection.TUNNEL,
        "covers tun2's BGP neighbor 10.255.2.2",
    )
    assert imp.rejection(rules, "10.255.2.0/31") == (
        imp.Rejection.TUNNEL,
        "inside tun2's inner subnet 10.255.2.0/30",
    )
    assert imp.rejection(rules, "10.255.0.0/16") is not None
    assert imp.rejection(rules, "10.254.0.0/16") is None
    assert imp.rejection(rules, "2001:db8:b::/48") is None


def test_a_good_prefix_beside_hostile_ones_is_the_only_one_routed() -> None:
    sim = started()
    hostile = tuple(p for p, _, _ in REFUSED)
    sim.step(ev.BgpRoutesChanged(tunnel="tun1", announced=(*hostile, GOOD)))
    assert learned(sim) == {GOOD}
    assert [str(a) for a in sim.routing()] == [f"install route {GOOD} dev vti1 metric 10"]
    (told,) = alerts(sim)
    assert told.startswith(f"refused {len(hostile)} prefixes learned from tun1: 0.0.0.0/0 (")
    assert told.endswith(
        f" and {len(hostile) - imp.LIST_PER_WINDOW} more; more refusals from "
        "tun1 are summed up once a minute"
    )
    assert sum(counts(sim).values()) == len(hostile)


def test_allow_default_lets_the_default_in() -> None:
    sim = started(allow_default=True)
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="0.0.0.0/0"))
    assert "0.0.0.0/0" in routed(sim)
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="128.0.0.0/1"))
    assert "128.0.0.0/1" not in routed(sim)  # covering the underlay is another matter


@pytest.mark.parametrize(
    ("prefix", "accepted"),
    [
        ("10.7.0.0/24", True),
        ("10.7.0.0/16", True),
        ("10.7.0.0/25", False),  # longer than le 24
        ("172.16.0.0/12", True),  # exactly the entry
        ("172.16.1.0/24", False),  # an exact entry matches itself only
        ("192.168.0.0/24", False),
        ("172.0.0.0/8", False),  # shorter than every entry
        ("2001:db8:1::/48", True),
        ("2001:db8:1::/64", True),
        ("2001:db8::/32", False),  # shorter than ge 48
        ("2001:db8:1:1::/65", False),
        ("0.0.0.0/0", True),  # allow_default decides about the default alone
    ],
)
def test_an_accept_list_takes_only_what_it_matches(prefix: str, accepted: bool) -> None:
    accept = ["10.0.0.0/8 ge 16 le 24", "172.16.0.0/12", "2001:db8::/32 ge 48 le 64"]
    sim = started(accept=accept, allow_default=True)
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix=prefix))
    assert (prefix in learned(sim)) is accepted
    if not accepted:
        assert counts(sim) == {"not-accepted": 1}


def test_an_accept_list_never_overrides_what_is_always_refused() -> None:
    sim = started(accept=["0.0.0.0/0 le 32"])
    for prefix in ("10.1.0.0/24", "127.0.0.1/32", "198.51.100.1/32", "0.0.0.0/0"):
        sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix=prefix))
    assert learned(sim) == set()
    assert counts(sim) == {"site": 1, "martian": 1, "underlay": 1, "default": 1}


def table(n: int, start: int = 0) -> tuple[str, ...]:
    return tuple(f"10.{64 + i // 256}.{i % 256}.0/24" for i in range(start, start + n))


def test_withdraw_all_past_the_limit_until_the_session_restarts() -> None:
    sim = started(max_prefixes=5)
    sim.step(ev.BgpRoutesChanged(tunnel="tun1", announced=table(5)))
    assert learned(sim) == set(table(5))
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="10.99.0.0/24"))
    assert learned(sim) == set()
    assert {a.route.prefix for a in sim.of(act.RemoveRoute)} == set(table(5))
    assert alerts(sim, "max-prefixes") == [
        "tun1's neighbor sent more than 5 prefixes: every route learned from it is withdrawn "
        "until its session restarts (on_max_prefixes: withdraw-all)"
    ]
    # Nothing more is learned from it, not even after it withdrew some ...
    sim.step(ev.BgpRoutesChanged(tunnel="tun1", withdrawn=table(3), announced=(GOOD,)))
    assert learned(sim) == set()
    assert counts(sim) == {"max-prefixes": 2}
    # ... until its session restarts and it sends a table within the limit.
    sim.step(ev.BgpNeighborDown(tunnel="tun1"))
    sim.step(ev.BgpRoutesChanged(tunnel="tun1", announced=table(5)))
    assert learned(sim) == set(table(5))
    # tun2's neighbor was never limited.
    sim.step(ev.BgpRoutesChanged(tunnel="tun2", announced=table(5)))
    assert learned(sim, "tun2") == set(table(5))


def test_ignore_excess_keeps_the_first_and_takes_more_once_there_is_room() -> None:
    sim = started(max_prefixes=3, on_max_prefixes="ignore-excess")
    sim.step(ev.BgpRoutesChanged(tunnel="tun1", announced=table(5)))
    assert learned(sim) == set(table(3))
    assert alerts(sim) == [
        f"refused 2 prefixes learned from tun1: {table(5)[3]} (max-prefixes: past "
        f"max_prefixes 3), {table(5)[4]} (max-prefixes: past max_prefixes 3)"
    ]
    # Re-announced while there is no room: still refused, not told again.
    sim.step(ev.BgpRoutesChanged(tunnel="tun1", announced=table(5)))
    assert alerts(sim) == []
    assert counts(sim) == {"max-prefixes": 2}
    # Room again: an excess prefix announced again is taken.
    sim.step(ev.BgpRouteWithdrawn(tunnel="tun1", prefix=table(1)[0]))
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix=table(5)[4]))
    assert learned(sim) == {*table(3)[1:], table(5)[4]}
    assert counts(sim) == {"max-prefixes": 2}


def test_no_limit_when_max_prefixes_is_null() -> None:
    sim = started(max_prefixes=None)
    sim.step(ev.BgpRoutesChanged(tunnel="tun1", announced=table(20_001)))
    assert len(learned(sim)) == 20_001


def test_a_refusal_is_told_once_per_prefix_and_again_after_a_withdrawal() -> None:
    sim = started()
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="0.0.0.0/0"))
    assert len(alerts(sim)) == 1
    assert sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="0.0.0.0/0")) == []
    sim.step(ev.BgpRouteWithdrawn(tunnel="tun1", prefix="0.0.0.0/0"))
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="0.0.0.0/0"))
    assert len(alerts(sim)) == 1
    assert counts(sim) == {"default": 2}
    # A new session judges afresh as well.
    sim.step(ev.BgpNeighborDown(tunnel="tun1"))
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="0.0.0.0/0"))
    assert counts(sim) == {"default": 3}


def test_refusals_past_the_first_few_a_minute_are_summed_up_when_the_minute_ends() -> None:
    sim = started()
    martians = [f"127.0.{i}.0/24" for i in range(30)]
    for prefix in martians[:12]:
        sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix=prefix))
    told = [a for _, a in sim.log if getattr(a, "kind", "") == "learned-rejected"]
    assert len(told) == imp.LIST_PER_WINDOW
    assert told[-1].reason.endswith("more refusals from tun1 are summed up once a minute")
    opened = told[0].at
    # The window's end is a deadline: the summary comes on time with nothing else happening.
    assert sim.advance(opened + imp.WINDOW_S) == [
        act.PublishAlert(
            kind="learned-rejected",
            at=opened + imp.WINDOW_S,
            from_tunnels=("tun1",),
            to_tunnels=(),
            reason="refused 2 more prefixes learned from tun1 in the last 60 s (not listed; "
            "counted by reason)",
        )
    ]
    # A new minute lists again; its silent remainder is told by the next refusal past it.
    for prefix in martians[12:]:
        sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix=prefix))
    sim.now += imp.WINDOW_S
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="224.0.0.0/4"))
    assert alerts(sim) == [
        "refused 8 more prefixes learned from tun1 in the last 60 s (not listed; counted by "
        "reason)",
        "refused 1 prefix learned from tun1: 224.0.0.0/4 (martian: inside multicast space)",
    ]
    assert counts(sim) == {"martian": 31}


def test_a_hostile_table_is_remembered_only_up_to_a_bound() -> None:
    sim = started(max_prefixes=None)
    hosts = tuple(f"127.{i // 65536}.{i // 256 % 256}.{i % 256}/32" for i in range(10_050))
    sim.step(ev.BgpRoutesChanged(tunnel="tun1", announced=hosts))
    assert len(sim.state.imports["tun1"].refused) == imp.REMEMBERED
    assert counts(sim) == {"martian": 10_050}
    # One not remembered is counted again when re-announced; a remembered one is not.
    sim.step(ev.BgpRoutesChanged(tunnel="tun1", announced=(hosts[0], hosts[-1])))
    assert counts(sim) == {"martian": 10_051}


def test_a_reload_judges_what_was_learned_and_refused_with_the_new_policy() -> None:
    sim = started(accept=["10.7.0.0/16 le 24"])
    sim.step(ev.BgpRoutesChanged(tunnel="tun1", announced=("10.7.0.0/24", "10.8.0.0/24")))
    assert learned(sim) == {"10.7.0.0/24"}
    sim.reconfigure(make_config(imports={"accept": ["10.8.0.0/16 le 24"]}))
    assert learned(sim) == {"10.8.0.0/24"}
    assert routed(sim) >= {"10.8.0.0/24"}
    assert "10.7.0.0/24" not in routed(sim)
    # Within a lower limit the first (in prefix order) stay with ignore-excess ...
    sim.reconfigure(make_config(imports={"max_prefixes": 1, "on_max_prefixes": "ignore-excess"}))
    assert learned(sim) == {"10.7.0.0/24"}
    sim.reconfigure(make_config(imports={"max_prefixes": 2}))
    assert learned(sim) == {"10.7.0.0/24", "10.8.0.0/24"}
    # ... and none with withdraw-all.
    sim.reconfigure(make_config(imports={"max_prefixes": 1}))
    assert learned(sim) == set()
    assert sim.state.imports["tun1"].over_limit
    # Over the limit stays over it, whatever a reload says, until the session restarts.
    sim.reconfigure(make_config(imports={"max_prefixes": 5}))
    assert learned(sim) == set()
    sim.step(ev.BgpNeighborDown(tunnel="tun1"))
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="10.9.0.0/24"))
    assert learned(sim) == {"10.9.0.0/24"}


def test_a_reload_remembers_only_up_to_the_bound_too() -> None:
    sim = started(max_prefixes=None)
    sim.step(ev.BgpRoutesChanged(tunnel="tun1", announced=table(10_050)))
    sim.reconfigure(make_config(imports={"max_prefixes": 10, "on_max_prefixes": "ignore-excess"}))
    assert len(learned(sim)) == 10
    assert len(sim.state.imports["tun1"].refused) == imp.REMEMBERED
    sim.reconfigure(make_config(imports={"max_prefixes": None, "accept": ["10.8.0.0/16"]}))
    assert learned(sim) == set()
    assert len(sim.state.imports["tun1"].refused) == imp.REMEMBERED


def test_learned_routes_off_learns_and_refuses_nothing() -> None:
    sim = Sim(make_config(learned=False))
    sim.bring_up()
    assert sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="0.0.0.0/0")) == []
    assert sim.state.imports == {}


def test_refusals_before_the_first_decision_are_told_and_counted() -> None:
    sim = Sim(make_config())
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="0.0.0.0/0"))
    assert alerts(sim) == [
        "refused 1 prefix learned from tun1: 0.0.0.0/0 (default: a default route)"
    ]
    sim.bring_up()
    sim.advance(sim.now + 5)
    assert counts(sim) == {"default": 1}
    assert counts(sim, "tun2") == {}


# --- draining the last tunnel ------------------------------------------------------------


def drain(sim: Sim, name: str, force: bool = False) -> list[str]:
    sim.step(ev.AdminDisabled(tunnel=name, force=force, at=sim.now))
    return [f"{a.kind}: {a.reason}" for a in sim.of(act.PublishAlert)]


def test_draining_the_last_usable_tunnel_is_refused_unless_forced() -> None:
    sim = started()
    sim.step(ev.ChildSaDown(tunnel="tun2", at=sim.now))
    before = sim.state
    assert drain(sim, "tun1") == [
        "drain-refused: refused: tun1 is the last usable tunnel; use force"
    ]
    assert sim.state is before
    assert sim.health("tun1") is Health.UP
    assert drain(sim, "tun1", force=True) == ["both-down: tun1 admin"]
    assert sim.health("tun1") is Health.ADMIN_DOWN
    assert drain(sim, "tun1") == []  # already drained: nothing to refuse


def test_draining_every_tunnel_is_refused_unless_forced() -> None:
    sim = started()
    assert drain(sim, "tun2") == []
    sim.step(ev.ChildSaDown(tunnel="tun1", at=sim.now))
    assert drain(sim, "tun1") == [
        "drain-refused: refused: every other tunnel is drained, tun1 is the last in service; "
        "use force"
    ]
    assert drain(sim, "tun1", force=True) == []
    assert sim.health("tun1") is Health.ADMIN_DOWN


def test_draining_a_dead_tunnel_beside_a_live_one_is_fine() -> None:
    sim = started()
    sim.step(ev.ChildSaDown(tunnel="tun1", at=sim.now))
    assert drain(sim, "tun1") == []
    assert sim.health("tun1") is Health.ADMIN_DOWN
