"""A message a source cannot handle costs that message: one log line, never the agent.

The line shows the message cut short (a hostile one may be megabytes) and the error; a
stream of bad messages is summarised instead of flooding the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["DroppedMessages", "brief"]

BRIEF_CHARS = 200


def brief(raw: object, limit: int = BRIEF_CHARS) -> str:
    """`raw` for a log line: bytes as hex-escaped text, anything cut at `limit` characters."""
    if isinstance(raw, bytes | bytearray):
        head = bytes(raw[:limit])
        text = repr(head)
        more = len(raw) - len(head)
    else:
        text = repr(raw) if not isinstance(raw, str) else raw
        more = len(text) - limit
        text = text[:limit]
    return f"{text}... ({more} more)" if more > 0 else text


class DroppedMessages:
    """Logs each dropped message once; beyond one line per `every_s`, only counts them."""

    def __init__(
        self,
        log: logging.Logger,
        what: str,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.what = what
        self.every_s = every_s
        self.clock = clock
        self.count = 0
        self._last: float | None = None
        self._quiet = 0

    def __call__(self, raw: object, exc: BaseException) -> None:
        self.count += 1
        now = self.clock()
        if self._last is not None and now - self._last < self.every_s:
            self._quiet += 1
            return
        self._last = now
        also = f" ({self._quiet} more dropped since the last report)" if self._quiet else ""
        self._quiet = 0
        reason = brief(f"{type(exc).__name__}: {exc}")
        self.log.warning("ignored %s: %s; message: %s%s", self.what, reason, brief(raw), also)
