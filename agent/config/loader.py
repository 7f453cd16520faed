"""Reading a config: strict YAML in, a Config or a ConfigError out; nothing else is raised.

The file must be a regular file (a FIFO would block `check` forever, /dev/zero never ends)
of at most MAX_CONFIG_BYTES; the YAML is read by yaml_strict's bounded loader.
"""

from __future__ import annotations

import errno
import os
import stat
import warnings
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from agent.config.messages import validation_lines, yaml_error_line
from agent.config.models import Config
from agent.config.problems import ConfigError
from agent.config.protocols import host_owner
from agent.config.yaml_strict import StrictLoader

# 2,000 tunnels written out in full are ~1 MB.
MAX_CONFIG_BYTES = 8 << 20


_TOP_LEVEL_KINDS = {"list": "a list", "str": "a single string", "int": "a number"}


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse YAML text into a Config, or raise ConfigError with one line per problem."""
    try:
        loader = StrictLoader(text)
    except yaml.YAMLError as exc:
        # The reader refuses control characters (NUL...) as soon as it sees the text.
        raise ConfigError([_reader_problem(exc, text, source)]) from None
    try:
        root = loader.get_single_node()
        raw = None if root is None else loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([yaml_error_line(exc, source)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([_reader_problem(exc, text, source)]) from None
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


def _reader_problem(exc: yaml.YAMLError, text: str, source: str) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return f"{source}:{line}: control character U+{char:04X} is not allowed in YAML"
    return f"{source}: YAML error: {str(exc).splitlines()[0]}"


def _read_bounded(path: Path) -> bytes:
    """The file's bytes if it is a regular file of at most MAX_CONFIG_BYTES."""
    # O_NONBLOCK: opening a FIFO nobody writes to must not hang `check`.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory")
        if not stat.S_ISREG(mode):
            kind = (
                "a FIFO"
                if stat.S_ISFIFO(mode)
                else "a device"
                if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket"
                if stat.S_ISSOCK(mode)
                else "not a plain file"
            )
            raise ConfigError([f"{path}: is {kind}, not a regular config file"])
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > MAX_CONFIG_BYTES:
                raise ConfigError(
                    [f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MiB: not a config file"]
                )
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def load_config(path: Path) -> Config:
    """Read and parse a config file; unreadable files are a ConfigError too."""
    try:
        data = _read_bounded(path)
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
    cfg = parse_config(text, str(path))
    # The well-known ids are refused while parsing; this host may have named more.
    owner = host_owner(cfg.netlink.route_protocol)
    if owner is not None:
        raise ConfigError(
            [
                f"{path}: netlink.route_protocol: {cfg.netlink.route_protocol} is {owner}: "
                "the agent deletes routes of its protocol id, so it must be one nobody else uses"
            ]
        )
    return cfg


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the config file, as shipped in config/."""
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "vti-failover configuration"
    return schema
