"""`apply`'s planner: the config and the system's facts in, the steps that close the gap out.

Pure. Rules: only configured interfaces and the agent's own nft table are touched; a link
that differs in kind or tunnel parameters is changed or re-created only when it carries our
alias (apply created it), otherwise it is a Refusal; what already matches gives no step, so
a second run plans nothing.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

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
    Plan,
    Refusal,
    SetMtu,
    SetSysctl,
    SetUp,
    Step,
    SystemFacts,
    owner_alias,
)
from agent.apply_nft import desired_rules, nft_commands, table_name
from agent.config import Config, Tunnel, TunnelKind
from agent.doctor_checks import esp_inner_mtu

__all__ = ["CREATABLE", "kernel_kind", "plan"]

# The kinds apply creates; gre and tap interfaces it only configures once they exist.
CREATABLE = frozenset({TunnelKind.VTI, TunnelKind.XFRM})
_KINDS = {
    TunnelKind.VTI: ("vti", "vti6"),
    TunnelKind.XFRM: ("xfrm", "xfrm"),
    TunnelKind.GRE: ("gre", "ip6gre"),
    TunnelKind.TAP: ("tun", "tun"),
}
# rp_filter on a tunnel: 2 (loose), not 0. The kernel applies max(conf.all, conf.<if>), so
# 0 on the tunnel still means strict under all=1; 2 is loose whatever conf.all says, and
# loose still drops what has no route back at all.
RP_FILTER_LOOSE = 2


def kernel_kind(t: Tunnel) -> str | None:
    """The IFLA_INFO_KIND of this tunnel's interface; None for kind mark (no own interface)."""
    pair = _KINDS.get(t.kind)
    if pair is None:
        return None
    return pair[1] if t.underlay.local.version == 6 else pair[0]


@dataclass
class _Tunnel:
    """One tunnel's part of the plan while it is being worked out."""

    steps: list[Step] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)


def _device(t: Tunnel, facts: SystemFacts) -> LinkFacts | None:
    """The underlay interface: the config's, else the one holding the underlay address."""
    if t.underlay.device is not None:
        return facts.links.get(t.underlay.device)
    for link in sorted(facts.links.values(), key=lambda lk: lk.name):
        if any(a.ip == t.underlay.local for a in link.addresses):
            return link
    return None


def _tunnel_differs(t: Tunnel, link: LinkFacts, device: LinkFacts | None) -> str | None:
    """How the link's tunnel parameters differ from the config's, or None."""
    if t.kind is TunnelKind.VTI:
        want = (str(t.underlay.local), str(t.underlay.remote), t.sa_mark, t.sa_mark)
        have = (link.local, link.remote, link.ikey, link.okey)
        if want != have:
            return (
                f"local {have[0]} remote {have[1]} ikey {have[2]} okey {have[3]}, the config "
                f"says local {want[0]} remote {want[1]} key {t.sa_mark}"
            )
    if t.kind is TunnelKind.XFRM:
        dev = device.index if device is not None else None
        if (link.if_id, link.link) != (t.if_id, dev):
            return f"if_id {link.if_id} on ifindex {link.link}, the config says if_id {t.if_id}" + (
                f" on {device.name} (ifindex {device.index})" if device is not None else ""
            )
    return None


def _create(t: Tunnel, device: LinkFacts | None) -> CreateVti | CreateXfrm:
    if t.kind is TunnelKind.VTI:
        assert t.sa_mark is not None  # the config requires key or mark for kind vti
        v6 = t.underlay.local.version == 6
        return CreateVti(t.interface, str(t.underlay.local), str(t.underlay.remote), t.sa_mark, v6)
    # Checked by the config (if_id required) and by the caller (device known).
    assert t.if_id is not None
    assert device is not None
    return CreateXfrm(t.interface, t.if_id, device.name)


def _change(t: Tunnel, device: LinkFacts | None) -> ChangeVti | ChangeXfrm:
    made = _create(t, device)
    if isinstance(made, CreateVti):
        return ChangeVti(made.interface, made.local, made.remote, made.key, made.v6)
    return ChangeXfrm(made.interface, made.if_id, made.device)


