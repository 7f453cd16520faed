"""Replay files: JSON lines of timestamped events that drive the core without any network.

`replay` plays them through the core on a virtual clock, firing its deadlines on time.

One object per line: {"t": 1.25, "event": "ProbeLost", "tunnel": "tun1"}; `t` is seconds
from the start, non-decreasing. Blank lines and lines starting with # are skipped.
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agent.bounded_json import JsonLimitError, loads
from agent.config import Config
from agent.core import engine
from agent.core import events as ev
from agent.dispatch import apply_actions
from agent.ports import Actuator

__all__ = [
    "EVENT_TYPES",
    "ReplayError",
    "TimedEvent",
    "VirtualClock",
    "event_from_dict",
    "event_to_dict",
    "read_replay",
    "replay",
]

EVENT_TYPES: dict[str, type[ev.Event]] = {
    cls.__name__: cls
    for cls in vars(ev).values()
    if isinstance(cls, type) and issubclass(cls, ev.Event) and cls is not ev.Event
}


# A day of events from a thousand tunnels fits; a replay is read whole before it starts.
MAX_FILE_BYTES = 256 << 20
MAX_LINE_CHARS = 64 << 10
# A year: beyond it, float seconds lose the millisecond the core works in.
MAX_TIME_S = 366 * 86400.0


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
        raise ReplayError(f"field {name!r} must be a number, got {_brief(value)}")
    ok = isinstance(value, types)
    if not ok:
        raise ReplayError(f"field {name!r} must be {annotation}, got {_brief(value)}")
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
        raise ReplayError(f"unknown event {_brief(repr(name))} (known: {known})")
    cls = EVENT_TYPES[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("event", "t"):
            continue
        if key not in fields:
            raise ReplayError(f"{name} has no field {_brief(repr(key))}")
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
        text = _read_bounded(path).decode("utf-8")
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ReplayError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return list(_parse(text, str(path)))


def _read_bounded(path: Path) -> bytes:
    """A regular file or a pipe (`--replay <(...)`), up to MAX_FILE_BYTES; nothing else."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise ReplayError(f"{path}: not a regular file or a pipe")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > MAX_FILE_BYTES:
                raise ReplayError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _parse(text: str, source: str) -> Iterator[TimedEvent]:
    last = 0.0
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            data = loads(stripped, max_chars=MAX_LINE_CHARS)
        except JsonLimitError as exc:
            raise ReplayError(f"{source}:{number}: {exc}") from None
        if not isinstance(data, dict):
            raise ReplayError(f"{source}:{number}: each line must be a JSON object")
        t = data.get("t")
        if (
            isinstance(t, bool)
            or not isinstance(t, int | float)
            or not math.isfinite(t)
            or not 0 <= t <= MAX_TIME_S
        ):
            raise ReplayError(
                f"{source}:{number}: 't' must be seconds >= 0 (at most {MAX_TIME_S:.0f}), "
                f"got {_brief(t)}"
            )
        if t < last:
            raise ReplayError(f"{source}:{number}: 't' goes back in time ({t} < {last})")
        last = float(t)
        try:
            event = event_from_dict(data)
        except ReplayError as exc:
            raise ReplayError(f"{source}:{number}: {exc}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise ReplayError(f"{source}:{number}: {_brief(str(exc))}") from None
        if not event.at:
            event = dataclasses.replace(event, at=float(t))
        yield TimedEvent(float(t), event)


def _brief(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class VirtualClock:
    """The replay's clock: moved by the replay, read by whoever prints times."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def replay(
    cfg: Config,
    events: Sequence[TimedEvent],
    actuators: Sequence[Actuator],
    clock: VirtualClock | None = None,
) -> float:
    """Drive the core through recorded events on a virtual clock; returns the end time.

    Deadlines between events fire as TimerFired at their exact time, and after the last
    event every pending deadline still fires, so hold-downs run out in the replay too.
    """
    state = engine.initial_state(cfg, 0.0)
    now = 0.0
    clock = clock if clock is not None else VirtualClock()

    async def fire_until(limit: float) -> None:
        nonlocal state, now
        while (deadline := engine.next_deadline(state, now)) is not None and deadline <= limit:
            now = clock.now = deadline
            state, actions = engine.step(state, ev.TimerFired(at=now), now)
            await apply_actions(actuators, actions)

    for timed in events:
        await fire_until(timed.t)
        now = clock.now = timed.t
        state, actions = engine.step(state, timed.event, now)
        await apply_actions(actuators, actions)
    await fire_until(now + 24 * 3600)
    return now
