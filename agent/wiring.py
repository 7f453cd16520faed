"""Builds the sources and actuators a config asks for (the only place that knows them all)."""

from __future__ import annotations

from agent.config import Config
from agent.runtime import Adapters

__all__ = ["build_live"]


def build_live(cfg: Config, *, dry_run: bool) -> Adapters:
    """Sources per tunnel as configured; actuators unless dry_run (the CLI adds the printer)."""
    del cfg, dry_run
    return Adapters()
