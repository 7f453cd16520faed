"""doctor's checks of each tunnel: pure functions from (config, system view) to findings.

Each check names the pitfall, the evidence and the command that fixes it. A check that lacks
the evidence it needs says nothing (another check reports what could not be read).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator

from agent.config import Config, Tunnel, TunnelKind
from agent.doctor_view import Finding, Link, SystemView, XfrmPolicy, XfrmState, mark_matches

__all__ = ["TUNNEL_CHECKS", "Check", "esp_inner_mtu", "underlay_device"]

Check = Callable[[Config, SystemView], Iterator[Finding]]

# IFLA_INFO_KIND per config kind (IPv4 underlay, IPv6 underlay); a tap device is "tun".
_KINDS: dict[TunnelKind, tuple[str, str]] = {
    TunnelKind.VTI: ("vti", "vti6"),
    TunnelKind.XFRM: ("xfrm", "xfrm"),
    TunnelKind.GRE: ("gre", "ip6gre"),
    TunnelKind.TAP: ("tun", "tun"),
}
_ALSO_FINE = {"gre": {"gretap"}, "ip6gre": {"ip6gretap"}}
# ESP in tunnel mode with AES-CBC and HMAC-SHA-256-128 (the lab's and strongSwan's usual
# proposal): ESP header 8 (SPI, sequence), IV 16, ICV 16, then the payload plus 2 trailer
# bytes padded to the 16-byte cipher block. AES-GCM (IV 8, ICV 16, 4-byte padding) is smaller.
_ESP_FIXED = 8 + 16 + 16
_ESP_BLOCK = 16
_NAT_T = 8


def esp_inner_mtu(underlay_mtu: int, ipv6: bool, nat_t: bool = False) -> int:
    """The largest inner packet that still fits the underlay's MTU once ESP-encapsulated."""
    room = underlay_mtu - (40 if ipv6 else 20) - _ESP_FIXED - (_NAT_T if nat_t else 0)
    return (room // _ESP_BLOCK) * _ESP_BLOCK - 2


def _kind(t: Tunnel) -> str | None:
    pair = _KINDS.get(t.kind)
    if pair is None:
        return None
    return pair[1] if t.underlay.local.version == 6 else pair[0]


def _link(view: SystemView, t: Tunnel) -> Link | None:
    """The tunnel's interface when it exists and is of the configured kind."""
    link = view.links.get(t.interface)
    if link is None:
        return None
    want = _kind(t)
    if want is not None and link.kind != want and link.kind not in _ALSO_FINE.get(want, set()):
        return None
    return link


def underlay_device(view: SystemView, t: Tunnel) -> Link | None:
    """The interface holding the tunnel's underlay local address."""
    local = t.underlay.local
    for link in view.links.values():
        if any(a.ip == local for a in link.addresses):
            return link
    return None


def _create(t: Tunnel, view: SystemView) -> str:
    local, remote, name = t.underlay.local, t.underlay.remote, t.interface
    up = f" && ip link set {name} up"
    if t.kind is TunnelKind.VTI:
        ends = f"local {local} remote {remote}"
        return f"ip link add {name} type {_kind(t)} {ends} key {t.sa_mark}{up}"
    if t.kind is TunnelKind.XFRM:
        dev = underlay_device(view, t)
        on = dev.name if dev is not None else "<underlay interface>"
        return f"ip link add {name} type xfrm dev {on} if_id {t.if_id}{up}"
    if t.kind is TunnelKind.GRE:
        return f"ip link add {name} type {_kind(t)} local {local} remote {remote}{up}"
    return f"ip tuntap add mode tap name {name}{up}"


def interface(cfg: Config, view: SystemView) -> Iterator[Finding]:
    for t in cfg.tunnels:
        link = view.links.get(t.interface)
        want = _kind(t)
        if link is None:
            if want is None:
                yield Finding(
                    "interface", "error", t.name,
                    f"interface {t.interface} does not exist",
                    f"name an existing interface in the config (tunnel {t.name}: interface)",
                )  # fmt: skip
            else:
                yield Finding(
                    "interface", "error", t.name,
                    f"interface {t.interface} does not exist (config: kind {t.kind.value})",
                    _create(t, view),
                )  # fmt: skip
        elif want is not None and _link(view, t) is None:
            yield Finding(
                "interface", "error", t.name,
                f"{t.interface} is a {link.kind or 'plain'} interface, the config says "
                f"kind {t.kind.value}" + ("" if want == t.kind.value else f" ({want})"),
                f"ip link del {t.interface} && {_create(t, view)}",
            )  # fmt: skip


def _mark_fix(t: Tunnel) -> str:
    where = f"swanctl.conf, {t.ike.connection} children.{t.ike.child}" if t.ike else "the SA"
    if t.kind is TunnelKind.XFRM:
        return f"{where}: if_id_in = {t.if_id}, if_id_out = {t.if_id}; then swanctl --load-conns"
    return f"{where}: mark_in = {t.sa_mark}, mark_out = {t.sa_mark}; then swanctl --load-conns"


def _between(t: Tunnel, src: str, dst: str) -> bool:
    return {src, dst} == {str(t.underlay.local), str(t.underlay.remote)}


def _xfrm_entries(view: SystemView) -> Iterator[tuple[str, XfrmState | XfrmPolicy]]:
    """(description, entry) for each SA and policy template."""
    for sa in view.sas or ():
        yield f"SA {sa.src} -> {sa.dst} spi {sa.spi:#x}", sa
    for p in view.policies or ():
        yield f"policy dir {p.direction} (tmpl {p.src} -> {p.dst})", p


def _ties(entry: XfrmState | XfrmPolicy, t: Tunnel, key: int | None) -> bool:
    if t.kind is TunnelKind.XFRM:
        return entry.if_id == t.if_id
    return key is not None and mark_matches(entry.mark, entry.mark_mask, key)


def _others(cfg: Config, t: Tunnel) -> list[Tunnel]:
    return [o for o in cfg.tunnels if o is not t and o.kind in (TunnelKind.VTI, TunnelKind.XFRM)]


def _inbound(t: Tunnel, sa: XfrmState) -> bool:
    return sa.dst == str(t.underlay.local)


def _inbound_vti_sa(t: Tunnel, what: str, sa: XfrmState) -> Iterator[Finding]:
    """A VTI's inbound SA is looked up with the arriving packet's own mark (none).

    ip_vti applies its ikey only for the inbound policy check after decryption, which is why
    strongSwan puts mark_in on the inbound policy and not on the SA (mark_in_sa = no).
    """
    if sa.mark is None or mark_matches(sa.mark, sa.mark_mask, 0):
        return
    where = f"swanctl.conf, {t.ike.connection} children.{t.ike.child}" if t.ike else "the SA"
    yield Finding(
        "sa-mark", "warning", t.name,
        f"inbound {what} has mark {sa.mark:#x}/{(sa.mark_mask or 0xFFFFFFFF):#x}: arriving "
        f"ESP carries no mark, so the kernel finds no SA for it and {t.interface} receives "
        "nothing (unless something marks ESP before IPsec input)",
        f"{where}: mark_in_sa = no (the default); then swanctl --load-conns",
    )  # fmt: skip


def sa_mark(cfg: Config, view: SystemView) -> Iterator[Finding]:
    """VTI key = the mark of its SAs and policies; XFRM if_id = theirs."""
    for t in cfg.tunnels:
        if t.kind not in (TunnelKind.VTI, TunnelKind.XFRM):
            continue
        link = _link(view, t)
        if link is None:
            continue
        if t.kind is TunnelKind.VTI and (link.ikey, link.okey) != (t.sa_mark, t.sa_mark):
            yield Finding(
                "sa-mark", "error", t.name,
                f"{t.interface} has ikey {link.ikey} okey {link.okey}, the config's key is "
                f"{t.sa_mark}: the kernel hands a VTI only the packets of SAs with its key "
                "as their mark",
                f"ip link set dev {t.interface} type {_kind(t)} key {t.sa_mark}",
            )  # fmt: skip
        if t.kind is TunnelKind.XFRM and link.if_id != t.if_id:
            yield Finding(
                "sa-mark", "error", t.name,
                f"{t.interface} has if_id {link.if_id}, the config says {t.if_id}",
                f"ip link set dev {t.interface} type xfrm if_id {t.if_id}",
            )  # fmt: skip
        if view.sas is None or view.policies is None:
            continue
        seen = False
        # Against the config's key, not the link's: a wrong VTI key is one finding above,
        # not one more per SA.
        key = t.sa_mark
        for what, entry in _xfrm_entries(view):
            if not _between(t, entry.src, entry.dst):
                continue
            seen = True
            if t.kind is TunnelKind.VTI and isinstance(entry, XfrmState) and _inbound(t, entry):
                yield from _inbound_vti_sa(t, what, entry)
                continue
            if _ties(entry, t, key) or any(
                _between(o, entry.src, entry.dst) and _ties(entry, o, o.sa_mark)
                for o in _others(cfg, t)
            ):
                continue
            if t.kind is TunnelKind.XFRM:
                has = f"if_id {entry.if_id}" if entry.if_id else "no if_id"
                need = f"{t.interface}'s if_id {t.if_id}"
            else:
                has = (
                    f"mark {entry.mark:#x}/{(entry.mark_mask or 0xFFFFFFFF):#x}"
                    if entry.mark is not None
                    else "no mark"
                )
                need = f"mark {key} (the key of {t.interface})"
            yield Finding(
                "sa-mark", "error", t.name,
                f"{what} has {has}, not {need}: its traffic never passes {t.interface}",
                _mark_fix(t),
            )  # fmt: skip
        if not seen:
            yield Finding(
                "sa-mark", "info", t.name,
                f"no XFRM SA or policy between {t.underlay.local} and {t.underlay.remote}: "
                "nothing to compare the key with (is the tunnel up?)",
            )  # fmt: skip


def sa_endpoints(cfg: Config, view: SystemView) -> Iterator[Finding]:
    """The VTI's outer addresses are the config's, and its SAs run between them."""
    for t in cfg.tunnels:
        if t.kind not in (TunnelKind.VTI, TunnelKind.XFRM):
            continue
        link = _link(view, t)
        if link is None:
            continue
        want = (str(t.underlay.local), str(t.underlay.remote))
        wild = {None, "0.0.0.0", "::"}
        # A VTI with no endpoints at all takes any; only a set, different one is wrong.
        wildcard = link.local in wild and link.remote in wild
        if t.kind is TunnelKind.VTI and (link.local, link.remote) != want and not wildcard:
            yield Finding(
                "sa-endpoints", "error", t.name,
                f"{t.interface} runs {link.local} -> {link.remote}, the config's underlay "
                f"is {want[0]} -> {want[1]}",
                f"ip link set dev {t.interface} type {_kind(t)} local {want[0]} "
                f"remote {want[1]} key {t.sa_mark}",
            )  # fmt: skip
        for what, entry in _xfrm_entries(view):
            if not _ties(entry, t, t.sa_mark) or _between(t, entry.src, entry.dst):
                continue
            if t.kind is TunnelKind.VTI and (entry.mark_mask == 0 or not entry.mark):
                continue  # a mark of 0 (or mask 0) ties the entry to no VTI in particular
            conn = t.ike.connection if t.ike else t.name
            yield Finding(
                "sa-endpoints", "error", t.name,
                f"{what} carries {t.interface}'s traffic but the tunnel runs {want[0]} <-> "
                f"{want[1]}",
                f"swanctl.conf, connection {conn}: local_addrs = {want[0]}, "
                f"remote_addrs = {want[1]}",
            )  # fmt: skip


def _family(t: Tunnel) -> str:
    return "ipv6" if t.inner.local.version == 6 else "ipv4"


def disable_policy(cfg: Config, view: SystemView) -> Iterator[Finding]:
    # Only VTIs: an XFRM interface's policy check goes by if_id, and strongSwan documents
    # disable_policy for VTIs alone.
    # Whatever the interface's kind: a VTI made in its place starts with the same sysctl.
    for t in cfg.tunnels:
        if t.kind is not TunnelKind.VTI or t.interface not in view.links:
            continue
        fam = _family(t)
        own = view.sysctls.get(f"net.{fam}.conf.{t.interface}.disable_policy")
        every = view.sysctls.get(f"net.{fam}.conf.all.disable_policy", 0)
        if own == 0 and not every:
            yield Finding(
                "disable-policy", "error", t.interface,
                f"net.{fam}.conf.{t.interface}.disable_policy is 0: the kernel checks what "
                f"{t.interface} decapsulated against the IPsec policies once more, without "
                "the VTI's mark, and drops it",
                f"sysctl -w net.{fam}.conf.{t.interface}.disable_policy=1 "
                "(and persist it in /etc/sysctl.d/)",
            )  # fmt: skip


def rp_filter(cfg: Config, view: SystemView) -> Iterator[Finding]:
    every = view.sysctls.get("net.ipv4.conf.all.rp_filter", 0)
    done: set[str] = set()
    for t in cfg.tunnels:
        places = []
        if t.inner.local.version == 4 and t.interface in view.links:
            places.append((t.interface, "error", "what arrives over a tunnel that is not the "
                           "current route back to its source: a standby's probes and BGP, and "
                           "the far side's traffic during a failover"))  # fmt: skip
        under = underlay_device(view, t)
        if under is not None and t.underlay.local.version == 4:
            places.append((under.name, "warning", f"ESP from {t.underlay.remote} whenever "
                           "the route back to it leaves by another interface"))  # fmt: skip
        for name, severity, drops in places:
            own = view.sysctls.get(f"net.ipv4.conf.{name}.rp_filter")
            if own is None or name in done:
                continue
            done.add(name)
            # The kernel uses the larger of conf.all and conf.<if>: 2 (loose) beats all=1.
            if max(own, every) != 1:
                continue
            origin = "" if own == 1 else " (from net.ipv4.conf.all.rp_filter=1)"
            yield Finding(
                "rp-filter", severity, name,  # type: ignore[arg-type]
                f"strict reverse-path filtering on {name}{origin} drops {drops}",
                f"sysctl -w net.ipv4.conf.{name}.rp_filter=2 (loose; persist in /etc/sysctl.d/)",
            )  # fmt: skip


def source_address(cfg: Config, view: SystemView) -> Iterator[Finding]:
    for t in cfg.tunnels:
        link = view.links.get(t.interface)
        if link is None:
            continue
        want = ipaddress.ip_interface(t.inner.local)
        if want in link.addresses:
            continue
        same_ip = [a for a in link.addresses if a.ip == want.ip]
        if same_ip:
            yield Finding(
                "source-address", "warning", t.name,
                f"{t.interface} has {same_ip[0]}, the config says {want}",
                f"ip addr del {same_ip[0]} dev {t.interface} && "
                f"ip addr add {want} dev {t.interface}",
            )  # fmt: skip
        else:
            yield Finding(
                "source-address", "error", t.name,
                f"{t.interface} lacks its inner address {want}: probes, BGP and whatever this "
                "router sends into the tunnel leave with another source, or not at all",
                f"ip addr add {want} dev {t.interface}",
            )  # fmt: skip


def mtu(cfg: Config, view: SystemView) -> Iterator[Finding]:
    for t in cfg.tunnels:
        link = view.links.get(t.interface)
        under = underlay_device(view, t)
        if t.kind not in (TunnelKind.VTI, TunnelKind.XFRM) or link is None or under is None:
            continue
        ipv6 = t.underlay.local.version == 6
        bound = esp_inner_mtu(under.mtu, ipv6)
        if link.mtu <= bound:
            continue
        outer = 40 if ipv6 else 20
        yield Finding(
            "mtu", "warning", t.name,
            f"{t.interface} mtu {link.mtu} exceeds {bound}, the largest packet that fits "
            f"{under.name}'s mtu {under.mtu} after ESP tunnel mode (outer IPv{6 if ipv6 else 4} "
            f"{outer} + ESP 8 + IV 16 + ICV 16 + trailer, padded to 16 bytes, for AES-CBC/"
            f"SHA-256; NAT-T adds 8: {esp_inner_mtu(under.mtu, ipv6, nat_t=True)}): larger "
            "packets are fragmented after encryption or lost",
            f"ip link set dev {t.interface} mtu {bound}",
        )  # fmt: skip


def bgp_neighbor(cfg: Config, view: SystemView) -> Iterator[Finding]:
    if cfg.bgp is None:
        return
    for t in cfg.tunnels:
        link = view.links.get(t.interface)
        if link is None or not link.addresses:
            continue
        neighbor = cfg.neighbor_of(t)
        if any(neighbor in a.network for a in link.addresses if a.version == neighbor.version):
            continue
        nets = ", ".join(str(a) for a in link.addresses)
        yield Finding(
            "bgp-neighbor", "error", t.name,
            f"BGP neighbor {neighbor} is on none of {t.interface}'s subnets ({nets}): the "
            "session would leave by another interface, not through the tunnel",
            f"set tunnel {t.name}'s bgp_neighbor (or inner.peer) to the far end's inner "
            f"address on {t.interface}",
        )  # fmt: skip


TUNNEL_CHECKS: tuple[tuple[str, Check], ...] = (
    ("interface", interface),
    ("sa-mark", sa_mark),
    ("sa-endpoints", sa_endpoints),
    ("disable-policy", disable_policy),
    ("rp-filter", rp_filter),
    ("source-address", source_address),
    ("mtu", mtu),
    ("bgp-neighbor", bgp_neighbor),
)
