"""The XFRM reader on kernel-format messages: recorded from iproute2 and built with our codec."""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import threading
from pathlib import Path

import pytest

from agent.adapters.xfrm import (
    XFRM_MSG_DELSA,
    XFRM_MSG_EXPIRE,
    XFRM_MSG_FLUSHSA,
    XFRM_MSG_NEWSA,
    XFRM_MSG_UPDSA,
    SaInfo,
    XfrmSource,
    XfrmTracker,
    _open_xfrm_socket,
    decode,
    xfrm_user_expire,
    xfrm_usersa_id,
    xfrm_usersa_info,
)
from agent.config import Tunnel
from agent.core.events import ChildSaDown, ChildSaUp, Event, InboundTrafficSeen
from tests.support.system import netns
from tests.vici.conftest import Recorder

DATA = Path(__file__).parent.parent / "data" / "xfrm"


def tunnel(name: str, local: str, remote: str, **extra: object) -> Tunnel:
    return Tunnel.model_validate(
        {
            "name": name,
            "interface": f"if-{name}",
            "underlay": {"local": local, "remote": remote},
            "inner": {"local": f"169.254.{len(name)}.1/30", "peer": f"169.254.{len(name)}.2"},
            "sources": ["xfrm"],
            **extra,
        }
    )


TUNNELS = (
    tunnel("tun1", "192.0.2.1", "192.0.2.2", kind="vti", key=1),
    tunnel("tun22", "198.51.100.1", "198.51.100.2", kind="xfrm", if_id=7),
    tunnel("tun333", "203.0.113.1", "203.0.113.2", kind="gre"),
)


def sa_fields(src: str, dst: str, spi: int, packets: int) -> dict[str, object]:
    return {
        "saddr": socket.inet_aton(src) + b"\0" * 12,
        "daddr": socket.inet_aton(dst) + b"\0" * 12,
        "sel_daddr": b"\0" * 16,
        "sel_saddr": b"\0" * 16,
        "spi": spi,
        "proto": 50,
        "family": socket.AF_INET,
        "packets": packets,
        "bytes": packets * 100,
    }


def attrs(mark: int | None, if_id: int | None) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    if mark is not None:
        out.append(("XFRMA_MARK", {"v": mark, "m": 0xFFFFFFFF}))
    if if_id is not None:
        out.append(("XFRMA_IF_ID", if_id))
    return out


def message(
    kind: int,
    src: str,
    dst: str,
    spi: int,
    *,
    mark: int | None = None,
    if_id: int | None = None,
    packets: int = 0,
    hard: bool = False,
) -> bytes:
    """A notification as the kernel's xfrm_notify_sa()/build_expire() lay it out."""
    fields = sa_fields(src, dst, spi, packets)
    msg: xfrm_usersa_info | xfrm_usersa_id | xfrm_user_expire
    if kind == XFRM_MSG_DELSA:
        msg = xfrm_usersa_id()
        msg.update({"daddr": fields["daddr"], "spi": spi, "family": socket.AF_INET, "proto": 50})
        msg["attrs"] = [("XFRMA_SA", fields), *attrs(mark, if_id)]
    elif kind == XFRM_MSG_EXPIRE:
        msg = xfrm_user_expire()
        msg.update(fields)
        msg["hard"] = int(hard)
        msg["attrs"] = attrs(mark, if_id)
    else:
        msg = xfrm_usersa_info()
        msg.update(fields)
        msg["attrs"] = attrs(mark, if_id)
    msg["header"]["type"] = kind
    msg.encode()
    return bytes(msg.data)


def feed(tracker: XfrmTracker, buf: bytes, at: float = 1.0) -> list[Event]:
    out: list[Event] = []
    for item in decode(buf):
        assert isinstance(item, SaInfo)
        out.extend(tracker.on_event(item, at))
    return out


