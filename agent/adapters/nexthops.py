"""Kernel nexthop objects through a caller's AsyncIPRoute: dump ours, replace, delete; never decide.

Every call first `attach`es the socket: pyroute2's marshal parses message types it has a
class for, so RTM_*NEXTHOP get `nhmsg` on that socket's marshal (a per-socket table), and
pyroute2's `rtmsg` learns RTA_NH_ID (process-wide; see nexthop_wire.extend_rtmsg). After
`attach(ipr)`, routes via a nexthop are plain pyroute2 calls:

    await ipr.route("replace", dst="10.1.0.0/24", nh_id=GROUP, table=254, priority=10,
                    proto=PROTO)

(the keyword is `nh_id`, pyroute2's name for RTA_NH_ID; `nhid=` is silently dropped).
Requests go out with pyroute2's `nlm_request`, which owns sequence numbers and ack
matching, so concurrent calls on one socket are safe; they are not faster (the kernel does
each request inside sendmsg; pyroute2's encoding is the cost: labs/bench/nexthop_routes.py).

The kernel deletes a device's nexthops when it goes admin-down or loses carrier, and a
group left empty with every route via it, without any RTM_DELNEXTHOP; nothing returns
on link-up. Move a group off a tunnel before setting its link down; re-read after.

Netlink errors become our exceptions raised from their cause (ENODEV, and the EINVAL the
kernel gives for an unknown NHA_OIF -> InterfaceNotFoundError; EPERM/EACCES ->
PermissionDeniedError; others, ENETDOWN for a device that is down too, AdapterError).
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError

from agent.adapters.netlink_errors import mapped
from agent.adapters.nexthop_wire import (
    RTM_DELNEXTHOP,
    RTM_GETNEXTHOP,
    RTM_NEWNEXTHOP,
    NexthopObject,
    extend_rtmsg,
    from_message,
    nhmsg,
    to_message,
)
from agent.ports import InterfaceNotFoundError

__all__ = ["attach", "delete", "dump", "replace", "supported"]

log = logging.getLogger("vti_failover.nexthops")

# A kernel built without CONFIG_... nexthop support, or one older than 5.3, answers the
# unknown message type with one of these.
_UNSUPPORTED = (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTSUP, errno.EAFNOSUPPORT)


def attach(ipr: Any) -> None:
    """Let `ipr` parse nexthop messages and send/parse RTA_NH_ID; idempotent, no I/O."""
    msg_map = ipr.marshal.msg_map
    if msg_map.get(RTM_NEWNEXTHOP) is not nhmsg:
        for kind in (RTM_NEWNEXTHOP, RTM_DELNEXTHOP, RTM_GETNEXTHOP):
            msg_map[kind] = nhmsg
    extend_rtmsg()


async def _request(ipr: Any, msg: nhmsg, kind: int, flags: int) -> list[Any]:
    attach(ipr)
    return [m async for m in await ipr.nlm_request(msg, msg_type=kind, msg_flags=flags)]


async def dump(ipr: Any, protocol: int) -> dict[int, NexthopObject]:
    """Every nexthop object (single or group) whose protocol is `protocol`, by id."""
    try:
        answers = await _request(ipr, nhmsg(), RTM_GETNEXTHOP, NLM_F_REQUEST | NLM_F_DUMP)
    except (NetlinkError, OSError) as exc:
        raise mapped(exc, "nexthop dump") from exc
    out: dict[int, NexthopObject] = {}
    for msg in answers:
        # Filter on the header first: another daemon's object need not be decodable by us.
        if msg.get("header", {}).get("type") != RTM_NEWNEXTHOP or msg["protocol"] != protocol:
            continue
        obj = from_message(msg)
        out[obj.id] = obj
    return out


async def replace(ipr: Any, obj: NexthopObject) -> None:
    """Create `obj`, or replace the object with its id in place (routes keep pointing at it)."""
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    try:
        await _request(ipr, to_message(obj), RTM_NEWNEXTHOP, flags)
    except NetlinkError as exc:
        if (
            exc.code == errno.EINVAL
            and obj.oif is not None
            and not await _link_exists(ipr, obj.oif)
        ):
            # The kernel answers an unknown NHA_OIF with EINVAL ("Invalid device index"),
            # where route requests say ENODEV: the link lookup tells which it was.
            raise InterfaceNotFoundError(
                f"nexthop replace {obj}: no interface with index {obj.oif}"
            ) from exc
        raise mapped(exc, f"nexthop replace {obj}") from exc
    except OSError as exc:
        raise mapped(exc, f"nexthop replace {obj}") from exc


async def _link_exists(ipr: Any, index: int) -> bool:
    try:
        await ipr.link("get", index=index)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return False
        raise mapped(exc, f"link lookup {index}") from exc
    return True


async def delete(ipr: Any, nh_id: int) -> None:
    """Remove nexthop `nh_id`; one already gone is fine. The kernel drops routes using it."""
    msg = nhmsg()
    msg["attrs"] = [("NHA_ID", nh_id)]
    try:
        await _request(ipr, msg, RTM_DELNEXTHOP, NLM_F_REQUEST | NLM_F_ACK)
    except NetlinkError as exc:
        if exc.code in (errno.ESRCH, errno.ENOENT):
            return
        raise mapped(exc, f"nexthop delete {nh_id}") from exc
    except OSError as exc:
        raise mapped(exc, f"nexthop delete {nh_id}") from exc


async def supported(ipr: Any) -> bool:
    """True when the kernel has nexthop objects (a GETNEXTHOP dump succeeds)."""
    try:
        await _request(ipr, nhmsg(), RTM_GETNEXTHOP, NLM_F_REQUEST | NLM_F_DUMP)
    except NetlinkError as exc:
        if exc.code in _UNSUPPORTED:
            log.info("kernel has no nexthop objects: %s", exc)
            return False
        raise mapped(exc, "nexthop probe") from exc
    except OSError as exc:
        raise mapped(exc, "nexthop probe") from exc
    return True
