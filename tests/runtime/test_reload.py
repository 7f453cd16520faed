"""Reload by components: added, removed, reconfigured in place, or refused whole.

The real Runtime with real signals; stand-in components declare their lifecycles the way
agent/wiring.py does. Each defect the issue names has its own test.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.components import Lifecycle, SourceSupervisor
from agent.config import Config, load_config
from agent.core import actions as act
from agent.core import events as ev
from agent.ports import AdapterError, Emit
from agent.runtime import Adapters, Runtime
from tests.runtime.fakes import Recorder, ScriptedSource, config_text, healthy, until, write

LOGGER = "vti_failover.runtime"


class FakeBgp(Recorder):
    """Stands in for the ExaBGP link: present only with a bgp section, started after the core
    decided; like the old adapter, it cannot be configured without a bgp section."""

    name = "exabgp"

    def __init__(self) -> None:
        super().__init__()
        self.started_at: float | None = None

    def wants(self, action: act.Action) -> bool:
        return isinstance(action, act.AnnouncePrefix | act.WithdrawPrefix)

    async def run(self) -> None:
        self.started_at = time.monotonic()
        await asyncio.Event().wait()

    def configure(self, cfg: Config) -> None:
        if cfg.bgp is None:
            raise AdapterError("the exabgp adapter needs a bgp section in the config")
        super().configure(cfg)


class Site:
    def __init__(self, path: Path, **runtime: object) -> None:
        self.path = path
        self.source = ScriptedSource(healthy("tun1", "tun2"))
        self.recorder = Recorder()
        self.bgps: list[FakeBgp] = []
        self.runtime = Runtime(load_config(path), self.build, config_path=path, **runtime)  # type: ignore[arg-type]

    def build(self, cfg: Config) -> Adapters:
        adapters = Adapters(sources=[self.source], actuators=[self.recorder])
        if cfg.bgp is not None:
            bgp = FakeBgp()
            self.bgps.append(bgp)
            adapters.actuators.insert(0, bgp)
            adapters.lifecycle[bgp.name] = Lifecycle(
                settings=cfg.bgp, reconfigure=bgp.configure, after_first_decision=True
            )
        return adapters

    @property
    def bgp(self) -> FakeBgp | None:
        component = self.runtime.components.get("exabgp")
        return component.actuator if component is not None else None  # type: ignore[return-value]


async def _start(site: Site) -> asyncio.Task[int]:
    task = asyncio.create_task(site.runtime.run())
    await until(lambda: site.recorder.first("install route 10.2.0.0/24 dev vti1 metric 10"))
    return task


async def _stop(site: Site, task: asyncio.Task[int]) -> int:
    site.runtime.stop()
    async with asyncio.timeout(5):
        return await task


def _without_bgp(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("bgp:")) + "\n"


def _messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


async def test_reload_without_bgp_removes_the_bgp_component_and_keeps_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Defect: a valid reload without `bgp:` logged "reloaded" and then exited 1.
    caplog.set_level(logging.INFO, logger=LOGGER)
    path = write(tmp_path / "site.yaml", config_text())
    site = Site(path)
    task = await _start(site)
    first = site.bgp
    assert first is not None
    await until(lambda: first.first("announce 10.1.0.0/24 to 169.254.1.2 (tun1) med 100"))

    write(path, _without_bgp(config_text()))
    os.kill(os.getpid(), signal.SIGHUP)
    await until(lambda: _messages(caplog, "reloaded"))
    assert _messages(caplog, "reloaded") == [f"reloaded {path}: removed exabgp"]
    # Its announcements were withdrawn through it before it was stopped (no cleanup).
    assert first.first("withdraw 10.1.0.0/24 from 169.254.1.2 (tun1)")
    assert first.first("withdraw 10.1.0.0/24 from 169.254.2.2 (tun2)")
    assert first.closed == [False]
    assert site.bgp is None
    assert not task.done()

    # Back again: a new component, told what to announce before it starts.
    write(path, config_text())
    os.kill(os.getpid(), signal.SIGHUP)
    await until(lambda: site.bgp is not None and site.bgp.started_at is not None)
    second = site.bgp
    assert second is not None
    assert second is not first
    announce = second.first("announce 10.1.0.0/24 to 169.254.1.2 (tun1) med 100")
    assert announce is not None
    assert second.started_at is not None
    assert announce[0] <= second.started_at
    assert await _stop(site, task) == 0


async def test_changed_settings_are_adopted_in_place(tmp_path: Path) -> None:
    path = write(tmp_path / "site.yaml", config_text())
    site = Site(path)
    task = await _start(site)
    bgp = site.bgp
    assert bgp is not None
    write(path, config_text().replace("local_as: 65001", "local_as: 65011"))
    os.kill(os.getpid(), signal.SIGHUP)
    await until(lambda: bgp.configured)
    assert site.bgp is bgp
    assert bgp.configured[0].bgp is not None
    assert bgp.configured[0].bgp.local_as == 65011
    assert site.source.runs == 1
    assert await _stop(site, task) == 0


async def test_a_gated_component_starts_after_the_first_decision(tmp_path: Path) -> None:
    path = write(tmp_path / "site.yaml", config_text())
    site = Site(path)
    task = await _start(site)
    bgp = site.bgp
    assert bgp is not None
    await until(lambda: bgp.started_at is not None)
    first = bgp.first("announce 10.1.0.0/24 to 169.254.1.2 (tun1) med 100")
    assert first is not None
    assert bgp.started_at is not None
    # Its start config can carry the announcements: they reached it before it started.
    assert first[0] <= bgp.started_at
    assert await _stop(site, task) == 0


@pytest.mark.parametrize(
    ("change", "logged"),
    [
        (
            lambda t: t.replace("cleanup_on_exit:", "route_protocol_was: 1\n  cleanup_on_exit:"),
            "policy.route_protocol_was",
        ),
        (
            lambda t: t + "netlink: {route_protocol: 158}\n",
            "netlink.route_protocol cannot change from 157 to 158",
        ),
        (lambda t: t.replace("agent_id: rt", "agent_id: other"), "agent_id cannot change"),
    ],
    ids=["invalid", "route-protocol", "agent-id"],
)
async def test_a_refused_reload_is_one_line_and_keeps_the_running_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, change: object, logged: str
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    path = write(tmp_path / "site.yaml", config_text())
    site = Site(path)
    task = await _start(site)
    first = site.runtime.cfg
    before = len(site.recorder.applied)
    assert callable(change)
    write(path, change(config_text()))
    os.kill(os.getpid(), signal.SIGHUP)
    await until(lambda: site.runtime.refused == 1)
    refusals = _messages(caplog, "reload refused")
    assert len(refusals) == 1, refusals
    assert logged in refusals[0]
    assert str(path) in refusals[0]
    assert site.runtime.cfg is first
    assert site.recorder.applied[before:] == []
    assert not _messages(caplog, "reloaded")
    assert await _stop(site, task) == 0


async def test_the_config_is_read_off_the_event_loop(tmp_path: Path) -> None:
    # Defect: the config was read on the event loop; a FIFO froze failover for 6 s.
    read_for_s = 1.5
    reading = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow_load(path: Path) -> Config:
        loop.call_soon_threadsafe(reading.set)
        time.sleep(read_for_s)
        return load_config(path)

    path = write(tmp_path / "site.yaml", config_text())
    site = Site(path, load=slow_load)
    task = await _start(site)
    write(path, config_text(extra_remote="10.3.0.0/24"))
    os.kill(os.getpid(), signal.SIGHUP)
    await reading.wait()
    cut = time.monotonic()
    site.source.push(ev.ProbeLost(tunnel="tun1"), ev.ProbeLost(tunnel="tun1"))
    await until(lambda: site.recorder.first("alert failover: tun1 -> tun2", cut))
    failover = site.recorder.first("alert failover: tun1 -> tun2", cut)
    assert failover is not None
    assert failover[0] - cut < read_for_s / 3, "the failover waited for the config read"
    assert site.runtime.reloads == 0
    await until(lambda: site.runtime.reloads == 1, read_for_s + 5)
    assert await _stop(site, task) == 0


async def test_a_storm_of_100_sighups_ends_in_one_consistent_config(tmp_path: Path) -> None:
    path = write(tmp_path / "site.yaml", config_text())
    site = Site(path)
    task = await _start(site)
    started = time.monotonic()
    for burst in range(10):
        # Every other file adds a prefix: each reload must see a whole file, never a mix.
        write(path, config_text(extra_remote="10.3.0.0/24") if burst % 2 else config_text())
        for _ in range(10):
            os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.09)
    took = time.monotonic() - started
    reloader = site.runtime.reloader
    await asyncio.sleep(0.3)
    await until(lambda: reloader.reads == site.runtime.reloads)
    print(
        f"\n{reloader.requests} SIGHUPs served of 100 sent in {took:.2f}s -> "
        f"{reloader.reads} reads, {site.runtime.reloads} applied"
    )
    assert took < 1.5
    # Pending requests collapse: at most the one being read and one more per burst.
    assert reloader.reads <= 20
    assert site.runtime.refused == 0
    assert site.runtime.cfg == load_config(path)
    assert [str(p) for p in site.runtime.cfg.remote_prefixes.static] == [
        "10.2.0.0/24",
        "10.3.0.0/24",
    ]
    # Still deciding: a cut is failed over.
    site.source.push(ev.ProbeLost(tunnel="tun1"), ev.ProbeLost(tunnel="tun1"))
    await until(lambda: site.recorder.first("alert failover: tun1 -> tun2"))
    assert not task.done()
    assert await _stop(site, task) == 0


class Flaky:
    """A source that fails `failures` times (after emitting once), then runs."""

    name = "vici"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.runs = 0

    async def run(self, emit: Emit) -> None:
        self.runs += 1
        emit(ev.ChildSaUp(tunnel="tun1", at=time.monotonic()))
        if self.runs <= self.failures:
            await asyncio.sleep(0)
            raise AdapterError("charon went away")
        await asyncio.Event().wait()


async def test_a_failing_source_is_reported_at_once_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    events: list[ev.Event] = []
    source = Flaky(failures=2)
    task = asyncio.create_task(SourceSupervisor(source, events.append).run())
    try:
        await until(lambda: any(isinstance(e, ev.SourceRecovered) for e in events), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    kinds: Sequence[str] = [type(e).__name__ for e in events]
    # Lost once however often it fails in a row; recovered once it keeps running.
    assert kinds == ["ChildSaUp", "SourceLost", "ChildSaUp", "ChildSaUp", "SourceRecovered"]
    lost = events[1]
    assert isinstance(lost, ev.SourceLost)
    assert (lost.source, lost.detail) == ("vici", "charon went away")
    failed = _messages(caplog, "source vici failed: charon went away; restarting in")
    assert len(failed) == 2
    assert source.runs == 3
