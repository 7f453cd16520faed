"""`vti-failover apply CONFIG [--dry-run]`: make the system what the config describes.

Reads the facts, plans (apply_plan), then carries the plan out or, with --dry-run, prints
it. Exit 0: done or nothing to do; 1: something refused (then nothing at all is applied)
or a step failed; 2 (in the CLI): a config or usage error.
"""

from __future__ import annotations

import asyncio
from typing import TextIO

from agent.apply_execute import ApplyError, execute
from agent.apply_facts import SystemFacts, owner_alias
from agent.apply_plan import plan
from agent.apply_read import read_facts, read_links
from agent.config import Config

__all__ = ["EXIT_REFUSED", "apply", "observe"]

EXIT_REFUSED = 1


def observe(cfg: Config) -> SystemFacts:
    """The system as apply sees it, in this process's network namespace."""
    return read_facts(cfg, asyncio.run(read_links()))


def apply(cfg: Config, out: TextIO, *, dry_run: bool) -> int:
    todo = plan(cfg, observe(cfg))
    for note in todo.notes:
        out.write(f"note: {note}\n")
    if todo.refusals:
        for refusal in todo.refusals:
            out.write(f"refused: {refusal.subject}: {refusal.message}\n")
        out.write(f"apply: {len(todo.refusals)} refused, nothing applied\n")
        return EXIT_REFUSED
    if not todo.steps:
        out.write("nothing to do\n")
        return 0
    if dry_run:
        for step in todo.steps:
            out.write(f"{step.line}\n")
        out.write(f"# {len(todo.steps)} change(s) planned, none applied (--dry-run)\n")
        return 0

    def report(line: str) -> None:
        out.write(f"{line}\n")
        out.flush()

    try:
        asyncio.run(execute(todo, owner_alias(cfg.agent_id), report))
    except ApplyError as exc:
        out.write(f"failed: {exc}\n")
        out.write("apply: stopped; the changes above were made, run apply again once fixed\n")
        return EXIT_REFUSED
    out.write(f"apply: {len(todo.steps)} change(s) made\n")
    return 0
