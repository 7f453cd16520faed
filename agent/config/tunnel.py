"""One tunnel's settings, with every rule that needs only that tunnel."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Literal

from pydantic import Field, model_validator

from agent.config.problems import FieldProblemsError, Problem, raise_if
from agent.config.scalars import (
    FrozenModel,
    InterfaceName,
    IPAddress,
    IPInterface,
    Name,
    ProbeKind,
    RouteTable,
    Source,
    TunnelKind,
)


class Underlay(FrozenModel):
    local: IPAddress
    remote: IPAddress
    # The interface the tunnel's outer packets leave by (`apply`: an XFRM interface's dev).
    # Default: the interface holding the local address.
    device: InterfaceName | None = None

    @model_validator(mode="after")
    def _same_family(self) -> Underlay:
        if self.local.version != self.remote.version:
            raise FieldProblemsError(
                [
                    (
                        ("remote",),
                        f"{self.remote} is IPv{self.remote.version} but local {self.local} "
                        f"is IPv{self.local.version}: both ends must be the same family",
                    )
                ]
            )
        if self.local == self.remote:
            raise FieldProblemsError(
                [(("remote",), f"{self.remote} is also the local address: the ends must differ")]
            )
        return self


class InnerAddressing(FrozenModel):
    """The tunnel's inside: our address with its prefix length, and the far end's address."""

    local: IPInterface
    peer: IPAddress

    @model_validator(mode="after")
    def _peer_in_subnet(self) -> InnerAddressing:
        if self.local.version != self.peer.version:
            message = (
                f"{self.peer} is IPv{self.peer.version} but local {self.local} is "
                f"IPv{self.local.version}: both must be the same family"
            )
        elif self.peer not in self.local.network:
            message = (
                f"{self.peer} is outside the local subnet {self.local.network} "
                f"(local {self.local}): the peer must be on the tunnel's own subnet"
            )
        elif self.peer == self.local.ip:
            message = f"{self.peer} is the local address itself: give the far end's address"
        else:
            return self
        raise FieldProblemsError([(("peer",), message)])


class SnatSettings(FrozenModel):
    """Traffic this router sends into the tunnel, from its inner address to anything beyond
    the tunnel's subnet, leaves with `source` (e.g. its LAN address the far side routes)."""

    source: IPAddress


class IkeNames(FrozenModel):
    """strongSwan names: the IKE connection and its CHILD_SA as in swanctl.conf."""

    connection: Name
    child: Name


class ProbeSettings(FrozenModel):
    kind: ProbeKind = ProbeKind.ICMP
    interval_s: Annotated[float, Field(ge=0.05, le=60)] = 0.2
    timeout_s: Annotated[float, Field(ge=0.01, le=60)] = 0.5
    # Only for kind=udp: the peer's echo port.
    udp_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    payload_bytes: Annotated[int, Field(ge=0, le=1400)] = 16

    @model_validator(mode="after")
    def _udp_needs_port(self) -> ProbeSettings:
        if self.kind is ProbeKind.UDP and self.udp_port is None:
            raise FieldProblemsError(
                [(("udp_port",), "required with kind: udp (the port of the peer's echo service)")]
            )
        if self.kind is ProbeKind.ICMP and self.udp_port is not None:
            raise FieldProblemsError(
                [(("udp_port",), f"{self.udp_port} is only used with kind: udp (kind is icmp)")]
            )
        return self


