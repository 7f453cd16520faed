"""`status`, `drain` and `undrain`: a client of the running agent's control socket.

Exit status: 0 done, 1 the core refused (a drain of the last usable tunnel without
--force), 2 a usage error or no agent to ask. Every failure is one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.config import ConfigError, load_config
from agent.control import socket_path
from agent.instance_lock import lock_dir
from agent.status_view import render

__all__ = ["add_commands", "run_command"]

EXIT_REFUSED = 1
EXIT_USAGE = 2
# Longer than any answer but a drain's wait; a live agent answers in milliseconds.
ANSWER_TIMEOUT_S = 15.0
MAX_ANSWER_BYTES = 16 << 20


class UsageError(Exception):
    """One line for stderr, then exit status 2."""


def add_commands(sub: Any) -> None:
    """The three subcommands on the CLI's subparsers."""
    status = sub.add_parser("status", help="ask the running agent what it sees and decided")
    _target(status, positional=True)
    status.add_argument("--json", action="store_true", help="the raw snapshot, one JSON object")
    status.add_argument("--watch", action="store_true", help="a new one whenever state changes")
    status.add_argument("--interval", type=float, default=1.0, help="watch: at most one per s")
    drain = sub.add_parser("drain", help="take a tunnel out of service (make-before-break)")
    drain.add_argument("tunnel")
    drain.add_argument("--wait", action="store_true", help="until ADMIN_DOWN and not carrying")
    drain.add_argument("--force", action="store_true", help="even the last usable tunnel")
    _target(drain, positional=False)
    undrain = sub.add_parser("undrain", help="put a drained tunnel back (through probation)")
    undrain.add_argument("tunnel")
    _target(undrain, positional=False)


def _target(p: argparse.ArgumentParser, *, positional: bool) -> None:
    if positional:
        p.add_argument("config", type=Path, nargs="?", help="the agent's config (its socket)")
    else:
        p.add_argument("--config", type=Path, help="the agent's config (its socket)")
    p.add_argument("--socket", type=Path, help="the control socket itself")


def run_command(args: argparse.Namespace) -> int:
    try:
        path = _socket(args)
        if args.command == "status":
            return _status(path, args)
        return _admin(path, args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 0


def _socket(args: argparse.Namespace) -> Path:
    if args.socket is not None and args.config is not None:
        raise UsageError("name the config or --socket, not both")
    if args.socket is not None:
        return Path(args.socket)
    if args.config is not None:
        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            raise UsageError(exc.lines[0]) from None
        if not cfg.control.enabled:
            raise UsageError(f"{args.config}: control.enabled is off: the agent has no socket")
        return socket_path(cfg)
    found = sorted(lock_dir().glob("*.sock"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise UsageError(
            f"no agent's control socket in {lock_dir()} (is it running? name its config)"
        )
    names = ", ".join(p.name for p in found)
    raise UsageError(f"several agents run ({names}): name the config or --socket")


def _ask(
    path: Path, request: dict[str, Any], timeout: float, *, stream: bool = False
) -> Iterator[dict[str, Any]]:
    """Send one request; yield its answer, or with `stream` each line of a watch as it comes."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except FileNotFoundError:
        raise UsageError(f"no agent listening on {path} (is it running?)") from None
    except ConnectionRefusedError:
        raise UsageError(f"no agent listening on {path} (a socket left behind)") from None
    except PermissionError:
        raise UsageError(f"{path}: permission denied (the control socket is root only)") from None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    with sock, sock.makefile("rb") as answers:
        sock.sendall(json.dumps(request).encode() + b"\n")
        if not stream:
            # Nothing more to ask: the agent closes once it has answered, instead of
            # waiting for a next request.
            sock.shutdown(socket.SHUT_WR)
        while True:
            try:
                line = answers.readline(MAX_ANSWER_BYTES)
            except TimeoutError:
                raise UsageError(f"{path}: the agent did not answer in {timeout:g}s") from None
            except OSError as exc:
                raise UsageError(f"{path}: {exc.strerror or exc}") from None
            if not line:
                return
            try:
                answer = json.loads(line)
            except ValueError:
                raise UsageError(f"{path}: an answer that is not JSON") from None
            if not isinstance(answer, dict):
                raise UsageError(f"{path}: an answer that is not a JSON object")
            if answer.get("ok") is not True:
                raise UsageError(str(answer.get("error", "the agent refused the request")))
            yield answer
            if not stream:
                return


def _status(path: Path, args: argparse.Namespace) -> int:
    request: dict[str, Any] = (
        {"command": "watch", "interval_s": args.interval} if args.watch else {"command": "status"}
    )
    # A watch waits as long as nothing changes.
    timeout = 24 * 3600.0 if args.watch else ANSWER_TIMEOUT_S
    clear = args.watch and not args.json and sys.stdout.isatty()
    first = True
    for answer in _ask(path, request, timeout, stream=args.watch):
        snap = answer["status"]
        if args.json:
            print(json.dumps(snap, sort_keys=True), flush=True)
            continue
        if clear:
            print("\x1b[H\x1b[2J", end="")
        elif not first:
            print()
        first = False
        print("\n".join(render(snap)), flush=True)
    return 0


def _admin(path: Path, args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"command": args.command, "tunnel": args.tunnel}
    timeout = ANSWER_TIMEOUT_S
    if args.command == "drain":
        request |= {"force": args.force, "wait": args.wait}
        timeout += 30.0 if args.wait else 0.0
    answer = next(_ask(path, request, timeout), None)
    if answer is None:
        raise UsageError(f"{path}: the agent closed the connection without an answer")
    if not answer.get("accepted"):
        print(f"{args.tunnel}: {answer.get('reason', 'refused')}", file=sys.stderr)
        return EXIT_REFUSED
    state = answer.get("state") or {}
    done = f"{args.tunnel}: {state.get('health', '?')}, {state.get('role', '?')}"
    if args.command == "drain" and args.wait and not answer.get("drained"):
        print(f"{done}; still carrying after 30s", file=sys.stderr)
        return EXIT_REFUSED
    print(done)
    return 0
