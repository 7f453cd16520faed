"""Reads the SystemView for `doctor`: netlink, NETLINK_XFRM, /proc, rt_protos, nft, VICI.

Read-only. Whatever cannot be read is left empty with the reason, never guessed; the
checks say what that leaves unchecked.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from agent.adapters.netlink_socket import rtnl_socket
from agent.adapters.strongswan import ViciUnreachableError, _connect
from agent.adapters.xfrm import NETLINK_XFRM, NLMSG_DONE, SaInfo, decode, dump_request
from agent.adapters.xfrm_policy import (
    XFRM_POLICY_IN,
    XFRM_POLICY_OUT,
    decode_policies,
    policy_dump_request,
)
from agent.config import Config, Source
from agent.config.protocols import RT_PROTOS_PATHS
from agent.doctor_view import Link, Route, SystemView, XfrmPolicy, XfrmState

__all__ = ["collect", "nft_snat_interfaces", "read_xfrm", "rt_proto_name"]

PROC = Path("/proc")
MAX_XFRM_ENTRIES = 200_000
_DIRECTIONS = {XFRM_POLICY_IN: "in", XFRM_POLICY_OUT: "out"}


def _link(msg: Any) -> Link:
    data = ("linkinfo", "data")
    local = msg.get((*data, "IFLA_VTI_LOCAL"))
    remote = msg.get((*data, "IFLA_VTI_REMOTE"))
    return Link(
        name=str(msg.get("ifname")),
        kind=msg.get(("linkinfo", "kind")),
        mtu=int(msg.get("mtu") or 0),
        local=None if local is None else str(local),
        remote=None if remote is None else str(remote),
        ikey=msg.get((*data, "IFLA_VTI_IKEY")),
        okey=msg.get((*data, "IFLA_VTI_OKEY")),
        if_id=msg.get((*data, "IFLA_XFRM_IF_ID")),
    )


async def _rtnl(netns: str | None) -> tuple[dict[str, Link], tuple[Route, ...], frozenset[int]]:
    ipr = rtnl_socket(netns)
    try:
        by_index: dict[int, Link] = {}
        async for msg in await ipr.link("dump"):
            by_index[int(msg["index"])] = _link(msg)
        addresses: dict[int, list[Any]] = {}
        async for msg in await ipr.addr("dump"):
            addr = msg.get("address")
            if addr is not None:
                iface = ipaddress.ip_interface(f"{addr}/{msg['prefixlen']}")
                addresses.setdefault(int(msg["index"]), []).append(iface)
        links = {}
        for index, link in by_index.items():
            links[link.name] = Link(
                **{**link.__dict__, "addresses": tuple(addresses.get(index, ()))}
            )
        names = {i: link.name for i, link in by_index.items()}
        routes = []
        for family in (socket.AF_INET, socket.AF_INET6):
            async for msg in await ipr.route("dump", family=family, table=220):
                if msg.get("table") != 220:
                    continue
                zero = "0.0.0.0" if family == socket.AF_INET else "::"
                dst = ipaddress.ip_network(f"{msg.get('dst') or zero}/{msg['dst_len']}")
                oif = msg.get("oif")
                routes.append(Route(220, dst, names.get(oif) if oif is not None else None))
        tables = set()
        async for msg in await ipr.rule("dump"):
            table = msg.get("table")
            if table is not None:
                tables.add(int(table))
        return links, tuple(routes), frozenset(tables)
    finally:
        ipr.close()


def _xfrm_dump(request: bytes) -> Iterator[bytes]:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM)
    try:
        sock.settimeout(5)
        sock.bind((0, 0))
        sock.send(request)
        while True:
            yield sock.recv(1 << 16)
    finally:
        sock.close()


def read_xfrm() -> tuple[tuple[XfrmState, ...] | None, tuple[XfrmPolicy, ...] | None, str | None]:
    try:
        sas: list[XfrmState] = []
        for buf in _xfrm_dump(dump_request(1)):
            items = decode(buf)
            sas += [_state(i) for i in items if isinstance(i, SaInfo)]
            if NLMSG_DONE in items or len(sas) > MAX_XFRM_ENTRIES:
                break
        policies: list[XfrmPolicy] = []
        for buf in _xfrm_dump(policy_dump_request(1)):
            got, done = decode_policies(buf)
            for p in got:
                direction: Any = _DIRECTIONS.get(p.direction, "fwd")
                policies += [
                    XfrmPolicy(direction, tmpl.src, tmpl.dst, p.mark, p.mark_mask, p.if_id)
                    for tmpl in p.templates
                ]
            if done or len(policies) > MAX_XFRM_ENTRIES:
                break
    except (OSError, ValueError) as exc:
        return None, None, str(exc)
    return tuple(sas), tuple(policies), None


def _state(sa: SaInfo) -> XfrmState:
    return XfrmState(sa.src, sa.dst, sa.spi, sa.mark, sa.mark_mask, sa.if_id)


def _sysctls(names: Iterable[str], proc: Path) -> dict[str, int]:
    out = {}
    for name in ("all", *names):
        for key in ("ipv4/conf/{}/rp_filter", "ipv4/conf/{}/disable_policy",
                    "ipv6/conf/{}/disable_policy"):  # fmt: skip
            path = proc / "sys/net" / key.format(name)
            try:
                out["net." + key.format(name).replace("/", ".")] = int(path.read_text().strip())
            except (OSError, ValueError):
                continue
    return out


def _modules(proc: Path) -> tuple[frozenset[str], bool]:
    found = set()
    with contextlib.suppress(OSError):
        found |= {line.split()[0] for line in (proc / "modules").read_text().splitlines() if line}
    sys_module = Path("/sys/module")
    if sys_module.is_dir():
        found |= {p.name for p in sys_module.iterdir()}
    builtin = Path("/lib/modules") / os.uname().release / "modules.builtin"
    try:
        for line in builtin.read_text().splitlines():
            found.add(Path(line.strip()).name.removesuffix(".ko").replace("-", "_"))
    except OSError:
        return frozenset(found), False
    return frozenset(found), True


def rt_proto_name(number: int, paths: Iterable[Path] = RT_PROTOS_PATHS) -> str | None:
    """The name iproute2's rt_protos files give this protocol id, or None."""
    for path in paths:
        files = sorted(path.glob("*.conf")) if path.is_dir() else [path]
        for file in files:
            try:
                text = file.read_text(encoding="utf-8", errors="replace")[: 1 << 20]
            except OSError:
                continue
            for line in text.splitlines():
                words = line.split("#", 1)[0].split()
                if len(words) >= 2 and words[0].isdigit() and int(words[0]) == number:
                    return words[1]
    return None


