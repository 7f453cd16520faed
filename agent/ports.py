"""The two shapes every adapter takes: a Source emits events, an Actuator applies actions.

Adapters translate and never decide. Their failures are our exceptions, raised `from`
the cause, so the runtime can log them and keep going.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from agent.core.actions import Action
from agent.core.events import Event

__all__ = [
    "Actuator",
    "AdapterError",
    "Emit",
    "InterfaceNotFoundError",
    "PermissionDeniedError",
    "Source",
]

Emit = Callable[[Event], None]


class AdapterError(Exception):
    """An adapter could not do its job this time; the runtime logs it and carries on."""


class InterfaceNotFoundError(AdapterError):
    pass


class PermissionDeniedError(AdapterError):
    pass


class Source(Protocol):
    name: str

    async def run(self, emit: Emit) -> None:
        """Watch the world and emit events until cancelled."""


class Actuator(Protocol):
    name: str

    def wants(self, action: Action) -> bool:
        """True for the actions this actuator carries out."""

    async def run(self) -> None:
        """Keep connections alive until cancelled (return at once if there are none)."""

    async def apply(self, actions: Sequence[Action]) -> None:
        """Carry out one step's actions, in order; raise AdapterError on failure."""

    async def close(self, cleanup: bool) -> None:
        """Stop; with cleanup, undo what this actuator installed."""