def test_iproute2s_own_newsa_bytes_decode_field_by_field() -> None:
    # Laid out by iproute2's C struct, not by our field table: a misplaced field shows here.
    [sa] = decode((DATA / "ip-xfrm-state-add-newsa.bin").read_bytes())
    assert sa == SaInfo(
        kind=XFRM_MSG_NEWSA, src="192.0.2.1", dst="192.0.2.2", spi=0x0BADF00D, proto=50,
        mark=1, if_id=7, packets=0, mark_mask=0xFFFFFFFF,
    )  # fmt: skip


def test_struct_sizes_match_the_kernel_abi() -> None:
    # linux/xfrm.h on x86_64: usersa_info 224, usersa_id 24, user_expire 232, plus nlmsghdr.
    assert len(message(XFRM_MSG_NEWSA, "192.0.2.1", "192.0.2.2", 1)) == 16 + 224
    assert len(message(XFRM_MSG_EXPIRE, "192.0.2.1", "192.0.2.2", 1)) == 16 + 232
    delsa = message(XFRM_MSG_DELSA, "192.0.2.1", "192.0.2.2", 1)
    assert len(delsa) == 16 + 24 + 4 + 224


def test_sa_add_rekey_and_delete_per_tunnel() -> None:
    t = XfrmTracker(TUNNELS)
    # charon installs the inbound SA by UPDSA (after ALLOCSPI), the outbound by NEWSA.
    assert feed(t, message(XFRM_MSG_UPDSA, "192.0.2.2", "192.0.2.1", 0x10, mark=1)) == [
        ChildSaUp(tunnel="tun1", source="xfrm", at=1.0)
    ]
    assert feed(t, message(XFRM_MSG_NEWSA, "192.0.2.1", "192.0.2.2", 0x11, mark=1)) == []
    # Rekey: new pair first, then the old pair goes. Never down.
    assert feed(t, message(XFRM_MSG_NEWSA, "192.0.2.2", "192.0.2.1", 0x20, mark=1)) == []
    assert feed(t, message(XFRM_MSG_NEWSA, "192.0.2.1", "192.0.2.2", 0x21, mark=1)) == []
    assert feed(t, message(XFRM_MSG_EXPIRE, "192.0.2.2", "192.0.2.1", 0x10, mark=1)) == []
    assert feed(t, message(XFRM_MSG_DELSA, "192.0.2.2", "192.0.2.1", 0x10, mark=1)) == []
    assert feed(t, message(XFRM_MSG_DELSA, "192.0.2.1", "192.0.2.2", 0x11, mark=1)) == []
    # The last SA goes: down.
    assert feed(t, message(XFRM_MSG_DELSA, "192.0.2.2", "192.0.2.1", 0x20, mark=1)) == []
    assert feed(t, message(XFRM_MSG_DELSA, "192.0.2.1", "192.0.2.2", 0x21, mark=1)) == [
        ChildSaDown(tunnel="tun1", source="xfrm", reason="xfrm delsa", at=1.0)
    ]


def test_hard_expire_is_gone_soft_expire_is_not() -> None:
    t = XfrmTracker(TUNNELS)
    feed(t, message(XFRM_MSG_NEWSA, "198.51.100.2", "198.51.100.1", 0x30, if_id=7))
    soft = message(XFRM_MSG_EXPIRE, "198.51.100.2", "198.51.100.1", 0x30, if_id=7)
    assert feed(t, soft) == []
    hard = message(XFRM_MSG_EXPIRE, "198.51.100.2", "198.51.100.1", 0x30, if_id=7, hard=True)
    [down] = feed(t, hard, at=2.0)
    assert down == ChildSaDown(tunnel="tun22", source="xfrm", reason="xfrm expire", at=2.0)


def test_matching_by_if_id_mark_and_addresses() -> None:
    t = XfrmTracker(TUNNELS)
    # Same addresses as tun1 but another mark: someone else's SA.
    assert feed(t, message(XFRM_MSG_NEWSA, "192.0.2.2", "192.0.2.1", 1, mark=9)) == []
    # tun22 is matched by if_id only; an SA with its addresses but no if_id is not its.
    assert feed(t, message(XFRM_MSG_NEWSA, "198.51.100.2", "198.51.100.1", 2)) == []
    # tun333 has neither mark nor if_id: its underlay address pair, either direction.
    [up] = feed(t, message(XFRM_MSG_NEWSA, "203.0.113.1", "203.0.113.2", 3))
    assert up == ChildSaUp(tunnel="tun333", source="xfrm", at=1.0)


