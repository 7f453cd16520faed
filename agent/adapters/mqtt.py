"""MQTT alerts: apply() only enqueues; run() owns the broker connection and publishes.

The failover path never waits on the broker. Events wait in a bounded FIFO (oldest dropped
first, drops counted); tunnel state keeps only the newest message per tunnel. On every
(re)connect the agent says `online`, republishes all retained state, then the queued
events in order. The broker's last will says `offline` when the agent dies.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import random
import ssl
from collections.abc import Sequence

import aiomqtt

from agent.adapters.mqtt_payloads import (
    Clock,
    Message,
    Topics,
    event_message,
    status_message,
    tunnel_state_message,
)
from agent.config import MqttSettings
from agent.core.actions import Action, PublishAlert, PublishTunnelState
from agent.ports import AdapterError

__all__ = ["QOS", "MqttPublisher", "backoff_delay", "client_options", "describe_failure"]

log = logging.getLogger("vti_failover.mqtt")

QOS = 1
# How long a graceful `offline` may hold up shutdown.
_GOODBYE_TIMEOUT_S = 2.0
# Reason codes (MQTT 3.1.1 return codes and MQTT 5 reason codes) that mean "credentials".
_AUTH_CODES = {4, 5, 134, 135}


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Exponential backoff with equal jitter: half fixed, half random, within [low/2, high]."""
    base = min(high, low * 2.0 ** min(attempt, 30))
    return base / 2 + rng.uniform(0, base / 2)


def _password(settings: MqttSettings) -> str | None:
    if settings.password_file is not None:
        try:
            return settings.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise AdapterError(
                f"cannot read password_file {settings.password_file}: {exc}"
            ) from exc
    if settings.password_env is not None:
        value = os.environ.get(settings.password_env)
        if value is None:
            raise AdapterError(f"password_env {settings.password_env} is not set")
        return value
    return None


def _tls_context(settings: MqttSettings) -> ssl.SSLContext | None:
    tls = settings.tls
    if tls is None:
        return None
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file))
        if tls.cert_file is not None and tls.key_file is not None:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise AdapterError(f"TLS files: {exc}") from exc
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_options(settings: MqttSettings) -> dict[str, object]:
    """Connection keywords shared by the publisher and the command listener.

    Reads the password and TLS files each time, so a rotated secret is used on the next
    connect. Raises AdapterError naming the file or variable, never the secret.
    """
    return {
        "hostname": settings.host,
        "port": settings.port,
        "username": settings.username,
        "password": _password(settings),
        "tls_context": _tls_context(settings),
        "keepalive": settings.keepalive_s,
        "timeout": float(settings.keepalive_s),
    }


def describe_failure(exc: Exception, settings: MqttSettings) -> str:
    """One line an operator can act on: where, what, and which setting to look at."""
    where = f"broker {settings.host}:{settings.port}"
    if isinstance(exc, aiomqtt.MqttCodeError) and _code(exc) in _AUTH_CODES:
        return f"{where} refused the login ({exc}): check username and password"
    text = str(exc) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return f"{where}: TLS certificate not trusted ({text}): check tls.ca_file"
    return f"{where}: {text}"


def _code(exc: aiomqtt.MqttCodeError) -> int | None:
    rc = exc.rc
    if rc is None:
        return None
    return int(rc.value) if hasattr(rc, "value") else int(rc)


