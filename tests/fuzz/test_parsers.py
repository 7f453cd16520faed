"""Every reader of outside input, fed random and hostile bytes: refused, never crashed, never hung.

One property per parser (ExaBGP API line, MQTT command, VICI packet, XFRM datagram, replay
line; the config has its own module) and a named test for each input that used to crash
or fool it. "Refused" means the parser's own error; anything else escaping is a bug.
"""

from __future__ import annotations

import contextlib
import json
import logging
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.adapters import exabgp_api as api
from agent.adapters.dropped import DroppedMessages, brief
from agent.adapters.mqtt_commands import MqttCommands
from agent.adapters.mqtt_payloads import command_from_payload
from agent.adapters.strongswan import ViciTracker
from agent.adapters.vici_wire import MAX_DEPTH, ViciPacketError, check_packet, decode_event
from agent.adapters.xfrm import XfrmSource, decode
from agent.bounded_json import JsonLimitError, loads
from agent.config import MqttSettings, Tunnel
from agent.replay import ReplayError, read_replay
from tests.fuzz.hostile import HOSTILE_JSON, json_values

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- the bounded decoder everyone shares ------------------------------------------------------


@FAST
@given(st.one_of(st.text(max_size=300), st.sampled_from(HOSTILE_JSON)))
def test_bounded_json_raises_only_its_own_error(text: str) -> None:
    with contextlib.suppress(JsonLimitError):
        loads(text, max_chars=1 << 16)


def test_bounded_json_keeps_strings_out_of_the_depth_count() -> None:
    assert loads('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', max_chars=100, max_depth=2)
    with pytest.raises(JsonLimitError, match="nested 3 levels"):
        loads("[[[1]]]", max_chars=100, max_depth=2)


# -- ExaBGP's API lines -----------------------------------------------------------------------


def _parse_line_contained(line: str) -> None:
    with contextlib.suppress(api.ApiParseError):
        api.parse_line(line)


@FAST
@given(json_values())
def test_exabgp_any_json_line_is_a_message_or_refused(value: object) -> None:
    _parse_line_contained(json.dumps(value))


@FAST
@given(st.sampled_from(HOSTILE_JSON))
def test_exabgp_hostile_lines_are_refused(line: str) -> None:
    _parse_line_contained(line)


@FAST
@given(json_values())
def test_exabgp_shaped_updates_with_random_parts_never_escape(value: object) -> None:
    for shaped in (
        {"type": "update", "neighbor": {"address": {"peer": "169.254.1.2"}, "message": value}},
        {"type": "update", "neighbor": {"address": {"peer": value}, "message": {}}},
        {"type": "state", "neighbor": {"address": {"peer": "169.254.1.2"}, "state": value}},
        {
            "type": "update",
            "neighbor": {
                "address": {"peer": "169.254.1.2"},
                "message": {"update": {"announce": {"ipv4 unicast": value}}},
            },
        },
    ):
        _parse_line_contained(json.dumps(shaped))


def test_exabgp_line_nested_deeply_is_refused_not_a_recursion_error() -> None:
    with pytest.raises(api.ApiParseError, match="nested"):
        api.parse_line("{" + '"a":[' * 100_000 + "]" * 100_000 + "}")


def test_exabgp_line_with_a_5000_digit_integer_is_refused_not_a_value_error() -> None:
    with pytest.raises(api.ApiParseError, match="digits"):
        api.parse_line('{"type": "state", "x": ' + "9" * 5000 + "}")


# -- MQTT commands ----------------------------------------------------------------------------


@FAST
@given(st.one_of(st.binary(max_size=300), json_values().map(lambda v: json.dumps(v).encode())))
def test_mqtt_command_payload_is_a_command_or_a_value_error(payload: bytes) -> None:
    with contextlib.suppress(ValueError):
        command_from_payload(payload)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"command": [], "tunnel": "tun1"}',
        b'{"command": {}}',
        b'{"command": "drain", "tunnel": []}',
        b"[" * 100_000,
        b'{"command": "drain", "tunnel": "' + b"x" * 100_000 + b'"}',
    ],
    ids=["command-list", "command-object", "tunnel-list", "100k-brackets", "huge"],
)
def test_mqtt_unhashable_or_deep_commands_are_ignored_not_fatal(payload: bytes) -> None:
    cmds = MqttCommands("site-a", MqttSettings(commands=True), ["tun1"])
    assert cmds.translate(payload) is None


# -- VICI packets -----------------------------------------------------------------------------

_KV, _SECTION, _END, _LIST, _ITEM, _LIST_END = 3, 1, 2, 4, 5, 6


def _name(text: bytes) -> bytes:
    return bytes([len(text)]) + text


def _event(name: bytes, body: bytes) -> bytes:
    return bytes([7]) + _name(name) + body


def _section(name: bytes, body: bytes) -> bytes:
    return bytes([_SECTION]) + _name(name) + body + bytes([_END])


def _kv(key: bytes, value: bytes) -> bytes:
    return bytes([_KV]) + _name(key) + struct.pack("!H", len(value)) + value


@FAST
@given(st.binary(max_size=400))
def test_vici_random_packets_are_checked_or_refused(packet: bytes) -> None:
    try:
        check_packet(packet)
    except ViciPacketError:
        return
    # What the check lets through, vici's own decoder must read without a surprise.
    if packet[0] == 7:
        decode_event(packet)


