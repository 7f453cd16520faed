"""The imperative shell: one TaskGroup, one event queue, one consumer calling the core.

Sources put events on the queue; the consumer steps the core and hands the actions to
the actuators in order, alert publishers last, so nothing slows the failover path. The
core's own deadlines (hold-down, dampening, probation) become TimerFired events here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.config import Config, ConfigError, load_config
from agent.core import engine
from agent.core.actions import Action, PublishAlert, PublishTunnelState
from agent.core.events import Event, TimerFired
from agent.inbox import Inbox
from agent.ports import Actuator, AdapterError, Source
from agent.replay import TimedEvent

__all__ = ["Adapters", "Build", "Runtime", "VirtualClock", "replay"]

log = logging.getLogger("vti_failover.runtime")


@dataclass
class Adapters:
    sources: list[Source] = field(default_factory=list)
    actuators: list[Actuator] = field(default_factory=list)


Build = Callable[[Config], Adapters]


# Steps between two yields to the event loop when no step changed routing (each is ~30 us).
_STEPS_PER_YIELD = 256


class _StopRequestedError(Exception):
    """Raised inside the TaskGroup to end it on SIGTERM/SIGINT."""


class _Reload:
    """Queue marker: SIGHUP asked for the config to be read again."""


async def _apply_one(actuator: Actuator, actions: Sequence[Action]) -> None:
    mine = [a for a in actions if actuator.wants(a)]
    if not mine:
        return
    try:
        await actuator.apply(mine)
    except AdapterError as exc:
        # One failed write must not stop the other actuators or the agent.
        log.error("%s: %s", actuator.name, exc)


async def _apply(actuators: Sequence[Actuator], actions: Sequence[Action]) -> None:
    """Routing first, every actuator at once (the kernel and BGP need not wait for each
    other); alerts and state reports only after all of it is done."""
    reports = [a for a in actions if isinstance(a, PublishAlert | PublishTunnelState)]
    routing = [a for a in actions if not isinstance(a, PublishAlert | PublishTunnelState)]
    if routing:
        await asyncio.gather(*(_apply_one(a, routing) for a in actuators))
    if reports:
        for actuator in actuators:
            await _apply_one(actuator, reports)


def _log_decisions(actions: Sequence[Action]) -> None:
    # One line per decision, before it is carried out: what operators and benchmarks time.
    for action in actions:
        if isinstance(action, PublishAlert):
            log.info("decided %s", action)


class Runtime:
    def __init__(
        self,
        cfg: Config,
        build: Build,
        config_path: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        prepare: Callable[[Config], Config] = lambda cfg: cfg,
    ) -> None:
        # What this host makes of a config before the core sees it (e.g. nexthop groups
        # "auto"): applied to the first config and to every reload.
        self.prepare = prepare
        cfg = prepare(cfg)
        self.cfg = cfg
        self.build = build
        self.config_path = config_path
        self.clock = clock
        self.inbox: Inbox[_Reload] = Inbox()
        self.state = engine.initial_state(cfg, clock())
        self.adapters = build(cfg)
        self._stop = asyncio.Event()
        self._closed = False
        self._core_task: asyncio.Task[None] | None = None
        self._sources_task: asyncio.Task[None] | None = None

    def emit(self, event: Event) -> None:
        self.inbox.put(event)

    def stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self.inbox.put(_Reload())

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (exit status 0) or an adapter gives up (status 1)."""
        status = 0
        loop = asyncio.get_running_loop()
        for sig, handler in (
            (signal.SIGTERM, self.stop),
            (signal.SIGINT, self.stop),
            (signal.SIGHUP, self.request_reload),
        ):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, handler)
        try:
            async with asyncio.TaskGroup() as tg:
                for actuator in self.adapters.actuators:
                    tg.create_task(actuator.run(), name=f"actuator:{actuator.name}")
                self._sources_task = tg.create_task(self._run_sources(), name="sources")
                self._core_task = tg.create_task(self._consume(), name="core")
                tg.create_task(self._wait_for_stop(), name="stopper")
        except* _StopRequestedError:
            log.info(
                "stopping (routes and announcements left as they are)"
                if not self.cfg.policy.cleanup_on_exit
                else "stopping, cleaning up"
            )
        except* AdapterError as group:
            # An adapter that cannot go on (ExaBGP closed our API pipe, no CAP_NET_RAW):
            # one line each, then a non-zero exit so systemd restarts us.
            for exc in group.exceptions:
                log.critical("giving up: %s", exc)
            status = 1
        finally:
            await self._close_actuators()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        return status

    async def _wait_for_stop(self) -> None:
        await self._stop.wait()
        # First stop deciding: what the shutdown itself causes (ExaBGP's sessions closing)
        # must not turn into route changes.
        for task in (self._sources_task, self._core_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # Then close while the actuators' connections still run: a cancelled MQTT session
        # can no longer say goodbye, a cancelled ExaBGP link can no longer withdraw.
        await self._close_actuators()
        raise _StopRequestedError

    async def _close_actuators(self) -> None:
        if self._closed:
            return
        self._closed = True
        for actuator in reversed(self.adapters.actuators):
            try:
                await actuator.close(self.cfg.policy.cleanup_on_exit)
            except AdapterError as exc:
                log.error("%s: close: %s", actuator.name, exc)

    async def _run_sources(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for source in self.adapters.sources:
                tg.create_task(source.run(self.emit), name=f"source:{source.name}")

    async def _consume(self) -> None:
        """Step the core event by event; act as soon as a step changes routing.

        Reports and alerts of consecutive steps go out together once the inbox is empty,
        and the loop yields between batches, so sources keep reading, timers keep firing
        and SIGTERM is served however busy the agent is.
        """
        pending: list[Action] = []
        steps = 0
        while True:
            item = self.inbox.pop()
            if item is None:
                if pending:
                    await self._act(pending)
                    pending = []
                now = self.clock()
                deadline = engine.next_deadline(self.state, now)
                timeout = None if deadline is None else max(0.0, deadline - now)
                if not await self.inbox.wait(timeout):
                    item = TimerFired(at=deadline or self.clock())
                else:
                    continue
            if isinstance(item, _Reload):
                if pending:
                    await self._act(pending)
                    pending = []
                await self._reload()
                continue
            self.state, actions = engine.step(self.state, item, self.clock())
            pending += actions
            steps += 1
            if any(not isinstance(a, PublishAlert | PublishTunnelState) for a in actions):
                await self._act(pending)
                pending = []
                steps = 0
            elif steps >= _STEPS_PER_YIELD:
                # A busy inbox is never empty: say what was decided so far anyway.
                steps = 0
                await self._act(pending)
                pending = []

    async def _act(self, actions: list[Action]) -> None:
        if actions:
            _log_decisions(actions)
            await _apply(self.adapters.actuators, actions)
        # Whatever the actuators did, let the sources and signal handlers run before more.
        await asyncio.sleep(0)

    async def _reload(self) -> None:
        if self.config_path is None:
            log.warning("SIGHUP: no config file to reload")
            return
        try:
            cfg = self.prepare(load_config(self.config_path))
        except ConfigError as exc:
            for line in exc.lines:
                log.error("reload refused, keeping the running config: %s", line)
            return
        log.info("reloaded %s", self.config_path)
        self.cfg = cfg
        self.state, actions = engine.reconfigure(self.state, cfg, self.clock())
        # Sources watch the tunnels of one config: restart them on the new one.
        new = self.build(cfg)
        if self._sources_task is not None:
            self._sources_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sources_task
        self.adapters.sources = new.sources
        for actuator in self.adapters.actuators:
            configure = getattr(actuator, "configure", None)
            if callable(configure):
                configure(cfg)
        self._sources_task = asyncio.get_running_loop().create_task(
            self._run_sources(), name="sources"
        )
        if actions:
            await _apply(self.adapters.actuators, actions)


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
            state, actions = engine.step(state, TimerFired(at=now), now)
            await _apply(actuators, actions)

    for timed in events:
        await fire_until(timed.t)
        now = clock.now = timed.t
        state, actions = engine.step(state, timed.event, now)
        await _apply(actuators, actions)
    await fire_until(now + 24 * 3600)
    return now
