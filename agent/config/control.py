"""The control socket's settings: where `status`, `drain` and `undrain` reach the agent."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import field_validator

from agent.config.scalars import FrozenModel

__all__ = ["ControlSettings"]

# sun_path holds 108 bytes with the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107


class ControlSettings(FrozenModel):
    enabled: bool = True
    # None: <lock directory>/<agent_id>.sock, i.e. /run/vti-failover/<agent_id>.sock.
    socket: Path | None = None

    @field_validator("socket")
    @classmethod
    def _usable_path(cls, path: Path | None) -> Path | None:
        if path is None:
            return None
        if not path.is_absolute():
            raise ValueError(f"{path} must be an absolute path")
        if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
            raise ValueError(f"a unix socket path holds at most {MAX_SOCKET_PATH_BYTES} bytes")
        return path
