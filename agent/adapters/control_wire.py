"""The control socket's language: one JSON request per line in, one JSON answer per line out.

Pure codec, no I/O. Requests are small: each is bounded in size and depth before it is
parsed (agent/bounded_json.py), and anything that is not exactly a known request is a
RequestError whose message goes back to the client as {"ok": false, "error": ...}.

    {"command": "status"}
    {"command": "watch", "interval_s": 1}
    {"command": "drain", "tunnel": "tun1", "force": false, "wait": true, "wait_s": 30}
    {"command": "undrain", "tunnel": "tun1"}
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.bounded_json import JsonLimitError, loads
from agent.core.snapshot import Json

__all__ = [
    "MAX_REQUEST_BYTES",
    "Drain",
    "Request",
    "RequestError",
    "Status",
    "Undrain",
    "Watch",
    "encode",
    "failure",
    "parse_request",
]

# The longest real request is well under 200 bytes (a 64-character tunnel name included).
MAX_REQUEST_BYTES = 1024
# A watcher cannot ask for snapshots faster than this, nor wait longer between them.
WATCH_MIN_S = 0.1
WATCH_MAX_S = 60.0
WAIT_MAX_S = 600.0


class RequestError(ValueError):
    """Not a request we serve; the message says why, in one line."""


@dataclass(frozen=True)
class Status:
    pass


@dataclass(frozen=True)
class Watch:
    interval_s: float = 1.0


@dataclass(frozen=True)
class Drain:
    tunnel: str
    force: bool = False
    # Answer only once the tunnel is ADMIN_DOWN and carries nothing (or wait_s passed).
    wait: bool = False
    wait_s: float = 30.0


@dataclass(frozen=True)
class Undrain:
    tunnel: str


Request = Status | Watch | Drain | Undrain

_FIELDS: Mapping[str, frozenset[str]] = {
    "status": frozenset(),
    "watch": frozenset({"interval_s"}),
    "drain": frozenset({"tunnel", "force", "wait", "wait_s"}),
    "undrain": frozenset({"tunnel"}),
}


def parse_request(line: bytes) -> Request:
    try:
        raw = loads(line, max_chars=MAX_REQUEST_BYTES, max_depth=2)
    except JsonLimitError as exc:
        raise RequestError(f"bad request: {exc}") from None
    if not isinstance(raw, dict):
        raise RequestError('bad request: expected an object like {"command": "status"}')
    command = raw.get("command")
    if not isinstance(command, str) or command not in _FIELDS:
        known = ", ".join(sorted(_FIELDS))
        raise RequestError(f"bad request: command must be one of {known}")
    unknown = sorted(set(raw) - _FIELDS[command] - {"command"})
    if unknown:
        raise RequestError(f"bad request: {command} takes no {', '.join(unknown)}")
    if command == "status":
        return Status()
    if command == "watch":
        return Watch(_seconds(raw, "interval_s", 1.0, WATCH_MIN_S, WATCH_MAX_S))
    tunnel = raw.get("tunnel")
    if not isinstance(tunnel, str) or not tunnel:
        raise RequestError(f"bad request: {command} needs a tunnel name")
    if command == "undrain":
        return Undrain(tunnel)
    return Drain(
        tunnel,
        force=_flag(raw, "force"),
        wait=_flag(raw, "wait"),
        wait_s=_seconds(raw, "wait_s", 30.0, 0.0, WAIT_MAX_S),
    )


def _flag(raw: Mapping[str, Any], key: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise RequestError(f"bad request: {key} must be true or false")
    return value


def _seconds(raw: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RequestError(f"bad request: {key} must be a number of seconds")
    if not low <= value <= high:
        raise RequestError(f"bad request: {key} must be from {low:g} to {high:g}")
    return float(value)


def encode(answer: Mapping[str, Json]) -> bytes:
    """One answer as one line."""
    return json.dumps(answer, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def failure(message: str) -> bytes:
    return encode({"ok": False, "error": message})
