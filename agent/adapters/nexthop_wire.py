"""Kernel nexthop objects (RTM_*NEXTHOP) on pyroute2's codec: declarations, pure codecs, no sockets.

pyroute2 0.9 has no nexthop messages, so `nhmsg` declares the kernel's `struct nhmsg` and
every NHA_* attribute of linux/nexthop.h up to 6.18 (a dump never decodes as UNKNOWN).
`NexthopObject` is what the agent reads and writes; `to_message`/`from_message`/`parse`
convert between it and the message. Decoding untrusted bytes either returns an object or
raises AdapterError, never anything else.

pyroute2's `rtmsg` does not know RTA_NH_ID (30) either: `extend_rtmsg()` appends it (with
the attributes 24..29 before it) to pyroute2's own class, because `AsyncIPRoute.route()`
builds that class and drops keywords it has no attribute for. After it,
`ipr.route("replace", dst=..., nh_id=ID, ...)` sends RTA_NH_ID and route dumps carry
`("RTA_NH_ID", ID)`.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink import nla, nla_string, nlmsg
from pyroute2.netlink.exceptions import NetlinkDecodeError
from pyroute2.netlink.rtnl.rtmsg import rtmsg, rtmsg_base

from agent.ports import AdapterError

__all__ = [
    "NEXTHOP_GRP_TYPE_MPATH",
    "NEXTHOP_GRP_TYPE_RES",
    "RTM_DELNEXTHOP",
    "RTM_GETNEXTHOP",
    "RTM_NEWNEXTHOP",
    "RTNLGRP_NEXTHOP",
    "NexthopObject",
    "extend_rtmsg",
    "from_message",
    "nhmsg",
    "parse",
    "to_message",
]

RTM_NEWNEXTHOP = 104
RTM_DELNEXTHOP = 105
RTM_GETNEXTHOP = 106
# Above 31: not expressible in bind()'s group mask; join it with add_membership().
RTNLGRP_NEXTHOP = 32

NEXTHOP_GRP_TYPE_MPATH = 0
NEXTHOP_GRP_TYPE_RES = 1

_NLMSG_HDR = struct.Struct("=IHHII")
_NHMSG = struct.Struct("=BBBBI")
# struct nexthop_grp: the wire weight is weight-1, its high byte in resvd1 since 6.12.
_GRP = struct.Struct("=IBBH")
_ADDR_LEN = {socket.AF_INET: 4, socket.AF_INET6: 16}
# Payload sizes the kernel's policy fixes; anything else is a malformed message.
_PAYLOAD_LEN = {"NHA_ID": 4, "NHA_OIF": 4, "NHA_GROUP_TYPE": 2, "NHA_BLACKHOLE": 0}


class _uint(nla):  # type: ignore[misc]  # noqa: N801 - pyroute2 atom naming
    """NLA_UINT: a u32 or a u64, whichever the kernel needed (the group stats counters)."""

    fields = ()

    def decode(self) -> None:
        nla.decode(self)
        size = self.length - 4
        if size not in (4, 8):
            raise ValueError(f"NLA_UINT of {size} bytes")
        (self.value,) = struct.unpack_from("=I" if size == 4 else "=Q", self.data, self.offset + 4)


class nhmsg(nlmsg):  # type: ignore[misc]  # noqa: N801 - the kernel's struct name
    """struct nhmsg {u8 family, scope, protocol, resvd; u32 flags} + NHA_* attributes."""

    prefix = "NHA_"
    fields = (
        ("family", "B"),
        ("scope", "B"),
        ("protocol", "B"),
        ("resvd", "B"),
        ("flags", "I"),
    )
    nla_map = (
        ("NHA_UNSPEC", "none"),
        ("NHA_ID", "uint32"),
        ("NHA_GROUP", "nh_group"),
        ("NHA_GROUP_TYPE", "uint16"),
        ("NHA_BLACKHOLE", "flag"),
        ("NHA_OIF", "uint32"),
        # IPv4 or IPv6 by the message's family (pyroute2's target reads it from the parent).
        ("NHA_GATEWAY", "target"),
        ("NHA_ENCAP_TYPE", "uint16"),
        # lwtunnel encap: its layout depends on NHA_ENCAP_TYPE; we never write one.
        ("NHA_ENCAP", "hex"),
        ("NHA_GROUPS", "flag"),
        ("NHA_MASTER", "uint32"),
        ("NHA_FDB", "flag"),
        ("NHA_RES_GROUP", "res_group"),
        ("NHA_RES_BUCKET", "res_bucket"),
        ("NHA_OP_FLAGS", "uint32"),
        ("NHA_GROUP_STATS", "group_stats"),
        ("NHA_HW_STATS_ENABLE", "uint32"),
        ("NHA_HW_STATS_USED", "uint32"),
    )

    class nh_group(nla_string):  # type: ignore[misc]  # noqa: N801
        """NHA_GROUP: packed struct nexthop_grp entries, as a tuple of (id, weight)."""

        def encode(self) -> None:
            entries = []
            for nh_id, weight in self.value:
                wire = weight - 1
                entries.append(_GRP.pack(nh_id, wire & 0xFF, wire >> 8, 0))
            self["value"] = b"".join(entries)
            nla_string.encode(self)

        def decode(self) -> None:
            nla_string.decode(self)
            raw = self["value"]
            if len(raw) % _GRP.size:
                raise ValueError(f"NHA_GROUP of {len(raw)} bytes")
            self.value = tuple(
                (nh_id, ((high << 8) | low) + 1) for nh_id, low, high, _ in _GRP.iter_unpack(raw)
            )

    class res_group(nla):  # type: ignore[misc]  # noqa: N801
        prefix = "NHA_RES_GROUP_"
        nla_map = (
            ("NHA_RES_GROUP_PAD", "none"),
            ("NHA_RES_GROUP_BUCKETS", "uint16"),
            ("NHA_RES_GROUP_IDLE_TIMER", "uint32"),
            ("NHA_RES_GROUP_UNBALANCED_TIMER", "uint32"),
            ("NHA_RES_GROUP_UNBALANCED_TIME", "uint64"),
        )

    class res_bucket(nla):  # type: ignore[misc]  # noqa: N801
        prefix = "NHA_RES_BUCKET_"
        nla_map = (
            ("NHA_RES_BUCKET_PAD", "none"),
            ("NHA_RES_BUCKET_INDEX", "uint16"),
            ("NHA_RES_BUCKET_IDLE_TIME", "uint64"),
            ("NHA_RES_BUCKET_NH_ID", "uint32"),
        )

    class group_stats(nla):  # type: ignore[misc]  # noqa: N801
        prefix = "NHA_GROUP_STATS_"
        nla_map = (
            ("NHA_GROUP_STATS_UNSPEC", "none"),
            ("NHA_GROUP_STATS_ENTRY", "entry"),
        )

        class entry(nla):  # type: ignore[misc]  # noqa: N801
            prefix = "NHA_GROUP_STATS_ENTRY_"
            nla_map = (
                ("NHA_GROUP_STATS_ENTRY_UNSPEC", "none"),
                ("NHA_GROUP_STATS_ENTRY_ID", "uint32"),
                ("NHA_GROUP_STATS_ENTRY_PACKETS", "uint"),
                ("NHA_GROUP_STATS_ENTRY_PACKETS_HW", "uint"),
            )
            uint = _uint


# RTA_* after pyroute2's last (RTA_EXPIRES = 23), in the kernel's order (linux/rtnetlink.h).
_RTA_AFTER_EXPIRES = (
    ("RTA_PAD", "none"),
    ("RTA_UID", "uint32"),
    ("RTA_TTL_PROPAGATE", "uint8"),
    ("RTA_IP_PROTO", "uint8"),
    ("RTA_SPORT", "be16"),
    ("RTA_DPORT", "be16"),
    ("RTA_NH_ID", "uint32"),
)


def extend_rtmsg() -> None:
    """Teach pyroute2's `rtmsg` RTA_NH_ID (and 24..29 before it); idempotent.

    The change is to pyroute2's class itself, for every socket of the process: `route()`
    instantiates that class, so a subclass could not carry `nh_id=`. It only adds names
    for attribute numbers pyroute2 decoded as UNKNOWN before; the multipath `nh` class
    shares `rtmsg_base.nla_map` and stays as it was. Kernel code: RTA_NH_ID = 30.
    """
    if any(name == "RTA_NH_ID" for name, *_ in rtmsg.nla_map):
        return
    if len(rtmsg_base.nla_map) != 24 or rtmsg_base.nla_map[-1][0] != "RTA_EXPIRES":
        # A pyroute2 that grew its own map: appending by position would misnumber it.
        raise AdapterError("pyroute2 rtmsg has an unexpected attribute map; RTA_NH_ID not added")
    rtmsg.nla_map = (*rtmsg_base.nla_map, *_RTA_AFTER_EXPIRES)
    # pyroute2 compiles a class's map once, on first use, into name-mangled class fields.
    rtmsg._nlmsg_base__compiled_nla = False


@dataclass(frozen=True, slots=True)
class NexthopObject:
    """One kernel nexthop: a single hop (oif and/or gateway, or blackhole) or a group.

    A group has family AF_UNSPEC and lists member ids; members have weight 1 (equal-cost).
    A single hop's family is the gateway's, and IPv4 routes may point at an AF_INET6 one.
    """

    id: int
    family: int
    protocol: int
    oif: int | None = None
    gateway: str | None = None
    group: tuple[int, ...] = ()
    blackhole: bool = False

    def __post_init__(self) -> None:
        # socket.AF_* are IntEnums: plain ints keep reprs and log lines readable.
        object.__setattr__(self, "family", int(self.family))
        if not 0 < self.id < 2**32:
            raise ValueError(f"nexthop id {self.id}: must be 1..{2**32 - 1}")
        if not 0 <= self.protocol < 256:
            raise ValueError(f"nexthop {self.id}: protocol {self.protocol} is not a u8")
        if self.group:
            if self.family != socket.AF_UNSPEC:
                raise ValueError(f"nexthop group {self.id}: family must be AF_UNSPEC")
            if self.oif is not None or self.gateway is not None or self.blackhole:
                raise ValueError(f"nexthop group {self.id}: a group has no oif/gateway/blackhole")
            if len(set(self.group)) != len(self.group) or not all(
                0 < m < 2**32 for m in self.group
            ):
                raise ValueError(f"nexthop group {self.id}: members {self.group}")
            return
        if self.family not in _ADDR_LEN:
            raise ValueError(f"nexthop {self.id}: family {self.family} is not AF_INET/AF_INET6")
        if self.blackhole and (self.oif is not None or self.gateway is not None):
            raise ValueError(f"nexthop {self.id}: a blackhole has no oif/gateway")
        if self.oif is not None and not 0 < self.oif < 2**31:
            raise ValueError(f"nexthop {self.id}: oif {self.oif}")
        if self.gateway is not None:
            version = 4 if self.family == socket.AF_INET else 6
            if ipaddress.ip_address(self.gateway).version != version:
                raise ValueError(f"nexthop {self.id}: gateway {self.gateway} is not IPv{version}")


def to_message(obj: NexthopObject) -> nhmsg:
    """The RTM_NEWNEXTHOP body for `obj` (header type and flags are the sender's)."""
    msg = nhmsg()
    msg["family"] = obj.family
    msg["protocol"] = obj.protocol
    attrs: list[tuple[str, Any]] = [("NHA_ID", obj.id)]
    if obj.group:
        attrs.append(("NHA_GROUP", tuple((m, 1) for m in obj.group)))
        attrs.append(("NHA_GROUP_TYPE", NEXTHOP_GRP_TYPE_MPATH))
    elif obj.blackhole:
        attrs.append(("NHA_BLACKHOLE", True))
    else:
        if obj.oif is not None:
            attrs.append(("NHA_OIF", obj.oif))
        if obj.gateway is not None:
            attrs.append(("NHA_GATEWAY", str(ipaddress.ip_address(obj.gateway))))
    msg["attrs"] = attrs
    return msg


def from_message(msg: Any) -> NexthopObject:
    """The object an RTM_NEWNEXTHOP carries; AdapterError for anything malformed."""
    try:
        family = msg["family"]
        protocol = msg["protocol"]
        slots = list(msg["attrs"])
    except (KeyError, TypeError) as exc:
        raise AdapterError(f"nexthop message without its header fields: {exc}") from exc
    values: dict[str, Any] = {}
    for slot in slots:
        name = slot[0]
        if name in values:
            continue  # the kernel puts each once; like nla_parse, the first one wins here
        value = slot[1]
        size = slot.cell[1].length - 4
        expected = _PAYLOAD_LEN.get(name)
        if name == "NHA_GATEWAY":
            expected = _ADDR_LEN.get(family, -1)
        if expected is not None and size != expected:
            raise AdapterError(f"nexthop attribute {name}: {size} bytes, expected {expected}")
        values[name] = value
    nh_id = _int(values, "NHA_ID")
    if nh_id is None:
        raise AdapterError("nexthop message without NHA_ID")
    group = values.get("NHA_GROUP", ())
    if not isinstance(group, tuple):
        raise AdapterError("nexthop attribute NHA_GROUP: malformed")
    gateway = values.get("NHA_GATEWAY")
    if gateway is not None and not isinstance(gateway, str):
        raise AdapterError("nexthop attribute NHA_GATEWAY: malformed")
    try:
        return NexthopObject(
            id=nh_id,
            family=family,
            protocol=protocol,
            oif=_int(values, "NHA_OIF"),
            gateway=gateway,
            group=tuple(member for member, _weight in group),
            blackhole="NHA_BLACKHOLE" in values,
        )
    except ValueError as exc:
        raise AdapterError(f"nexthop message: {exc}") from exc


def parse(data: bytes) -> NexthopObject:
    """One RTM_NEWNEXTHOP/RTM_DELNEXTHOP message from raw bytes (netlink header first)."""
    if len(data) < _NLMSG_HDR.size + _NHMSG.size:
        raise AdapterError(f"nexthop message of {len(data)} bytes is truncated")
    length, kind, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(data)
    if kind not in (RTM_NEWNEXTHOP, RTM_DELNEXTHOP):
        raise AdapterError(f"netlink message type {kind} is not a nexthop")
    if not _NLMSG_HDR.size + _NHMSG.size <= length <= len(data):
        raise AdapterError(f"nexthop message length {length} for {len(data)} bytes")
    msg = nhmsg(bytearray(data[:length]))
    try:
        msg.decode()
    except (NetlinkDecodeError, struct.error, ValueError) as exc:
        raise AdapterError(f"nexthop message undecodable: {exc}") from exc
    return from_message(msg)


def _int(values: dict[str, Any], name: str) -> int | None:
    value = values.get(name)
    if value is None:
        return None
    if not isinstance(value, int):
        raise AdapterError(f"nexthop attribute {name}: malformed")
    return value
