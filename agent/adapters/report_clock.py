"""The pace of loss and RTT reports: a ReportIntervalElapsed every mqtt.quality_interval_s.

Loss and RTT change with every probe answer; dashboards and metrics need them only this
often, and the core then reports every tunnel's at once (see engine.step).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from agent.core.events import ReportIntervalElapsed
from agent.ports import Emit

__all__ = ["ReportClock"]


class ReportClock:
    name = "report-clock"

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock

    async def run(self, emit: Emit) -> None:
        start = self.clock()
        ticks = 0
        while True:
            ticks += 1
            # On a fixed schedule: a busy loop delays one report, not every later one.
            await asyncio.sleep(max(0.0, start + ticks * self.interval_s - self.clock()))
            emit(ReportIntervalElapsed(at=self.clock()))
