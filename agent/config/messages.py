"""Operator-facing errors: one line per problem, the field by path, tunnels by name."""

from __future__ import annotations

import difflib
import ipaddress
import re
import reprlib
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from agent.config.models import Config
from agent.config.problems import FieldProblemsError, Loc
from agent.config.scalars import (
    COMMUNITY_PATTERN,
    HOST_PATTERN,
    INTERFACE_PATTERN,
    NAME_PATTERN,
    TOPIC_PREFIX_PATTERN,
)

# At most this many problems are described; the rest are counted.
MAX_LINES = 20
# Pydantic's wording for the commonest mistakes, said the way an operator would say it.
_TYPE_MESSAGES = {
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "tuple_type": "must be a list, e.g. [a, b]",
    "list_type": "must be a list, e.g. [a, b]",
    "ip_any_address": "not an IPv4 or IPv6 address",
    "ip_v4_address": "not an IPv4 address",
    "ip_v6_address": "not an IPv6 address",
    "ip_any_network": "not an IPv4 or IPv6 prefix",
    "ip_any_interface": "not an address with prefix length, e.g. 169.254.1.1/30",
    "path_type": "must be a file path",
}
_PATTERN_MESSAGES = {
    NAME_PATTERN: "must be letters, digits, '.', '_' or '-', starting with a letter or digit",
    INTERFACE_PATTERN: "is not a Linux interface name (letters, digits, '.', '_', '-', '@')",
    COMMUNITY_PATTERN: "is not a BGP community: write ASN:VALUE, e.g. 65001:666",
    TOPIC_PREFIX_PATTERN: "must not contain the MQTT wildcards # or +, nor a NUL",
    HOST_PATTERN: "is not a host name or address (no spaces)",
}
# Pydantic adds type names of union branches to locations; they mean nothing in a file.
_BRANCH_NAMES = frozenset(
    {
        "IPv4Address",
        "IPv6Address",
        "IPv4Network",
        "IPv6Network",
        "IPv4Interface",
        "IPv6Interface",
    }
)


def _format_location(loc: Loc, raw: Any) -> str:
    """Turn pydantic's location into a path a person can find, naming tunnels by name."""
    parts: list[str] = []
    node: Any = raw
    for item in loc:
        if isinstance(item, int):
            entry = node[item] if isinstance(node, list) and item < len(node) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            # A name is only a label when it is one a person can read on one line.
            readable = isinstance(name, str) and name.isprintable() and 0 < len(name) <= 64
            label = name if readable else item
            parts[-1:] = [f"{parts[-1] if parts else ''}[{label}]"]
        else:
            key = str(item)
            parts.append(key if key.isprintable() and len(key) <= 64 else repr(key[:64]))
        try:
            node = node[item]
        except (KeyError, IndexError, TypeError):
            node = None
    return ".".join(parts) if parts else "(top level)"


