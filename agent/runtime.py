"""The imperative shell: one TaskGroup, one event queue, one consumer calling the core.

Sources put events on the queue; the consumer steps the core and hands the actions to
the actuators in order, alert publishers last, so nothing slows the failover path. The
core's own deadlines (hold-down, dampening, probation) become TimerFired events here.
Every source and actuator is a named component with a lifecycle (agent/components.py); a
SIGHUP (agent/reload.py) adds, removes, reconfigures or restarts them as the new config
asks, or refuses it whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path

from agent import sdnotify
from agent.components import Adapters, Component, Plan, SourceSupervisor, components_of, plan
from agent.config import Config, load_config
from agent.control import Submitted, control_component
from agent.core import engine
from agent.core.actions import Action, PublishAlert, PublishTunnelState
from agent.core.events import Event, TimerFired
from agent.core.snapshot import Json, snapshot
from agent.dispatch import apply_actions, log_decisions
from agent.inbox import Inbox
from agent.ports import Actuator, AdapterError
from agent.reload import Loaded, Reloader, refusal

__all__ = ["Adapters", "Build", "Runtime"]

log = logging.getLogger("vti_failover.runtime")


Build = Callable[[Config], Adapters]


# Steps between two yields to the event loop when no step changed routing (each is ~30 us).
_STEPS_PER_YIELD = 256


class _StopRequestedError(Exception):
    """Raised inside the TaskGroup to end it on SIGTERM/SIGINT."""


class Runtime:
    def __init__(
        self,
        cfg: Config,
        build: Build,
        config_path: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        prepare: Callable[[Config], Config] = lambda cfg: cfg,
        load: Callable[[Path], Config] = load_config,
    ) -> None:
        # What this host makes of a config before the core sees it (e.g. nexthop groups
        # "auto"): applied to the first config and to every reload. A reload runs it, like
        # `load`, in a thread; either may refuse with ConfigError or AdapterError.
        self.prepare = prepare
        cfg = prepare(cfg)
        self.cfg = cfg
        self.build = build
        self.config_path = config_path
        self.clock = clock
        self.inbox: Inbox[Loaded | Submitted] = Inbox()
        self.state = engine.initial_state(cfg, clock())
        self.components: dict[str, Component] = self._components_for(cfg)
        self.notifier = sdnotify.ServiceNotifier()
        self.reloader = Reloader(config_path, lambda path: prepare(load(path)), self.inbox.put)
        # Reloads applied, refused: for tests and the status line.
        self.reloads = 0
        self.refused = 0
        self._stop = asyncio.Event()
        self._closed = False
        self._tg: asyncio.TaskGroup | None = None
        self._sources: dict[str, asyncio.Task[None]] = {}
        self._links: dict[str, asyncio.Task[None]] = {}
        # Components whose actuator may start only once the core has decided.
        self._gated: list[str] = []
        self._core_task: asyncio.Task[None] | None = None
        self._reload_task: asyncio.Task[None] | None = None

    @property
    def actuators(self) -> list[Actuator]:
        """The running actuators, in apply order (alert publishers last)."""
        return [c.actuator for c in self.components.values() if c.actuator is not None]

    def emit(self, event: Event) -> None:
        self.inbox.put(event)

    def stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self.notifier.reloading()
        self.reloader.request()

    # -- what the control socket asks (agent.adapters.control_socket.ControlledAgent) ----

    def snapshot(self) -> dict[str, Json]:
        return snapshot(self.state, self.clock())

    def version(self) -> object:
        # Every step that changes anything replaces the state: its identity is the version.
        return self.state

    def tunnels(self) -> frozenset[str]:
        return frozenset(self.state.health)

    async def submit(self, event: Event) -> list[Action]:
        """Step the core with `event` in its turn; the actions it decided, once carried out."""
        done: asyncio.Future[list[Action]] = asyncio.get_running_loop().create_future()
        self.inbox.put(Submitted(event, done))
        return await done

    def _components_for(self, cfg: Config) -> dict[str, Component]:
        """What a build of `cfg` runs, and the control socket the runtime itself serves."""
        return {**components_of(self.build(cfg)), **control_component(cfg, self, self.clock)}

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (exit status 0) or an actuator gives up (status 1)."""
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
                self._tg = tg
                for component in self.components.values():
                    self._start(component)
                self._reload_task = tg.create_task(self.reloader.run(), name="reloader")
                self._core_task = tg.create_task(self._consume(), name="core")
                tg.create_task(self._wait_for_stop(), name="stopper")
                # On the loop the consumer runs on: a consumer that hangs it stops the pings.
                tg.create_task(sdnotify.watchdog_loop(), name="watchdog")
        except* _StopRequestedError:
            log.info(
                "stopping (routes and announcements left as they are)"
                if not self.cfg.policy.cleanup_on_exit
                else "stopping, cleaning up"
            )
        except* AdapterError as group:
            # An actuator that cannot go on (ExaBGP closed our API pipe): one line each,
            # then a non-zero exit so systemd restarts us.
            for exc in group.exceptions:
                log.critical("giving up: %s", exc)
            status = 1
        finally:
            self.notifier.stop()
            self._tg = None
            await self._close_actuators()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        return status

    # -- components ------------------------------------------------------------------

    def _start(self, component: Component) -> None:
        assert self._tg is not None
        name = component.name
        if component.source is not None:
            supervisor = SourceSupervisor(component.source, self.emit, clock=self.clock)
            self._sources[name] = self._tg.create_task(supervisor.run(), name=f"source:{name}")
        if component.actuator is not None:
            if component.lifecycle.after_first_decision and not self.state.settled:
                self._gated.append(name)
            else:
                self._links[name] = self._tg.create_task(
                    component.actuator.run(), name=f"actuator:{name}"
                )

    def _open_gates(self) -> None:
        """After the first decision was carried out: start what waited for it."""
        if not self._gated or not self.state.settled:
            return
        gated, self._gated = self._gated, []
        for name in gated:
            component = self.components.get(name)
            if component is not None and component.actuator is not None and self._tg is not None:
                log.info("core decided: starting %s", name)
                self._links[name] = self._tg.create_task(
                    component.actuator.run(), name=f"actuator:{name}"
                )

    async def _cancel(self, task: asyncio.Task[None] | None) -> None:
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _stop_component(self, component: Component) -> None:
        """Stop one component: its source first, then its actuator, closed while it still runs."""
        name = component.name
        await self._cancel(self._sources.pop(name, None))
        if name in self._gated:
            self._gated.remove(name)
        if component.actuator is not None:
            try:
                await component.actuator.close(False)
            except AdapterError as exc:
                log.error("%s: close: %s", name, exc)
            await self._cancel(self._links.pop(name, None))

    async def _wait_for_stop(self) -> None:
        await self._stop.wait()
        self.notifier.stop()
        # First stop deciding: what the shutdown itself causes (ExaBGP's sessions closing)
        # must not turn into route changes.
        await self._cancel(self._reload_task)
        await self._cancel(self._core_task)
        for name in list(self._sources):
            await self._cancel(self._sources.pop(name))
        # Then close while the actuators' connections still run: a cancelled MQTT session
        # can no longer say goodbye, a cancelled ExaBGP link can no longer withdraw.
        await self._close_actuators()
        raise _StopRequestedError

    async def _close_actuators(self) -> None:
        if self._closed:
            return
        self._closed = True
        for actuator in reversed(self.actuators):
            try:
                await actuator.close(self.cfg.policy.cleanup_on_exit)
            except AdapterError as exc:
                log.error("%s: close: %s", actuator.name, exc)

    # -- the core --------------------------------------------------------------------

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
            if isinstance(item, Loaded):
                if pending:
                    await self._act(pending)
                    pending = []
                await self._reload(item)
                continue
            submitted = None
            if isinstance(item, Submitted):
                submitted, item = item, item.event
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
            if self.state.settled and not self.notifier.ready:
                # The first decision's routing is carried out by now (its reports may wait).
                self.notifier.settled(self._summary())
            if submitted is not None and not submitted.done.done():
                submitted.done.set_result(actions)

    async def _act(self, actions: list[Action]) -> None:
        if actions:
            log_decisions(actions)
            await apply_actions(self.actuators, actions)
        self._open_gates()
        # Whatever the actuators did, let the sources and signal handlers run before more.
        await asyncio.sleep(0)

    # -- reload ----------------------------------------------------------------------

    async def _reload(self, loaded: Loaded) -> None:
        try:
            why = self._refusal(loaded)
            if why is not None:
                self.refused += 1
                log.error("reload refused, keeping the running config: %s", why)
                return
            assert loaded.cfg is not None
            cfg = loaded.cfg
            try:
                built = self._components_for(cfg)
            except AdapterError as exc:
                self.refused += 1
                log.error("reload refused, keeping the running config: %s: %s", loaded.path, exc)
                return
            change = plan(self.components, built)
            await self._adopt(cfg, built, change)
            self.reloads += 1
            log.info("reloaded %s: %s", loaded.path, change.describe())
        finally:
            self.notifier.reloaded(self._summary())
            if loaded.done is not None and not loaded.done.done():
                loaded.done.set_result(None)

    def _summary(self) -> str:
        """One line for systemctl status: what carries now."""
        carriers = ", ".join(self.state.carriers) or "none (both down)"
        return f"{len(self.state.health)} tunnels, carrying: {carriers}"

    def _refusal(self, loaded: Loaded) -> str | None:
        if loaded.cfg is None:
            problems = loaded.problems or (f"{loaded.path}: unreadable",)
            more = (
                f" (and {len(problems) - 1} more: vti-failover check {loaded.path})"
                if len(problems) > 1
                else ""
            )
            return problems[0] + more
        why = refusal(self.cfg, loaded.cfg)
        return None if why is None else f"{loaded.path}: {why}"

    async def _adopt(self, cfg: Config, built: dict[str, Component], change: Plan) -> None:
        """Move the running components and the core to `cfg` as `change` says."""
        old = self.components
        merged: dict[str, Component] = {}
        for name, new in built.items():
            if name in change.keep or name in change.reconfigure:
                # The running object carries on, under the settings it now runs with.
                kept = old[name]
                life = dataclasses.replace(kept.lifecycle, settings=new.lifecycle.settings)
                merged[name] = dataclasses.replace(kept, lifecycle=life)
            else:
                merged[name] = new
        for name in change.reconfigure:
            reconfigure = old[name].lifecycle.reconfigure
            assert reconfigure is not None
            try:
                reconfigure(cfg)
            except AdapterError as exc:
                log.error("%s: reconfigure: %s", name, exc)
        gone = [old[n] for n in (*change.remove, *change.replace)]
        # Sources of the old config stop before the core sees the new one.
        for component in gone:
            await self._cancel(self._sources.pop(component.name, None))
        self.cfg = cfg
        self.state, actions = engine.reconfigure(self.state, cfg, self.clock())
        self.components = merged
        # What the core undoes (withdrawals for a removed bgp section) still reaches the
        # actuators that go; what it adds reaches the new ones before they start.
        leaving = [c.actuator for c in gone if c.actuator is not None]
        if actions:
            log_decisions(actions)
            await apply_actions([*self.actuators, *leaving], actions)
        fresh = [merged[n] for n in (*change.add, *change.replace)]
        told = {a.tunnel for a in actions if isinstance(a, PublishTunnelState)}
        snapshot = [r for t, r in self.state.reported.items() if t not in told]
        joining = [c.actuator for c in fresh if c.actuator is not None]
        if snapshot and joining:
            # A new publisher or exporter starts knowing every tunnel's state.
            await apply_actions(joining, snapshot)
        for component in gone:
            await self._stop_component(component)
        for component in fresh:
            self._start(component)
        self._open_gates()
