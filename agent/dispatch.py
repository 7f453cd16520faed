"""Actions to actuators: routing first, every actuator at once; alerts and reports last.

One failed write is logged and does not stop the others: the next reconcile repairs it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from agent.core.actions import Action, PublishAlert, PublishTunnelState
from agent.ports import Actuator, AdapterError

__all__ = ["apply_actions", "log_decisions"]

log = logging.getLogger("vti_failover.runtime")


async def _apply_one(actuator: Actuator, actions: Sequence[Action]) -> None:
    mine = [a for a in actions if actuator.wants(a)]
    if not mine:
        return
    try:
        await actuator.apply(mine)
    except AdapterError as exc:
        # One failed write must not stop the other actuators or the agent.
        log.error("%s: %s", actuator.name, exc)


async def apply_actions(actuators: Sequence[Actuator], actions: Sequence[Action]) -> None:
    """Routing first, every actuator at once (the kernel and BGP need not wait for each
    other); alerts and state reports only after all of it is done."""
    reports = [a for a in actions if isinstance(a, PublishAlert | PublishTunnelState)]
    routing = [a for a in actions if not isinstance(a, PublishAlert | PublishTunnelState)]
    if routing:
        await asyncio.gather(*(_apply_one(a, routing) for a in actuators))
    if reports:
        for actuator in actuators:
            await _apply_one(actuator, reports)


def log_decisions(actions: Sequence[Action]) -> None:
    # One line per decision, before it is carried out: what operators and benchmarks time.
    for action in actions:
        if isinstance(action, PublishAlert):
            log.info("decided %s", action)
