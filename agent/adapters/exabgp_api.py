"""ExaBGP 5 line protocol: actions become command lines, lines from ExaBGP become values.

Pure translation, no I/O: `announce_line` / `withdraw_line` render the text API
(`neighbor X announce route ...`), `parse_line` reads what ExaBGP writes to its API
process (`done` / `error` acks and one JSON object per line with `encoder json`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from agent.bounded_json import JsonLimitError, loads
from agent.core.actions import AnnouncePrefix, WithdrawPrefix

__all__ = [
    "Ack",
    "ApiParseError",
    "EndOfRib",
    "Ignored",
    "Message",
    "NeighborChanged",
    "RoutesChanged",
    "RoutesSent",
    "announce_line",
    "canonical_address",
    "canonical_prefix",
    "parse_line",
    "same_family",
    "withdraw_line",
]

# The families whose NLRI are plain prefixes; anything else a peer sends is not ours.
_UNICAST = ("ipv4 unicast", "ipv6 unicast")
# An UPDATE of 65,535 bytes (RFC 8654) is ~1 MB as ExaBGP's JSON; anything longer is not one.
MAX_LINE_CHARS = 4 << 20


class ApiParseError(ValueError):
    """A line from ExaBGP that is neither an ack nor JSON we can read."""


@dataclass(frozen=True)
class Ack:
    """ExaBGP's answer to the oldest unanswered command (`shutdown` when it is exiting)."""

    ok: bool
    shutdown: bool = False


@dataclass(frozen=True)
class NeighborChanged:
    peer: str
    state: str  # up | down | connected
    reason: str = ""


@dataclass(frozen=True)
class RoutesChanged:
    """One UPDATE received from a neighbor, as canonical prefix strings."""

    peer: str
    announced: tuple[str, ...]
    withdrawn: tuple[str, ...]


@dataclass(frozen=True)
class RoutesSent:
    """One UPDATE ExaBGP reports writing to a neighbor (`api { send { update; } }`)."""

    peer: str
    announced: tuple[str, ...]
    withdrawn: tuple[str, ...]


@dataclass(frozen=True)
class EndOfRib:
    """The neighbor sent all its routes of one unicast family ("ipv4" or "ipv6")."""

    peer: str
    family: str


@dataclass(frozen=True)
class Ignored:
    """Valid JSON we do not act on (keepalives, EoR, other families, notifications...)."""

    kind: str


Message = Ack | NeighborChanged | RoutesChanged | RoutesSent | EndOfRib | Ignored


def canonical_prefix(text: str) -> str:
    """`10.2.0.0/24`, `2001:db8:b::/48`: compressed, host bits cleared."""
    return str(ipaddress.ip_network(text, strict=False))


def same_family(prefix: str, address: str) -> bool:
    """True when `prefix` can go over a session to `address` with `next-hop self`, or
    with `address` as its explicit next hop.

    ExaBGP cannot send an IPv6 prefix with an IPv4 next hop that BIRD or FRR accept
    (it encodes the IPv4-mapped address in 4 bytes), so such a pair is not announced.
    """
    net = ipaddress.ip_network(prefix, strict=False)
    return net.version == ipaddress.ip_address(address).version


def next_hop_of(action: AnnouncePrefix | WithdrawPrefix) -> str:
    return "next-hop self" if action.next_hop is None else f"next-hop {action.next_hop}"


def announce_line(action: AnnouncePrefix, local_as: int) -> str:
    """The ExaBGP 5 command announcing `action.prefix` to one neighbor with its attributes.

    An explicit AS path replaces ExaBGP's default ([local AS]) for eBGP, so a prepend is
    written as the local AS 1 + N times: the peer still sees us as the first AS.
    """
    parts = [
        f"neighbor {action.neighbor} announce route {canonical_prefix(action.prefix)}",
        next_hop_of(action),
        "origin igp",
        f"med {action.med}",
    ]
    if action.as_path_prepend:
        path = " ".join([str(local_as)] * (1 + action.as_path_prepend))
        parts.append(f"as-path [ {path} ]")
    if action.communities:
        parts.append(f"community [ {' '.join(action.communities)} ]")
    return " ".join(parts)


