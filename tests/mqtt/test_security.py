"""Username/password and TLS against real brokers; wrong secrets are a clear line and a retry."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import pytest

from agent.adapters.mqtt import MqttPublisher
from agent.config import TlsSettings
from tests.mqtt.conftest import (
    AGENT,
    BASE,
    Core,
    base_config,
    events_of,
    running,
    settings,
    subscriber,
)
from tests.support.mosquitto import Broker, Certs

pytestmark = [pytest.mark.services]

LOGGER = "vti_failover.mqtt"
OPS_PASSWORD = "ops-secret"  # noqa: S105 - the test broker's made-up observer login
PASSWORD_ENV = "VTF_TEST_MQTT_PASSWORD"  # noqa: S105 - a variable name, not a secret


def _failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.ERROR
    ]


async def _wait_failures(caplog: pytest.LogCaptureFixture, n: int, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while len(_failures(caplog)) < n:
            await asyncio.sleep(0.05)


async def test_password_from_file_reaches_the_broker(auth_broker: Broker, tmp_path: Path) -> None:
    secret = tmp_path / "mqtt.secret"
    secret.write_text("right-secret\n")
    publisher = MqttPublisher(AGENT, settings(auth_broker, username=AGENT, password_file=secret))
    core = Core(base_config(), publisher)
    async with (
        subscriber(auth_broker, username="ops", password=OPS_PASSWORD) as sub,
        running(publisher),
    ):
        await core.bring_up("tun1", "tun2")
        await core.sa_down("tun1")
        await sub.wait_for(events_of, what="the failover event")
    assert events_of(sub.got)[0]["kind"] == "failover"


async def test_wrong_password_logs_clearly_keeps_failing_over_and_retries(
    auth_broker: Broker, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(PASSWORD_ENV, "wrong-secret")
    publisher = MqttPublisher(
        AGENT, settings(auth_broker, username=AGENT, password_env=PASSWORD_ENV)
    )
    core = Core(base_config(), publisher)
    async with (
        subscriber(auth_broker, username="ops", password=OPS_PASSWORD) as sub,
        running(publisher),
    ):
        await _wait_failures(caplog, 1)
        await core.bring_up("tun1", "tun2")
        await core.sa_down("tun1")
        await _wait_failures(caplog, 3)
        assert not events_of(sub.got)
        # The operator fixes the secret: the next attempt logs in and delivers the queue.
        monkeypatch.setenv(PASSWORD_ENV, "right-secret")
        await sub.wait_for(events_of, what="the queued failover event")
    assert any("failover: tun1 -> tun2" in a for a in core.alerts)
    line = _failures(caplog)[0]
    assert f"broker 127.0.0.1:{auth_broker.port} refused the login" in line
    assert "check username and password" in line
    assert "retrying in" in line
    assert all("wrong-secret" not in r.getMessage() for r in caplog.records)
    assert "wrong-secret" not in caplog.text
    assert events_of(sub.got)[0]["kind"] == "failover"


async def test_missing_password_file_is_a_clear_line_not_a_crash(
    auth_broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    missing = tmp_path / "nope.secret"
    publisher = MqttPublisher(AGENT, settings(auth_broker, username=AGENT, password_file=missing))
    async with running(publisher):
        await _wait_failures(caplog, 2)
    assert f"cannot read password_file {missing}" in _failures(caplog)[0]


def _tls(certs: Certs, ca: Path | None = None) -> TlsSettings:
    return TlsSettings(
        ca_file=ca or certs.ca, cert_file=certs.client_cert, key_file=certs.client_key
    )


def _observer_tls(certs: Certs) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    return ctx


async def test_tls_with_client_certificate(tls_broker: Broker, certs: Certs) -> None:
    publisher = MqttPublisher(AGENT, settings(tls_broker, tls=_tls(certs)))
    core = Core(base_config(), publisher)
    async with subscriber(tls_broker, tls_context=_observer_tls(certs)) as sub, running(publisher):
        await core.bring_up("tun1", "tun2")
        await core.sa_down("tun1")
        await sub.wait_for(events_of, what="the failover event over TLS")
    assert events_of(sub.got)[0]["from"] == ["tun1"]
    assert any(r.topic == f"{BASE}/tunnel/tun2/state" for r in sub.got)


async def test_untrusted_broker_certificate_logs_clearly_and_retries(
    tls_broker: Broker, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    publisher = MqttPublisher(AGENT, settings(tls_broker, tls=_tls(certs, ca=certs.stranger_ca)))
    core = Core(base_config(), publisher)
    async with running(publisher):
        await _wait_failures(caplog, 1)
        await core.bring_up("tun1", "tun2")
        await core.sa_down("tun1")
        await _wait_failures(caplog, 3)
    assert any("failover: tun1 -> tun2" in a for a in core.alerts)
    assert publisher.queued == 1
    line = _failures(caplog)[0]
    assert "TLS certificate not trusted" in line
    assert "check tls.ca_file" in line
