"""Payloads against the shipped JSON Schema, and monotonic-to-wall-clock conversion."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent.adapters.mqtt_payloads import (
    Clock,
    Topics,
    command_from_payload,
    event_message,
    status_message,
    tunnel_state_message,
)
from agent.core import engine
from agent.core.actions import PublishAlert, PublishTunnelState
from agent.core.events import (
    BgpNeighborDown,
    BgpNeighborUp,
    ChildSaDown,
    ChildSaUp,
    ComponentRestarted,
    ProbeSucceeded,
    SourceLost,
    SourceRecovered,
)
from tests.mqtt.conftest import AGENT, base_config

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "config/schema/mqtt-payloads.schema.json").read_text()
)
TOPICS = Topics.of("vti-failover/", AGENT)
# Monotonic 1000.0 is wall-clock 2026-11-27T12:00:00Z.
CLOCK = Clock(monotonic=lambda: 1000.0, wall=lambda: 1_795_780_800.0)


def validate(body: dict[str, Any], kind: str) -> None:
    schema = dict(SCHEMA)
    schema.pop("oneOf")
    schema["$ref"] = f"#/$defs/{kind}"
    jsonschema.Draft202012Validator(schema).validate(body)


def _core_actions() -> tuple[list[PublishAlert], list[PublishTunnelState]]:
    cfg = base_config()
    state = engine.initial_state(cfg, 990.0)
    actions = []
    events = [ChildSaUp(tunnel="tun1"), ChildSaUp(tunnel="tun2")]
    events += [ProbeSucceeded(tunnel=t, rtt_ms=4.0) for _ in range(2) for t in ("tun1", "tun2")]
    events += [ChildSaDown(tunnel="tun1")]
    for n, e in enumerate(events):
        state, out = engine.step(state, e, 990.0 + n)
        actions += out
    alerts = [a for a in actions if isinstance(a, PublishAlert)]
    states = [a for a in actions if isinstance(a, PublishTunnelState)]
    return alerts, states


def test_topics_sit_under_prefix_and_agent() -> None:
    assert TOPICS.status == "vti-failover/site-a/status"
    assert TOPICS.event == "vti-failover/site-a/event"
    assert TOPICS.tunnel_state("tun1") == "vti-failover/site-a/tunnel/tun1/state"
    assert TOPICS.cmd == "vti-failover/site-a/cmd"


def test_core_alerts_and_states_match_the_schema() -> None:
    alerts, states = _core_actions()
    assert "failover" in [a.kind for a in alerts]
    for a in alerts:
        msg = event_message(TOPICS, AGENT, 1, a, CLOCK)
        assert not msg.retain
        validate(json.loads(msg.payload), "event")
    for s in states:
        msg = tunnel_state_message(TOPICS, AGENT, s, CLOCK)
        assert msg.retain
        validate(json.loads(msg.payload), "tunnel_state")
    for online, at in ((True, 1.0), (False, 1.0), (False, None)):
        validate(json.loads(status_message(TOPICS, AGENT, online, at, 0).payload), "status")


def test_session_and_component_events_match_the_schema() -> None:
    cfg = base_config()
    state = engine.initial_state(cfg, 990.0)
    alerts: list[PublishAlert] = []
    states: list[PublishTunnelState] = []
    script = [
        BgpNeighborUp(tunnel="tun1", at=990.0),
        BgpNeighborDown(tunnel="tun1", reason="peer reset", at=991.0),
        BgpNeighborUp(tunnel="tun1", at=993.5),
        SourceLost(source="exabgp", detail="exited with status -9; restarting in 0.5s", at=994.0),
        ComponentRestarted(component="exabgp", reason="restarted after 0.5s", at=994.5),
        SourceLost(source="vici", detail="charon unreachable", at=995.0),
        SourceRecovered(source="vici", at=997.0),
    ]
    for e in script:
        state, out = engine.step(state, e, e.at)
        alerts += [a for a in out if isinstance(a, PublishAlert)]
        states += [a for a in out if isinstance(a, PublishTunnelState)]
    bodies = [json.loads(event_message(TOPICS, AGENT, 1, a, CLOCK).payload) for a in alerts]
    for body in bodies:
        validate(body, "event")
    # Both tunnels never came up here, so a both-down decision comes too; it is not the subject.
    told = [b for b in bodies if "neighbor" in b or "component" in b]
    assert [
        (b["kind"], b.get("tunnel"), b.get("component"), b.get("down_for_s")) for b in told
    ] == [
        ("bgp-session-lost", "tun1", None, None),
        ("bgp-session-restored", "tun1", None, 2.5),
        ("component-lost", None, "exabgp", None),
        ("component-restarted", None, "exabgp", 0.5),
        ("component-lost", None, "vici", None),
        ("component-restored", None, "vici", 2.0),
    ]
    assert told[0]["neighbor"] == "169.254.1.2"
    assert told[0]["reason"] == "peer reset"
    assert told[0]["at"] == "2026-11-27T11:59:51.000Z"
    # This config has no bgp section: the reports carry no session.
    assert states
    assert all(s.bgp is None for s in states)
    for bgp in ("up", "down", None):
        report = replace(states[-1], bgp=bgp)
        body = json.loads(tunnel_state_message(TOPICS, AGENT, report, CLOCK).payload)
        assert body["bgp"] == bgp
        validate(body, "tunnel_state")


def test_monotonic_times_become_utc_wall_clock() -> None:
    alert = PublishAlert(
        kind="failover",
        at=997.5,
        from_tunnels=("tun1",),
        to_tunnels=("tun2",),
        reason="tun1 child-sa-down",
        detected_after_s=0.25,
    )
    body = json.loads(event_message(TOPICS, AGENT, 7, alert, CLOCK).payload)
    assert body["at"] == "2026-11-27T11:59:57.500Z"
    assert body["detected_at"] == "2026-11-27T11:59:57.250Z"
    assert body["acted_after_s"] == 2.5
    assert body["seq"] == 7


def test_schema_rejects_a_payload_missing_its_version() -> None:
    alerts, _ = _core_actions()
    body = json.loads(event_message(TOPICS, AGENT, 1, alerts[0], CLOCK).payload)
    del body["schema"]
    with pytest.raises(jsonschema.ValidationError):
        validate(body, "event")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"drain tun1",
        b"[]",
        b'{"command": "reboot", "tunnel": "tun1"}',
        b'{"command": "drain"}',
    ],
)
def test_bad_commands_are_refused_with_a_reason(raw: bytes) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        command_from_payload(raw)


def test_commands_parse() -> None:
    cmd = command_from_payload(b'{"command": "drain", "tunnel": "tun2"}')
    assert (cmd.action, cmd.tunnel) == ("drain", "tun2")


def test_a_drain_may_be_forced() -> None:
    assert not command_from_payload(b'{"command": "drain", "tunnel": "tun2"}').force
    cmd = command_from_payload(b'{"command": "drain", "tunnel": "tun2", "force": true}')
    assert (cmd.action, cmd.tunnel, cmd.force) == ("drain", "tun2", True)
    validate({"command": "drain", "tunnel": "tun2", "force": True}, "command")
    with pytest.raises(ValueError, match="force must be true or false, got 'yes'"):
        command_from_payload(b'{"command": "drain", "tunnel": "tun2", "force": "yes"}')


def test_the_state_carries_refused_learned_prefixes_by_reason() -> None:
    _, states = _core_actions()
    refused = (("default", 1), ("martian", 3))
    state = replace(states[-1], learned_rejected=refused)
    body = json.loads(tunnel_state_message(TOPICS, AGENT, state, CLOCK).payload)
    validate(body, "tunnel_state")
    assert body["learned_rejected"] == {"default": 1, "martian": 3}
