"""A real agent process: SIGKILL makes the broker say `offline` (last will), SIGTERM says it too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mqtt.conftest import BASE, CONFIG, PREFIX, subscriber
from tests.support.mosquitto import Broker

pytestmark = [pytest.mark.services]

ROOT = Path(__file__).resolve().parents[2]


def _start_agent(broker: Broker, tmp_path: Path) -> subprocess.Popen[bytes]:
    conf = tmp_path / "agent.yaml"
    conf.write_text(
        CONFIG + f"mqtt: {{host: {broker.host}, port: {broker.port}, topic_prefix: {PREFIX},"
        " keepalive_s: 5, reconnect_min_s: 0.1, reconnect_max_s: 0.5}\n"
    )
    return subprocess.Popen(
        [sys.executable, "-m", "tests.mqtt.agent_process", str(conf)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _status(body: dict[str, object]) -> object:
    return body["status"]


@pytest.mark.parametrize(
    ("sig", "expect_time"),
    [(signal.SIGKILL, False), (signal.SIGTERM, True)],
    ids=["sigkill-last-will", "sigterm-goodbye"],
)
async def test_killed_agent_goes_offline(
    plain_broker: Broker, tmp_path: Path, sig: signal.Signals, expect_time: bool
) -> None:
    async with subscriber(plain_broker, f"{BASE}/status") as sub:
        proc = _start_agent(plain_broker, tmp_path)
        try:
            await sub.wait_for(
                lambda got: any(_status(r.body) == "online" for r in got),
                timeout=20,
                what="the agent's online status",
            )
            os.kill(proc.pid, sig)
            await sub.wait_for(
                lambda got: _status(got[-1].body) == "offline", timeout=10, what="offline"
            )
        finally:
            _stop(proc)
    offline = sub.got[-1].body
    assert offline["agent"] == "site-a"
    # The last will was fixed at connect time and carries no time; a goodbye does.
    assert ("at" in offline) is expect_time
    if sig is signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
