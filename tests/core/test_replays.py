"""The recorded scenarios in tests/data, replayed through the core on a fake clock."""

from __future__ import annotations

from pathlib import Path

from agent.config import load_config
from agent.core import actions as act
from agent.replay import read_replay

from .sim import FakeRouter, Sim

ROOT = Path(__file__).resolve().parents[2]


def replay(name: str) -> tuple[Sim, FakeRouter, list[tuple[float, tuple[str, ...]]]]:
    sim = Sim(load_config(ROOT / "config" / "dual-vti.yaml"))
    router = FakeRouter()
    timeline: list[tuple[float, tuple[str, ...]]] = []
    for timed in read_replay(ROOT / "tests" / "data" / name):
        sim.step(timed.event, at=timed.t)
        if not timeline or timeline[-1][1] != sim.state.carriers:
            timeline.append((sim.now, sim.state.carriers))
    sim.advance(sim.now + 3600)
    if timeline[-1][1] != sim.state.carriers:
        # Moved by a deadline after the last event: when says the alert it raised.
        timeline.append((sim.alerts()[-1].at, sim.state.carriers))
    for _, a in sim.log:
        router.apply(a)
    return sim, router, [(round(t, 3), c) for t, c in timeline]


def test_failover_failback_replay() -> None:
    sim, router, timeline = replay("failover-failback.jsonl")
    assert timeline == [(0.0, ()), (0.6, ("tun1",)), (10.8, ("tun2",)), (70.6, ("tun1",))]
    assert [(a.kind, a.from_tunnels, a.to_tunnels) for a in sim.alerts()] == [
        ("failover", ("tun1",), ("tun2",)),
        ("failback", ("tun2",), ("tun1",)),
    ]
    assert router.via("10.2.0.0/24") == {"vti1"}


def test_drain_undrain_replay() -> None:
    sim, router, timeline = replay("drain-undrain.jsonl")
    assert timeline == [(0.0, ()), (0.6, ("tun1",)), (5.0, ("tun2",)), (90.6, ("tun1",))]
    alerts = sim.alerts()
    assert [(a.kind, a.reason) for a in alerts] == [
        ("failover", "tun1 maintenance"),
        ("failback", "tun1 healthy for 30s (preempt hold-down)"),
    ]
    # The link comes back with the undrain itself, not after a probation wait.
    ups = [t for t, a in sim.log if a == act.SetLinkUp("vti1", "tun1")]
    assert ups[-1] == 60.0
    assert sim.state.damping["tun1"].penalty == 0.0
    assert router.via("10.2.0.0/24") == {"vti1"}
    assert router.best_announcer("10.1.0.0/24") == "tun1"
