"""Dry-run actuator: prints every action as one readable line and applies nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TextIO

from agent.core.actions import Action

__all__ = ["ActionPrinter"]


class ActionPrinter:
    name = "dry-run"

    def __init__(self, out: TextIO, clock: Callable[[], float], start: float = 0.0) -> None:
        self.out = out
        self.clock = clock
        self.start = start

    def wants(self, action: Action) -> bool:
        del action
        return True

    async def run(self) -> None:
        return

    async def apply(self, actions: Sequence[Action]) -> None:
        stamp = self.clock() - self.start
        for action in actions:
            self.out.write(f"[{stamp:9.3f}] {action}\n")
        self.out.flush()

    async def close(self, cleanup: bool) -> None:
        del cleanup
