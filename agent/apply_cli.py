"""The `apply` subcommand's arguments and entry; the work is in agent.apply (imported late, so
`check` and `schema` start without pyroute2)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config import Config
from agent.privileges import CAP_NET_ADMIN, effective_capabilities

__all__ = ["add_apply_command", "run_apply"]

EXIT_USAGE = 2


def add_apply_command(sub: Any) -> None:
    cmd = sub.add_parser(
        "apply",
        help="create or fix the config's tunnel interfaces, addresses, MTU, sysctls and SNAT",
    )
    cmd.add_argument("config", type=Path)
    cmd.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan, one command per change; change nothing",
    )


def run_apply(args: argparse.Namespace, load: Callable[[Path], Config]) -> int:
    from agent.apply import apply  # noqa: PLC0415

    cfg = load(args.config)
    capabilities = effective_capabilities()
    if not args.dry_run and capabilities is not None and not capabilities >> CAP_NET_ADMIN & 1:
        print(
            "error: apply changes links, addresses and sysctls: it needs CAP_NET_ADMIN "
            "(run it as root; --dry-run needs nothing)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return apply(cfg, sys.stdout, dry_run=args.dry_run)