class Tunnel(FrozenModel):
    name: Name
    interface: InterfaceName
    kind: TunnelKind = TunnelKind.VTI
    underlay: Underlay
    # VTI key (ikey = okey) for kind=vti; the IPsec mark strongSwan puts on the SA.
    key: Annotated[int, Field(ge=1, le=0xFFFFFFFF)] | None = None
    mark: Annotated[int, Field(ge=1, le=0xFFFFFFFF)] | None = None
    if_id: Annotated[int, Field(ge=1, le=0xFFFFFFFF)] | None = None
    ike: IkeNames | None = None
    inner: InnerAddressing
    # Dual stack: the tunnel's IPv6 addressing beside an IPv4 `inner`. IPv6 routes go
    # through it too, and the IPv4 BGP session carries IPv6 unicast as well (MP-BGP),
    # announced with inner6.local as next hop.
    inner6: InnerAddressing | None = None
    role: Literal["primary", "backup"] = "primary"
    # Lower is preferred; defaults by role (primary 100, backup 200).
    priority: Annotated[int, Field(ge=0, le=65535)] | None = None
    sources: tuple[Source, ...] = (Source.VICI, Source.PROBE, Source.LINK)
    probe: ProbeSettings = ProbeSettings()
    # The BGP neighbor over this tunnel; defaults to the inner peer address when bgp is on.
    bgp_neighbor: IPAddress | None = None
    # Routing table for this tunnel's routes; defaults to the policy's table.
    table: RouteTable | None = None
    # `apply` sets the interface's MTU to this; unset, it lowers a larger one to what ESP
    # leaves of the underlay's MTU (the bound doctor checks) and otherwise leaves it be.
    mtu: Annotated[int, Field(ge=68, le=65535)] | None = None
    # `apply` SNATs what this router itself sends into the tunnel to this address.
    snat: SnatSettings | None = None

    @property
    def effective_priority(self) -> int:
        if self.priority is not None:
            return self.priority
        return 100 if self.role == "primary" else 200

    @model_validator(mode="after")
    def _kind_rules(self) -> Tunnel:
        problems: list[Problem] = []
        if self.kind is TunnelKind.VTI:
            if self.key is None and self.mark is None:
                problems.append((("key",), "required for kind: vti (equal to its IPsec mark)"))
            if self.key is not None and self.mark is not None and self.key != self.mark:
                problems.append(
                    (
                        ("key",),
                        f"VTI key {self.key} must equal the IPsec mark {self.mark}: the kernel "
                        "matches SAs to the VTI by that mark",
                    )
                )
            if self.if_id is not None:
                problems.append(
                    (("if_id",), f"{self.if_id} is for kind: xfrm; a vti tunnel uses key")
                )
        elif self.kind is TunnelKind.XFRM:
            if self.if_id is None:
                problems.append(
                    (("if_id",), "required for kind: xfrm (strongSwan if_id_in/if_id_out)")
                )
            if self.key is not None:
                problems.append((("key",), f"{self.key} is for kind: vti; xfrm uses if_id"))
        elif self.kind is TunnelKind.MARK and self.mark is None:
            problems.append((("mark",), "required for kind: mark (the firewall/IPsec mark)"))
        if self.inner6 is not None and (self.inner.local.version, self.inner6.local.version) != (
            4,
            6,
        ):
            problems.append(
                (
                    ("inner6",),
                    f"{self.inner6.local} beside inner {self.inner.local}: inner6 is the IPv6 "
                    "side of a tunnel whose inner is IPv4",
                )
            )
        repeated = [s.value for s, n in Counter(self.sources).items() if n > 1]
        if repeated:
            problems.append((("sources",), f"{', '.join(repeated)} listed more than once"))
        if not self.sources:
            problems.append((("sources",), "name at least one liveness source"))
        if Source.VICI in self.sources and self.ike is None:
            problems.append(
                (("ike",), "required with source vici: {connection: NAME, child: NAME}")
            )
        raise_if(problems)
        return self

    @property
    def sa_mark(self) -> int | None:
        """The mark that ties SAs to this tunnel (VTI key or explicit mark)."""
        return self.mark if self.mark is not None else self.key

    @model_validator(mode="after")
    def _snat_family(self) -> Tunnel:
        if self.snat is not None and self.snat.source.version != self.inner.local.version:
            raise FieldProblemsError(
                [
                    (
                        ("snat", "source"),
                        f"{self.snat.source} is IPv{self.snat.source.version} but inner "
                        f"{self.inner.local} is IPv{self.inner.local.version}",
                    )
                ]
            )
        return self
