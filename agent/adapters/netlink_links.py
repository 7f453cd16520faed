"""Link messages (RTM_NEWLINK / RTM_DELLINK) reduced to what the agent uses."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

__all__ = ["IFF_UP", "LinkView", "link_view"]

IFF_UP = 0x1
# Set by the kernel when the operational state is UP or UNKNOWN: a VTI has no carrier and
# reports UNKNOWN while it works, so operstate == "UP" alone would call every VTI down.
IFF_RUNNING = 0x40
RTM_NEWLINK = 16
RTM_DELLINK = 17


@dataclass(frozen=True)
class LinkView:
    """One RTM_NEWLINK / RTM_DELLINK message, reduced to what the agent uses."""

    index: int
    name: str | None
    present: bool
    admin_up: bool
    oper_up: bool


def link_view(msg: Any) -> LinkView | None:
    """Read a link message; None for anything else (other message types, bridge ports)."""
    kind = msg.get(("header", "type"))
    if kind not in (RTM_NEWLINK, RTM_DELLINK) or msg.get("family", 0) != socket.AF_UNSPEC:
        return None
    flags = int(msg.get("flags", 0))
    present = kind == RTM_NEWLINK
    name = msg.get("ifname")
    return LinkView(
        index=int(msg["index"]),
        name=str(name) if name is not None else None,
        present=present,
        admin_up=present and bool(flags & IFF_UP),
        oper_up=present and bool(flags & IFF_UP) and bool(flags & IFF_RUNNING),
    )
