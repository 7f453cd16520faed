"""MQTT maintenance commands: <prefix>/<agent>/cmd drain/undrain becomes AdminDisabled/Enabled.

Whether a drain is allowed is the core's rule (the last tunnel in service only with
"force": true); the command only carries the flag.

Off unless mqtt.commands is set. Who may publish there is the broker's ACL's business; a
bad command is logged and ignored. It has its own connection (client id <agent>-cmd), so
a config reload can rebuild it without touching the publisher.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterable

import aiomqtt

from agent.adapters.dropped import DroppedMessages, brief
from agent.adapters.mqtt import QOS, backoff_delay, client_options, describe_failure
from agent.adapters.mqtt_payloads import Topics, command_from_payload
from agent.config import MqttSettings
from agent.core.events import AdminDisabled, AdminEnabled
from agent.ports import AdapterError, Emit

__all__ = ["MqttCommands"]

log = logging.getLogger("vti_failover.mqtt.cmd")


class MqttCommands:
    """A Source: listens on the cmd topic and emits admin events for known tunnels."""

    name = "mqtt-commands"

    def __init__(
        self,
        agent_id: str,
        settings: MqttSettings,
        tunnels: Iterable[str],
        rng: random.Random | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.settings = settings
        self.tunnels = frozenset(tunnels)
        self.topic = Topics.of(settings.topic_prefix, agent_id).cmd
        self.rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter only
        self.dropped = DroppedMessages(log, f"mqtt command on {self.topic}")

    def translate(self, payload: bytes) -> AdminDisabled | AdminEnabled | None:
        """The admin event a command asks for; None (and one log line) for anything else."""
        try:
            return self._translate(payload)
        except Exception as exc:  # a publisher must never end the agent
            self.dropped(payload, exc)
            return None

    def _translate(self, payload: bytes) -> AdminDisabled | AdminEnabled | None:
        try:
            cmd = command_from_payload(payload)
        except ValueError as exc:
            log.warning("mqtt: ignored command on %s: %s", self.topic, brief(str(exc)))
            return None
        if cmd.tunnel not in self.tunnels:
            log.warning("mqtt: ignored %s: no tunnel named %s", cmd.action, brief(repr(cmd.tunnel)))
            return None
        forced = " (forced)" if cmd.force else ""
        log.info("mqtt: %s %s%s requested on %s", cmd.action, cmd.tunnel, forced, self.topic)
        if cmd.action == "drain":
            return AdminDisabled(
                tunnel=cmd.tunnel,
                reason="drained over mqtt",
                force=cmd.force,
                at=time.monotonic(),
            )
        return AdminEnabled(tunnel=cmd.tunnel, at=time.monotonic())

    async def run(self, emit: Emit) -> None:
        attempt = 0
        while True:
            failure = "connection ended"
            try:
                client = aiomqtt.Client(
                    **client_options(self.settings),  # type: ignore[arg-type]
                    identifier=f"{self.agent_id}-cmd",
                    logger=logging.getLogger("vti_failover.mqtt.cmd.client"),
                )
                async with client:
                    attempt = 0
                    await client.subscribe(self.topic, qos=QOS)
                    log.info("mqtt: listening for commands on %s", self.topic)
                    async for message in client.messages:
                        if message.retain:
                            # A retained command is an old one: acting on it at every
                            # restart would drain a tunnel nobody asked to drain today.
                            log.warning("mqtt: ignored a retained command on %s", self.topic)
                            continue
                        payload = message.payload
                        event = self.translate(payload if isinstance(payload, bytes) else b"")
                        if event is not None:
                            emit(event)
            except (aiomqtt.MqttError, AdapterError) as exc:
                failure = describe_failure(exc, self.settings)
            delay = backoff_delay(
                attempt, self.settings.reconnect_min_s, self.settings.reconnect_max_s, self.rng
            )
            attempt += 1
            log.error("mqtt commands: %s; retrying in %.1fs", failure, delay)
            await asyncio.sleep(delay)
