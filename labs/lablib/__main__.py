"""labs/lab: one command per lab action; re-runs itself in a VM when this kernel cannot."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from lablib import vm
from lablib.demo import run_demo
from lablib.nslab import FAMILIES, KINDS, STACKS, Lab, LabError
from lablib.show import status_text
from lablib.topology import TOP
from lablib.watchdog import HEARTBEAT, beat_while_alive

NEEDS_KERNEL = {"up", "demo", "bench", "status", "cut", "repair"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="labs/lab",
        description="The dual-vti lab: two sites, two ISP paths, an IPsec tunnel on each, "
        "BGP over both. Runs in network namespaces, or in a VM when this kernel lacks "
        "ip_vti/esp4 (then every command boots, runs and powers off the VM).",
    )
    p.add_argument(
        "--vm",
        choices=("auto", "always", "never"),
        default="auto",
        help="where to run (default auto: a VM only when the kernel needs it)",
    )
    p.add_argument(
        "--results",
        type=Path,
        default=TOP / "results",
        help="directory the VM writes back to (default results/)",
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    def stack_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--stack",
            choices=STACKS,
            default="stock",
            help="site A's speaker: stock ExaBGP, ExaBGP healthcheck, or the agent",
        )
        sp.add_argument(
            "--kind",
            choices=KINDS,
            default="vti",
            help="tunnel interfaces: VTI (key = mark) or XFRM interfaces (if_id)",
        )
        sp.add_argument(
            "--family",
            choices=FAMILIES,
            default="ipv4",
            help="the underlays: all IPv4, all IPv6, or dual (isp1 IPv4, isp2 and isp3 "
            "IPv6); inside, every tunnel carries both families",
        )

    up = sub.add_parser("up", help="build the lab and start every daemon")
    stack_args(up)
    up.add_argument(
        "--then",
        metavar="CMD",
        help="run CMD (a shell line) once the lab is up, then tear it down; "
        "the way to use the lab inside the VM",
    )
    up.add_argument(
        "--agent-config",
        type=Path,
        metavar="PATH",
        help="stack agent: run site A's agent on this config instead of the lab's own "
        "(inside a VM it must lie under --results, the one directory the guest shares)",
    )
    sub.add_parser("down", help="stop the lab's daemons and delete its namespaces")
    sub.add_parser("status", help="tunnels, SAs, BGP sessions and routes of the running lab")
    for name in ("cut", "repair"):
        sp = sub.add_parser(name, help=f"{name} an ISP path (silent: drops both ways, links up)")
        sp.add_argument("isp", choices=("isp1", "isp2", "isp3"))
    demo = sub.add_parser("demo", help="the scripted failover demo (brings the lab up and down)")
    stack_args(demo)
    demo.set_defaults(stack="agent")
    sub.add_parser(
        "bench",
        help="the failover benchmark; further arguments go to labs/bench/failover.py",
        add_help=False,
    )
    return p


def _vm_argv(args: argparse.Namespace, argv: list[str]) -> list[str]:
    """The same command line for the guest, minus what only the host decides."""
    out, skip = [], False
    for word in argv:
        if skip:
            skip = False
            continue
        if word in {"--vm", "--results"}:
            skip = True
            continue
        if word.startswith(("--vm=", "--results=")):
            continue
        out.append(word)
    del args
    return ["--vm", "never", "--results", "{results}", *out]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.cmd != "bench" and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.args = extra
    if os.geteuid() != 0:
        print("labs/lab: run as root (namespaces, tc, charon)", file=sys.stderr)
        return 2
    wants_vm = args.cmd in NEEDS_KERNEL and not vm.in_vm() and args.vm != "never"
    if wants_vm and (args.vm == "always" or not vm.kernel_ready()):
        if args.cmd in {"status", "cut", "repair"}:
            print(
                f"labs/lab {args.cmd}: this kernel has no ip_vti/esp4, so the lab only "
                "lives inside a VM for one command; use demo, bench or up --then CMD",
                file=sys.stderr,
            )
            return 2
        results = args.results.resolve()
        if args.cmd == "bench":
            return _bench_in_vms(args, results)
        guest = [w.replace("{results}", str(results)) for w in _vm_argv(args, argv)]
        print(
            f"==> this kernel lacks ip_vti/esp4: booting {vm.kernel_image().name} "
            f"under virtme-ng (TCG, ~20 s); results in {results}",
            flush=True,
        )
        if args.cmd == "up":
            return _up_in_vm(guest, results)
        return vm.run_in_vm(guest, results)
    try:
        return _dispatch(args)
    except LabError as exc:
        print(f"labs/lab: {exc}", file=sys.stderr)
        return 1


def _up_in_vm(guest: list[str], results: Path) -> int:
    """`up` (and its --then) in a VM whose guest beats while it lives, as a bench method."""
    return _run_retrying_a_stall(guest, results, lambda _attempt: None)


def _run_retrying_a_stall(guest: list[str], results: Path, before: Callable[[int], None]) -> int:
    """run_in_vm with a heartbeat; a VM that stopped beating is retried once in a fresh one.
    `before(attempt)` runs ahead of each boot."""
    for attempt in (1, 2):
        before(attempt)
        status = vm.run_in_vm(guest, results, heartbeat=results / HEARTBEAT)
        if status != vm.STALLED:
            return status
        print(f"==> the VM stalled (attempt {attempt}); its report is in {results}", flush=True)
    return status


def _bench_in_vms(args: argparse.Namespace, results: Path) -> int:
    """The benchmark with one VM per method, a stalled VM retried once in a fresh one.

    An emulated VM has been seen to stop responding during long runs; one VM per method
    keeps a stall from costing the other methods, and the heartbeat catches it.
    """
    extra = [a for a in args.args if a != "--"]
    script = TOP / "labs" / "bench" / "failover.py"
    if {"-h", "--help"} & set(extra):
        return subprocess.run([sys.executable, str(script), "--help"], check=False).returncode
    opts, rest = _bench_opts().parse_known_args(extra)
    out = opts.json or results / "failover.json"
    parts = []
    for method in opts.methods.split(","):
        part = results / f"failover-{method}.json"
        guest = ["--vm", "never", "--results", str(results), "bench", *rest]
        guest += ["--methods", method, "--json", str(part)]

        def before(attempt: int, part: Path = part, method: str = method) -> None:
            part.unlink(missing_ok=True)
            print(
                f"==> {method}: this kernel lacks ip_vti/esp4: booting {vm.kernel_image().name} "
                f"under virtme-ng (TCG), attempt {attempt}; results in {results}",
                flush=True,
            )

        status = _run_retrying_a_stall(guest, results, before)
        if part.exists():
            parts.append(str(part))
        else:
            print(f"==> {method}: no result (status {status})", flush=True)
    if not parts:
        return 1
    merge = [sys.executable, str(script), "--merge", *parts, "--json", str(out)]
    return subprocess.run(merge, check=False).returncode


def _bench_opts() -> argparse.ArgumentParser:
    """The two bench options the host needs to split a run into one VM per method."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--methods", default="stock,healthcheck,agent-default,agent-fastest")
    p.add_argument("--json", type=Path)
    return p


