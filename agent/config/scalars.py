"""The config's scalar vocabulary: constrained types, enums and the frozen base; no rules."""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress

IPAddress = IPvAnyAddress
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
INTERFACE_PATTERN = r"^[A-Za-z0-9_.@-]+$"
COMMUNITY_PATTERN = r"^\d{1,5}:\d{1,5}$"
TOPIC_PREFIX_PATTERN = r"^[^#+]+$"
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=NAME_PATTERN)]
# Linux IFNAMSIZ is 16 including the terminating NUL.
InterfaceName = Annotated[str, Field(min_length=1, max_length=15, pattern=INTERFACE_PATTERN)]
Seconds = Annotated[float, Field(gt=0, le=86400)]
Community = Annotated[str, Field(pattern=COMMUNITY_PATTERN)]


class FrozenModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


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
