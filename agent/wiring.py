"""Builds the sources and actuators a config asks for (the only place that knows them all)."""

from __future__ import annotations

from agent.adapters.links import LinkSource
from agent.adapters.netlink import NetlinkActuator
from agent.config import Config, Source
from agent.runtime import Adapters

__all__ = ["build_live"]


def build_live(cfg: Config, *, dry_run: bool) -> Adapters:
    """Sources per tunnel as configured; actuators unless dry_run (the CLI adds the printer)."""
    adapters = Adapters()
    links = {t.name: t.interface for t in cfg.tunnels if Source.LINK in t.sources}
    if links:
        adapters.sources.append(LinkSource(links))
    if not dry_run:
        adapters.actuators.append(
            NetlinkActuator(
                route_protocol=cfg.netlink.route_protocol,
                resync_interval_s=cfg.netlink.resync_interval_s,
            )
        )
    return adapters
