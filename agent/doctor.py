"""`vti-failover doctor`: the live system against the config and route-based IPsec's pitfalls.

`diagnose(cfg, view)` is pure: the findings for a SystemView, which `doctor_collect` reads
from the system (or a test builds by hand). Host-wide checks live here, per-tunnel ones in
`doctor_checks`. Exit 0 when clean, 1 when any error or warning was found.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TextIO

from agent.config import Config, Source, TunnelKind
from agent.doctor_checks import TUNNEL_CHECKS, Check
from agent.doctor_view import Finding, SystemView

__all__ = ["CHECKS", "diagnose", "exit_status", "render_json", "render_text"]

STRONGSWAN_TABLE = 220
RT_PROTOS_FILE = "/etc/iproute2/rt_protos.d/vti-failover.conf"


def xfrm(cfg: Config, view: SystemView) -> Iterator[Finding]:
    del cfg
    if view.sas is None or view.policies is None:
        yield Finding(
            "xfrm", "info", "system",
            f"cannot read the kernel's XFRM SAs and policies ({view.xfrm_error}): marks, "
            "if_ids and SA endpoints are not checked",
            "run doctor as root (CAP_NET_ADMIN)",
        )  # fmt: skip


def table_220(cfg: Config, view: SystemView) -> Iterator[Finding]:
    tables = {cfg.policy.table, *(t.table for t in cfg.tunnels if t.table is not None)}
    if STRONGSWAN_TABLE not in view.rule_tables or STRONGSWAN_TABLE in tables:
        return
    ours = [
        *cfg.remote_prefixes.static,
        *cfg.site_prefixes,
        *(t.inner.local.network for t in cfg.tunnels),
    ]
    devices = {t.interface for t in cfg.tunnels}
    for route in view.routes_220:
        competes = (
            cfg.remote_prefixes.learned_from_bgp
            or route.dev in devices
            or any(route.dst.version == p.version and route.dst.overlaps(p) for p in ours)
        )
        if not competes:
            continue
        via = f" dev {route.dev}" if route.dev else ""
        yield Finding(
            "table-220", "error", "system",
            f"strongSwan's route {route.dst}{via} in table 220 is looked up before the main "
            "table (ip rule 220) and wins over the agent's routes: failover cannot move "
            "that traffic",
            "set charon { install_routes = no } in strongswan.conf, restart charon, then "
            "ip route flush table 220",
        )  # fmt: skip


def vici(cfg: Config, view: SystemView) -> Iterator[Finding]:
    if view.vici_error is None or not any(Source.VICI in t.sources for t in cfg.tunnels):
        return
    yield Finding(
        "vici", "error", "system",
        f"charon's VICI socket does not answer ({view.vici_error}): the vici source is blind",
        "start charon (systemctl start strongswan), or set vici.socket to its "
        "charon.plugins.vici.socket",
    )  # fmt: skip


def _modules_needed(cfg: Config, view: SystemView) -> list[tuple[str, str]]:
    kinds = {link.kind for link in view.links.values()}
    need: dict[str, list[str]] = {}
    for t in cfg.tunnels:
        v6 = t.underlay.local.version == 6
        # An interface of the kind is proof enough that its module is there.
        if t.kind is TunnelKind.VTI and ("vti6" if v6 else "vti") not in kinds:
            need.setdefault("ip6_vti" if v6 else "ip_vti", []).append(t.interface)
        if t.kind is TunnelKind.XFRM and "xfrm" not in kinds:
            need.setdefault("xfrm_interface", []).append(t.interface)
        need.setdefault("esp6" if v6 else "esp4", [])
    if view.sas:
        # So is an SA in the kernel for ESP.
        need.pop("esp4", None)
        need.pop("esp6", None)
    return sorted((m, ", ".join(names) if names else "kernel ESP") for m, names in need.items())


def modules(cfg: Config, view: SystemView) -> Iterator[Finding]:
    for module, why in _modules_needed(cfg, view):
        if module in view.modules:
            continue
        unsure = "" if view.builtin_known else " (modules.builtin unreadable: it may be built in)"
        yield Finding(
            "modules", "error" if view.builtin_known else "warning", "system",
            f"kernel module {module} is neither loaded nor built in{unsure}; needed for {why}",
            f"modprobe {module} && echo {module} >> /etc/modules-load.d/vti-failover.conf",
        )  # fmt: skip


def rt_protos(cfg: Config, view: SystemView) -> Iterator[Finding]:
    if view.rt_proto_name is not None:
        return
    proto = cfg.netlink.route_protocol
    yield Finding(
        "rt-protos", "warning", "system",
        f"route protocol {proto} has no name in rt_protos: `ip route` shows the agent's "
        f"routes as 'proto {proto}', and nobody reading it knows whose they are",
        f'echo "{proto} vti-failover" > {RT_PROTOS_FILE}',
    )  # fmt: skip


def snat(cfg: Config, view: SystemView) -> Iterator[Finding]:
    if not cfg.remote_prefixes.static and not cfg.remote_prefixes.learned_from_bgp:
        return
    if view.snat_interfaces is None:
        yield Finding(
            "snat", "info", "system",
            f"cannot tell whether traffic into the tunnels is SNATed: {view.snat_unknown}",
        )  # fmt: skip
        return
    if "*" in view.snat_interfaces:
        return
    remote = ", ".join(str(p) for p in cfg.remote_prefixes.static) or "the learned prefixes"
    site = (
        f"<this router's address in {cfg.site_prefixes[0]}>"
        if cfg.site_prefixes
        else "<this router's site address>"
    )
    for t in cfg.tunnels:
        if t.interface in view.snat_interfaces:
            continue
        yield Finding(
            "snat", "info", t.name,
            f"no nftables SNAT rule for {t.interface}: what this router itself sends to "
            f"{remote} leaves from {t.inner.local.ip}, which the far side's selectors or "
            "firewall may refuse",
            f'nft add rule ip nat postrouting oifname "{t.interface}" snat to {site} '
            "(in a table ip nat with a postrouting nat chain)",
        )  # fmt: skip


CHECKS: tuple[tuple[str, Check], ...] = (
    ("xfrm", xfrm),
    *TUNNEL_CHECKS,
    ("snat", snat),
    ("table-220", table_220),
    ("vici", vici),
    ("modules", modules),
    ("rt-protos", rt_protos),
)


def diagnose(cfg: Config, view: SystemView) -> list[Finding]:
    return [f for _name, check in CHECKS for f in check(cfg, view)]


def exit_status(findings: list[Finding]) -> int:
    return 1 if any(f.severity != "info" for f in findings) else 0


def render_text(findings: list[Finding], out: TextIO) -> None:
    for f in findings:
        fix = f"; fix: {f.fix}" if f.fix else ""
        out.write(f"{f.severity}: {f.subject}: [{f.check}] {f.message}{fix}\n")
    counts = {s: sum(f.severity == s for f in findings) for s in ("error", "warning", "info")}
    if not counts["error"] and not counts["warning"]:
        out.write(f"doctor: no problems found ({counts['info']} note(s))\n")
    else:
        out.write(
            f"doctor: {counts['error']} error(s), {counts['warning']} warning(s), "
            f"{counts['info']} note(s)\n"
        )


def render_json(findings: list[Finding], out: TextIO) -> None:
    body = {
        "findings": [
            {
                "check": f.check,
                "severity": f.severity,
                "subject": f.subject,
                "message": f.message,
                "fix": f.fix,
            }
            for f in findings
        ],
    }
    out.write(json.dumps(body, indent=2) + "\n")
