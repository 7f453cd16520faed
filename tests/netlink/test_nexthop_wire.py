"""The nhmsg codec without a kernel: round trips, kernel-recorded bytes, and hostile bytes."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.adapters.nexthop_wire import (
    RTM_DELNEXTHOP,
    RTM_NEWNEXTHOP,
    NexthopObject,
    parse,
    to_message,
)
from agent.ports import AdapterError

V4, V6, UNSPEC = socket.AF_INET, socket.AF_INET6, socket.AF_UNSPEC

OBJECTS = [
    NexthopObject(1, V4, 157, oif=3),
    NexthopObject(2, V4, 157, oif=3, gateway="192.0.2.2"),
    NexthopObject(3, V6, 157, oif=4),
    NexthopObject(4, V6, 157, oif=4, gateway="fe80::2"),
    NexthopObject(5, V4, 157, blackhole=True),
    NexthopObject(10, UNSPEC, 157, group=(1, 2)),
    NexthopObject(11, UNSPEC, 157, group=(4,)),
    NexthopObject(2**32 - 1, UNSPEC, 255, group=(2**32 - 2, 7, 1)),
]

# RTM_NEWNEXTHOP messages as a kernel 6.18 dump sent them (`ip nexthop add id 10 group 1/2
# proto 99`, `... id 30 via fd00::2 dev v1 proto 99`, `... id 40 blackhole proto 99`). The
# kernel adds NHA_OP_FLAGS (NHA_OP_FLAG_RESP_GRP_RESVD_0) to a group: we never write it.
KERNEL_DUMP = {
    NexthopObject(10, UNSPEC, 99, group=(1, 2)): "440000006800020001000000810a0000000063000000"
    "0000080001000a0000000600030000000000140002000100000000000000020000000000000008000e0000000080",
    NexthopObject(30, V6, 99, oif=3, gateway="fd00::2"): "3c0000006800020001000000810a00000afd"
    "630000000000080001001e000000080005000300000014000600fd000000000000000000000000000002",
    NexthopObject(40, V4, 99, blackhole=True): "240000006800020001000000810a000002006300000000"
    "00080001002800000004000400",
}


def wire(obj: NexthopObject, kind: int = RTM_NEWNEXTHOP) -> bytes:
    msg = to_message(obj)
    msg["header"]["type"] = kind
    msg.encode()
    return bytes(msg.data)


@pytest.mark.parametrize("obj", OBJECTS, ids=lambda o: f"id{o.id}")
def test_round_trip(obj: NexthopObject) -> None:
    assert parse(wire(obj)) == obj
    assert parse(wire(obj, RTM_DELNEXTHOP)) == obj


@pytest.mark.parametrize(("obj", "recorded"), KERNEL_DUMP.items(), ids=lambda v: str(v)[:24])
def test_kernel_bytes_decode(obj: NexthopObject, recorded: str) -> None:
    assert parse(bytes.fromhex(recorded)) == obj


def test_group_weights_and_high_byte_on_the_wire() -> None:
    # struct nexthop_grp carries weight-1; members we write are equal (weight 1 -> 0).
    raw = wire(NexthopObject(10, UNSPEC, 157, group=(1, 2)))
    assert struct.pack("=IBBH", 1, 0, 0, 0) + struct.pack("=IBBH", 2, 0, 0, 0) in raw


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"id": 0, "family": V4, "protocol": 1, "oif": 1}, "must be 1"),
        ({"id": 1, "family": V4, "protocol": 1, "group": (2,)}, "AF_UNSPEC"),
        ({"id": 1, "family": UNSPEC, "protocol": 1, "group": (2, 2)}, "members"),
        ({"id": 1, "family": UNSPEC, "protocol": 1, "group": (2,), "oif": 3}, "no oif"),
        ({"id": 1, "family": V4, "protocol": 1, "blackhole": True, "oif": 3}, "blackhole"),
        ({"id": 1, "family": V4, "protocol": 1, "oif": 3, "gateway": "fd00::1"}, "not IPv4"),
        ({"id": 1, "family": UNSPEC, "protocol": 1, "oif": 3}, "AF_INET/AF_INET6"),
        ({"id": 1, "family": V4, "protocol": 300, "oif": 3}, "u8"),
    ],
)
def test_impossible_objects_are_refused(kwargs: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        NexthopObject(**kwargs)  # type: ignore[arg-type]


def test_malformed_attributes_are_adapter_errors() -> None:
    good = wire(NexthopObject(1, V4, 157, oif=3, gateway="192.0.2.2"))
    # NHA_GATEWAY of an AF_INET message holding 16 bytes, and a truncated message.
    v6_sized = good[:-8] + struct.pack("=HH", 20, 6) + bytes(16)
    v6_sized = struct.pack("=I", len(v6_sized)) + v6_sized[4:]
    with pytest.raises(AdapterError, match="NHA_GATEWAY"):
        parse(v6_sized)
    with pytest.raises(AdapterError, match="length"):
        parse(good[:-4])
    no_id = wire(NexthopObject(1, V4, 157, oif=3)).replace(struct.pack("=HHI", 8, 1, 1), b"")
    no_id = struct.pack("=I", len(no_id)) + no_id[4:]
    with pytest.raises(AdapterError, match="without NHA_ID"):
        parse(no_id)


def nla(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + bytes(-length % 4)


u32 = st.integers(0, 2**32 - 1)
well_formed = st.one_of(
    st.builds(lambda n: nla(1, struct.pack("=I", n)), u32),  # NHA_ID
    st.builds(
        lambda ids: nla(2, b"".join(struct.pack("=IBBH", i, w, h, 0) for i, w, h in ids)),
        st.lists(st.tuples(u32, st.integers(0, 255), st.integers(0, 255)), max_size=4),
    ),  # NHA_GROUP
    st.builds(lambda n: nla(3, struct.pack("=H", n)), st.integers(0, 0xFFFF)),  # GROUP_TYPE
    st.just(nla(4, b"")),  # NHA_BLACKHOLE
    st.builds(lambda n: nla(5, struct.pack("=I", n)), u32),  # NHA_OIF
    st.builds(lambda a: nla(6, a), st.binary(min_size=4, max_size=4)),  # NHA_GATEWAY v4
    st.builds(lambda a: nla(6, a), st.binary(min_size=16, max_size=16)),  # NHA_GATEWAY v6
)
hostile = st.builds(nla, st.integers(0, 20) | st.integers(0, 0xFFFF), st.binary(max_size=40))
attributes = st.lists(well_formed | hostile, max_size=8)


@st.composite
def nexthop_messages(draw: st.DrawFn) -> bytes:
    """A plausible header (right type, any length) over a body of possibly hostile NLAs."""
    head = struct.pack(
        "=BBBBI",
        draw(st.sampled_from([UNSPEC, V4, V6, 7, 255])),
        draw(st.integers(0, 255)),
        draw(st.integers(0, 255)),
        draw(st.integers(0, 255)),
        draw(st.integers(0, 2**32 - 1)),
    )
    ident = draw(st.sampled_from([True, True, True, False]))
    first = nla(1, struct.pack("=I", draw(st.integers(1, 2**32 - 1)))) if ident else b""
    body = head + first + b"".join(draw(attributes)) + draw(st.just(b"") | st.binary(max_size=6))
    length = draw(st.just(16 + len(body)) | st.integers(0, 200))
    kind = draw(st.sampled_from([RTM_NEWNEXTHOP, RTM_DELNEXTHOP]) | st.integers(0, 0xFFFF))
    return struct.pack("=IHHII", length, kind, 0, 0, 0) + body


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=120) | nexthop_messages())
def test_hostile_bytes_give_an_object_or_our_error(data: bytes) -> None:
    try:
        obj = parse(data)
    except AdapterError:
        return
    assert isinstance(obj, NexthopObject)
    # Whatever decoded must encode back to an equal object: no half-read state escapes.
    assert parse(wire(obj)) == obj
