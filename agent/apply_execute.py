"""Carries out `apply`'s steps: rtnetlink through pyroute2, /proc/sys, one `nft -f -`.

Before each write the link is read again by name and must still be what the plan saw: of
the planned kind, and carrying our alias for anything that changes tunnel parameters or
deletes. So a link swapped under us between reading and writing is refused, not changed.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from agent.adapters.netlink_socket import rtnl_socket
from agent.apply_facts import (
    AddAddress,
    ChangeVti,
    ChangeXfrm,
    CreateVti,
    CreateXfrm,
    DeleteAddress,
    DeleteLink,
    LinkFacts,
    MarkOwned,
    NftCommand,
    Plan,
    SetMtu,
    SetSysctl,
    SetUp,
    Step,
)
from agent.apply_read import PROC_SYS, link_facts, nft_binary

__all__ = ["ApplyError", "execute"]

Report = Callable[[str], None]
# What a kernel answers for a tunnel change it cannot make in place.
_CANNOT_CHANGE = {errno.EOPNOTSUPP, errno.EINVAL}


class ApplyError(Exception):
    """A step failed or was refused at the moment of writing; what ran before it stays."""


async def _current(ipr: Any, name: str) -> LinkFacts | None:
    try:
        got = await ipr.link("get", ifname=name)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise
    return link_facts(got[0]) if got else None


async def _index(ipr: Any, name: str) -> int:
    link = await _current(ipr, name)
    if link is None:
        raise ApplyError(f"{name} does not exist")
    return link.index


def _tunnel_args(step: CreateVti | CreateXfrm | ChangeVti | ChangeXfrm, device: int) -> Any:
    if isinstance(step, CreateVti | ChangeVti):
        return {"kind": "vti6" if step.v6 else "vti", "vti_local": step.local,
                "vti_remote": step.remote, "vti_ikey": step.key, "vti_okey": step.key}  # fmt: skip
    return {"kind": "xfrm", "xfrm_link": device, "xfrm_if_id": step.if_id}


class _Executor:
    def __init__(self, ipr: Any, plan: Plan, alias: str, proc_sys: Path) -> None:
        self.ipr, self.plan, self.alias, self.proc_sys = ipr, plan, alias, proc_sys

    async def guarded(self, name: str, *, ours: bool) -> LinkFacts:
        """The link as it is now, if it is still what the plan was made for."""
        link = await _current(self.ipr, name)
        if link is None:
            raise ApplyError(f"{name} disappeared since it was read")
        want = self.plan.kinds.get(name)
        if want is not None and link.kind != want and not ours:
            raise ApplyError(f"{name} is now a {link.kind or 'plain'} interface, not {want}")
        if ours and link.alias != self.alias:
            raise ApplyError(f"{name} no longer carries the alias {self.alias}: left alone")
        return link

    async def create(self, step: CreateVti | CreateXfrm) -> None:
        if await _current(self.ipr, step.interface) is not None:
            raise ApplyError(f"{step.interface} appeared since it was read: left alone")
        device = await _index(self.ipr, step.device) if isinstance(step, CreateXfrm) else 0
        await self.ipr.link("add", ifname=step.interface, **_tunnel_args(step, device))

    async def change(self, step: ChangeVti | ChangeXfrm) -> list[str]:
        link = await self.guarded(step.interface, ours=True)
        device = await _index(self.ipr, step.device) if isinstance(step, ChangeXfrm) else 0
        try:
            await self.ipr.link("set", index=link.index, **_tunnel_args(step, device))
        except NetlinkError as exc:
            if exc.code not in _CANNOT_CHANGE:
                raise
            # Not in place, then: it is ours (checked above), so it is made again.
            remade: CreateVti | CreateXfrm = (
                CreateVti(step.interface, step.local, step.remote, step.key, step.v6)
                if isinstance(step, ChangeVti)
                else CreateXfrm(step.interface, step.if_id, step.device)
            )
            mark = MarkOwned(step.interface, self.alias)
            await self.ipr.link("del", index=link.index)
            await self.create(remade)
            await self.step(mark)
            refused = f"# the kernel refused {step.line} in place"
            return [refused, DeleteLink(step.interface).line, remade.line, mark.line]
        return [step.line]

    async def step(self, step: Step) -> list[str]:
        """Carry out one step; the command lines of what was done."""
        ipr = self.ipr
        match step:
            case CreateVti() | CreateXfrm():
                await self.create(step)
            case ChangeVti() | ChangeXfrm():
                return await self.change(step)
            case DeleteLink():
                link = await self.guarded(step.interface, ours=True)
                await ipr.link("del", index=link.index)
            case MarkOwned():
                link = await self.guarded(step.interface, ours=False)
                await ipr.link("set", index=link.index, ifalias=step.alias)
            case SetMtu():
                link = await self.guarded(step.interface, ours=False)
                await ipr.link("set", index=link.index, mtu=step.mtu)
            case SetUp():
                link = await self.guarded(step.interface, ours=False)
                await ipr.link("set", index=link.index, state="up")
            case AddAddress() | DeleteAddress():
                link = await self.guarded(step.interface, ours=False)
                a = step.address
                verb = "add" if isinstance(step, AddAddress) else "del"
                try:
                    await ipr.addr(verb, index=link.index, address=str(a.ip),
                                   prefixlen=a.network.prefixlen)  # fmt: skip
                except NetlinkError as exc:
                    # Someone else got there first: what we wanted is there (or gone).
                    if exc.code not in (errno.EEXIST, errno.EADDRNOTAVAIL):
                        raise
            case SetSysctl():
                await self.guarded(step.interface, ours=False)
                path = self.proc_sys / "net" / step.family / "conf" / step.interface / step.name
                path.write_text(f"{step.value}\n")
            case NftCommand():
                raise AssertionError("nft commands run together, in run_nft")
        return [step.line]


def run_nft(commands: list[NftCommand]) -> None:
    """All commands on our table in one nft transaction: all of them happen or none."""
    nft = nft_binary()
    if nft is None:
        raise ApplyError("nft is not installed")
    script = "".join(f"{c.body}\n" for c in commands)
    try:
        proc = subprocess.run([nft, "-f", "-"], input=script, capture_output=True, text=True,
                              timeout=30, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ApplyError(f"nft -f -: {exc}") from exc
    if proc.returncode != 0:
        raise ApplyError(f"nft -f -: {proc.stderr.strip()[:400]}")


def _why(step: Step, code: int) -> str:
    text = f"{os.strerror(code)} (errno {code})"
    if code == errno.EOPNOTSUPP and isinstance(step, CreateVti | CreateXfrm):
        module = (
            "xfrm_interface"
            if isinstance(step, CreateXfrm)
            else ("ip6_vti" if step.v6 else "ip_vti")
        )
        text += f": this kernel cannot make that kind of link (modprobe {module})"
    return text


async def execute(plan: Plan, alias: str, report: Report, *, proc_sys: Path = PROC_SYS) -> None:
    """Each step in order, `report`ing its line once done; raises ApplyError on the first
    that fails (earlier ones stay done: a run of apply afterwards finishes the job)."""
    ipr = rtnl_socket()
    try:
        runner = _Executor(ipr, plan, alias, proc_sys)
        nft: list[NftCommand] = []
        for step in plan.steps:
            if isinstance(step, NftCommand):
                nft.append(step)
                continue
            try:
                done = await runner.step(step)
            except NetlinkError as exc:
                raise ApplyError(f"{step.line}: {_why(step, exc.code)}") from exc
            except (OSError, ApplyError) as exc:
                raise ApplyError(f"{step.line}: {exc}") from exc
            for line in done:
                report(line)
        if nft:
            run_nft(nft)
            for command in nft:
                report(command.line)
    finally:
        ipr.close()