def _oifnames(expr: Any) -> Iterator[str]:
    """The interface names an nft JSON rule matches with `oifname == ...`."""
    for item in expr if isinstance(expr, list) else ():
        match = item.get("match") if isinstance(item, dict) else None
        if not isinstance(match, dict) or match.get("op", "==") not in ("==", "in"):
            continue
        left, right = match.get("left"), match.get("right")
        if left != {"meta": {"key": "oifname"}}:
            continue
        if isinstance(right, str):
            yield right
        elif isinstance(right, dict) and isinstance(right.get("set"), list):
            yield from (r for r in right["set"] if isinstance(r, str))


def nft_snat_interfaces(ruleset: Any) -> frozenset[str]:
    """Interfaces that an SNAT or masquerade rule of `nft -j list ruleset` applies to."""
    out: set[str] = set()
    items = ruleset.get("nftables", []) if isinstance(ruleset, dict) else []
    for item in items:
        rule = item.get("rule") if isinstance(item, dict) else None
        if not isinstance(rule, dict):
            continue
        expr = rule.get("expr", [])
        if not any(isinstance(e, dict) and ("snat" in e or "masquerade" in e) for e in expr):
            continue
        names = set(_oifnames(expr))
        out |= names or {"*"}
    return frozenset(out)


def _snat() -> tuple[frozenset[str] | None, str | None]:
    nft = shutil.which("nft") or ("/usr/sbin/nft" if Path("/usr/sbin/nft").exists() else None)
    if nft is None:
        return None, "nft is not installed (iptables rules are not read)"
    try:
        proc = subprocess.run(
            [nft, "-j", "list", "ruleset"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"nft -j list ruleset: {exc}"
    if proc.returncode != 0:
        return None, f"nft -j list ruleset: {proc.stderr.strip()[:200]}"
    try:
        return nft_snat_interfaces(json.loads(proc.stdout or "{}")), None
    except ValueError as exc:
        return None, f"nft -j list ruleset: not JSON ({exc})"


def _vici(cfg: Config) -> str | None:
    if not any(Source.VICI in t.sources for t in cfg.tunnels):
        return None
    try:
        sock = _connect(cfg.vici.socket, 2.0)
    except ViciUnreachableError as exc:
        return str(exc)
    sock.close()
    return None


def collect(cfg: Config, *, proc: Path = PROC) -> SystemView:
    """The system as doctor sees it, in this process's network namespace."""
    links, routes_220, rule_tables = asyncio.run(_rtnl(None))
    sas, policies, xfrm_error = read_xfrm()
    underlay = {
        link.name
        for link in links.values()
        for t in cfg.tunnels
        if any(a.ip == t.underlay.local for a in link.addresses)
    }
    found, builtin_known = _modules(proc)
    snat_interfaces, snat_unknown = _snat()
    return SystemView(
        links=links,
        sysctls=_sysctls({t.interface for t in cfg.tunnels} | underlay, proc),
        sas=sas,
        policies=policies,
        xfrm_error=xfrm_error,
        routes_220=routes_220,
        rule_tables=rule_tables,
        modules=found,
        builtin_known=builtin_known,
        vici_error=_vici(cfg),
        rt_proto_name=rt_proto_name(cfg.netlink.route_protocol),
        snat_interfaces=snat_interfaces,
        snat_unknown=snat_unknown,
    )