def _link_steps(cfg: Config, t: Tunnel, facts: SystemFacts, out: _Tunnel) -> LinkFacts | None:
    """Create, re-create or change the tunnel link; the link as it then is (None: created)."""
    want = kernel_kind(t)
    link = facts.links.get(t.interface)
    device = _device(t, facts)
    ours = link is not None and link.alias == owner_alias(cfg.agent_id)
    if t.kind is TunnelKind.XFRM and device is None:
        named = t.underlay.device or f"no interface holds {t.underlay.local}"
        out.refusals.append(Refusal(t.name, f"the underlay device of {t.interface} is "
                            f"unknown ({named}): set underlay.device"))  # fmt: skip
        return link
    if link is None:
        if t.kind not in CREATABLE:
            why = "apply creates vti and xfrm interfaces only; create it, then run apply"
            out.refusals.append(Refusal(t.name, f"{t.interface} does not exist: {why}"))
            return None
        out.steps += [_create(t, device), MarkOwned(t.interface, owner_alias(cfg.agent_id))]
        return None
    not_ours = (
        f"apply did not create it (its alias is {link.alias!r}, not "
        f"{owner_alias(cfg.agent_id)!r}), so it leaves it as it is"
    )
    if link.kind != want:
        what = f"{t.interface} is a {link.kind or 'plain'} interface, the config says {want}"
        if not ours or t.kind not in CREATABLE:
            why = not_ours if not ours else "apply cannot re-create that kind"
            out.refusals.append(Refusal(t.name, f"{what}: {why}"))
            return link
        out.steps += [
            DeleteLink(t.interface),
            _create(t, device),
            MarkOwned(t.interface, owner_alias(cfg.agent_id)),
        ]
        return None
    differs = _tunnel_differs(t, link, device)
    if differs is not None:
        if not ours:
            out.refusals.append(Refusal(t.name, f"{t.interface} has {differs}: {not_ours}"))
            return link
        out.steps.append(_change(t, device))
    return link


def _mtu(t: Tunnel, link: LinkFacts | None, facts: SystemFacts) -> int | None:
    """The MTU to set, or None to leave it."""
    if t.mtu is not None:
        return None if link is not None and link.mtu == t.mtu else t.mtu
    device = _device(t, facts)
    if device is None:
        return None
    bound = esp_inner_mtu(device.mtu, t.underlay.local.version == 6)
    # A new link's MTU is the kernel's default, unknown here: set the bound it must meet.
    return bound if link is None or link.mtu > bound else None


def _sysctl(
    facts: SystemFacts, family: str, interface: str, name: str, created: bool
) -> int | None:
    # A new interface starts with conf.default's values.
    conf = "default" if created else interface
    return facts.sysctls.get(f"net.{family}.conf.{conf}.{name}")


def _families(t: Tunnel) -> list[str]:
    inner = ["ipv4" if t.inner.local.version == 4 else "ipv6"]
    return inner + (["ipv6"] if t.inner6 is not None else [])


def _sysctl_steps(t: Tunnel, link: LinkFacts | None, facts: SystemFacts) -> list[Step]:
    created = link is None
    steps: list[Step] = []
    for family in _families(t):
        # The SA decides what enters the tunnel: no second IPsec policy check on what left it.
        # Unreadable (IPv6 off on the link) is left alone: there is nothing to write to.
        value = _sysctl(facts, family, t.interface, "disable_policy", created)
        if value is not None and value != 1:
            steps.append(SetSysctl(t.interface, family, "disable_policy", 1))
    if "ipv4" in _families(t):
        every = facts.sysctls.get("net.ipv4.conf.all.rp_filter", 0)
        own = _sysctl(facts, "ipv4", t.interface, "rp_filter", created)
        if own is not None and max(own, every) == 1:
            steps.append(SetSysctl(t.interface, "ipv4", "rp_filter", RP_FILTER_LOOSE))
    return steps


def _address_steps(t: Tunnel, link: LinkFacts | None) -> list[Step]:
    have = link.addresses if link is not None else frozenset()
    steps: list[Step] = []
    for inner in (t.inner, t.inner6):
        if inner is None:
            continue
        want = ipaddress.ip_interface(inner.local)
        if want in have:
            continue
        other_length = sorted((a for a in have if a.ip == want.ip), key=str)
        steps += [DeleteAddress(t.interface, a) for a in other_length]
        steps.append(AddAddress(t.interface, want))
    return steps


def _tunnel_plan(cfg: Config, t: Tunnel, facts: SystemFacts) -> _Tunnel:
    out = _Tunnel()
    link = _link_steps(cfg, t, facts, out)
    if out.refusals:
        return out
    mtu = _mtu(t, link, facts)
    if mtu is not None:
        out.steps.append(SetMtu(t.interface, mtu))
    # Sysctls and addresses before the link comes up: its first packet meets them set.
    out.steps += _sysctl_steps(t, link, facts)
    out.steps += _address_steps(t, link)
    if link is None or not link.up:
        out.steps.append(SetUp(t.interface))
    return out


def plan(cfg: Config, facts: SystemFacts) -> Plan:
    steps: list[Step] = []
    refusals: list[Refusal] = []
    notes: list[str] = []
    kinds: dict[str, str] = {}
    for t in cfg.tunnels:
        kind = kernel_kind(t)
        if kind is None:
            notes.append(f"{t.name}: kind {t.kind.value} has no interface of its own: skipped")
            continue
        part = _tunnel_plan(cfg, t, facts)
        steps += part.steps
        refusals += part.refusals
        kinds[t.interface] = kind
    want = desired_rules(cfg)
    if facts.nft is None:
        if want:
            refusals.append(Refusal("snat", f"cannot read nftables: {facts.nft_error}"))
    else:
        steps += nft_commands(table_name(cfg.agent_id), want, facts.nft)
    return Plan(tuple(steps), tuple(refusals), tuple(notes), kinds)
