"""XFRM policies on the wire: struct xfrm_userpolicy_info and its templates; no sockets.

The same pyroute2 field-table codec as the SA messages in `xfrm.py`. A route-based tunnel's
policies carry the mark (VTI) or if_id (XFRM interface) that ties them to the interface, and
their template names the tunnel's outer endpoints; `doctor` compares both with the links.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST, nla, nlmsg

from agent.adapters.xfrm import SELECTOR_FIELDS

__all__ = [
    "XFRM_MSG_GETPOLICY",
    "XFRM_MSG_NEWPOLICY",
    "XFRM_POLICY_FWD",
    "XFRM_POLICY_IN",
    "XFRM_POLICY_OUT",
    "PolicyInfo",
    "Template",
    "decode_policies",
    "policy_dump_request",
    "xfrm_userpolicy_id",
    "xfrm_userpolicy_info",
]

XFRM_MSG_NEWPOLICY = 0x13
XFRM_MSG_GETPOLICY = 0x15
XFRM_MSG_UPDPOLICY = 0x19
XFRM_POLICY_IN = 0
XFRM_POLICY_OUT = 1
XFRM_POLICY_FWD = 2
NLMSG_ERROR = 2
NLMSG_DONE = 3
_NLMSG_HDR = struct.Struct("=IHHII")
# struct xfrm_user_tmpl, 64 bytes: xfrm_id (daddr, spi, proto), family, saddr, reqid, mode,
# share, optional, then three algorithm masks.
TEMPLATE = struct.Struct("=16s4sB3xH2x16sIBBBx12x")


class _PolicyNlas:
    # pyroute2 ships no type information: its codec bases are Any to mypy.
    class mark(nla):  # type: ignore[misc]  # noqa: N801 - struct xfrm_mark
        fields = (("v", "I"), ("m", "I"))


_POLICY_NLAS = (
    (5, "XFRMA_TMPL", "cdata"),
    (21, "XFRMA_MARK", "mark"),
    (31, "XFRMA_IF_ID", "uint32"),
)

# struct xfrm_userpolicy_info, 168 bytes: selector, lifetimes, then the policy's own fields.
_USERPOLICY_INFO_FIELDS = (
    *SELECTOR_FIELDS,
    ("soft_byte_limit", "Q"),
    ("hard_byte_limit", "Q"),
    ("soft_packet_limit", "Q"),
    ("hard_packet_limit", "Q"),
    ("soft_add_expires_seconds", "Q"),
    ("hard_add_expires_seconds", "Q"),
    ("soft_use_expires_seconds", "Q"),
    ("hard_use_expires_seconds", "Q"),
    ("bytes", "Q"),
    ("packets", "Q"),
    ("add_time", "Q"),
    ("use_time", "Q"),
    ("priority", "I"),
    ("index", "I"),
    ("dir", "B"),
    ("action", "B"),
    ("flags", "B"),
    ("share", "B"),
    ("__pad_tail", "4x"),
)


class xfrm_userpolicy_info(nlmsg):  # type: ignore[misc]  # noqa: N801 - the kernel's struct name
    """XFRM_MSG_NEWPOLICY / UPDPOLICY, and each answer of a GETPOLICY dump."""

    fields = _USERPOLICY_INFO_FIELDS
    nla_map = _POLICY_NLAS
    mark = _PolicyNlas.mark


class xfrm_userpolicy_id(nlmsg):  # type: ignore[misc]  # noqa: N801 - the kernel's struct name
    """The GETPOLICY request: a selector, an index and a direction (all zero for a dump)."""

    fields = (*SELECTOR_FIELDS, ("index", "I"), ("dir", "B"), ("__pad", "3x"))
    nla_map = _POLICY_NLAS
    mark = _PolicyNlas.mark


@dataclass(frozen=True)
class Template:
    """One `tmpl` of a policy: the SA it asks for, by its outer addresses."""

    src: str
    dst: str
    proto: int
    mode: int


@dataclass(frozen=True)
class PolicyInfo:
    """What doctor needs of one kernel policy."""

    direction: int  # XFRM_POLICY_IN / OUT / FWD; per-socket policies are skipped
    selector_src: str
    selector_dst: str
    mark: int | None
    mark_mask: int | None
    if_id: int | None
    templates: tuple[Template, ...]


def _address(raw: bytes, family: int) -> str:
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[:16])
    return socket.inet_ntop(socket.AF_INET, raw[:4])


def templates(raw: bytes) -> tuple[Template, ...]:
    """The XFRMA_TMPL payload: an array of struct xfrm_user_tmpl."""
    out = []
    for offset in range(0, len(raw) - TEMPLATE.size + 1, TEMPLATE.size):
        daddr, _spi, proto, family, saddr, _reqid, mode, _share, _optional = TEMPLATE.unpack_from(
            raw, offset
        )
        out.append(Template(_address(saddr, family), _address(daddr, family), proto, mode))
    return tuple(out)


def _policy(data: bytes) -> PolicyInfo | None:
    msg = xfrm_userpolicy_info(data)
    msg.decode()
    if msg["dir"] > XFRM_POLICY_FWD:
        return None
    family = msg["sel_family"] or socket.AF_INET
    mark: Any = msg.get_attr("XFRMA_MARK")
    raw = msg.get_attr("XFRMA_TMPL")
    return PolicyInfo(
        direction=msg["dir"],
        selector_src=f"{_address(msg['sel_saddr'], family)}/{msg['sel_prefixlen_s']}",
        selector_dst=f"{_address(msg['sel_daddr'], family)}/{msg['sel_prefixlen_d']}",
        mark=None if mark is None else mark["v"],
        mark_mask=None if mark is None else mark["m"],
        if_id=msg.get_attr("XFRMA_IF_ID"),
        templates=templates(bytes(raw)) if raw is not None else (),
    )


def _messages(buf: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + _NLMSG_HDR.size <= len(buf):
        length, kind, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(buf, offset)
        if length < _NLMSG_HDR.size or offset + length > len(buf):
            raise ValueError(f"truncated netlink message at byte {offset}")
        yield kind, buf[offset : offset + length]
        offset += (length + 3) & ~3


def decode_policies(buf: bytes) -> tuple[list[PolicyInfo], bool]:
    """The policies in one datagram of a dump, and whether the dump ended with it.

    Raises ValueError (not a message we can read) and OSError (the kernel's error).
    """
    out: list[PolicyInfo] = []
    done = False
    for kind, data in _messages(buf):
        if kind == NLMSG_DONE:
            done = True
        elif kind == NLMSG_ERROR:
            if len(data) < _NLMSG_HDR.size + 4:
                raise ValueError("truncated netlink error message")
            (code,) = struct.unpack_from("=i", data, _NLMSG_HDR.size)
            if code:
                raise OSError(-code, f"XFRM netlink: {errno.errorcode.get(-code, code)}")
        elif kind in (XFRM_MSG_NEWPOLICY, XFRM_MSG_UPDPOLICY):
            try:
                policy = _policy(data)
            except Exception as exc:
                # pyroute2's codec raises whatever its field reader meets; to us it is one kind.
                raise ValueError(f"undecodable XFRM policy message: {exc!r}") from exc
            if policy is not None:
                out.append(policy)
    return out, done


def policy_dump_request(seq: int) -> bytes:
    """XFRM_MSG_GETPOLICY with NLM_F_DUMP: every policy of the namespace."""
    msg = xfrm_userpolicy_id()
    msg["header"]["type"] = XFRM_MSG_GETPOLICY
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
    msg["header"]["sequence_number"] = seq
    msg["sel_daddr"] = b"\0" * 16
    msg["sel_saddr"] = b"\0" * 16
    msg.encode()
    return bytes(msg.data)
