"""Command line: check a config, run the agent (live, dry-run or replayed), ask it (status,
drain, undrain), print the schema.

User mistakes end with one line per problem on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from agent import __version__
from agent.adapters.printer import ActionPrinter
from agent.apply_cli import add_apply_command, run_apply
from agent.config import Config, ConfigError, json_schema, load_config
from agent.control_cli import add_commands, run_command
from agent.instance_lock import InstanceLock, LockError
from agent.logfmt import configure_logging
from agent.ports import AdapterError
from agent.privileges import effective_capabilities, missing
from agent.replay import ReplayError, VirtualClock, read_replay, replay
from agent.runtime import Adapters, Runtime

__all__ = ["main"]

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vti-failover",
        description="Sub-second failover for BGP over route-based IPsec (VTI / XFRM) on Linux.",
    )
    p.add_argument("--version", action="version", version=f"vti-failover {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = sub.add_parser("check", help="validate a config file and summarise it")
    check.add_argument("config", type=Path)
    run = sub.add_parser("run", help="run the agent")
    run.add_argument("config", type=Path)
    run.add_argument("--dry-run", action="store_true", help="print each action, apply nothing")
    run.add_argument(
        "--replay",
        type=Path,
        metavar="FILE",
        help="drive the core from a JSON-lines event file and print its actions (no network)",
    )
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="json: one object per line (ts, level, logger, message, extra fields)",
    )
    doctor = sub.add_parser(
        "doctor", help="check the live system against a config and the known IPsec pitfalls"
    )
    doctor.add_argument("config", type=Path)
    doctor.add_argument("--json", action="store_true", help="one JSON object with the findings")
    add_commands(sub)
    add_apply_command(sub)
    sub.add_parser("schema", help="print the config file's JSON Schema")
    echo = sub.add_parser("udp-echo", help="echo UDP probes back (run this on a UDP-probed peer)")
    echo.add_argument("--port", type=int, default=7)
    echo.add_argument("--listen", nargs="+", default=["0.0.0.0", "::"], metavar="ADDRESS")
    return p


def _summary(cfg: Config) -> list[str]:
    lines = [
        f"config ok: agent {cfg.agent_id}, {len(cfg.tunnels)} tunnel(s), "
        f"policy {cfg.policy.mode.value}"
    ]
    for t in sorted(cfg.tunnels, key=lambda t: (t.effective_priority, t.name)):
        if t.if_id is not None:
            ident = f" (if_id {t.if_id})"
        elif t.key is not None:
            ident = f" (key {t.key})"
        elif t.mark is not None:
            ident = f" (mark {t.mark})"
        else:
            ident = ""
        six = f", inner6 {t.inner6.local} peer {t.inner6.peer}" if t.inner6 is not None else ""
        lines.append(
            f"  {t.name}: {t.kind.value} {t.interface}{ident} {t.underlay.local} -> "
            f"{t.underlay.remote}, inner {t.inner.local} peer {t.inner.peer}{six}, "
            f"priority {t.effective_priority}, sources {','.join(s.value for s in t.sources)}"
        )
    if cfg.site_prefixes:
        lines.append(f"  announces {', '.join(str(p) for p in cfg.site_prefixes)}")
        lines += _carried_by(cfg)
    remote = [str(p) for p in cfg.remote_prefixes.static]
    if cfg.remote_prefixes.learned_from_bgp:
        remote.append("learned by BGP")
    if remote:
        lines.append(f"  routes {', '.join(remote)}")
    lines += [f"  warning: {note}" for note in cfg.advisories()]
    return lines


def _carried_by(cfg: Config) -> list[str]:
    """Which session carries which site prefix, and with what next hop."""
    if cfg.bgp is None:
        return []
    lines = []
    for t in cfg.tunnels:
        hops = cfg.session_next_hops(t)
        said = [
            f"{net} (next-hop {hops[net.version] or 'self'})"
            for net in cfg.site_prefixes
            if net.version in hops
        ]
        carried = ", ".join(said) or "-"
        lines.append(f"    over {t.name}'s session to {cfg.neighbor_of(t)}: {carried}")
    return lines


def _load(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.lines:
            print(f"error: {line}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def _run(args: argparse.Namespace) -> int:
    # Adapters pull in netlink, MQTT and BGP libraries: only `run` needs them, so `check`
    # stays fast and works on a host without them.
    from agent.wiring import (  # noqa: PLC0415
        build_live,
        check_host,
        kernel_has_nexthops,
        resolve_host,
    )

    cfg = _load(args.config)
    configure_logging(args.log_level, args.log_format, sys.stderr)
    if args.replay is not None:
        try:
            events = read_replay(args.replay)
        except ReplayError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        # A replay never touches the system: its actions are printed, as with --dry-run.
        clock = VirtualClock()

        def play() -> int:
            asyncio.run(replay(cfg, events, [ActionPrinter(sys.stdout, clock)], clock))
            return 0

        return _to_stdout(play)
    if args.dry_run and cfg.exabgp.mode == "process" and cfg.bgp is not None:
        print(
            "error: --dry-run prints on stdout, which is ExaBGP's API in exabgp.mode: process",
            file=sys.stderr,
        )
        return EXIT_USAGE
    refusal = missing(cfg, dry_run=args.dry_run, capabilities=effective_capabilities())
    if refusal is not None:
        print(f"error: {refusal}", file=sys.stderr)
        return EXIT_USAGE
    lock = InstanceLock(cfg.agent_id)
    try:
        lock.acquire()
    except LockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    start = time.monotonic()

    def build(c: Config) -> Adapters:
        adapters = build_live(c, dry_run=args.dry_run)
        if args.dry_run:
            adapters.actuators = [ActionPrinter(sys.stdout, time.monotonic, start)]
        return adapters

    try:
        has_nexthops = asyncio.run(kernel_has_nexthops())
    except AdapterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def prepare(c: Config) -> Config:
        # On a reload too (in a thread): a workdir refused there refuses the reload.
        check_host(c, dry_run=args.dry_run)
        return resolve_host(c, nexthop_objects=has_nexthops)

    try:
        check_host(cfg, dry_run=args.dry_run)
    except AdapterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    runtime = Runtime(cfg, build, config_path=args.config, prepare=prepare)
    if args.dry_run:
        return _to_stdout(lambda: asyncio.run(runtime.run()))
    return asyncio.run(runtime.run())


def _broken_pipe(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_broken_pipe(e) for e in exc.exceptions)
    return isinstance(exc, BrokenPipeError)


def _print(text: str) -> int:
    print(text)
    return 0


def _to_stdout(body: Callable[[], int]) -> int:
    """Run a command printing on stdout; a reader that had enough (`| head`) ends it quietly."""
    try:
        status = body()
        sys.stdout.flush()
    except BaseException as exc:
        if not _broken_pipe(exc):
            raise
        # Python flushes stdout again at exit and would complain there: point it elsewhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return status


def _doctor(args: argparse.Namespace) -> int:
    # Imported here like the adapters for `run`: doctor reads netlink, check does not.
    from agent.doctor import diagnose, exit_status, render_json, render_text  # noqa: PLC0415
    from agent.doctor_collect import collect  # noqa: PLC0415

    cfg = _load(args.config)
    findings = diagnose(cfg, collect(cfg))
    (render_json if args.json else render_text)(findings, sys.stdout)
    return exit_status(findings)


def _udp_echo(args: argparse.Namespace) -> int:
    # Imported here like the adapters for `run`: check and schema start fast without them.
    from agent.adapters.probes import serve_udp_echo  # noqa: PLC0415

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(message)s")
    if not 1 <= args.port <= 65535:
        print(f"error: --port {args.port}: must be 1-65535", file=sys.stderr)
        return EXIT_USAGE
    try:
        asyncio.run(serve_udp_echo(args.port, tuple(args.listen)))
    except AdapterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 0
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        cfg = _load(args.config)
        return _to_stdout(lambda: _print("\n".join(_summary(cfg))))
    if args.command == "schema":
        return _to_stdout(lambda: _print(json.dumps(json_schema(), indent=2, sort_keys=True)))
    if args.command == "udp-echo":
        return _udp_echo(args)
    if args.command == "doctor":
        return _to_stdout(lambda: _doctor(args))
    if args.command == "apply":
        return _to_stdout(lambda: run_apply(args, _load))
    if args.command in ("status", "drain", "undrain"):
        return _to_stdout(lambda: run_command(args))
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
