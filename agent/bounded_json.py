"""JSON from outside, within bounds: size, nesting depth and number length are limited.

The standard decoder recurses once per nesting level (100,000 `[` end in RecursionError),
turns a 5,000-digit integer into a ValueError about Python's own limit, and reads NaN and
Infinity, which then compare false with everything (a time going backwards after a NaN is
never noticed). Every reader of outside JSON (ExaBGP's API, MQTT commands, replay files)
goes through `loads`, which raises only `JsonLimitError` (a ValueError) for all of that.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["JsonLimitError", "loads"]

# Deeper than any message we read (ExaBGP's UPDATEs nest 6 levels), far below recursion.
MAX_DEPTH = 32
# A BGP community or a 64-bit counter has 20 digits; nothing we read needs more.
MAX_NUMBER_CHARS = 32

# A JSON string: what is inside never counts as nesting.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


class JsonLimitError(ValueError):
    """Not JSON, or JSON beyond the limits; the message says which, briefly."""


def _depth(text: str) -> int:
    """The deepest nesting of arrays and objects in `text` (strings skipped)."""
    brackets = _NOT_BRACKETS.sub("", _STRING.sub("", text))
    depth = deepest = 0
    for char in brackets:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise JsonLimitError(f"a number of {len(text)} digits (at most {MAX_NUMBER_CHARS})")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise JsonLimitError(f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    value = float(text)
    if not math.isfinite(value):
        raise JsonLimitError(f"{text} is out of range")
    return value


def _constant(name: str) -> Any:
    raise JsonLimitError(f"{name} is not a number JSON allows")


def loads(text: str | bytes, *, max_chars: int, max_depth: int = MAX_DEPTH) -> Any:
    """Decode JSON text of at most `max_chars` characters and `max_depth` levels."""
    if isinstance(text, bytes):
        if len(text) > max_chars:
            raise JsonLimitError(f"{len(text)} bytes (at most {max_chars})")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonLimitError(f"not UTF-8 (byte {exc.start})") from None
    if len(text) > max_chars:
        raise JsonLimitError(f"{len(text)} characters (at most {max_chars})")
    # Counting brackets is cheap; the scan runs only when they could nest too deep.
    if text.count("[") + text.count("{") > max_depth:
        depth = _depth(text)
        if depth > max_depth:
            raise JsonLimitError(f"nested {depth} levels deep (at most {max_depth})")
    try:
        return json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise JsonLimitError(f"not JSON: {exc.msg} at character {exc.pos}") from None
    except RecursionError:
        # Only reachable if the bracket scan and the decoder ever disagree.
        raise JsonLimitError("nested too deep") from None
