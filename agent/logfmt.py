"""Log output for `run`: the classic text line, or one JSON object per line for pipelines.

JSON keys are stable: ts (ISO 8601, UTC, milliseconds), level, logger, message, then any
`extra=` fields the call passed, and exc (the traceback) when there is one.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Literal, TextIO

__all__ = ["LOG_FORMATS", "JsonFormatter", "configure_logging"]

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Every attribute a LogRecord has without `extra=`; anything else was passed by the caller.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        out: dict[str, object] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        # default=str: an extra field that JSON cannot carry is still shown, as text.
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(level: str, fmt: Literal["text", "json"], stream: TextIO) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
