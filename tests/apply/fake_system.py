"""A fake kernel for apply's planner: SystemFacts changed the way each Step changes the real
system (as checked against the kernel in test_apply_netns.py and the VM lab)."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable

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
    NftFacts,
    SetMtu,
    SetSysctl,
    SetUp,
    SnatRule,
    Step,
    SystemFacts,
)

__all__ = ["carry_out"]

_RULE = re.compile(
    r'add rule inet \S+ postrouting oifname "(?P<oif>[^"]+)" ip6? saddr (?P<saddr>\S+) '
    r"ip6? daddr != (?P<net>\S+) snat ip6? to (?P<to>\S+)$"
)
_SYSCTLS = ("disable_policy", "rp_filter")


def _nft(have: NftFacts, body: str) -> NftFacts:
    if body.startswith("delete table"):
        return NftFacts()
    if body.startswith("add table"):
        return NftFacts(table=True)
    if body.startswith("add chain"):
        return dataclasses.replace(have, chain_ok=True)
    rules = dict(have.rules)
    if body.startswith("delete rule"):
        del rules[int(body.rsplit(" ", 1)[1])]
    else:
        m = _RULE.match(body)
        assert m is not None, body
        net = ipaddress.ip_network(m["net"])
        inner = ipaddress.ip_interface(f"{m['saddr']}/{net.prefixlen}")
        rules[max(rules, default=1) + 1] = SnatRule(m["oif"], inner, ipaddress.ip_address(m["to"]))
    return dataclasses.replace(have, rules=rules)


def _new_link(
    links: dict[str, LinkFacts], name: str, kind: str, mtu: int, **tunnel: object
) -> LinkFacts:
    index = max((lk.index for lk in links.values()), default=1) + 1
    return LinkFacts(name=name, index=index, kind=kind, mtu=mtu, **tunnel)  # type: ignore[arg-type]


def carry_out(facts: SystemFacts, steps: Iterable[Step]) -> SystemFacts:
    links = dict(facts.links)
    sysctls = dict(facts.sysctls)
    nft = facts.nft
    for step in steps:
        name = getattr(step, "interface", None)
        link = links.get(name) if name is not None else None
        match step:
            case CreateVti():
                assert link is None
                # The kernel's default: the underlay's 1500 less the outer header.
                links[step.interface] = _new_link(
                    links,
                    step.interface,
                    "vti6" if step.v6 else "vti",
                    1480 if not step.v6 else 1428,
                    local=step.local,
                    remote=step.remote,
                    ikey=step.key,
                    okey=step.key,
                )
                for fam in ("ipv4", "ipv6"):
                    for key in _SYSCTLS:
                        default = sysctls.get(f"net.{fam}.conf.default.{key}")
                        if default is not None:
                            sysctls[f"net.{fam}.conf.{step.interface}.{key}"] = default
            case CreateXfrm():
                assert link is None
                links[step.interface] = _new_link(
                    links,
                    step.interface,
                    "xfrm",
                    1500,
                    if_id=step.if_id,
                    link=links[step.device].index,
                )
                for fam in ("ipv4", "ipv6"):
                    for key in _SYSCTLS:
                        default = sysctls.get(f"net.{fam}.conf.default.{key}")
                        if default is not None:
                            sysctls[f"net.{fam}.conf.{step.interface}.{key}"] = default
            case ChangeVti():
                assert link is not None
                links[step.interface] = dataclasses.replace(
                    link, local=step.local, remote=step.remote, ikey=step.key, okey=step.key
                )
            case ChangeXfrm():
                assert link is not None
                links[step.interface] = dataclasses.replace(
                    link, if_id=step.if_id, link=links[step.device].index
                )
            case DeleteLink():
                assert link is not None
                del links[step.interface]
                for key in [k for k in sysctls if k.split(".")[3] == step.interface]:
                    del sysctls[key]
            case MarkOwned():
                assert link is not None
                links[step.interface] = dataclasses.replace(link, alias=step.alias)
            case SetMtu():
                assert link is not None
                links[step.interface] = dataclasses.replace(link, mtu=step.mtu)
            case SetUp():
                assert link is not None
                links[step.interface] = dataclasses.replace(link, up=True)
            case AddAddress():
                assert link is not None
                links[step.interface] = dataclasses.replace(
                    link, addresses=link.addresses | {step.address}
                )
            case DeleteAddress():
                assert link is not None
                links[step.interface] = dataclasses.replace(
                    link, addresses=link.addresses - {step.address}
                )
            case SetSysctl():
                assert link is not None
                sysctls[f"net.{step.family}.conf.{step.interface}.{step.name}"] = step.value
            case NftCommand():
                assert nft is not None
                nft = _nft(nft, step.body)
    return SystemFacts(links=links, sysctls=sysctls, nft=nft, nft_error=facts.nft_error)
