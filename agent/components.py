"""The parts the runtime owns, by name, each with a declared lifecycle; a failing source restarts.

A component is a source, an actuator, or one object in both roles (the ExaBGP link). Its
lifecycle says what it was built from (a reload that leaves that equal keeps it running
untouched), how it adopts new settings in place (or that it is replaced instead), and
whether it may start only once the core has made its first decision. Nothing here is
looked up by attribute: what the wiring declares is all the runtime knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from agent.config import Config
from agent.core.events import SourceLost, SourceRecovered
from agent.ports import Actuator, AdapterError, Emit, Source

__all__ = [
    "Adapters",
    "Component",
    "Lifecycle",
    "Plan",
    "SourceSupervisor",
    "components_of",
    "plan",
]

log = logging.getLogger("vti_failover.runtime")

# A restarted source that runs this long is seeing again; the backoff starts over then.
_HEALTHY_AFTER_S = 1.0
_RESTART_MIN_S = 0.5
_RESTART_MAX_S = 30.0


@dataclass(frozen=True)
class Lifecycle:
    """How a component takes a reload and when it starts.

    `settings` is what it was built from: equal on a reload, it keeps running untouched.
    `reconfigure` adopts new settings in place (keeping connections, tables and counters);
    without one, a component whose settings changed is stopped and its new build started.
    """

    settings: object = None
    reconfigure: Callable[[Config], None] | None = None
    # Start only once the core has decided (a supervised ExaBGP must not send End-of-RIB
    # before it knows what to announce).
    after_first_decision: bool = False


@dataclass(frozen=True)
class Component:
    name: str
    source: Source | None = None
    actuator: Actuator | None = None
    lifecycle: Lifecycle = Lifecycle()


@dataclass
class Adapters:
    """What a build of one config holds: sources, actuators (in apply order), lifecycles."""

    sources: list[Source] = field(default_factory=list)
    actuators: list[Actuator] = field(default_factory=list)
    lifecycle: dict[str, Lifecycle] = field(default_factory=dict)


def components_of(adapters: Adapters) -> dict[str, Component]:
    """By name, actuators first in their order: one object in both roles is one component."""
    sources = {s.name: s for s in adapters.sources}
    if len(sources) != len(adapters.sources):
        raise ValueError(f"two sources of one name in {[s.name for s in adapters.sources]}")
    out: dict[str, Component] = {}
    for actuator in adapters.actuators:
        if actuator.name in out:
            raise ValueError(f"two actuators named {actuator.name}")
        source = sources.pop(actuator.name, None)
        if source is not None and not _same(source, actuator):
            raise ValueError(f"a source and an actuator both named {actuator.name}")
        out[actuator.name] = Component(
            actuator.name, source, actuator, adapters.lifecycle.get(actuator.name, Lifecycle())
        )
    for name, source in sources.items():
        out[name] = Component(name, source, None, adapters.lifecycle.get(name, Lifecycle()))
    return out


def _same(a: object, b: object) -> bool:
    return a is b


@dataclass(frozen=True)
class Plan:
    """What a reload does to the running components."""

    keep: tuple[str, ...]
    reconfigure: tuple[str, ...]
    replace: tuple[str, ...]
    add: tuple[str, ...]
    remove: tuple[str, ...]

    def describe(self) -> str:
        parts = [
            f"{verb} {', '.join(names)}"
            for verb, names in (
                ("added", self.add),
                ("removed", self.remove),
                ("reconfigured", self.reconfigure),
                ("restarted", self.replace),
            )
            if names
        ]
        return "; ".join(parts) or "no component changed"


def plan(running: Mapping[str, Component], built: Mapping[str, Component]) -> Plan:
    keep, reconf, replace, add = [], [], [], []
    for name, new in built.items():
        old = running.get(name)
        if old is None:
            add.append(name)
        elif old.lifecycle.settings == new.lifecycle.settings:
            keep.append(name)
        elif old.lifecycle.reconfigure is not None:
            reconf.append(name)
        elif old.source is new.source and old.actuator is new.actuator:
            # The build handed back the running object itself: nothing to replace it with.
            keep.append(name)
        else:
            replace.append(name)
    remove = [name for name in running if name not in built]
    return Plan(tuple(keep), tuple(reconf), tuple(replace), tuple(add), tuple(remove))


class SourceSupervisor:
    """Runs one source until cancelled; a failure is reported at once and restarted with backoff.

    Reported twice: one log line, and SourceLost for the core (blindness, not a dead tunnel);
    SourceRecovered once the restarted source has run for a moment. A source is never
    silently gone: it runs until the runtime removes it.
    """

    def __init__(
        self,
        source: Source,
        emit: Emit,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.source = source
        self.emit = emit
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter only
        self.failures = 0

    async def run(self) -> None:
        name = self.source.name
        delay = _RESTART_MIN_S
        lost = False
        while True:
            task = asyncio.ensure_future(self.source.run(self.emit))
            try:
                if lost:
                    done, _ = await asyncio.wait({task}, timeout=_HEALTHY_AFTER_S)
                    if not done:
                        log.info("source %s: running again", name)
                        self.emit(SourceRecovered(source=name, at=self.clock()))
                        lost = False
                        delay = _RESTART_MIN_S
                await task
                failure = "stopped on its own"
            except asyncio.CancelledError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                raise
            except AdapterError as exc:
                failure = str(exc)
            except Exception as exc:  # a bug in one source must not blind the agent for good
                log.exception("source %s crashed", name)
                failure = f"{type(exc).__name__}: {exc}"
            self.failures += 1
            pause = delay / 2 + self.rng.uniform(0, delay / 2)
            log.error("source %s failed: %s; restarting in %.1fs", name, failure, pause)
            if not lost:
                self.emit(SourceLost(source=name, detail=failure, at=self.clock()))
                lost = True
            await asyncio.sleep(pause)
            delay = min(delay * 2, _RESTART_MAX_S)
