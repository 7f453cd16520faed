"""What build_live assembles from a config, and what a reload does to each part of it."""

from __future__ import annotations

from pathlib import Path

from agent.adapters.exabgp import ExaBgpAdapter
from agent.components import components_of, plan
from agent.config import Config, load_config, parse_config
from agent.wiring import build_live

CONFIG = Path(__file__).parents[2] / "config" / "dual-vti.yaml"


def _edited(old: str, new: str) -> Config:
    text = CONFIG.read_text()
    assert old in text
    return parse_config(text.replace(old, new))


def test_one_object_in_both_roles_is_one_component_started_after_the_first_decision() -> None:
    built = components_of(build_live(load_config(CONFIG), dry_run=False))
    exabgp = built["exabgp"]
    assert isinstance(exabgp.actuator, ExaBgpAdapter)
    assert exabgp.source is exabgp.actuator
    assert exabgp.lifecycle.after_first_decision
    # Apply order: routing first, operators' channels last.
    assert list(built)[:2] == ["netlink", "exabgp"]
    assert list(built).index("mqtt") < list(built).index("link")


def test_a_reload_keeps_reconfigures_replaces_adds_and_removes_by_name() -> None:
    cfg = load_config(CONFIG)
    running = components_of(build_live(cfg, dry_run=False))
    same = plan(running, components_of(build_live(cfg, dry_run=False)))
    assert same.reconfigure == same.replace == same.add == same.remove == ()

    neighbor = _edited("local_as: 65001", "local_as: 65011")
    change = plan(running, components_of(build_live(neighbor, dry_run=False)))
    assert change.reconfigure == ("exabgp",)
    assert change.replace == change.add == change.remove == ()

    broker = _edited("port: 1883", "port: 1884")
    assert plan(running, components_of(build_live(broker, dry_run=False))).reconfigure == ("mqtt",)

    probes = _edited("interval_s: 0.2, timeout_s: 0.5}\n\n", "interval_s: 0.3, timeout_s: 0.5}\n\n")
    change = plan(running, components_of(build_live(probes, dry_run=False)))
    # A source has no connections worth keeping: it is replaced.
    assert "probe" in change.replace

    metrics = _edited("metrics: {enabled: false", "metrics: {enabled: true")
    assert plan(running, components_of(build_live(metrics, dry_run=False))).add == ("metrics",)


def test_dry_run_builds_sources_but_no_actuator() -> None:
    adapters = build_live(load_config(CONFIG), dry_run=True)
    assert adapters.actuators == []
    assert {s.name for s in adapters.sources} >= {"link", "probe"}
