"""Reading a config: strict YAML in, a Config or a ConfigError out; nothing else is raised."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from agent.config.messages import validation_lines, yaml_error_line
from agent.config.models import Config
from agent.config.problems import ConfigError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML silently keeps the last)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first on line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


_TOP_LEVEL_KINDS = {"list": "a list", "str": "a single string", "int": "a number"}


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse YAML text into a Config, or raise ConfigError with one line per problem."""
    loader = _StrictLoader(text)
    try:
        root = loader.get_single_node()
        raw = None if root is None else loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([yaml_error_line(exc, source)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: YAML error: {exc}"]) from None
    finally:
        loader.dispose()
    if raw is None:
        raise ConfigError([f"{source}: the file is empty (no settings, only comments or blanks)"])
    if not isinstance(raw, dict):
        kind = _TOP_LEVEL_KINDS.get(type(raw).__name__, type(raw).__name__)
        raise ConfigError(
            [f"{source}: the top level must be a mapping (agent_id: ..., tunnels: ...), not {kind}"]
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return Config.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(validation_lines(exc, raw, root, source)) from None


def load_config(path: Path) -> Config:
    """Read and parse a config file; unreadable files are a ConfigError too."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a directory, not a config file"]) from None
    except PermissionError:
        raise ConfigError([f"{path}: permission denied"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            [f"{path}:{line}:{column}: not UTF-8 text (byte 0x{data[exc.start]:02x})"]
        ) from None
    return parse_config(text, str(path))


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the config file, as shipped in config/."""
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "vti-failover configuration"
    return schema
