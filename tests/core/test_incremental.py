"""The core's shortcuts agree with deciding from scratch, and cost what an event changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core import actions as act
from agent.core import engine
from agent.core import events as ev
from agent.core import imports as imp
from agent.core.engine import next_deadline

from .sim import FakeRouter, Sim, make_config, tunnel

NAMES = ("tun1", "tun2", "tun3")
# Site B's prefixes, one equal to the static remote prefix, one inside our own site
# (reflected back), one that is no prefix at all; then what a hostile or careless peer
# sends: defaults, the underlay ends, martians, our site, what covers a tunnel's inside.
POOL = ("10.2.1.0/24", "10.2.2.0/24", "10.2.0.0/24", "10.1.0.0/25", "2001:db8:b::/48", "bogus")
HOSTILE = (
    "0.0.0.0/0",
    "::/0",
    "198.51.100.2/32",
    "192.0.2.0/24",
    "128.0.0.0/1",
    "127.0.0.0/8",
    "224.0.0.0/4",
    "255.255.255.255/32",
    "fe80::/64",
    "ff02::1/128",
    "::ffff:0:0/96",
    "10.1.0.0/24",
    "10.0.0.0/8",
    "169.254.3.0/30",
)
KINDS = (
    "ok",
    "ok",
    "ok",
    "lost",
    "lost",
    "slow",
    "sa_up",
    "sa_down",
    "link_down",
    "link_up",
    "link_gone",
    "drain",
    "undrain",
    "blind",
    "learn",
    "learn",
    "forget",
    "update",
    "session_down",
    "eor",
)


@dataclass(frozen=True)
class Step:
    dt: float
    tunnel: str
    kind: str
    prefixes: tuple[str, ...]

    def event(self, at: float) -> ev.Event:
        t = self.tunnel
        match self.kind:
            case "ok":
                return ev.ProbeSucceeded(tunnel=t, rtt_ms=5.0, at=at)
            case "slow":
                return ev.ProbeSucceeded(tunnel=t, rtt_ms=400.0, at=at)
            case "lost":
                return ev.ProbeLost(tunnel=t, at=at)
            case "sa_up":
                return ev.ChildSaUp(tunnel=t, at=at)
            case "sa_down":
                return ev.ChildSaDown(tunnel=t, at=at)
            case "link_down":
                return ev.LinkChanged(tunnel=t, present=True, admin_up=True, oper_up=False, at=at)
            case "link_up":
                return ev.LinkChanged(tunnel=t, present=True, admin_up=True, oper_up=True, at=at)
            case "link_gone":
                return ev.LinkChanged(tunnel=t, present=False, admin_up=False, oper_up=False, at=at)
            case "drain":
                return ev.AdminDisabled(tunnel=t, at=at)
            case "undrain":
                return ev.AdminEnabled(tunnel=t, at=at)
            case "blind":
                return ev.SourceLost(source="vici", at=at)
            case "learn":
                return ev.BgpRouteLearned(tunnel=t, prefix=self.prefixes[0], at=at)
            case "forget":
                return ev.BgpRouteWithdrawn(tunnel=t, prefix=self.prefixes[0], at=at)
            case "update":
                half = len(self.prefixes) // 2
                return ev.BgpRoutesChanged(
                    tunnel=t,
                    withdrawn=self.prefixes[:half],
                    announced=self.prefixes[half:],
                    at=at,
                )
            case "session_down":
                return ev.BgpNeighborDown(tunnel=t, at=at)
            case _:
                return ev.BgpEndOfRib(tunnel=t, family="ipv4", at=at)


steps = st.lists(
    st.builds(
        Step,
        dt=st.sampled_from([0.0, 0.2, 0.2, 1.0, 7.5, 31.0]),
        tunnel=st.sampled_from(NAMES),
        kind=st.sampled_from(KINDS),
        prefixes=st.lists(st.sampled_from(POOL + HOSTILE), min_size=1, max_size=4).map(tuple),
    ),
    max_size=50,
)


def three_tunnels(
    mode: str,
    standby_routes: int,
    own_table: bool,
    groups: bool = False,
    imports: dict[str, Any] | None = None,
) -> Sim:
    # tun3 may route in a table of its own: its routes never merge with the others'.
    third = tunnel(3, table=100) if own_table else tunnel(3)
    return Sim(
        make_config(
            tunnels=[tunnel(1), tunnel(2), third],
            mode=mode,
            standby_routes=standby_routes,
            groups=groups,
            imports=imports,
        )
    )


# Import policies: the default, a small limit either way, an accept list, defaults allowed.
IMPORTS: list[dict[str, Any]] = [
    {},
    {"max_prefixes": 2},
    {"max_prefixes": 2, "on_max_prefixes": "ignore-excess"},
    {"accept": ["10.2.0.0/16 le 24"]},
    {"allow_default": True},
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    script=steps,
    mode=st.sampled_from(["active-standby", "active-active"]),
    standby_routes=st.sampled_from([0, 1, 2]),
    own_table=st.booleans(),
    up_first=st.booleans(),
    groups=st.booleans(),
    imports=st.sampled_from(IMPORTS),
)
def test_every_step_leaves_what_a_decision_from_scratch_would(
    script: list[Step],
    mode: str,
    standby_routes: int,
    own_table: bool,
    up_first: bool,
    groups: bool,
    imports: dict[str, Any],
) -> None:
    sim = three_tunnels(mode, standby_routes, own_table, groups, imports)
    rules = sim.state.ix.imports
    static = set(sim.state.ix.static)
    limit = sim.cfg.remote_prefixes.import_.max_prefixes
    router = FakeRouter()
    if up_first:
        sim.bring_up(NAMES)
    for _, a in sim.log:
        router.apply(a)
    for s in script:
        # Deadlines up to the next event fire on time, as the runtime's timer does.
        for a in sim.advance(sim.now + s.dt):
            router.apply(a)
        iface = f"vti{s.tunnel[-1]}"
        if s.kind == "link_gone":
            # What the kernel does to a vanished device's routes and nexthops ...
            router.apply(act.SetLinkDown(iface, s.tunnel))
        elif s.kind == "link_down":
            # ... and to one that lost its carrier.
            router.flush_nexthops(iface)
        for a in sim.step(s.event(sim.now)):
            router.apply(a)
        # The actions, in their order, leave the kernel with exactly what the core asked.
        asked = sim.state.asked
        assert router.routes == {(r.prefix, r.table, r.metric): r for r in asked.routes}
        # Whatever a peer sends, no route the import policy forbids reaches the kernel,
        # and no neighbor has more prefixes in than its limit.
        for prefix, _, _ in router.routes:
            assert prefix in static or imp.rejection(rules, prefix) is None, prefix
        assert all(limit is None or len(s) <= limit for s in sim.state.learned.values())
        assert router.groups == {g: hops for g, (_, hops) in asked.groups.items()}
        fresh, actions = engine.decide(sim.state, sim.now)
        assert actions == []
        assert fresh.asked == sim.state.asked
        assert fresh.carriers == sim.state.carriers
        assert next_deadline(fresh, sim.now) == next_deadline(sim.state, sim.now)


def settled_pair(**policy: object) -> Sim:
    sim = Sim(make_config(**policy))
    sim.bring_up()
    sim.advance(sim.now + 5)
    return sim


def test_a_probe_answer_that_changes_no_verdict_emits_nothing() -> None:
    sim = settled_pair()
    before = sim.state.asked
    assert sim.step(ev.ProbeSucceeded(tunnel="tun2", rtt_ms=5.0, at=sim.now)) == []
    assert sim.state.asked is before


def test_a_learned_update_moves_only_its_own_prefixes() -> None:
    sim = settled_pair()
    sim.step(ev.BgpRoutesChanged(tunnel="tun1", announced=("10.3.0.0/24", "10.4.0.0/24")))
    installs = sim.of(act.InstallRoute)
    assert {a.route.prefix for a in installs} == {"10.3.0.0/24", "10.4.0.0/24"}
    assert {a.route.metric for a in installs} == {10}
    sim.step(
        ev.BgpRoutesChanged(tunnel="tun1", withdrawn=("10.3.0.0/24",), announced=("10.5.0.0/24",))
    )
    assert [str(a) for a in sim.routing()] == [
        "install route 10.5.0.0/24 dev vti1 metric 10",
        "remove route 10.3.0.0/24 dev vti1 metric 10",
    ]


def test_a_burst_of_learned_prefixes_then_a_cut_moves_all_of_them() -> None:
    sim = settled_pair()
    prefixes = [f"10.{64 + i // 256}.{i % 256}.0/24" for i in range(5000)]
    for name in ("tun1", "tun2"):
        for i in range(0, len(prefixes), 100):
            sim.step(ev.BgpRoutesChanged(tunnel=name, announced=tuple(prefixes[i : i + 100])))
    assert {p for p, ifs in sim.carrier_routes().items() if ifs == {"vti1"}} >= set(prefixes)
    sim.step(ev.ChildSaDown(tunnel="tun1", at=sim.now))
    moved = sim.carrier_routes()
    assert all(moved[p] == {"vti2"} for p in prefixes)
    assert len(sim.of(act.InstallRoute)) == 5001  # every learned prefix and the static one


def test_no_standby_routes_when_asked_for_none() -> None:
    sim = settled_pair(standby_routes=0)
    assert {r.metric for r in sim.state.asked.routes} == {10}


def test_a_tunnel_with_only_reflected_prefixes_reports_no_metric() -> None:
    cfg = make_config()
    cfg = cfg.model_copy(
        update={"remote_prefixes": cfg.remote_prefixes.model_copy(update={"static": ()})}
    )
    sim = Sim(cfg)
    sim.bring_up()
    sim.advance(sim.now + 5)
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="10.1.0.0/25"))  # inside our site
    (report,) = [r for r in sim.state.reported.values() if r.tunnel == "tun1"]
    assert report.carrying
    assert report.metric is None
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="10.7.0.0/24"))
    assert sim.state.reported["tun1"].metric == 10


def test_no_prefixes_at_all_reports_no_metric() -> None:
    cfg = make_config(bgp=False)
    cfg = cfg.model_copy(
        update={"remote_prefixes": cfg.remote_prefixes.model_copy(update={"static": ()})}
    )
    sim = Sim(cfg)
    sim.bring_up()
    sim.advance(sim.now + 5)
    assert sim.state.reported["tun1"].carrying
    assert sim.state.reported["tun1"].metric is None


def test_a_recreated_carrier_link_gets_its_only_routes_back() -> None:
    sim = settled_pair(standby_routes=0, both_down="keep-last")
    for name in ("tun2", "tun1"):
        sim.step(ev.LinkChanged(tunnel=name, present=False, admin_up=False, oper_up=False))
    # Both gone: keep-last keeps tun1's routes, which the kernel dropped with its interface.
    assert sim.state.both_down
    assert sim.carrier_routes()["10.2.0.0/24"] == {"vti1"}
    sim.step(ev.LinkChanged(tunnel="tun1", present=True, admin_up=True, oper_up=True))
    assert "install route 10.2.0.0/24 dev vti1 metric 10" in [str(a) for a in sim.routing()]
