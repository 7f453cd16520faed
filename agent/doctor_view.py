"""What `doctor` knows of the system, as plain values: built by the collector or by hand in tests.

Nothing here reads the system. A field the collector could not read holds None together
with the reason, so a check can say "cannot tell" instead of guessing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "Finding",
    "Link",
    "Route",
    "Severity",
    "SystemView",
    "XfrmPolicy",
    "XfrmState",
    "mark_matches",
]

# error: breaks traffic or failover; warning: works until it does not; info: cannot tell, or
# advice. Only errors and warnings make doctor exit 1.
Severity = Literal["error", "warning", "info"]
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Finding:
    check: str
    severity: Severity
    subject: str  # a tunnel, an interface, or "system"
    message: str
    fix: str | None = None


@dataclass(frozen=True)
class Link:
    """One interface: its kind (IFLA_INFO_KIND) and, for tunnels, what the kernel says of them."""

    name: str
    kind: str | None
    mtu: int
    addresses: tuple[Interface, ...] = ()
    # VTI: outer endpoints and keys (the marks it gives packets in and out).
    local: str | None = None
    remote: str | None = None
    ikey: int | None = None
    okey: int | None = None
    # XFRM interface.
    if_id: int | None = None


@dataclass(frozen=True)
class XfrmState:
    """A kernel SA: its outer addresses and what ties it to an interface."""

    src: str
    dst: str
    spi: int
    mark: int | None = None
    mark_mask: int | None = None
    if_id: int | None = None


@dataclass(frozen=True)
class XfrmPolicy:
    """A kernel policy with one template: the SA it asks for, by outer addresses."""

    direction: Literal["in", "out", "fwd"]
    src: str  # the template's outer source
    dst: str
    mark: int | None = None
    mark_mask: int | None = None
    if_id: int | None = None


@dataclass(frozen=True)
class Route:
    table: int
    dst: Network
    dev: str | None


@dataclass(frozen=True)
class SystemView:
    links: Mapping[str, Link] = field(default_factory=dict)
    # "net.ipv4.conf.<if|all>.rp_filter" -> value; a missing key was not readable.
    sysctls: Mapping[str, int] = field(default_factory=dict)
    sas: tuple[XfrmState, ...] | None = ()
    policies: tuple[XfrmPolicy, ...] | None = ()
    xfrm_error: str | None = None
    routes_220: tuple[Route, ...] = ()
    # Tables some ip rule looks up (strongSwan's own rule sends everything to 220 first).
    rule_tables: frozenset[int] = frozenset({253, 254, 255})
    # Modules loaded or built in; builtin_known False: modules.builtin was unreadable.
    modules: frozenset[str] = frozenset()
    builtin_known: bool = True
    # None when charon's VICI socket answered, or nobody asked.
    vici_error: str | None = None
    # The name rt_protos gives our route protocol id, None when unnamed.
    rt_proto_name: str | None = None
    # Interfaces some nftables SNAT/masquerade rule matches by oifname ("*": any interface);
    # None when it could not be told, with the reason.
    snat_interfaces: frozenset[str] | None = frozenset()
    snat_unknown: str | None = None


def mark_matches(mark: int | None, mask: int | None, key: int) -> bool:
    """Whether packets the kernel marked `key` meet an SA or policy with this mark/mask."""
    if mark is None:
        return False
    m = 0xFFFFFFFF if mask is None else mask
    return (key & m) == (mark & m)