def _dispatch(args: argparse.Namespace) -> int:
    if args.cmd == "down":
        Lab().down()
        return 0
    if args.cmd == "up":
        lab = Lab(args.stack, args.kind, agent_config=args.agent_config, family=args.family)
        if vm.in_vm():
            # The host stops a VM whose beat stops (a guest that no longer runs at all).
            beat_while_alive(args.results / HEARTBEAT)
        lab.up(progress=lambda s: print(f"  {s}", flush=True))
        took = lab.wait_ready()
        print(
            f"==> lab up ({args.kind}, {args.family}, {args.stack}); "
            f"BGP converged {took:.1f}s after start",
            flush=True,
        )
        if args.then is None:
            return 0
        try:
            env = dict(os.environ, LAB_RESULTS=str(args.results))
            return subprocess.run(["bash", "-c", args.then], env=env, check=False).returncode
        finally:
            lab.down()
    if args.cmd in {"status", "cut", "repair"}:
        info = Lab.running()
        if info is None:
            print("labs/lab: no lab is up (labs/lab up)", file=sys.stderr)
            return 1
        lab = Lab(info["stack"], info["kind"], family=info.get("family", "ipv4"))
        if args.cmd == "cut":
            lab.cut(args.isp)
        elif args.cmd == "repair":
            lab.repair(args.isp)
        else:
            print(status_text(lab))
        return 0
    if args.cmd == "demo":
        return run_demo(stack=args.stack, kind=args.kind)
    if args.cmd == "bench":
        script = TOP / "labs" / "bench" / "failover.py"
        extra = [a for a in args.args if a != "--"]
        if "--json" not in extra:
            extra += ["--json", str(args.results / "failover.json")]
        return subprocess.run([sys.executable, str(script), *extra], check=False).returncode
    raise AssertionError(args.cmd)


if __name__ == "__main__":
    sys.exit(main())
