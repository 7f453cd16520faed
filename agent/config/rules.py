"""Rules across the whole config that keep the agent from routing what it must not.

Each finds a config that loads but would hurt: a default route or the tunnels' own
underlay sent into the tunnels (recursive routing kills every tunnel), a prefix that is both
ours and the far side's, a BGP neighbor that is ourselves, a site prefix no session can
carry, loopback set down by link control. Costs stay linear in the prefixes (100,000 static
prefixes are real): containment is looked up by supernet, never pairwise.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from agent.config.problems import Problem
from agent.config.scalars import LinkControl, TunnelKind

if TYPE_CHECKING:
    from agent.config.models import Config

__all__ = ["config_problems"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_DEFAULTS = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


class _Prefixes:
    """A set of prefixes that answers "which of you contain this one" by supernet lookup."""

    def __init__(self, nets: Iterable[Network]) -> None:
        self.nets = set(nets)
        self.lengths = {
            version: sorted({n.prefixlen for n in self.nets if n.version == version}, reverse=True)
            for version in (4, 6)
        }

    def containing(self, net: Network) -> Iterable[Network]:
        """Ours that contain `net` (itself included), longest first."""
        for length in self.lengths[net.version]:
            if length <= net.prefixlen:
                candidate = net if length == net.prefixlen else net.supernet(new_prefix=length)
                if candidate in self.nets:
                    yield candidate


def _host(address: Address) -> Network:
    return ipaddress.ip_network(address)


def _remote_prefixes(cfg: Config) -> list[Problem]:
    problems: list[Problem] = []
    static: dict[Network, int] = {}
    for i, net in enumerate(cfg.remote_prefixes.static):
        static.setdefault(net, i)
        if net in _DEFAULTS:
            problems.append(
                (
                    ("remote_prefixes", "static", i),
                    f"{net} is a default route: every destination, the tunnels' own underlay "
                    "included, would be routed into the tunnels",
                )
            )
    statics = _Prefixes(static)
    seen: set[tuple[int, Address]] = set()
    for t in cfg.tunnels:
        for end, address in (("remote", t.underlay.remote), ("local", t.underlay.local)):
            for net in statics.containing(_host(address)):
                i = static[net]
                if net in _DEFAULTS or (i, address) in seen:
                    continue
                seen.add((i, address))
                problems.append(
                    (
                        ("remote_prefixes", "static", i),
                        f"{net} covers tunnel {t.name}'s underlay {end} {address}: the tunnel "
                        "would be routed into itself",
                    )
                )
    site = _Prefixes(cfg.site_prefixes)
    for i, net in enumerate(cfg.remote_prefixes.static):
        # Equal prefixes are Config's own rule; here one inside the other.
        inside = next((s for s in site.containing(net) if s != net), None)
        if inside is not None:
            problems.append(
                (
                    ("remote_prefixes", "static", i),
                    f"{net} lies inside site prefix {inside}: a prefix is either ours or the "
                    "far side's",
                )
            )
    for i, net in enumerate(cfg.site_prefixes):
        inside = next((s for s in statics.containing(net) if s != net), None)
        if inside is not None:
            problems.append(
                (
                    ("site_prefixes", i),
                    f"{net} lies inside remote prefix {inside}: a prefix is either ours or the "
                    "far side's",
                )
            )
    return problems


def _bgp(cfg: Config) -> list[Problem]:
    if cfg.bgp is None:
        return []
    problems: list[Problem] = []
    ours = {t.inner.local.ip: t.name for t in cfg.tunnels}
    ours |= {t.inner6.local.ip: t.name for t in cfg.tunnels if t.inner6 is not None}
    for i, t in enumerate(cfg.tunnels):
        neighbor = cfg.neighbor_of(t)
        if neighbor in ours:
            problems.append(
                (
                    ("tunnels", i, "bgp_neighbor"),
                    f"{neighbor} is our own inner address on tunnel {ours[neighbor]}: the "
                    "neighbor is the far end",
                )
            )
    families = {v for t in cfg.tunnels for v in cfg.session_next_hops(t)}
    for i, net in enumerate(cfg.site_prefixes):
        if net.version not in families:
            other = "IPv6" if net.version == 4 else "IPv4"
            hint = " (give a tunnel inner6 to carry IPv6 over its IPv4 session)" * (
                net.version == 6
            )
            problems.append(
                (
                    ("site_prefixes", i),
                    f"{net} is IPv{net.version} but every BGP session is {other}: it would "
                    f"never be announced (no IPv{net.version} next hop on any tunnel){hint}",
                )
            )
    return problems


def _links(cfg: Config) -> list[Problem]:
    problems: list[Problem] = []
    tunnel_kinds = (TunnelKind.VTI, TunnelKind.XFRM, TunnelKind.GRE, TunnelKind.TAP)
    for i, t in enumerate(cfg.tunnels):
        if t.interface != "lo":
            continue
        if t.kind in tunnel_kinds:
            message = f"lo is the loopback interface, not a {t.kind.value} tunnel"
        elif cfg.policy.link_control is not LinkControl.NONE:
            message = (
                "lo is the loopback interface: link_control "
                f"{cfg.policy.link_control.value} would set it down"
            )
        else:
            continue
        problems.append((("tunnels", i, "interface"), message))
    return problems


def config_problems(cfg: Config) -> Sequence[Problem]:
    return [*_remote_prefixes(cfg), *_bgp(cfg), *_links(cfg)]
