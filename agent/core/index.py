"""What the core derives from a config: computed once per config, so no event pays for it."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from agent.config import Config, Source, TunnelKind
from agent.core.actions import NextHop
from agent.core.health import HealthRules
from agent.core.imports import ImportRules, import_rules

__all__ = ["CoreIndex", "Network", "index_of", "rules_for", "version_of"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Point-to-point kinds route by device; the others need the peer as gateway.
_BY_DEVICE = {TunnelKind.VTI, TunnelKind.XFRM}


@dataclass(frozen=True)
class CoreIndex:
    rules: Mapping[str, HealthRules]
    # Static remote prefixes in canonical text, and the same as a set for lookups.
    static: tuple[str, ...]
    static_set: frozenset[str]
    site: tuple[Network, ...]
    tunnel_on: Mapping[str, str]  # interface -> tunnel name
    table: Mapping[str, int]  # tunnel name -> its routing table
    hop: Mapping[tuple[str, int], NextHop]  # (tunnel name, IP version) -> next hop
    # Route via nexthop groups (true only: the shell resolves "auto" for this kernel).
    groups: bool
    tables: tuple[int, ...]  # every table a tunnel routes in, sorted
    table_tunnels: Mapping[int, tuple[str, ...]]  # table -> its tunnels, in config order
    imports: ImportRules  # the import policy for learned routes, compiled


def rules_for(cfg: Config, tunnel: str) -> HealthRules:
    t = cfg.tunnel(tunnel)
    p = cfg.policy
    return HealthRules(
        rise=p.rise,
        fall=p.fall,
        loss_window=p.loss_window,
        loss_down=p.loss_down,
        loss_degraded=p.loss_degraded,
        rtt_degraded_ms=p.rtt_degraded_ms,
        rtt_samples=p.rtt_samples,
        uses_probes=Source.PROBE in t.sources,
        uses_sa=Source.VICI in t.sources or Source.XFRM in t.sources,
        uses_link=Source.LINK in t.sources,
        traffic_counts_as_life=p.traffic_counts_as_life,
        sa_return_grace_s=cfg.vici.restart_grace_s if Source.VICI in t.sources else 0.0,
        sources=frozenset(s.value for s in t.sources),
    )


def index_of(cfg: Config) -> CoreIndex:
    hop: dict[tuple[str, int], NextHop] = {}
    for t in cfg.tunnels:
        for version in (4, 6):
            peer = t.inner6.peer if version == 6 and t.inner6 is not None else t.inner.peer
            by_device = t.kind in _BY_DEVICE or peer.version != version
            hop[(t.name, version)] = (
                NextHop(t.interface) if by_device else NextHop(t.interface, str(peer))
            )
    static = tuple(str(n) for n in cfg.remote_prefixes.static)
    table = {t.name: t.table if t.table is not None else cfg.policy.table for t in cfg.tunnels}
    tables = tuple(sorted(set(table.values())))
    return CoreIndex(
        rules={t.name: rules_for(cfg, t.name) for t in cfg.tunnels},
        static=static,
        static_set=frozenset(static),
        site=tuple(cfg.site_prefixes),
        tunnel_on={t.interface: t.name for t in cfg.tunnels},
        table=table,
        hop=hop,
        groups=cfg.netlink.nexthop_groups is True,
        tables=tables,
        table_tunnels={n: tuple(t for t, tb in table.items() if tb == n) for n in tables},
        imports=import_rules(cfg),
    )


def version_of(prefix: str) -> int:
    return 6 if ":" in prefix else 4
