"""Builds the sources and actuators a config asks for (the only place that knows them all)."""

from __future__ import annotations

from agent.adapters import nexthops
from agent.adapters.exabgp import ExaBgpAdapter
from agent.adapters.links import LinkSource
from agent.adapters.metrics import MetricsExporter
from agent.adapters.mqtt import MqttPublisher
from agent.adapters.mqtt_commands import MqttCommands
from agent.adapters.netlink import NetlinkActuator, tunnel_kinds
from agent.adapters.netlink_socket import rtnl_socket
from agent.adapters.probes import ProbeSource
from agent.adapters.strongswan import ViciSource
from agent.adapters.xfrm import XfrmSource
from agent.config import Config, Source
from agent.runtime import Adapters

__all__ = ["build_live", "resolve_host"]


def resolve_host(cfg: Config, *, nexthop_objects: bool) -> Config:
    """The config as this host runs it: nexthop_groups "auto" becomes true or false."""
    if cfg.netlink.nexthop_groups != "auto":
        return cfg
    netlink = cfg.netlink.model_copy(update={"nexthop_groups": nexthop_objects})
    return cfg.model_copy(update={"netlink": netlink})


async def kernel_has_nexthops() -> bool:
    """Whether this namespace's kernel has nexthop objects (>= 5.3), asked once at start."""
    ipr = rtnl_socket()
    try:
        return await nexthops.supported(ipr)
    finally:
        ipr.close()


def build_live(cfg: Config, *, dry_run: bool, previous: Adapters | None = None) -> Adapters:
    """Sources per tunnel as configured; actuators unless dry_run (the CLI adds the printer).

    On a reload, `previous` is what the running agent has: the ExaBGP adapter holds the
    sessions (and, supervised, the exabgp process), so the same object carries on.
    """
    adapters = Adapters()
    links = {t.name: t.interface for t in cfg.tunnels if Source.LINK in t.sources}
    if links:
        adapters.sources.append(LinkSource(links))
    probed = [t for t in cfg.tunnels if Source.PROBE in t.sources]
    if probed:
        # One source for every probed tunnel: one socket per family, one scheduler.
        adapters.sources.append(ProbeSource(probed))
    if any(Source.VICI in t.sources for t in cfg.tunnels):
        # One charon for every tunnel: one pair of VICI sessions.
        adapters.sources.append(ViciSource(cfg.tunnels, cfg.vici))
    if any(Source.XFRM in t.sources for t in cfg.tunnels):
        adapters.sources.append(XfrmSource(cfg.tunnels))
    if not dry_run:
        adapters.actuators.append(
            NetlinkActuator(
                route_protocol=cfg.netlink.route_protocol,
                resync_interval_s=cfg.netlink.resync_interval_s,
                tunnels=tunnel_kinds(cfg),
            )
        )
    if cfg.bgp is not None and not dry_run:
        # Both roles in one object: it announces, and reports sessions and learned routes.
        exabgp = next(
            (a for a in (previous.actuators if previous else []) if isinstance(a, ExaBgpAdapter)),
            None,
        ) or ExaBgpAdapter(cfg)
        adapters.sources.append(exabgp)
        adapters.actuators.append(exabgp)
    if cfg.metrics.enabled:
        adapters.actuators.append(MetricsExporter(cfg.metrics, cfg.agent_id))
    if cfg.mqtt is not None and cfg.mqtt.enabled:
        if not dry_run:
            # Last: operators hear of a change once routing has made it.
            adapters.actuators.append(MqttPublisher(cfg.agent_id, cfg.mqtt))
        if cfg.mqtt.commands:
            names = [t.name for t in cfg.tunnels]
            adapters.sources.append(MqttCommands(cfg.agent_id, cfg.mqtt, names))
    return adapters
