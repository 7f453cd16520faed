"""What `apply` knows of the system and what it would change, as plain values; no I/O.

The reader (`apply_read`) fills SystemFacts, the planner (`apply_plan`) turns config and facts
into Steps, the executor (`apply_execute`) carries Steps out. Each Step renders as the one
`ip` / `sysctl` / `nft` command that does the same, which is what --dry-run prints.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "OWNER_PREFIX",
    "AddAddress",
    "ChangeVti",
    "ChangeXfrm",
    "CreateVti",
    "CreateXfrm",
    "DeleteAddress",
    "DeleteLink",
    "LinkFacts",
    "MarkOwned",
    "NftCommand",
    "NftFacts",
    "Plan",
    "Refusal",
    "SetMtu",
    "SetSysctl",
    "SetUp",
    "SnatRule",
    "Step",
    "SystemFacts",
    "owner_alias",
]

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
OWNER_PREFIX = "vti-failover:"


def owner_alias(agent_id: str) -> str:
    """The IFLA_IFALIAS apply gives the links it creates: only those may it delete."""
    return f"{OWNER_PREFIX}{agent_id}"


@dataclass(frozen=True)
class LinkFacts:
    """One interface as the kernel reports it."""

    name: str
    index: int
    kind: str | None  # IFLA_INFO_KIND; None for a plain device (loopback, a physical NIC)
    alias: str | None = None
    mtu: int = 1500
    up: bool = False
    addresses: frozenset[Interface] = frozenset()
    # VTI: outer endpoints as ipaddress text, keys.
    local: str | None = None
    remote: str | None = None
    ikey: int | None = None
    okey: int | None = None
    # XFRM interface: if_id and the index of its underlying device (IFLA_XFRM_LINK).
    if_id: int | None = None
    link: int | None = None


@dataclass(frozen=True)
class SnatRule:
    """Traffic leaving `interface` from `inner`'s address to beyond its subnet gets `source`."""

    interface: str
    inner: Interface
    source: Address

    @property
    def text(self) -> str:
        ip = "ip" if self.inner.version == 4 else "ip6"
        return (
            f'oifname "{self.interface}" {ip} saddr {self.inner.ip} '
            f"{ip} daddr != {self.inner.network} snat {ip} to {self.source}"
        )


@dataclass(frozen=True)
class NftFacts:
    """The agent's own nftables table: whether it exists, its chain, its rules by handle."""

    table: bool = False
    chain_ok: bool = False
    # handle -> the rule, or None for a rule of a shape apply never writes.
    rules: Mapping[int, SnatRule | None] = field(default_factory=dict)


@dataclass(frozen=True)
class SystemFacts:
    links: Mapping[str, LinkFacts] = field(default_factory=dict)
    # "net.ipv4.conf.<if|all|default>.<name>" -> value; missing: not readable (or no such if).
    sysctls: Mapping[str, int] = field(default_factory=dict)
    # None when nft could not be asked, with the reason.
    nft: NftFacts | None = NftFacts()
    nft_error: str | None = None


@dataclass(frozen=True)
class CreateVti:
    interface: str
    local: str
    remote: str
    key: int
    v6: bool = False

    @property
    def line(self) -> str:
        kind = "vti6" if self.v6 else "vti"
        return (
            f"ip link add {self.interface} type {kind} local {self.local} "
            f"remote {self.remote} key {self.key}"
        )


@dataclass(frozen=True)
class CreateXfrm:
    interface: str
    if_id: int
    device: str

    @property
    def line(self) -> str:
        return f"ip link add {self.interface} type xfrm dev {self.device} if_id {self.if_id}"


@dataclass(frozen=True)
class ChangeVti:
    """New endpoints or key on a VTI apply created (ip_tunnel_changelink allows it)."""

    interface: str
    local: str
    remote: str
    key: int
    v6: bool = False

    @property
    def line(self) -> str:
        kind = "vti6" if self.v6 else "vti"
        return (
            f"ip link set dev {self.interface} type {kind} local {self.local} "
            f"remote {self.remote} key {self.key}"
        )


@dataclass(frozen=True)
class ChangeXfrm:
    interface: str
    if_id: int
    device: str

    @property
    def line(self) -> str:
        return f"ip link set dev {self.interface} type xfrm dev {self.device} if_id {self.if_id}"


@dataclass(frozen=True)
class DeleteLink:
    """Only ever planned for a link carrying our alias (of the wrong kind, to re-create)."""

    interface: str

    @property
    def line(self) -> str:
        return f"ip link del dev {self.interface}"


@dataclass(frozen=True)
class MarkOwned:
    interface: str
    alias: str

    @property
    def line(self) -> str:
        return f"ip link set dev {self.interface} alias {self.alias}"


@dataclass(frozen=True)
class SetMtu:
    interface: str
    mtu: int

    @property
    def line(self) -> str:
        return f"ip link set dev {self.interface} mtu {self.mtu}"


@dataclass(frozen=True)
class AddAddress:
    interface: str
    address: Interface

    @property
    def line(self) -> str:
        return f"ip addr add {self.address} dev {self.interface}"


@dataclass(frozen=True)
class DeleteAddress:
    """Our inner address with another prefix length: replaced, never another address."""

    interface: str
    address: Interface

    @property
    def line(self) -> str:
        return f"ip addr del {self.address} dev {self.interface}"


@dataclass(frozen=True)
class SetSysctl:
    interface: str
    family: str  # ipv4 | ipv6
    name: str  # disable_policy | rp_filter
    value: int

    @property
    def key(self) -> str:
        # An interface name may hold dots (eth0.100): sysctl(8) reads this key with '/'.
        sep = "/" if "." in self.interface else "."
        return sep.join(("net", self.family, "conf", self.interface, self.name))

    @property
    def line(self) -> str:
        return f"sysctl -w {self.key}={self.value}"


@dataclass(frozen=True)
class SetUp:
    interface: str

    @property
    def line(self) -> str:
        return f"ip link set dev {self.interface} up"


@dataclass(frozen=True)
class NftCommand:
    """One command on the agent's own table; the executor runs them all as one transaction."""

    body: str

    @property
    def line(self) -> str:
        return f"nft {shlex.quote(self.body)}"


LinkStep = (
    CreateVti | CreateXfrm | ChangeVti | ChangeXfrm | DeleteLink | MarkOwned | SetMtu
    | AddAddress | DeleteAddress | SetSysctl | SetUp
)  # fmt: skip
Step = LinkStep | NftCommand


@dataclass(frozen=True)
class Refusal:
    """Something apply will not change (not ours, or it cannot): nothing is applied then."""

    subject: str
    message: str


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    notes: tuple[str, ...] = ()
    # The IFLA_INFO_KIND each touched interface must still have when it is written to.
    kinds: Mapping[str, str] = field(default_factory=dict)
