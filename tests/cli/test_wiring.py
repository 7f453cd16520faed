"""What build_live assembles from a config, and what a reload carries over."""

from __future__ import annotations

from pathlib import Path

from agent.adapters.exabgp import ExaBgpAdapter
from agent.config import load_config
from agent.wiring import build_live

CONFIG = Path(__file__).parents[2] / "config" / "dual-vti.yaml"


def _exabgp(adapters: object) -> list[ExaBgpAdapter]:
    actuators = getattr(adapters, "actuators", [])
    return [a for a in actuators if isinstance(a, ExaBgpAdapter)]


def test_a_reload_keeps_the_exabgp_link_and_a_fresh_start_does_not() -> None:
    cfg = load_config(CONFIG)
    first = build_live(cfg, dry_run=False)
    (exabgp,) = _exabgp(first)
    # One object in both roles: it announces and it reports sessions and learned routes.
    assert exabgp in first.sources
    reloaded = build_live(cfg, dry_run=False, previous=first)
    assert _exabgp(reloaded) == [exabgp]
    assert exabgp in reloaded.sources
    (other,) = _exabgp(build_live(cfg, dry_run=False))
    assert other is not exabgp


def test_dry_run_builds_sources_but_no_actuator() -> None:
    adapters = build_live(load_config(CONFIG), dry_run=True)
    assert adapters.actuators == []
    assert {s.name for s in adapters.sources} >= {"link", "probe"}
