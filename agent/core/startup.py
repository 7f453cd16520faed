"""A restart's first moments: how long to wait for evidence before the first decision,
and for the neighbors' tables before routes left by a previous run are swept."""

from __future__ import annotations

from agent.config import Config, Source
from agent.core import actions as act
from agent.core.state import CoreState
from agent.core.timing import FAMILIES

__all__ = ["learning", "settle_grace", "sweep_wait", "sweeps"]


def settle_grace(cfg: Config) -> float:
    """How long to wait for first evidence before deciding anything (no flap on restart)."""
    waits = [2.0 * cfg.vici.poll_interval_s]
    for t in cfg.tunnels:
        if Source.PROBE in t.sources:
            waits.append(cfg.policy.rise * t.probe.interval_s + t.probe.timeout_s)
    return max(waits) + 1.0


def sweep_wait(cfg: Config) -> float:
    """How long a restart keeps learned routes it found for neighbors that have not yet sent
    End-of-RIB: a few hold times for the sessions to come up and send their tables, and with
    graceful restart the restart time, as long as the peers keep ours (RFC 4724)."""
    if cfg.bgp is None or not learning(cfg):
        return 0.0
    return max(3.0 * cfg.bgp.hold_time_s, float(cfg.bgp.graceful_restart_s))


def learning(cfg: Config) -> bool:
    return cfg.bgp is not None and cfg.remote_prefixes.learned_from_bgp


def sweeps(state: CoreState, now: float) -> list[act.SweepRoutes]:
    """Sweep a family once nothing more of it can be on its way (see CoreState.sweep_by)."""
    neighbors = [t.name for t in state.cfg.tunnels] if learning(state.cfg) else []
    return [
        act.SweepRoutes(family)
        for family in FAMILIES
        if family not in state.swept
        and (
            now >= state.sweep_by
            or all(family in state.end_of_rib.get(n, frozenset()) for n in neighbors)
        )
    ]
