"""VICI packets within bounds: size, section depth and element count checked before decoding.

The `vici` package reads whatever length a peer announces (up to 4 GiB) and its decoder
raises struct.error or UnicodeDecodeError on a truncated or mangled packet, which its
callers do not expect. `BoundedTransport` refuses an oversized packet before reading it and
hands on only packets `check_packet` accepts, so `vici`'s own decoder never meets one it
cannot read. Declarations and checks only; the sockets belong to the `vici` session.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import vici.protocol
from vici.exception import DeserializationException

__all__ = [
    "MAX_DEPTH",
    "MAX_ELEMENTS",
    "MAX_PACKET_BYTES",
    "BoundedTransport",
    "ViciPacketError",
    "bounded_session",
    "check_packet",
    "decode_event",
]

# One IKE_SA of list-sas with its CHILD_SAs is a few kB; charon caps its own at 512 kB.
MAX_PACKET_BYTES = 1 << 20
# IKE_SA > child-sas > CHILD_SA > a few nested lists: charon nests 5 deep at most.
MAX_DEPTH = 16
MAX_ELEMENTS = 100_000

_SECTION_START, _SECTION_END, _KEY_VALUE, _LIST_START, _LIST_ITEM, _LIST_END = range(1, 7)
_PACKET_TYPES = range(vici.protocol.Packet.EVENT + 1)


class ViciPacketError(DeserializationException):  # type: ignore[misc]  # vici is untyped
    """A packet beyond our bounds or not in VICI's encoding; the session cannot go on."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, count: int) -> bytes:
        end = self.pos + count
        if end > len(self.data):
            raise ViciPacketError(f"truncated at byte {self.pos} of {len(self.data)}")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def name(self) -> None:
        raw = self.take(self.byte())
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ViciPacketError(f"a name that is not UTF-8 at byte {self.pos}") from None

    def blob(self) -> None:
        (length,) = struct.unpack("!H", self.take(2))
        self.take(length)


def check_packet(packet: bytes) -> None:
    """Raise ViciPacketError unless `packet` is a VICI packet within our bounds."""
    if len(packet) > MAX_PACKET_BYTES:
        raise ViciPacketError(f"{len(packet)} bytes (at most {MAX_PACKET_BYTES})")
    reader = _Reader(packet)
    kind = reader.byte()
    if kind not in _PACKET_TYPES:
        raise ViciPacketError(f"unknown packet type {kind}")
    if kind == vici.protocol.Packet.EVENT:
        reader.take(reader.byte())
    depth = elements = 0
    while reader.pos < len(packet):
        elements += 1
        if elements > MAX_ELEMENTS:
            raise ViciPacketError(f"more than {MAX_ELEMENTS} elements")
        element = reader.byte()
        if element == _SECTION_START:
            reader.name()
            depth += 1
            if depth > MAX_DEPTH:
                raise ViciPacketError(f"sections nested deeper than {MAX_DEPTH}")
        elif element == _SECTION_END:
            if depth == 0:
                raise ViciPacketError(f"end of a section never started at byte {reader.pos}")
            depth -= 1
        elif element == _KEY_VALUE:
            reader.name()
            reader.blob()
        elif element == _LIST_START:
            reader.name()
            while (marker := reader.byte()) == _LIST_ITEM:
                elements += 1
                reader.blob()
            if marker != _LIST_END:
                raise ViciPacketError(f"a list not ended at byte {reader.pos}")
        else:
            raise ViciPacketError(f"unknown element type {element} at byte {reader.pos}")
    if depth:
        raise ViciPacketError("a section never ended")


def decode_event(packet: bytes) -> tuple[str, dict[str, Any]]:
    """An EVENT packet's name and message, checked first; ViciPacketError otherwise."""
    check_packet(packet)
    parsed = vici.protocol.Packet.parse(packet)
    if parsed.response_type != vici.protocol.Packet.EVENT:
        raise ViciPacketError(f"packet type {parsed.response_type} is not an event")
    name = parsed.event_type.decode("utf-8", "replace")
    return name, dict(vici.protocol.Message.deserialize(parsed.payload))


class BoundedTransport(vici.protocol.Transport):  # type: ignore[misc]  # vici is untyped
    """vici's transport, refusing a packet over MAX_PACKET_BYTES before reading it."""

    def receive(self, timeout: Any = vici.protocol.RECV_TIMEOUT_DEFAULT) -> bytes:
        raw_length = self._recvall(self.HEADER_LENGTH, timeout)
        (length,) = struct.unpack("!I", raw_length)
        if length > MAX_PACKET_BYTES:
            # The rest of the stream cannot be trusted either: the session ends here.
            raise ViciPacketError(f"a {length}-byte packet (at most {MAX_PACKET_BYTES})")
        packet: bytes = self._recvall(length)
        check_packet(packet)
        return packet


def bounded_session(sock: socket.socket) -> Any:
    """A vici.Session on `sock` whose packets are bounded and checked."""
    session = vici.Session(sock)
    session.transport = BoundedTransport(sock)
    return session