def _walk(root: yaml.Node | None, loc: Loc) -> tuple[yaml.Node | None, int | None]:
    """The YAML node at loc (None unless found) and the 1-based line of the deepest match."""
    node = root
    line = None if root is None else root.start_mark.line + 1
    for item in loc:
        found: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(item):
                    found, line = value_node, key_node.start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(item, int) and item < len(node.value)
        ):
            found = node.value[item]
            line = found.start_mark.line + 1
        if found is None:
            return None, line
        node = found
    return node, line


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The settings class that owns the mapping at loc, to name its fields."""
    model: type[BaseModel] | None = Config
    for item in loc:
        if model is None:
            return None
        if isinstance(item, str):
            field = model.model_fields.get(item)
            model = None if field is None else _model_in(field.annotation)
    return model


# reprlib stops early: a value built of aliases may stand for a million nodes.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple = 3, 4, 4, 4
_REPR.maxstring = _REPR.maxother = 60


def _value_text(value: Any) -> str:
    text = _REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(err: ErrorDetails, loc: Loc, node: yaml.Node | None) -> str:
    """One readable message for one pydantic error, with the offending value."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    got = f" (got {_value_text(value)})"
    if kind == "missing":
        return "required field missing"
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        known = sorted(model.model_fields) if model is not None else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        if close:
            return f"unknown field {str(loc[-1])!r} (did you mean {close[0]}?)"
        return f"unknown field {str(loc[-1])!r} (known here: {', '.join(known)})"
    if kind in {"model_type", "model_attributes_type", "dict_type"}:
        model = _model_at(loc)
        fields = f" with {', '.join(sorted(model.model_fields))}" if model else ""
        return f"must be a mapping{fields}{got}"
    if kind == "ip_any_network" and isinstance(value, str):
        try:
            net = ipaddress.ip_network(value, strict=False)
        except ValueError:
            pass
        else:
            return f"{value} has host bits set: did you mean {net}?"
    if kind == "string_type" and isinstance(node, yaml.ScalarNode) and node.style is None:
        # YAML 1.1 reads 65001:10 as a sexagesimal number and yes/no/on/off as booleans.
        return f"YAML read {node.value} as {_value_text(value)}: put it in quotes"
    if (
        kind in {"float_parsing", "float_type"}
        and isinstance(value, str)
        and re.fullmatch(r"\s*[\d.]+\s*(ms|s|sec|m|min)\s*", value)
    ):
        return f"give seconds as a plain number, e.g. 0.5 (got {value!r})"
    if kind in _TYPE_MESSAGES:
        return _TYPE_MESSAGES[kind] + got
    if kind == "string_pattern_mismatch":
        hint = _PATTERN_MESSAGES.get(str(ctx.get("pattern")), f"must match {ctx.get('pattern')}")
        return hint + got
    if kind == "string_too_long":
        if loc and loc[-1] == "interface":
            return f"Linux interface names have at most 15 characters{got}"
        return f"at most {ctx.get('max_length')} characters{got}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "too_short":
        n = ctx.get("min_length")
        return f"needs at least {n} entr{'y' if n == 1 else 'ies'}"
    bounds = {
        "greater_than": "greater than {gt}",
        "greater_than_equal": "at least {ge}",
        "less_than": "less than {lt}",
        "less_than_equal": "at most {le}",
    }
    if kind in bounds:
        limits = {k: f"{v:g}" if isinstance(v, float) else v for k, v in ctx.items()}
        return f"must be {bounds[kind].format(**limits)}{got}"
    msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind.startswith(("value_error", "assertion_error")):
        return msg
    msg = re.sub(r"^Input should be ", "must be ", msg)
    return f"{msg}{got}" if "input" in err else msg


def validation_lines(
    exc: ValidationError, raw: Any, root: yaml.Node | None = None, source: str = "<config>"
) -> list[str]:
    """One line per problem: `FILE:LINE: path: message`, the path naming tunnels by name."""
    problems: list[tuple[Loc, ErrorDetails]] = []
    for err in exc.errors(include_url=False):
        loc = tuple(
            x
            for x in err["loc"]
            if not (isinstance(x, str) and (x.startswith("function-") or x in _BRANCH_NAMES))
        )
        value = err.get("input")
        if (
            err["type"] == "too_short"
            and isinstance(value, list)
            and len(value) >= (err.get("ctx") or {}).get("min_length", 0)
        ):
            # Its entries were invalid (reported on their own), not missing.
            continue
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, FieldProblemsError):
            for sub_loc, message in cause.problems:
                detail: ErrorDetails = {
                    "type": "value_error",
                    "loc": loc + sub_loc,
                    "msg": message,
                    "input": None,
                }
                problems.append((loc + sub_loc, detail))
        else:
            problems.append((loc, err))
    # Unions report the same field once per branch; keep each line once, in order. A file
    # of a million unknown keys is told in MAX_LINES lines, not a million.
    lines: dict[str, None] = {}
    shown_locs: set[Loc] = set()
    for loc, err in problems:
        if len(lines) >= MAX_LINES:
            break
        node, line = _walk(root, loc)
        where = _format_location(loc, raw)
        at = f"{source}:{line}" if line is not None else source
        lines[f"{at}: {where}: {_describe(err, loc, node)}"] = None
        shown_locs.add(loc)
    rest = len({loc for loc, _ in problems} - shown_locs)
    if rest:
        lines[f"{source}: and {rest} more problem{'s' if rest > 1 else ''} not shown"] = None
    return list(lines)


def yaml_error_line(exc: yaml.MarkedYAMLError, source: str) -> str:
    mark = exc.problem_mark
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
    problem = exc.problem or str(exc)
    if "'\\t'" in problem:
        problem += " (indent YAML with spaces, not tabs)"
    context = exc.context_mark
    if exc.context and context is not None and (mark is None or context.line != mark.line):
        problem += f" ({exc.context} on line {context.line + 1})"
    if isinstance(exc, yaml.constructor.ConstructorError):
        return f"{where}: {problem}"
    return f"{where}: YAML syntax error: {problem}"
