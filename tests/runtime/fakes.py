"""Stand-ins for adapters: a source that emits a script, actuators that record or fail.

They let the real Runtime run in-process with real signals and real time, where no
charon, netlink or ExaBGP is wanted; the adapters have their own tests against the
real components.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.config import Config
from agent.core import actions as act
from agent.core import events as ev
from agent.ports import AdapterError, Emit

__all__ = ["Failing", "Recorder", "ScriptedSource", "config_text", "healthy", "until", "write"]

CONFIG = """\
agent_id: rt
tunnels:
  - name: tun1
    interface: vti1
    underlay: {local: 192.0.2.1, remote: 192.0.2.2}
    key: 1
    ike: {connection: tun1, child: tun1}
    inner: {local: 169.254.1.1/30, peer: 169.254.1.2}
    sources: [vici, probe]
  - name: tun2
    interface: vti2
    underlay: {local: 198.51.100.1, remote: 198.51.100.2}
    key: 2
    ike: {connection: tun2, child: tun2}
    inner: {local: 169.254.2.1/30, peer: 169.254.2.2}
    role: backup
    sources: [vici, probe]
site_prefixes: [10.1.0.0/24]
remote_prefixes: {static: [10.2.0.0/24]}
bgp: {local_as: 65001, peer_as: 65002, router_id: 10.1.0.1}
policy:
  rise: 2
  fall: 2
  preempt_hold_down_s: HOLD
  link_control: none
  cleanup_on_exit: CLEANUP
"""


def config_text(hold: float = 30.0, *, cleanup: bool = False, extra_remote: str = "") -> str:
    text = CONFIG.replace("HOLD", str(hold)).replace("CLEANUP", str(cleanup).lower())
    if extra_remote:
        text = text.replace("static: [10.2.0.0/24]", f"static: [10.2.0.0/24, {extra_remote}]")
    return text


def healthy(*tunnels: str) -> list[ev.Event]:
    """What the sources report for tunnels that are up: SA installed, probes answered."""
    out: list[ev.Event] = []
    for name in tunnels:
        out.append(ev.ChildSaUp(tunnel=name))
        out += [ev.ProbeSucceeded(tunnel=name, rtt_ms=3.0) for _ in range(2)]
    return out


class ScriptedSource:
    """Emits its script, then whatever the test pushes, until cancelled."""

    name = "scripted"

    def __init__(self, script: Sequence[ev.Event]) -> None:
        self.queue: asyncio.Queue[ev.Event] = asyncio.Queue()
        self.runs = 0
        self.push(*script)

    def push(self, *events: ev.Event) -> None:
        for event in events:
            self.queue.put_nowait(event)

    async def run(self, emit: Emit) -> None:
        self.runs += 1
        while True:
            event = await self.queue.get()
            emit(dataclasses.replace(event, at=time.monotonic()))


class Recorder:
    """Applies nothing; remembers every action with the monotonic time it arrived."""

    name = "recorder"

    def __init__(self) -> None:
        self.applied: list[tuple[float, act.Action]] = []
        self.closed: list[bool] = []
        self.configured: list[Config] = []

    def wants(self, action: act.Action) -> bool:
        del action
        return True

    async def run(self) -> None:
        return

    async def apply(self, actions: Sequence[act.Action]) -> None:
        now = time.monotonic()
        self.applied += [(now, a) for a in actions]

    async def close(self, cleanup: bool) -> None:
        self.closed.append(cleanup)

    def configure(self, cfg: Config) -> None:
        self.configured.append(cfg)

    def lines(self, since: int = 0) -> list[str]:
        return [str(a) for _, a in self.applied[since:]]

    def first(self, text: str, after: float = 0.0) -> tuple[float, act.Action] | None:
        """The first action that reads `text` (whole words), applied at or after `after`."""
        return next(
            (
                (t, a)
                for t, a in self.applied
                if t >= after and (str(a) == text or str(a).startswith(text + " "))
            ),
            None,
        )


class Failing:
    """A route actuator whose every write fails, as netlink does on a broken host."""

    name = "broken-fib"

    def __init__(self) -> None:
        self.calls = 0
        self.closed: list[bool] = []

    def wants(self, action: act.Action) -> bool:
        return isinstance(action, act.InstallRoute | act.RemoveRoute)

    async def run(self) -> None:
        return

    async def apply(self, actions: Sequence[act.Action]) -> None:
        self.calls += 1
        cause = OSError(101, "Network is unreachable")
        raise AdapterError(f"cannot apply {actions[0]}: {cause.strerror}") from cause

    async def close(self, cleanup: bool) -> None:
        self.closed.append(cleanup)


async def until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Wait for condition() to hold; the timeout only bounds a broken test."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
