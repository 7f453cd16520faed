"""The config's scalar vocabulary: constrained types, enums and the frozen base; no rules."""

from __future__ import annotations

import enum
import ipaddress
import shlex
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    IPvAnyAddress,
    IPvAnyInterface,
    IPvAnyNetwork,
)

from agent.config.protocols import route_protocol_owner


def _written_as_text(value: object) -> object:
    """YAML reads 12345 and true as a number and a boolean; pydantic would take either."""
    if isinstance(value, bool | int | float):
        said = ("true" if value else "false") if isinstance(value, bool) else repr(value)
        kind = "boolean" if isinstance(value, bool) else "number"
        raise ValueError(
            f"YAML read {said} as a {kind}, not an address: write it as text, "
            "e.g. 192.0.2.1 or 10.0.0.0/8"
        )
    return value


_AsText = BeforeValidator(_written_as_text)
IPAddress = Annotated[IPvAnyAddress, _AsText]
IPv4Address = Annotated[ipaddress.IPv4Address, _AsText]
IPNetwork = Annotated[IPvAnyNetwork, _AsText]
IPInterface = Annotated[IPvAnyInterface, _AsText]


def _real_interface_name(name: str) -> str:
    # The kernel's dev_valid_name refuses these two; they are directories in /sys/class/net.
    if name in {".", ".."}:
        raise ValueError(f"{name!r} is not a Linux interface name")
    return name


def _community_halves(text: str) -> str:
    high, low = (int(part) for part in text.split(":"))
    if high > 0xFFFF or low > 0xFFFF:
        raise ValueError(f"{text}: each half of a BGP community is at most 65535")
    return text


def _not_reserved_table(table: int) -> int:
    reserved = {253: "default", 255: "local"}
    if table in reserved:
        raise ValueError(
            f"{table} is the kernel's {reserved[table]!r} table: routes there would not "
            "do what you expect (254 is main)"
        )
    return table


def _own_route_protocol(number: int) -> int:
    owner = route_protocol_owner(number)
    if owner is not None:
        raise ValueError(
            f"{number} is the route protocol of {owner}: the agent deletes routes of its "
            "protocol id, so it must be one nobody else uses (the default is 157)"
        )
    return number


def _shell_words(command: str) -> str:
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise ValueError(f"{command!r} does not split into words: {exc}") from None
    if not words:
        raise ValueError("no command to run")
    return command


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
INTERFACE_PATTERN = r"^[A-Za-z0-9_.@-]+$"
COMMUNITY_PATTERN = r"^\d{1,5}:\d{1,5}$"
TOPIC_PREFIX_PATTERN = r"^[^#+\x00]+$"
HOST_PATTERN = r"^[^\s\x00]+$"
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=NAME_PATTERN)]
# Linux IFNAMSIZ is 16 including the terminating NUL.
InterfaceName = Annotated[
    str,
    Field(min_length=1, max_length=15, pattern=INTERFACE_PATTERN),
    AfterValidator(_real_interface_name),
]
Seconds = Annotated[float, Field(gt=0, le=86400)]
Community = Annotated[str, Field(pattern=COMMUNITY_PATTERN), AfterValidator(_community_halves)]
# A topic is at most 65,535 bytes and every one of ours starts with the prefix.
TopicPrefix = Annotated[str, Field(min_length=1, max_length=256, pattern=TOPIC_PREFIX_PATTERN)]
HostName = Annotated[str, Field(min_length=1, max_length=253, pattern=HOST_PATTERN)]
RouteTable = Annotated[int, Field(ge=1, le=0xFFFFFFFF), AfterValidator(_not_reserved_table)]
RouteProtocol = Annotated[int, Field(ge=0, le=255), AfterValidator(_own_route_protocol)]
ShellCommand = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_shell_words)]


class FrozenModel(BaseModel):
    # No inf or nan: `penalty_per_flap: .inf` or a NaN time would pass every bound check.
    model_config = ConfigDict(
        frozen=True, extra="forbid", use_enum_values=False, allow_inf_nan=False
    )


class TunnelKind(enum.StrEnum):
    VTI = "vti"
    XFRM = "xfrm"
    GRE = "gre"
    TAP = "tap"
    # The seed article's iptables variant: no tunnel interface of its own, traffic is
    # steered into the SA by a firewall mark on a plain interface.
    MARK = "mark"


class Source(enum.StrEnum):
    """Where the agent learns a tunnel's liveness."""

    VICI = "vici"
    XFRM = "xfrm"
    PROBE = "probe"
    LINK = "link"


class ProbeKind(enum.StrEnum):
    ICMP = "icmp"
    UDP = "udp"


class PolicyMode(enum.StrEnum):
    ACTIVE_STANDBY = "active-standby"
    ACTIVE_ACTIVE = "active-active"


class BothDown(enum.StrEnum):
    """What routing does when no tunnel is eligible."""

    # Remove our routes and announcements: traffic falls back to whatever else routes it.
    WITHDRAW = "withdraw"
    # Keep the last carrier's routes and announcements: better a maybe-dead path than none.
    KEEP_LAST = "keep-last"


class LinkControl(enum.StrEnum):
    """When the agent sets a tunnel interface administratively down."""

    NONE = "none"
    # Only while the SA is known to be gone.
    SA_DOWN = "sa-down"
    # Whenever the tunnel is DOWN; raised again for probation (see Policy.probation_after_s).
    DOWN = "down"


class OnMaxPrefixes(enum.StrEnum):
    """What a neighbor sending more than import.max_prefixes prefixes gets."""

    # Every route learned from it is withdrawn until its session restarts, as a router's
    # maximum-prefix tears the session down: a leak is not half-installed.
    WITHDRAW_ALL = "withdraw-all"
    # The first max_prefixes stay; each one past the limit is refused.
    IGNORE_EXCESS = "ignore-excess"