class MqttPublisher:
    """The MQTT actuator: wants PublishAlert and PublishTunnelState."""

    name = "mqtt"

    def __init__(
        self,
        agent_id: str,
        settings: MqttSettings,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.settings = settings
        self.topics = Topics.of(settings.topic_prefix, agent_id)
        self.clock = clock if clock is not None else Clock()
        self.rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter, not crypto
        self.dropped = 0
        self._seq = 0
        self._events: collections.deque[Message] = collections.deque()
        self._states: dict[str, Message] = {}
        # Tunnels whose newest state the broker has not acknowledged yet (insertion-ordered).
        self._unsent: dict[str, None] = {}
        self._wake = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._said_goodbye = False
        self._had_session = False
        # Set by reconfigure(): end this session and connect with the new settings at once.
        self._moved = asyncio.Event()

    @property
    def queued(self) -> int:
        return len(self._events)

    @property
    def connected(self) -> bool:
        return self._client is not None

    def wants(self, action: Action) -> bool:
        return isinstance(action, PublishAlert | PublishTunnelState)

    async def apply(self, actions: Sequence[Action]) -> None:
        """Render and enqueue; never touches the network."""
        for action in actions:
            if isinstance(action, PublishAlert):
                self._seq += 1
                self._enqueue(
                    event_message(self.topics, self.agent_id, self._seq, action, self.clock)
                )
            elif isinstance(action, PublishTunnelState):
                msg = tunnel_state_message(self.topics, self.agent_id, action, self.clock)
                self._states[action.tunnel] = msg
                self._unsent[action.tunnel] = None
        self._wake.set()

    def reconfigure(self, settings: MqttSettings) -> None:
        """A reload: the next connection uses `settings`, and it is made now.

        Queued events and every tunnel's retained state carry over (moved to the new topic
        prefix) and go out on the new connection; the old broker is told `offline` first.
        """
        if settings == self.settings:
            return
        old = self.topics.base
        self.settings = settings
        self.topics = Topics.of(settings.topic_prefix, self.agent_id)
        if self.topics.base != old:
            self._events = collections.deque(_moved(m, old, self.topics.base) for m in self._events)
            self._states = {t: _moved(m, old, self.topics.base) for t, m in self._states.items()}
        self._moved.set()

    def _enqueue(self, msg: Message) -> None:
        if len(self._events) >= self.settings.queue_size:
            self._events.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning(
                    "mqtt: event queue full (%d): dropped the oldest, %d dropped so far",
                    self.settings.queue_size,
                    self.dropped,
                )
        self._events.append(msg)

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._session()
            except _MovedError:
                log.info("mqtt: settings changed: connecting to %s", self._where())
                attempt = 0
                continue
            except (aiomqtt.MqttError, AdapterError) as exc:
                failure = describe_failure(exc, self.settings)
            else:  # pragma: no cover - a session only ends by an error or cancellation
                failure = "session ended"
            if self._had_session:
                attempt = 0
            delay = backoff_delay(
                attempt, self.settings.reconnect_min_s, self.settings.reconnect_max_s, self.rng
            )
            attempt += 1
            log.error(
                "mqtt: %s; %d event(s) queued, %d dropped; retrying in %.1fs",
                failure,
                len(self._events),
                self.dropped,
                delay,
            )
            # A reload with new settings ends the wait: there is a new broker to try.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._moved.wait()

    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    async def _session(self) -> None:
        self._had_session = False
        self._moved.clear()
        will = status_message(self.topics, self.agent_id, online=False, at=None)
        client = aiomqtt.Client(
            **client_options(self.settings),  # type: ignore[arg-type]
            identifier=self.agent_id,
            will=aiomqtt.Will(will.topic, will.payload, qos=QOS, retain=True),
            logger=logging.getLogger("vti_failover.mqtt.client"),
        )
        async with client:
            self._had_session = True
            self._client = client
            try:
                log.info(
                    "mqtt: connected to %s:%d as %s; %d event(s) queued, %d dropped",
                    self.settings.host,
                    self.settings.port,
                    self.agent_id,
                    len(self._events),
                    self.dropped,
                )
                await self._publish(client, self._online())
                # The broker may have lost retained state while we were away: send it all.
                self._unsent = dict.fromkeys(self._states)
                await _first_error(self._watch(client), self._pump(client), self._until_moved())
            except asyncio.CancelledError:
                await self._goodbye(client)
                raise
            except _MovedError:
                # This broker will not hear from us again: it must not keep us `online`.
                await self._goodbye(client)
                self._said_goodbye = False
                raise
            finally:
                self._client = None

    async def _until_moved(self) -> None:
        await self._moved.wait()
        raise _MovedError

    def _online(self) -> Message:
        return status_message(
            self.topics, self.agent_id, online=True, at=self.clock.wall(), dropped=self.dropped
        )

    async def _publish(self, client: aiomqtt.Client, msg: Message) -> None:
        await client.publish(msg.topic, msg.payload, qos=QOS, retain=msg.retain)

    async def _watch(self, client: aiomqtt.Client) -> None:
        # The message iterator ends with MqttError when the connection drops: that is how
        # an idle publisher learns the broker went away.
        try:
            async for _ in client.messages:
                pass
        except aiomqtt.MqttError as exc:
            cause = exc.__cause__
            raise aiomqtt.MqttError(f"connection lost{f' ({cause})' if cause else ''}") from exc
        raise aiomqtt.MqttError("connection lost")  # pragma: no cover

    async def _pump(self, client: aiomqtt.Client) -> None:
        while True:
            self._wake.clear()
            while self._unsent or self._events:
                if self._unsent:
                    tunnel = next(iter(self._unsent))
                    msg = self._states[tunnel]
                    await self._publish(client, msg)
                    # A newer state may have arrived meanwhile: then it is still unsent.
                    if self._states[tunnel] is msg:
                        self._unsent.pop(tunnel, None)
                else:
                    msg = self._events[0]
                    await self._publish(client, msg)
                    # Only drop it if overflow did not already push it out.
                    if self._events and self._events[0] is msg:
                        self._events.popleft()
            await self._wake.wait()

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        if self._said_goodbye:
            return
        offline = status_message(self.topics, self.agent_id, online=False, at=self.clock.wall())
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(_GOODBYE_TIMEOUT_S):
                await self._publish(client, offline)
                self._said_goodbye = True

    async def close(self, cleanup: bool) -> None:
        """Say `offline` if still connected (a graceful disconnect skips the last will)."""
        del cleanup
        client = self._client
        if client is not None:
            await self._goodbye(client)


class _MovedError(Exception):
    """The settings changed under a session: end it and connect anew."""


def _moved(msg: Message, old: str, new: str) -> Message:
    """`msg` under the new topic base (payloads name the agent, never the prefix)."""
    return dataclasses.replace(msg, topic=new + msg.topic[len(old) :])


async def _first_error(*coros: collections.abc.Coroutine[object, object, None]) -> None:
    """Run the coroutines together until the first one fails; cancel the rest, re-raise."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await t
    for t in done:
        exc = t.exception()
        if exc is not None:
            raise exc
