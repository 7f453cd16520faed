"""MQTT topics and JSON payloads: pure translation of actions into messages, no network.

Every payload carries `schema` (its version) and the agent id; times are wall-clock UTC
ISO-8601, converted from the core's monotonic seconds. config/schema/mqtt-payloads.schema.json
documents the same shapes and the tests hold the two together.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.bounded_json import JsonLimitError, loads
from agent.core.actions import PublishAlert, PublishTunnelState

__all__ = [
    "SCHEMA_VERSION",
    "Clock",
    "Command",
    "Message",
    "Topics",
    "command_from_payload",
    "event_message",
    "iso_utc",
    "status_message",
    "tunnel_state_message",
]

SCHEMA_VERSION = 1
# A command is ~50 bytes; a tunnel name at most 64 characters.
MAX_COMMAND_BYTES = 4096
MAX_COMMAND_DEPTH = 4


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool


@dataclass(frozen=True)
class Topics:
    """The agent's topic tree: <prefix>/<agent-id>/{status,event,cmd,tunnel/<name>/state}."""

    base: str

    @classmethod
    def of(cls, prefix: str, agent_id: str) -> Topics:
        return cls(f"{prefix.strip('/')}/{agent_id}")

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def event(self) -> str:
        return f"{self.base}/event"

    @property
    def cmd(self) -> str:
        return f"{self.base}/cmd"

    def tunnel_state(self, tunnel: str) -> str:
        return f"{self.base}/tunnel/{tunnel}/state"


class Clock:
    """Turns the core's monotonic seconds into wall-clock time, using the offset of now."""

    def __init__(
        self,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.monotonic = monotonic
        self.wall = wall

    def to_wall(self, at: float) -> float:
        return self.wall() - (self.monotonic() - at)


def iso_utc(epoch: float) -> str:
    stamp = dt.datetime.fromtimestamp(epoch, tz=dt.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=False).encode()


def status_message(
    topics: Topics, agent_id: str, online: bool, at: float | None, dropped: int | None = None
) -> Message:
    """Retained online/offline; the last will is the same message with at=None.

    `dropped_events` counts events lost to a full queue since the agent started.
    """
    body: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "agent": agent_id,
        "status": "online" if online else "offline",
    }
    if at is not None:
        body["at"] = iso_utc(at)
    if dropped is not None:
        body["dropped_events"] = dropped
    return Message(topics.status, _encode(body), retain=True)


def event_message(
    topics: Topics, agent_id: str, seq: int, alert: PublishAlert, clock: Clock
) -> Message:
    """One event, in the order decided: a failover/failback/degraded/both-down/recovered
    decision, a BGP session lost or restored (with `tunnel`, `neighbor`), or a component
    lost, restored or restarted (with `component`); `down_for_s` for what came back."""
    now_mono = clock.monotonic()
    decided = clock.to_wall(alert.at)
    body: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "agent": agent_id,
        "seq": seq,
        "kind": alert.kind,
        "from": list(alert.from_tunnels),
        "to": list(alert.to_tunnels),
        "reason": alert.reason,
        "at": iso_utc(decided),
        "detected_at": None,
        "detected_after_s": alert.detected_after_s,
        # From the decision to the moment routing was done and the alert handed over.
        "acted_after_s": round(max(0.0, now_mono - alert.at), 6),
    }
    if alert.detected_after_s is not None:
        body["detected_at"] = iso_utc(decided - alert.detected_after_s)
    if alert.tunnel:
        body["tunnel"] = alert.tunnel
    if alert.neighbor:
        body["neighbor"] = alert.neighbor
    if alert.component:
        body["component"] = alert.component
    if alert.down_for_s is not None:
        body["down_for_s"] = alert.down_for_s
    return Message(topics.event, _encode(body), retain=False)


def tunnel_state_message(
    topics: Topics, agent_id: str, state: PublishTunnelState, clock: Clock
) -> Message:
    """The tunnel's latest summary, retained so a new dashboard sees it at once."""
    body: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "agent": agent_id,
        "tunnel": state.tunnel,
        "health": state.health,
        "sa": state.sa,
        "carrying": state.carrying,
        "announced": state.announced,
        "metric": state.metric,
        "loss": state.loss or None,
        "rtt_ms": state.rtt_ms,
        "reason": state.reason,
        "bgp": state.bgp,
        "since": iso_utc(clock.to_wall(state.since)),
        "updated_at": iso_utc(clock.wall()),
        "learned_rejected": dict(state.learned_rejected),
    }
    return Message(topics.tunnel_state(state.tunnel), _encode(body), retain=True)


@dataclass(frozen=True)
class Command:
    action: str
    tunnel: str
    # A drain that leaves no tunnel in service is refused unless forced.
    force: bool = False


def command_from_payload(payload: bytes) -> Command:
    """Parse {"command": "drain"|"undrain", "tunnel": NAME, "force": BOOL (optional)};
    ValueError names the problem."""
    try:
        data = loads(payload, max_chars=MAX_COMMAND_BYTES, max_depth=MAX_COMMAND_DEPTH)
    except JsonLimitError as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    action = data.get("command")
    tunnel = data.get("tunnel")
    # Checked as strings first: a list or an object is unhashable in a set lookup.
    if not isinstance(action, str) or action not in {"drain", "undrain"}:
        raise ValueError(f"command must be drain or undrain, got {_brief(action)}")
    if not isinstance(tunnel, str) or not tunnel:
        raise ValueError(f"tunnel must be a tunnel name, got {_brief(tunnel)}")
    force = data.get("force", False)
    if not isinstance(force, bool):
        raise ValueError(f"force must be true or false, got {_brief(force)}")
    return Command(action, tunnel, force)


def _brief(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