def test_dump_states_every_tunnel_then_counts_inbound_packets_only() -> None:
    t = XfrmTracker(TUNNELS)
    inbound = (XFRM_MSG_NEWSA, "192.0.2.2", "192.0.2.1", 0x40)
    outbound = (XFRM_MSG_NEWSA, "192.0.2.1", "192.0.2.2", 0x41)

    def dump(pin: int, pout: int) -> list[SaInfo]:
        buf = message(*inbound, mark=1, packets=pin) + message(*outbound, mark=1, packets=pout)
        return [i for i in decode(buf) if isinstance(i, SaInfo)]

    first = t.on_dump(dump(5, 5), 1.0, full=True)
    assert first == [
        ChildSaUp(tunnel="tun1", source="xfrm", at=1.0),
        ChildSaDown(tunnel="tun22", source="xfrm", reason="xfrm dump", at=1.0),
        ChildSaDown(tunnel="tun333", source="xfrm", reason="xfrm dump", at=1.0),
    ]
    # Only outbound grew: nothing heard from the far end.
    assert t.on_dump(dump(5, 50), 2.0, full=False) == []
    assert t.on_dump(dump(12, 60), 3.0, full=False) == [
        InboundTrafficSeen(tunnel="tun1", packets=7, at=3.0)
    ]
    # The SAs vanished without a notification (lost on overflow): the dump says down.
    assert t.on_dump([], 4.0, full=False) == [
        ChildSaDown(tunnel="tun1", source="xfrm", reason="xfrm dump", at=4.0)
    ]


def test_flush_takes_every_tunnel_down() -> None:
    t = XfrmTracker(TUNNELS)
    feed(t, message(XFRM_MSG_NEWSA, "203.0.113.2", "203.0.113.1", 5))
    flush = bytes(16)
    flush = (16).to_bytes(4, "little") + XFRM_MSG_FLUSHSA.to_bytes(2, "little") + flush[6:]
    assert decode(flush) == [XFRM_MSG_FLUSHSA]
    assert t.on_flush(3.0) == [
        ChildSaDown(tunnel="tun333", source="xfrm", reason="xfrm flush", at=3.0)
    ]


def test_garbage_is_refused_not_crashed_on() -> None:
    good = message(XFRM_MSG_NEWSA, "192.0.2.2", "192.0.2.1", 0x10, mark=1)
    with pytest.raises(ValueError, match="truncated"):
        decode(good[:-10])
    source = XfrmSource(TUNNELS)
    assert source._translate(good[:-10], 1.0) == []
    assert source._translate(good, 1.0) == [ChildSaUp(tunnel="tun1", source="xfrm", at=1.0)]


def _socket_in(ns: str, groups: int) -> socket.socket:
    """Open the XFRM socket from a thread that entered `ns` (setns is per thread)."""
    result: list[socket.socket | BaseException] = []

    def enter() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            result.append(_open_xfrm_socket(groups))
        except BaseException as exc:  # handed back to the caller
            result.append(exc)

    th = threading.Thread(target=enter)
    th.start()
    th.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


@pytest.mark.root
async def test_real_kernel_answers_the_dump_and_subscription() -> None:
    # This kernel can hold no ESP SA, but it does speak NETLINK_XFRM: the GETSA dump must
    # be accepted (a malformed request gets an error) and say "no SA" for every tunnel.
    with netns("vtfx") as ns:
        source = XfrmSource(TUNNELS, open_socket=lambda groups: _socket_in(ns, groups))
        rec = Recorder()
        task = asyncio.create_task(source.run(rec))
        try:
            for name in ("tun1", "tun22", "tun333"):
                down = await rec.next(
                    lambda e, n=name: isinstance(e, ChildSaDown) and e.tunnel == n, timeout=5
                )
                assert down.reason == "xfrm dump"  # type: ignore[attr-defined]
            assert not source._blind
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
