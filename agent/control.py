"""The runtime's side of the control socket: the component it serves, and events submitted
with a reply.

A drain asked on the socket is an event like any other: it waits its turn in the one inbox,
and the consumer, once it has stepped the core with it and applied what the core decided,
hands those actions back through `Submitted.done`, so the answer is the core's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.adapters.control_socket import ControlledAgent, ControlServer
from agent.components import Component, Lifecycle
from agent.config import Config
from agent.core.actions import Action
from agent.core.events import Event
from agent.instance_lock import lock_dir

__all__ = ["Submitted", "control_component", "socket_path"]


@dataclass(frozen=True)
class Submitted:
    """An event whose submitter waits for the actions the core answered it with."""

    event: Event
    done: asyncio.Future[list[Action]]


def socket_path(cfg: Config) -> Path:
    """Where the agent of this config listens: control.socket, else beside its lock file."""
    return cfg.control.socket or lock_dir() / f"{cfg.agent_id}.sock"


def control_component(
    cfg: Config, agent: ControlledAgent, clock: Callable[[], float]
) -> dict[str, Component]:
    """The control server as a component (none when control.enabled is off).

    No reconfigure: a new path is a new server, and the old one removes its socket.
    """
    if not cfg.control.enabled:
        return {}
    path = socket_path(cfg)
    server = ControlServer(path, agent, clock)
    return {server.name: Component(server.name, source=server, lifecycle=Lifecycle(path))}
