"""The import policy's settings: which learned prefixes an operator allows, and the limit.

What the policy always refuses (defaults, martians, the tunnels' own addresses, our site
prefixes) is the core's rule (agent.core.imports); here are only the knobs around it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, PlainSerializer, PlainValidator, WithJsonSchema, model_validator

from agent.config.problems import raise_if, repeats
from agent.config.scalars import FrozenModel, OnMaxPrefixes

__all__ = ["ImportPolicy", "PrefixRange", "parse_prefix_range"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_EXAMPLE = "write PREFIX [ge N] [le M], e.g. '10.0.0.0/8 le 24'"


@dataclass(frozen=True)
class PrefixRange:
    """A prefix-list entry: prefixes inside `prefix` whose length is within [ge, le].

    Without ge or le it matches the prefix itself only, as prefix lists do in FRR and IOS.
    """

    prefix: Network
    ge: int
    le: int

    def __str__(self) -> str:
        text = str(self.prefix)
        if self.ge != self.prefix.prefixlen:
            text += f" ge {self.ge}"
        if self.le != self.ge or self.ge != self.prefix.prefixlen:
            text += f" le {self.le}"
        return text


def parse_prefix_range(value: object) -> PrefixRange:
    """'10.0.0.0/8 le 24' -> PrefixRange; ValueError says what is wrong, in one line."""
    if isinstance(value, PrefixRange):
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be text: {_EXAMPLE}")
    words = value.split()
    if not words or len(words) > 5 or len(words) % 2 == 0:
        raise ValueError(f"{value!r} is not a prefix range: {_EXAMPLE}")
    try:
        net = ipaddress.ip_network(words[0])
    except ValueError as exc:
        raise ValueError(f"{words[0]!r} is not a prefix: {exc}") from None
    longest = net.max_prefixlen
    bounds: dict[str, int] = {}
    for key, number in zip(words[1::2], words[2::2], strict=True):
        if key not in {"ge", "le"} or not number.isdigit() or len(number) > 3:
            raise ValueError(f"{value!r}: expected ge N or le N after the prefix ({_EXAMPLE})")
        if key in bounds:
            raise ValueError(f"{value!r}: {key} given twice")
        bounds[key] = int(number)
    ge = bounds.get("ge", net.prefixlen)
    le = bounds.get("le", longest if "ge" in bounds else ge)
    if not net.prefixlen <= ge <= longest:
        raise ValueError(
            f"{value!r}: ge {ge} must be between the prefix length {net.prefixlen} and {longest}"
        )
    if not ge <= le <= longest:
        raise ValueError(f"{value!r}: le {le} must be between {ge} and {longest}")
    return PrefixRange(net, ge, le)


PrefixRangeText = Annotated[
    PrefixRange,
    PlainValidator(parse_prefix_range),
    PlainSerializer(str, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\S+(\s+(ge|le)\s+\d{1,3}){0,2}$",
            "examples": ["10.0.0.0/8 le 24", "2001:db8::/32 ge 48 le 64"],
        }
    ),
]


class ImportPolicy(FrozenModel):
    """What may be learned from a tunnel's BGP neighbor besides what is always refused."""

    # A learned default route would beat the host's own and pull the underlay into the tunnel.
    allow_default: bool = False
    # When given, only prefixes matching an entry are learned (the rest: not-accepted).
    accept: tuple[PrefixRangeText, ...] = ()
    # Per neighbor; null for no limit. A route leak (a full table, 1M prefixes) must not
    # fill the FIB and the agent's memory; 10,000 is far above any site-to-site VPN table.
    max_prefixes: Annotated[int, Field(ge=1, le=10_000_000)] | None = 10_000
    on_max_prefixes: OnMaxPrefixes = OnMaxPrefixes.WITHDRAW_ALL

    @model_validator(mode="after")
    def _no_repeats(self) -> ImportPolicy:
        raise_if(
            repeats(
                ((("accept", i), str(e), f"#{i + 1}") for i, e in enumerate(self.accept)),
                "listed as entry",
            )
        )
        return self