def withdraw_line(action: WithdrawPrefix) -> str:
    route = canonical_prefix(action.prefix)
    return f"neighbor {action.neighbor} withdraw route {route} {next_hop_of(action)}"


def parse_line(line: str) -> Message:
    """Read one line ExaBGP wrote to its API process; raise ApiParseError if unreadable."""
    text = line.strip()
    if text == "done":
        return Ack(ok=True)
    if text == "error":
        return Ack(ok=False)
    if text == "shutdown":
        return Ack(ok=False, shutdown=True)
    if not text.startswith("{"):
        raise ApiParseError(f"not an ack and not JSON: {_short(text)}")
    try:
        obj = loads(text, max_chars=MAX_LINE_CHARS)
    except JsonLimitError as exc:
        raise ApiParseError(f"unreadable JSON ({exc}): {_short(text)}") from None
    if not isinstance(obj, dict):
        raise ApiParseError(f"JSON is not an object: {_short(text)}")
    try:
        return _message(obj)
    except Exception as exc:
        # Whatever a peer or ExaBGP puts in a line, it costs that line, never the agent.
        raise ApiParseError(f"unexpected JSON ({_short(repr(exc))}): {_short(text)}") from None


def _message(obj: dict[str, Any]) -> Message:
    kind = obj.get("type")
    if kind == "notification" and obj.get("notification") == "shutdown":
        return Ack(ok=False, shutdown=True)
    if kind not in {"state", "update"}:
        return Ignored(str(kind))
    neighbor = obj["neighbor"]
    peer = canonical_address(neighbor["address"]["peer"])
    if kind == "state":
        state = neighbor["state"]
        if not isinstance(state, str):
            raise TypeError("state is not a string")
        return NeighborChanged(peer=peer, state=state, reason=str(neighbor.get("reason", "")))
    direction = neighbor.get("direction", "receive")
    if direction not in {"receive", "send"}:
        return Ignored(f"update of direction {_short(str(direction))}")
    update = neighbor["message"].get("update")
    if update is None and direction == "send":
        return Ignored("eor sent")
    if update is None:
        # An End-of-RIB marker arrives as {"message": {"eor": {"afi": ..., "safi": ...}}}.
        eor = neighbor["message"].get("eor")
        if (
            isinstance(eor, dict)
            and eor.get("safi") == "unicast"
            and eor.get("afi")
            in (
                "ipv4",
                "ipv6",
            )
        ):
            return EndOfRib(peer=peer, family=str(eor["afi"]))
        return Ignored("eor")
    announced: list[str] = []
    for family, by_nexthop in dict(update.get("announce", {})).items():
        if family not in _UNICAST:
            continue
        for nlris in dict(by_nexthop).values():
            announced.extend(_prefixes(nlris))
    withdrawn: list[str] = []
    for family, nlris in dict(update.get("withdraw", {})).items():
        if family in _UNICAST:
            withdrawn.extend(_prefixes(nlris))
    if not announced and not withdrawn:
        return Ignored("update without unicast prefixes")
    if direction == "send":
        return RoutesSent(peer=peer, announced=tuple(announced), withdrawn=tuple(withdrawn))
    return RoutesChanged(peer=peer, announced=tuple(announced), withdrawn=tuple(withdrawn))


def _prefixes(nlris: Any) -> list[str]:
    if not isinstance(nlris, list):
        raise TypeError("NLRI list expected")
    out = []
    for item in nlris:
        # `{"nlri": "10.0.0.0/24"}`, or a bare string with exabgp.api.compact.
        text = item["nlri"] if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise TypeError("prefix is not a string")
        out.append(canonical_prefix(text))
    return out


def canonical_address(text: str) -> str:
    return str(ipaddress.ip_address(text))


def _short(text: str) -> str:
    return text if len(text) <= 120 else text[:117] + "..."
