"""Reads SystemFacts for `apply` in this process's network namespace: rtnetlink, /proc/sys,
and the agent's own nft table. Read-only; no netlink message it sends changes anything.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from agent.adapters.netlink_links import IFF_UP
from agent.adapters.netlink_socket import rtnl_socket
from agent.apply_facts import Interface, LinkFacts, NftFacts, SystemFacts
from agent.apply_nft import decode_table, table_name
from agent.config import Config

__all__ = ["PROC_SYS", "link_facts", "nft_binary", "read_facts", "read_nft", "read_sysctls"]

PROC_SYS = Path("/proc/sys")
_DATA = ("linkinfo", "data")
_SYSCTL_NAMES = ("ipv4/conf/{}/rp_filter", "ipv4/conf/{}/disable_policy",
                 "ipv6/conf/{}/disable_policy")  # fmt: skip


def _text_address(value: Any) -> str | None:
    return None if value is None else str(ipaddress.ip_address(str(value)))


def link_facts(msg: Any, addresses: frozenset[Interface] = frozenset()) -> LinkFacts:
    """LinkFacts of one RTM_NEWLINK message (VTI and XFRM attributes per pyroute2's plugins)."""
    alias = msg.get("IFLA_IFALIAS")
    return LinkFacts(
        name=str(msg.get("ifname")),
        index=int(msg["index"]),
        kind=msg.get(("linkinfo", "kind")),
        alias=None if alias is None else str(alias),
        mtu=int(msg.get("mtu") or 0),
        up=bool(int(msg.get("flags", 0)) & IFF_UP),
        addresses=addresses,
        local=_text_address(msg.get((*_DATA, "IFLA_VTI_LOCAL"))),
        remote=_text_address(msg.get((*_DATA, "IFLA_VTI_REMOTE"))),
        ikey=msg.get((*_DATA, "IFLA_VTI_IKEY")),
        okey=msg.get((*_DATA, "IFLA_VTI_OKEY")),
        if_id=msg.get((*_DATA, "IFLA_XFRM_IF_ID")),
        link=msg.get((*_DATA, "IFLA_XFRM_LINK")),
    )


async def read_links() -> dict[str, LinkFacts]:
    ipr = rtnl_socket()
    try:
        addresses: dict[int, set[Interface]] = {}
        async for msg in await ipr.addr("dump"):
            addr = msg.get("address")
            if addr is not None:
                iface = ipaddress.ip_interface(f"{addr}/{msg['prefixlen']}")
                addresses.setdefault(int(msg["index"]), set()).add(iface)
        links = {}
        async for msg in await ipr.link("dump"):
            found = frozenset(addresses.get(int(msg["index"]), ()))
            link = link_facts(msg, found)
            links[link.name] = link
        return links
    finally:
        ipr.close()


def read_sysctls(names: set[str], proc_sys: Path = PROC_SYS) -> dict[str, int]:
    """The tunnel sysctls of these interfaces and of conf.all / conf.default, as readable."""
    out = {}
    for name in sorted({"all", "default", *names}):
        for key in _SYSCTL_NAMES:
            path = proc_sys / "net" / key.format(name)
            try:
                out["net." + key.format(name).replace("/", ".")] = int(path.read_text().strip())
            except (OSError, ValueError):
                continue
    return out


def nft_binary() -> str | None:
    return shutil.which("nft") or next(
        (p for p in ("/usr/sbin/nft", "/sbin/nft") if Path(p).exists()), None
    )


def read_nft(agent_id: str) -> tuple[NftFacts | None, str | None]:
    """Our table as nft lists it; (None, why) when nft cannot tell."""
    nft = nft_binary()
    if nft is None:
        return None, "nft is not installed"
    table = table_name(agent_id)
    try:
        proc = subprocess.run(
            [nft, "-j", "list", "table", "inet", table],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"nft -j list table inet {table}: {exc}"
    if proc.returncode != 0:
        if "No such file or directory" in proc.stderr:
            return NftFacts(), None
        return None, f"nft -j list table inet {table}: {proc.stderr.strip()[:200]}"
    try:
        return decode_table(json.loads(proc.stdout or "{}"), table), None
    except ValueError as exc:
        return None, f"nft -j list table inet {table}: not JSON ({exc})"


def read_facts(cfg: Config, links: dict[str, LinkFacts]) -> SystemFacts:
    """The facts the planner needs, given the links read by `read_links`."""
    wanted = {t.interface for t in cfg.tunnels} & set(links)
    # nft missing is a refusal only when some tunnel asks for snat (the planner decides).
    nft, nft_error = read_nft(cfg.agent_id)
    return SystemFacts(links=links, sysctls=read_sysctls(wanted), nft=nft, nft_error=nft_error)
