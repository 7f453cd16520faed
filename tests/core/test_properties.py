"""Properties of the core over random event streams (hypothesis), checked after every step."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent.core import actions as act
from agent.core import dampening as damp
from agent.core import events as ev
from agent.core.engine import next_deadline
from agent.core.health import Health

from .sim import Sim, make_config

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
NAMES = ("tun1", "tun2")
KINDS = (
    "ok",
    "ok",
    "ok",
    "slow",
    "lost",
    "lost",
    "sa_up",
    "sa_down",
    "link_down",
    "link_up",
    "drain",
    "undrain",
    "blind",
    "sees",
)


@dataclass(frozen=True)
class Step:
    dt: float
    tunnel: str
    kind: str

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
            case "drain":
                return ev.AdminDisabled(tunnel=t, at=at)
            case "undrain":
                return ev.AdminEnabled(tunnel=t, at=at)
            case "blind":
                return ev.SourceLost(source="vici", at=at)
            case _:
                return ev.SourceRecovered(source="vici", at=at)


steps = st.lists(
    st.builds(
        Step,
        dt=st.sampled_from([0.0, 0.2, 0.2, 1.0, 7.5, 31.0]),
        tunnel=st.sampled_from(NAMES),
        kind=st.sampled_from(KINDS),
    ),
    max_size=40,
)
modes = st.sampled_from(["active-standby", "active-active"])


def run(sim: Sim, script: list[Step], check: object = None) -> None:
    for s in script:
        # Deadlines up to the next event fire on time, as the runtime's timer does.
        sim.advance(sim.now + s.dt)
        sim.step(s.event(sim.now))
        if callable(check):
            check(sim, s)


@SETTINGS
@given(script=steps, mode=modes)
def test_up_only_after_rise_consecutive_answers(script: list[Step], mode: str) -> None:
    sim = Sim(make_config(mode=mode, dampening={"enabled": False}))
    rise = sim.cfg.policy.rise
    probes: dict[str, list[bool]] = {n: [] for n in NAMES}
    prev = {n: sim.health(n) for n in NAMES}

    def check(sim: Sim, s: Step) -> None:
        if s.kind in ("ok", "slow", "lost"):
            probes[s.tunnel].append(s.kind != "lost")
        for n in NAMES:
            now = sim.health(n)
            if now is Health.UP and prev[n] is not Health.UP:
                assert probes[n][-rise:] == [True] * rise
            prev[n] = now

    run(sim, script, check)


@SETTINGS
@given(script=steps, mode=modes)
def test_down_at_once_on_sa_removal_and_within_fall_losses(script: list[Step], mode: str) -> None:
    sim = Sim(make_config(mode=mode))
    fall = sim.cfg.policy.fall
    run_of_losses = dict.fromkeys(NAMES, 0)

    def check(sim: Sim, s: Step) -> None:
        if s.kind == "lost":
            run_of_losses[s.tunnel] += 1
        elif s.kind in ("ok", "slow", "undrain"):
            # An answer ends the run; an undrain starts probation afresh.
            run_of_losses[s.tunnel] = 0
        gone = {Health.DOWN, Health.ADMIN_DOWN}
        if s.kind == "sa_down":
            assert sim.health(s.tunnel) in gone
            assert s.tunnel not in sim.state.carriers or sim.state.both_down
        if run_of_losses[s.tunnel] >= fall:
            assert sim.health(s.tunnel) in gone

    run(sim, script, check)


@SETTINGS
@given(script=steps, mode=modes)
def test_same_input_twice_and_idle_timers_emit_nothing(script: list[Step], mode: str) -> None:
    sim = Sim(make_config(mode=mode))
    repeatable = {"sa_up", "sa_down", "link_down", "link_up", "drain", "undrain", "blind", "sees"}

    def check(sim: Sim, s: Step) -> None:
        if s.kind in repeatable:
            # A refused drain is answered again each time it is asked, and changes nothing.
            again = sim.step(s.event(sim.now))
            assert [a for a in again if getattr(a, "kind", "") != "drain-refused"] == []
        due = next_deadline(sim.state, sim.now)
        if due is None or due > sim.now:
            assert sim.step(ev.TimerFired(at=sim.now)) == []

    run(sim, script, check)


@SETTINGS
@given(script=steps, up_first=st.booleans())
def test_active_standby_has_exactly_one_carrier_when_any_is_usable(
    script: list[Step], up_first: bool
) -> None:
    sim = Sim(make_config())
    if up_first:
        sim.bring_up()

    def check(sim: Sim, s: Step) -> None:
        st_ = sim.state
        if not st_.settled:
            assert st_.asked.routes == frozenset()
            return
        usable = [
            n
            for n in NAMES
            if st_.health[n].state in (Health.UP, Health.DEGRADED)
            and not damp.is_suppressed(st_.damping[n])
        ]
        active = [r for r in st_.asked.routes if r.metric == sim.cfg.policy.active_metric]
        if usable:
            assert len(st_.carriers) == 1
            assert st_.carriers[0] in usable
            assert [{h.interface for h in r.nexthops} for r in active] == [
                {sim.cfg.tunnel(st_.carriers[0]).interface}
            ]
            meds = [a for a in st_.asked.announcements.values() if a.med <= 100]
            assert {a.tunnel for a in meds} == set(st_.carriers)
        else:
            assert st_.carriers == ()
            assert active == []
            assert st_.asked.announcements == {}

    run(sim, script, check)


@SETTINGS
@given(script=steps)
@example(  # long usable, then one slow answer and a fast one: the hold-down restarts
    script=[Step(31.0, "tun1", "ok"), Step(0.2, "tun1", "slow"), Step(0.2, "tun1", "ok")]
)
def test_failback_only_after_the_preempt_hold_down(script: list[Step]) -> None:
    sim = Sim(make_config(dampening={"enabled": False}))
    sim.bring_up()  # start from both UP, where preemption decisions happen
    hold = sim.cfg.policy.preempt_hold_down_s
    up_since: dict[str, float | None] = dict.fromkeys(NAMES, None)
    carriers = sim.state.carriers

    def observe(sim: Sim) -> None:
        nonlocal carriers
        st_ = sim.state
        for n in NAMES:
            if st_.health[n].state is Health.UP:
                up_since[n] = sim.now if up_since[n] is None else up_since[n]
            else:
                up_since[n] = None
        if st_.carriers != carriers and carriers and st_.carriers:
            old, new = carriers[0], st_.carriers[0]
            if st_.health[old].state is Health.UP:
                # A preemption (the old carrier is fine): the new one was clean long enough.
                since = up_since[new]
                assert since is not None
                assert sim.now - since >= hold - 1e-9
        carriers = st_.carriers

    for s in script:
        until = sim.now + s.dt
        while (due := next_deadline(sim.state, sim.now)) is not None and due <= until:
            sim.now = due
            sim.step(ev.TimerFired(at=due))
            observe(sim)
        sim.now = until
        sim.step(s.event(sim.now))
        observe(sim)


@settings(max_examples=20, deadline=None)
@given(
    period=st.floats(min_value=1.0, max_value=10.0),
    flaps=st.integers(min_value=3, max_value=10),
)
def test_a_tunnel_flapping_faster_than_dampening_allows_never_regains_traffic(
    period: float, flaps: int
) -> None:
    sim = Sim(make_config(preempt_hold_down_s=0))
    sim.bring_up()
    for i in range(flaps):
        sim.now += period
        sim.advance(sim.now)
        sim.step(ev.ChildSaDown(tunnel="tun1", at=sim.now))
        sim.step(ev.ChildSaUp(tunnel="tun1", at=sim.now))
        sim.probes("tun1", 3)
        if i >= 2:
            # Three flaps within a half-life pass the suppress threshold: no traffic, no
            # route, no announcement through tun1 while it keeps flapping.
            assert damp.is_suppressed(sim.state.damping["tun1"])
            assert sim.state.carriers == ("tun2",)
            assert all(h.interface != "vti1" for r in sim.state.asked.routes for h in r.nexthops)
            assert {a.tunnel for a in sim.state.asked.announcements.values()} == {"tun2"}
    stable_from = sim.now
    # Once stable it comes back, by the core's own deadline, and only then.
    back = [t for t, a in sim.log if isinstance(a, act.PublishAlert) and a.kind == "failback"]
    sim.advance(sim.now + 3600)
    assert sim.state.carriers == ("tun1",)
    later = [t for t, a in sim.log if isinstance(a, act.PublishAlert) and a.kind == "failback"]
    assert len(later) == len(back) + 1
    assert later[-1] > stable_from + 60
