"""The real Runtime under real signals and real time, fed by a scripted source.

SIGTERM/SIGINT stop it without undoing routing, SIGHUP reloads (or keeps the running
config when the new one is bad), the core's own deadlines fire as timers, and a failing
actuator is logged while everything else carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.components import Lifecycle
from agent.config import Config, load_config
from agent.core import actions as act
from agent.core import events as ev
from agent.ports import Actuator, Emit
from agent.runtime import Adapters, Runtime
from tests.runtime.fakes import (
    Failing,
    Recorder,
    ScriptedSource,
    config_text,
    healthy,
    until,
    write,
)

LOGGER = "vti_failover.runtime"
UNDOING = (act.RemoveRoute, act.WithdrawPrefix, act.SetLinkDown)


class Site:
    """One runtime on one config file, with the source and actuators the test holds."""

    def __init__(self, path: Path, actuators: list[Actuator] | None = None) -> None:
        self.path = path
        self.source = ScriptedSource(healthy("tun1", "tun2"))
        self.recorder = Recorder()
        self.actuators: list[Actuator] = actuators or [self.recorder]
        self.builds: list[Config] = []
        self.runtime = Runtime(load_config(path), self.build, config_path=path)

    def build(self, cfg: Config) -> Adapters:
        self.builds.append(cfg)
        adapters = Adapters(sources=[self.source], actuators=list(self.actuators))
        # The recorder stands in for an actuator that adopts new settings in place.
        adapters.lifecycle[self.recorder.name] = Lifecycle(
            settings=cfg.remote_prefixes, reconfigure=self.recorder.configure
        )
        return adapters


@contextlib.asynccontextmanager
async def running(site: Site) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(site.runtime.run(), name="runtime-under-test")
    try:
        # Carrying traffic: the primary's route has the active metric.
        await until(lambda: site.recorder.first("install route 10.2.0.0/24 dev vti1 metric 10"))
        yield task
    finally:
        if not task.done():
            site.runtime.stop()
        async with asyncio.timeout(5):
            await asyncio.gather(task, return_exceptions=True)


def _fail_tun1(site: Site) -> None:
    site.source.push(ev.ProbeLost(tunnel="tun1"), ev.ProbeLost(tunnel="tun1"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_stop_signal_leaves_routing_in_place(tmp_path: Path, sig: signal.Signals) -> None:
    site = Site(write(tmp_path / "site.yaml", config_text()))
    async with running(site) as task:
        assert site.recorder.first("announce 10.1.0.0/24 to 169.254.1.2 (tun1) med 100")
        before = len(site.recorder.applied)
        os.kill(os.getpid(), sig)
        async with asyncio.timeout(5):
            await task
    assert task.exception() is None
    after = [a for _, a in site.recorder.applied[before:]]
    assert not [a for a in after if isinstance(a, UNDOING)], after
    assert site.recorder.closed == [False]
    # The runtime gives the signals back when it is done.
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


async def test_stop_with_cleanup_on_exit_asks_actuators_to_clean_up(tmp_path: Path) -> None:
    site = Site(write(tmp_path / "site.yaml", config_text(cleanup=True)))
    async with running(site) as task:
        before = len(site.recorder.applied)
        os.kill(os.getpid(), signal.SIGTERM)
        async with asyncio.timeout(5):
            await task
    # Cleanup is each actuator's own undo in close(), not a burst of core actions.
    assert not [a for _, a in site.recorder.applied[before:] if isinstance(a, UNDOING)]
    assert site.recorder.closed == [True]


async def test_sighup_applies_a_valid_changed_config(tmp_path: Path) -> None:
    path = write(tmp_path / "site.yaml", config_text())
    site = Site(path)
    async with running(site):
        first = site.runtime.cfg
        write(path, config_text(extra_remote="10.3.0.0/24"))
        os.kill(os.getpid(), signal.SIGHUP)
        await until(lambda: site.recorder.first("install route 10.3.0.0/24 dev vti1 metric 10"))
        assert site.recorder.first("install route 10.3.0.0/24 dev vti2 metric 100")
        assert site.runtime.cfg is not first
        assert [str(p) for p in site.runtime.cfg.remote_prefixes.static] == [
            "10.2.0.0/24",
            "10.3.0.0/24",
        ]
        # The actuator whose settings changed adopted them in place; the source, built
        # the same, kept running (a reload restarts nothing it need not).
        assert site.recorder.configured == [site.runtime.cfg]
        assert site.builds[-1] is site.runtime.cfg
        assert site.source.runs == 1
        # ... and it still drives the core.
        _fail_tun1(site)
        await until(lambda: site.recorder.first("alert failover: tun1 -> tun2"))


@pytest.mark.parametrize(
    ("bad", "logged"),
    [
        (lambda p: p.write_text(config_text().replace("key: 2", "key: two")), "tunnels[tun2].key"),
        (lambda p: p.unlink(), "no such file"),
    ],
    ids=["invalid", "deleted"],
)
async def test_sighup_with_bad_config_keeps_the_old_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, bad: object, logged: str
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    path = write(tmp_path / "site.yaml", config_text())
    site = Site(path)
    async with running(site):
        first = site.runtime.cfg
        before = len(site.recorder.applied)
        assert callable(bad)
        bad(path)
        os.kill(os.getpid(), signal.SIGHUP)
        await until(lambda: any("reload refused" in r.getMessage() for r in caplog.records))
        refusal = next(r for r in caplog.records if "reload refused" in r.getMessage())
        assert refusal.levelno == logging.ERROR
        assert str(path) in refusal.getMessage()
        assert logged in refusal.getMessage()
        assert site.runtime.cfg is first
        assert site.source.runs == 1
        assert site.recorder.applied[before:] == []
        # Still running on the old config: a cut is still failed over.
        _fail_tun1(site)
        await until(lambda: site.recorder.first("alert failover: tun1 -> tun2"))


async def test_preempt_hold_down_fires_in_real_time(tmp_path: Path) -> None:
    hold = 0.3
    site = Site(write(tmp_path / "site.yaml", config_text(hold)))
    async with running(site):
        _fail_tun1(site)
        await until(lambda: site.recorder.first("alert failover: tun1 -> tun2"))
        since = len(site.recorder.applied)
        site.source.push(*healthy("tun1")[1:])
        # Back from DOWN, tun1 gets no route, not even a standby one, until the hold-down.
        await until(
            lambda: any(
                str(a).startswith("state tun1: UP") for _, a in site.recorder.applied[since:]
            )
        )
        recovered = next(
            (t, a) for t, a in site.recorder.applied[since:] if str(a).startswith("state tun1: UP")
        )
        assert not [a for _, a in site.recorder.applied[since:] if "vti1 metric 100" in str(a)]
        assert site.source.queue.empty()
        # Nothing else arrives: only the core's deadline can bring the failback.
        await until(lambda: site.recorder.first("alert failback: tun2 -> tun1"))
        failback = site.recorder.first("alert failback: tun2 -> tun1")
        assert failback is not None
        assert failback[0] - recovered[0] >= hold - 0.05
        # The primary got its active route back in that same step, before the alert went out
        # (routing is applied first, reports after it).
        back = site.recorder.first("install route 10.2.0.0/24 dev vti1 metric 10", recovered[0])
        assert back is not None
        assert recovered[0] + hold - 0.05 <= back[0] <= failback[0]


async def test_adapter_error_is_logged_and_the_runtime_carries_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    failing = Failing()
    site = Site(write(tmp_path / "site.yaml", config_text()))
    # The failing actuator comes first: it must not keep the recorder from its actions.
    site.actuators.insert(0, failing)
    site.runtime = Runtime(site.runtime.cfg, site.build, config_path=site.path)
    async with running(site) as task:
        assert failing.calls >= 1
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert errors
        assert errors[0].getMessage().startswith("broken-fib: cannot apply install route")
        calls = failing.calls
        _fail_tun1(site)
        await until(lambda: site.recorder.first("alert failover: tun1 -> tun2"))
        assert failing.calls > calls
        assert not task.done()
        os.kill(os.getpid(), signal.SIGTERM)
        async with asyncio.timeout(5):
            await task
    assert failing.closed == [False]
    assert site.recorder.closed == [False]


class Burst:
    """A source that sends a whole BGP table at once when told to, then SIGTERM."""

    name = "burst"

    def __init__(self, size: int) -> None:
        self.size = size
        self.go = asyncio.Event()
        self.signalled_at = 0.0

    async def run(self, emit: Emit) -> None:
        await self.go.wait()
        same = ev.BgpRoutesChanged(tunnel="tun2", announced=("10.77.0.0/24",))
        for _ in range(self.size):
            emit(same)
        self.signalled_at = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.Event().wait()


async def test_sigterm_is_served_in_the_middle_of_a_bgp_burst(tmp_path: Path) -> None:
    site = Site(write(tmp_path / "site.yaml", config_text()))
    # Seconds of core work: long enough that waiting for the end of it would show.
    burst = Burst(500_000)
    build = site.build

    def build_with_burst(cfg: Config) -> Adapters:
        adapters = build(cfg)
        adapters.sources.append(burst)
        return adapters

    site.runtime = Runtime(site.runtime.cfg, build_with_burst, config_path=site.path)
    async with running(site) as task:
        burst.go.set()
        async with asyncio.timeout(60):
            await task
        took = time.monotonic() - burst.signalled_at
    assert task.exception() is None
    assert len(site.runtime.inbox) > 0, "the burst was over before the signal was served"
    # A generous bound for a loaded machine; the benchmark measures the real number.
    assert took < 2.5, took