@FAST
@given(st.lists(st.sampled_from([_KV, _SECTION, _END, _LIST, _ITEM, _LIST_END, 0, 9]), max_size=60))
def test_vici_element_soup_is_checked_or_refused(elements: list[int]) -> None:
    body = b"".join(
        bytes([e]) + (_name(b"k") if e in (_SECTION, _KV, _LIST) else b"") for e in elements
    )
    with contextlib.suppress(ViciPacketError):
        decode_event(_event(b"child-updown", body))


def test_vici_sections_nested_too_deep_are_refused() -> None:
    body = b""
    for _ in range(MAX_DEPTH + 1):
        body = _section(b"s", body)
    with pytest.raises(ViciPacketError, match="nested deeper"):
        check_packet(_event(b"child-updown", body))


def test_vici_truncated_blob_is_refused_not_a_struct_error() -> None:
    packet = _event(b"child-updown", bytes([_KV]) + _name(b"up") + b"\x00\x10ye")
    with pytest.raises(ViciPacketError, match="truncated"):
        check_packet(packet)


def _tunnel() -> Tunnel:
    return Tunnel.model_validate(
        {
            "name": "tun1",
            "interface": "vti1",
            "key": 1,
            "underlay": {"local": "192.0.2.1", "remote": "192.0.2.2"},
            "inner": {"local": "169.254.1.1/30", "peer": "169.254.1.2"},
            "ike": {"connection": "tun1", "child": "tun1"},
        }
    )


@FAST
@given(json_values(), st.sampled_from(["ike-updown", "child-updown", "child-rekey", "ike-rekey"]))
def test_vici_tracker_on_random_messages_raises_only_what_the_source_contains(
    value: object, kind: str
) -> None:
    tracker = ViciTracker([_tunnel()])
    msg = {"tun1": {"uniqueid": b"1", "child-sas": value}, "up": b"yes"}
    try:
        tracker.on_event(kind, msg, 1.0)
        tracker.on_snapshot([msg], 2.0, since=0, full=True)
    except (KeyError, TypeError, ValueError, AttributeError):
        pass


# -- XFRM netlink -----------------------------------------------------------------------------

_HDR = struct.Struct("=IHHII")


@FAST
@given(
    st.sampled_from([0x10, 0x11, 0x18, 0x1A, 0x1C, 2, 3, 0xFFFF]),
    st.binary(max_size=400),
    st.integers(min_value=0, max_value=1000),
    st.booleans(),
)
def test_xfrm_random_datagrams_decode_or_raise_value_or_os_error(
    kind: int, body: bytes, length: int, honest: bool
) -> None:
    buf = _HDR.pack(_HDR.size + len(body) if honest else length, kind, 0, 0, 0) + body
    with contextlib.suppress(ValueError, OSError):
        decode(buf)


@FAST
@given(st.binary(max_size=600))
def test_xfrm_source_translates_any_bytes_without_raising(buf: bytes) -> None:
    source = XfrmSource([_tunnel().model_copy(update={"sources": ()})])
    source._translate(buf, 1.0)


# -- replay files -----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(st.sampled_from(HOSTILE_JSON), json_values().map(json.dumps), st.text(max_size=200))
)
def test_replay_lines_are_events_or_one_line_errors(
    tmp_path_factory: pytest.TempPathFactory, line: str
) -> None:
    path = tmp_path_factory.mktemp("replay") / "events.jsonl"
    path.write_bytes(line.encode("utf-8", "replace") + b"\n")
    message = ""
    try:
        read_replay(path)
    except ReplayError as exc:
        message = str(exc)
    assert "\n" not in message


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"t": 1' + "0" * 400 + ', "event": "ProbeLost", "tunnel": "tun1"}', "digits"),
        ('{"t": 1e400, "event": "ProbeLost", "tunnel": "tun1"}', "out of range"),
        ("[" * 50_000, "nested"),
        ('{"t": NaN, "event": "ProbeLost", "tunnel": "tun1"}', "NaN"),
        ('{"t": 1.0, "event": "ProbeLost", "tunnel": "tun1", "at": Infinity}', "Infinity"),
    ],
    ids=["400-digit-time", "float-overflow", "deep-nesting", "nan-time", "infinite-at"],
)
def test_replay_hostile_numbers_and_nesting_are_one_line_errors(
    tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ReplayError, match=message):
        read_replay(path)


def test_replay_after_nan_time_going_backwards_is_still_detected(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"t": 5, "event": "ProbeLost", "tunnel": "tun1"}\n'
        '{"t": NaN, "event": "ProbeLost", "tunnel": "tun1"}\n'
        '{"t": 1, "event": "ProbeLost", "tunnel": "tun1"}\n'
    )
    with pytest.raises(ReplayError, match=":2: NaN"):
        read_replay(path)


# -- the containment helpers ------------------------------------------------------------------


def test_a_dropped_message_is_logged_once_truncated(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    dropped = DroppedMessages(logging.getLogger("t"), "thing", every_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t"):
        for _ in range(50):
            dropped(b"x" * 100_000, ValueError("bad"))
        now[0] = 11.0
        dropped(b"y", ValueError("bad"))
    assert len(caplog.records) == 2
    assert len(caplog.records[0].getMessage()) < 600
    assert "49 more dropped" in caplog.records[1].getMessage()
    assert dropped.count == 51
    assert brief("z" * 1000).endswith("(800 more)")
