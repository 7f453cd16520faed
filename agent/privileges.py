"""Before `run` starts anything: the capabilities this config needs, named when missing.

Without them the agent used to start, open sockets, fail in one task and end with
"unhandled errors in a TaskGroup", the cause buried in a traceback. Reading the effective
set from /proc/self/status costs nothing and says it in one line, before anything changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agent.config import Config, ProbeKind, Source

__all__ = ["CAP_NET_ADMIN", "CAP_NET_RAW", "Need", "effective_capabilities", "missing", "needs"]

CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
_NAMES = {CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_NET_RAW: "CAP_NET_RAW"}


@dataclass(frozen=True)
class Need:
    capability: int
    why: str

    @property
    def name(self) -> str:
        return _NAMES[self.capability]


def needs(cfg: Config, *, dry_run: bool) -> list[Need]:
    """What this config's sources and actuators will ask of the kernel."""
    out: list[Need] = []
    if not dry_run:
        out.append(Need(CAP_NET_ADMIN, "netlink route and link changes"))
    if any(Source.XFRM in t.sources for t in cfg.tunnels):
        out.append(Need(CAP_NET_ADMIN, "the XFRM SA source"))
    icmp = [
        t.name for t in cfg.tunnels if Source.PROBE in t.sources and t.probe.kind is ProbeKind.ICMP
    ]
    if icmp:
        shown = ", ".join(icmp[:3]) + (f" and {len(icmp) - 3} more" if len(icmp) > 3 else "")
        out.append(Need(CAP_NET_RAW, f"ICMP probe sockets for {shown}"))
    return out


def effective_capabilities(status: Path = Path("/proc/self/status")) -> int | None:
    """The effective capability set, or None where it cannot be read (then we do not judge)."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        return None
    return None


def missing(cfg: Config, *, dry_run: bool, capabilities: int | None) -> str | None:
    """One line naming what is missing and why, or None when nothing is."""
    if capabilities is None:
        return None
    lacking: dict[str, list[str]] = {}
    for need in needs(cfg, dry_run=dry_run):
        if not capabilities & (1 << need.capability):
            lacking.setdefault(need.name, []).append(need.why)
    if not lacking:
        return None
    parts = [f"{name} ({'; '.join(why)})" for name, why in lacking.items()]
    caps = " ".join(lacking)
    if os.geteuid() == 0:
        fix = f"this root process lacks them (a container or bounding set?): grant {caps}"
    else:
        fix = f"uid {os.geteuid()} is not root: run as root or grant them "
        fix += f"(systemd: AmbientCapabilities={caps})"
    return f"run needs {' and '.join(parts)}; {fix}"
