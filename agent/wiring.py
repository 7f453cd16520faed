"""Builds the sources and actuators a config asks for (the only place that knows them all)."""

from __future__ import annotations

from agent.adapters import nexthops
from agent.adapters.exabgp import ExaBgpAdapter
from agent.adapters.exabgp_workdir import prepare_workdir
from agent.adapters.links import LinkSource
from agent.adapters.metrics import MetricsExporter
from agent.adapters.mqtt import MqttPublisher
from agent.adapters.mqtt_commands import MqttCommands
from agent.adapters.netlink import NetlinkActuator, tunnel_kinds
from agent.adapters.netlink_socket import rtnl_socket
from agent.adapters.probes import ProbeSource
from agent.adapters.report_clock import ReportClock
from agent.adapters.strongswan import ViciSource
from agent.adapters.xfrm import XfrmSource
from agent.components import Adapters, Lifecycle
from agent.config import Config, Source
from agent.ports import Source as SourceLike

__all__ = ["build_live", "check_host", "exabgp_settings", "resolve_host"]


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


def build_live(cfg: Config, *, dry_run: bool) -> Adapters:
    """Sources per tunnel as configured; actuators unless dry_run (the CLI adds the printer).

    Each component declares what it is built from and how it takes a reload: the runtime
    keeps a running one whose settings are unchanged, reconfigures the actuators in place
    (their connections, tables and counters carry on) and replaces changed sources.
    """
    adapters = Adapters()

    def add_source(source: SourceLike, settings: object) -> None:
        adapters.sources.append(source)
        adapters.lifecycle[source.name] = Lifecycle(settings=settings)

    links = {t.name: t.interface for t in cfg.tunnels if Source.LINK in t.sources}
    if links:
        add_source(LinkSource(links), tuple(sorted(links.items())))
    probed = tuple(t for t in cfg.tunnels if Source.PROBE in t.sources)
    if probed:
        # One source for every probed tunnel: one socket per family, one scheduler.
        add_source(ProbeSource(probed), probed)
        # Loss and RTT exist only where probes run; reports carry them at this pace.
        add_source(ReportClock(cfg.quality_interval_s), cfg.quality_interval_s)
    if any(Source.VICI in t.sources for t in cfg.tunnels):
        # One charon for every tunnel: one pair of VICI sessions.
        add_source(ViciSource(cfg.tunnels, cfg.vici), (tuple(cfg.tunnels), cfg.vici))
    if any(Source.XFRM in t.sources for t in cfg.tunnels):
        add_source(XfrmSource(cfg.tunnels), tuple(cfg.tunnels))
    if not dry_run:
        netlink = NetlinkActuator(
            route_protocol=cfg.netlink.route_protocol,
            resync_interval_s=cfg.netlink.resync_interval_s,
            tunnels=tunnel_kinds(cfg),
        )
        adapters.actuators.append(netlink)
        adapters.lifecycle[netlink.name] = Lifecycle(
            settings=(cfg.netlink, tuple(sorted(tunnel_kinds(cfg).items()))),
            reconfigure=netlink.configure,
        )
    if cfg.bgp is not None and not dry_run:
        # Both roles in one object: it announces, and reports sessions and learned routes.
        exabgp = ExaBgpAdapter(cfg)
        adapters.sources.append(exabgp)
        adapters.actuators.append(exabgp)
        adapters.lifecycle[exabgp.name] = Lifecycle(
            settings=exabgp_settings(cfg),
            reconfigure=exabgp.configure,
            # Started with what the core announces, so its End-of-RIB never goes out before
            # our routes (a graceful-restart peer would drop the ones it kept for us).
            after_first_decision=cfg.exabgp.mode == "supervise",
        )
    if cfg.metrics.enabled:
        metrics = MetricsExporter(cfg.metrics, cfg.agent_id)
        adapters.actuators.append(metrics)
        adapters.lifecycle[metrics.name] = Lifecycle(
            settings=cfg.metrics, reconfigure=lambda c: metrics.reconfigure(c.metrics)
        )
    if cfg.mqtt is not None and cfg.mqtt.enabled:
        if not dry_run:
            # Last: operators hear of a change once routing has made it.
            publisher = MqttPublisher(cfg.agent_id, cfg.mqtt)
            adapters.actuators.append(publisher)
            mqtt = cfg.mqtt
            adapters.lifecycle[publisher.name] = Lifecycle(
                settings=mqtt,
                reconfigure=lambda c: publisher.reconfigure(c.mqtt if c.mqtt is not None else mqtt),
            )
        if cfg.mqtt.commands:
            names = tuple(t.name for t in cfg.tunnels)
            add_source(MqttCommands(cfg.agent_id, cfg.mqtt, names), (cfg.mqtt, names))
    return adapters


def exabgp_settings(cfg: Config) -> object:
    """All that the ExaBGP link and its exabgp.conf are built from."""
    neighbors = tuple((t.name, str(cfg.neighbor_of(t)), t.inner) for t in cfg.tunnels)
    return (cfg.agent_id, cfg.bgp, cfg.exabgp, neighbors)


def check_host(cfg: Config, *, dry_run: bool) -> None:
    """Refuse, before anything starts, what this host cannot give the config (AdapterError).

    A supervised ExaBGP's workdir must be ours alone; found at start this is one line and
    exit 2, found on a reload it refuses the reload.
    """
    if cfg.bgp is not None and cfg.exabgp.mode == "supervise" and not dry_run:
        prepare_workdir(cfg.exabgp.workdir)
