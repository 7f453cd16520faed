"""Replay files: JSON lines of timestamped events that drive the core without any network.

One object per line: {"t": 1.25, "event": "ProbeLost", "tunnel": "tun1"}; `t` is seconds
from the start, non-decreasing. Blank lines and lines starting with # are skipped.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.core import events as ev

__all__ = [
    "EVENT_TYPES",
    "ReplayError",
    "TimedEvent",
    "event_from_dict",
    "event_to_dict",
    "read_replay",
]

EVENT_TYPES: dict[str, type[ev.Event]] = {
    cls.__name__: cls
    for cls in vars(ev).values()
    if isinstance(cls, type) and issubclass(cls, ev.Event) and cls is not ev.Event
}


class ReplayError(Exception):
    """A replay file that cannot be used; the message names the line."""


@dataclasses.dataclass(frozen=True)
class TimedEvent:
    t: float
    event: ev.Event


def _check_type(name: str, value: Any, annotation: str) -> Any:
    expected: dict[str, tuple[type, ...]] = {
        "str": (str,),
        "float": (int, float),
        "int": (int,),
        "bool": (bool,),
        "tuple[str, ...]": (list, tuple),
    }
    types = expected.get(annotation)
    if types is None:
        return value
    if isinstance(value, bool) and annotation in ("float", "int"):
        raise ReplayError(f"field {name!r} must be a number, got {value!r}")
    ok = isinstance(value, types)
    if not ok:
        raise ReplayError(f"field {name!r} must be {annotation}, got {value!r}")
    raw: Any = value
    if annotation == "tuple[str, ...]":
        return tuple(str(v) for v in raw)
    if annotation == "float":
        return float(raw)
    return raw


def event_from_dict(data: dict[str, Any]) -> ev.Event:
    name = data.get("event")
    if not isinstance(name, str) or name not in EVENT_TYPES:
        known = ", ".join(sorted(EVENT_TYPES))
        raise ReplayError(f"unknown event {name!r} (known: {known})")
    cls = EVENT_TYPES[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("event", "t"):
            continue
        if key not in fields:
            raise ReplayError(f"{name} has no field {key!r}")
        kwargs[key] = _check_type(key, value, str(fields[key].type))
    missing = [
        f.name
        for f in fields.values()
        if f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ReplayError(f"{name} needs {', '.join(missing)}")
    return cls(**kwargs)


def event_to_dict(event: ev.Event) -> dict[str, Any]:
    out: dict[str, Any] = {"event": type(event).__name__}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def read_replay(path: Path) -> list[TimedEvent]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReplayError(f"{path}: cannot read: {exc}") from None
    return list(_parse(text, str(path)))


def _parse(text: str, source: str) -> Iterator[TimedEvent]:
    last = 0.0
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ReplayError(f"{source}:{number}: not JSON: {exc.msg}") from None
        if not isinstance(data, dict):
            raise ReplayError(f"{source}:{number}: each line must be a JSON object")
        t = data.get("t")
        if isinstance(t, bool) or not isinstance(t, int | float) or t < 0:
            raise ReplayError(f"{source}:{number}: 't' must be seconds >= 0, got {t!r}")
        if t < last:
            raise ReplayError(f"{source}:{number}: 't' goes back in time ({t} < {last})")
        last = float(t)
        try:
            event = event_from_dict(data)
        except ReplayError as exc:
            raise ReplayError(f"{source}:{number}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ReplayError(f"{source}:{number}: {exc}") from None
        if not event.at:
            event = dataclasses.replace(event, at=float(t))
        yield TimedEvent(float(t), event)
