"""doctor's checks on hand-built system views: each pitfall found when present, silent when fixed.

One clean view of a two-tunnel site (a VTI and an XFRM interface, both up with their SAs and
policies) gives no finding; each case breaks one thing and expects exactly its finding.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from io import StringIO
from typing import Any

import pytest

from agent.config import Config
from agent.doctor import diagnose, exit_status, render_json, render_text
from agent.doctor_checks import esp_inner_mtu
from agent.doctor_view import Finding, Link, Route, SystemView, XfrmPolicy, XfrmState

RAW: dict[str, Any] = {
    "agent_id": "site-a",
    "tunnels": [
        {
            "name": "tun1", "interface": "vti1", "kind": "vti", "key": 1,
            "underlay": {"local": "192.0.2.1", "remote": "192.0.2.2"},
            "ike": {"connection": "tun1", "child": "tun1"},
            "inner": {"local": "169.254.1.1/30", "peer": "169.254.1.2"},
            "sources": ["vici", "probe", "link"],
        },
        {
            "name": "tun2", "interface": "xfrm2", "kind": "xfrm", "if_id": 2, "role": "backup",
            "underlay": {"local": "198.51.100.1", "remote": "198.51.100.2"},
            "inner": {"local": "169.254.2.1/30", "peer": "169.254.2.2"},
            "sources": ["xfrm", "probe"],
        },
    ],
    "site_prefixes": ["10.1.0.0/24"],
    "remote_prefixes": {"static": ["10.2.0.0/24"]},
    "bgp": {"local_as": 65001, "peer_as": 65002, "router_id": "10.1.0.1"},
}  # fmt: skip
CFG = Config.model_validate(RAW)


def addr(text: str) -> ipaddress.IPv4Interface:
    return ipaddress.IPv4Interface(text)


LINKS = {
    "isp1": Link("isp1", "veth", 1500, (addr("192.0.2.1/30"),)),
    "isp2": Link("isp2", "veth", 1500, (addr("198.51.100.1/30"),)),
    "vti1": Link("vti1", "vti", 1400, (addr("169.254.1.1/30"),), local="192.0.2.1",
                 remote="192.0.2.2", ikey=1, okey=1),
    "xfrm2": Link("xfrm2", "xfrm", 1400, (addr("169.254.2.1/30"),), if_id=2),
}  # fmt: skip
FULL = 0xFFFFFFFF
SAS = (
    XfrmState("192.0.2.1", "192.0.2.2", 0x100, mark=1, mark_mask=FULL),
    # strongSwan leaves mark_in off the inbound SA (mark_in_sa = no): ip_vti looks it up with
    # the arriving packet's own mark and applies its ikey only to the policy check after.
    XfrmState("192.0.2.2", "192.0.2.1", 0x101),
    XfrmState("198.51.100.1", "198.51.100.2", 0x200, if_id=2),
    XfrmState("198.51.100.2", "198.51.100.1", 0x201, if_id=2),
)
POLICIES = (
    XfrmPolicy("out", "192.0.2.1", "192.0.2.2", mark=1, mark_mask=FULL),
    XfrmPolicy("in", "192.0.2.2", "192.0.2.1", mark=1, mark_mask=FULL),
    XfrmPolicy("fwd", "192.0.2.2", "192.0.2.1", mark=1, mark_mask=FULL),
    XfrmPolicy("out", "198.51.100.1", "198.51.100.2", if_id=2),
    XfrmPolicy("in", "198.51.100.2", "198.51.100.1", if_id=2),
)
SYSCTLS = {
    "net.ipv4.conf.all.rp_filter": 0,
    "net.ipv4.conf.all.disable_policy": 0,
    "net.ipv4.conf.vti1.rp_filter": 0,
    "net.ipv4.conf.vti1.disable_policy": 1,
    "net.ipv4.conf.xfrm2.rp_filter": 2,
    "net.ipv4.conf.xfrm2.disable_policy": 0,
    "net.ipv4.conf.isp1.rp_filter": 2,
    "net.ipv4.conf.isp2.rp_filter": 0,
}
CLEAN = SystemView(
    links=LINKS,
    sysctls=SYSCTLS,
    sas=SAS,
    policies=POLICIES,
    rule_tables=frozenset({220, 253, 254, 255}),
    routes_220=(Route(220, ipaddress.ip_network("192.168.99.0/24"), "lan0"),),
    modules=frozenset({"esp4", "ip_vti", "xfrm_interface"}),
    rt_proto_name="vti-failover",
    snat_interfaces=frozenset({"vti1", "xfrm2"}),
)


def broken(**changes: Any) -> SystemView:
    return dataclasses.replace(CLEAN, **changes)


def link(name: str, **changes: Any) -> dict[str, Link]:
    return {**LINKS, name: dataclasses.replace(LINKS[name], **changes)}


def sysctl(name: str, value: int) -> dict[str, int]:
    return {**SYSCTLS, f"net.ipv4.conf.{name}": value}


def found(view: SystemView, cfg: Config = CFG) -> list[tuple[str, str, str]]:
    return [(f.check, f.severity, f.subject) for f in diagnose(cfg, view)]


def test_the_clean_view_has_no_finding() -> None:
    assert diagnose(CFG, CLEAN) == []


# (case, view, the findings it must give: (check, severity, subject), and a word of the fix)
CASES: list[tuple[str, SystemView, list[tuple[str, str, str]], str]] = [
    ("vti missing", broken(links={k: v for k, v in LINKS.items() if k != "vti1"}),
     [("interface", "error", "tun1")], "ip link add vti1 type vti local 192.0.2.1"),
    ("vti is a veth", broken(links=link("vti1", kind="veth")),
     [("interface", "error", "tun1")], "ip link del vti1"),
    ("xfrm missing", broken(links={k: v for k, v in LINKS.items() if k != "xfrm2"}),
     [("interface", "error", "tun2")], "type xfrm dev isp2 if_id 2"),
    ("vti key differs", broken(links=link("vti1", ikey=5, okey=5)),
     [("sa-mark", "error", "tun1")], "type vti key 1"),
    ("SA mark differs", broken(sas=(*SAS[1:], dataclasses.replace(SAS[0], mark=3))),
     [("sa-mark", "error", "tun1")], "mark_in = 1, mark_out = 1"),
    ("SA without mark", broken(sas=(*SAS[1:], dataclasses.replace(SAS[0], mark=None))),
     [("sa-mark", "error", "tun1")], "mark_in = 1"),
    ("inbound SA with the mark", broken(sas=(SAS[0], dataclasses.replace(SAS[1], mark=1,
                                                                        mark_mask=FULL), *SAS[2:])),
     [("sa-mark", "warning", "tun1")], "mark_in_sa = no"),
    ("policy mark differs", broken(policies=(XfrmPolicy("out", "192.0.2.1", "192.0.2.2", mark=7,
                                                         mark_mask=FULL), *POLICIES[1:])),
     [("sa-mark", "error", "tun1")], "mark_out = 1"),
    ("xfrm if_id differs", broken(links=link("xfrm2", if_id=9)),
     [("sa-mark", "error", "tun2")], "type xfrm if_id 2"),
    ("SA if_id differs", broken(sas=(*SAS[:2], dataclasses.replace(SAS[2], if_id=4), SAS[3])),
     [("sa-mark", "error", "tun2")], "if_id_in = 2"),
    ("vti endpoints differ", broken(links=link("vti1", remote="203.0.113.9")),
     [("sa-endpoints", "error", "tun1")], "remote 192.0.2.2 key 1"),
    ("SA endpoints differ", broken(sas=(*SAS, XfrmState("192.0.2.1", "203.0.113.9", 5, 1, FULL))),
     [("sa-endpoints", "error", "tun1")], "remote_addrs = 192.0.2.2"),
    ("disable_policy off", broken(sysctls=sysctl("vti1.disable_policy", 0)),
     [("disable-policy", "error", "vti1")], "disable_policy=1"),
    ("rp_filter strict on the tunnel", broken(sysctls=sysctl("vti1.rp_filter", 1)),
     [("rp-filter", "error", "vti1")], "net.ipv4.conf.vti1.rp_filter=2"),
    ("rp_filter strict on the underlay",
     broken(sysctls=sysctl("isp2.rp_filter", 1)),
     [("rp-filter", "warning", "isp2")], "net.ipv4.conf.isp2.rp_filter=2"),
    # all=1 makes vti1 and isp2 strict (0 < 1); xfrm2 and isp1 at 2 stay loose.
    ("rp_filter strict for all", broken(sysctls=sysctl("all.rp_filter", 1)),
     [("rp-filter", "error", "vti1"), ("rp-filter", "warning", "isp2")], "rp_filter=2"),
    ("no inner address", broken(links=link("xfrm2", addresses=())),
     [("source-address", "error", "tun2")], "ip addr add 169.254.2.1/30 dev xfrm2"),
    ("inner address, wrong length", broken(links=link("vti1", addresses=(addr("169.254.1.1/24"),))),
     [("source-address", "warning", "tun1")], "ip addr del 169.254.1.1/24"),
    ("no SNAT rule", broken(snat_interfaces=frozenset({"vti1"})),
     [("snat", "info", "tun2")], 'oifname "xfrm2"'),
    ("nft unreadable", broken(snat_interfaces=None, snat_unknown="nft is not installed"),
     [("snat", "info", "system")], ""),
    ("strongSwan route in 220",
     broken(routes_220=(Route(220, ipaddress.ip_network("10.2.0.0/16"), "isp1"),)),
     [("table-220", "error", "system")], "install_routes = no"),
    ("strongSwan default route in 220",
     broken(routes_220=(Route(220, ipaddress.ip_network("0.0.0.0/0"), None),)),
     [("table-220", "error", "system")], "ip route flush table 220"),
    ("mtu too large", broken(links=link("vti1", mtu=1500)),
     [("mtu", "warning", "tun1")], "ip link set dev vti1 mtu 1438"),
    ("vici unreachable", broken(vici_error="unix:///var/run/charon.vici: No such file"),
     [("vici", "error", "system")], "systemctl start strongswan"),
    ("esp4 missing", broken(modules=frozenset(), sas=()),
     [("modules", "error", "system")], "modprobe esp4"),
    ("rt_protos unnamed", broken(rt_proto_name=None),
     [("rt-protos", "warning", "system")], '"157 vti-failover" > /etc/iproute2/rt_protos.d/'),
    ("xfrm unreadable", broken(sas=None, policies=None, xfrm_error="Operation not permitted"),
     [("xfrm", "info", "system")], "root"),
]  # fmt: skip


@pytest.mark.parametrize(("view", "expected", "fix"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_each_pitfall_gives_its_finding(
    view: SystemView, expected: list[tuple[str, str, str]], fix: str
) -> None:
    got = diagnose(CFG, view)
    assert [(f.check, f.severity, f.subject) for f in got] == expected
    assert all(fix in (f.fix or "") for f in got), got


def test_a_bgp_neighbor_off_the_tunnels_subnets() -> None:
    raw = json.loads(json.dumps(RAW))
    raw["tunnels"][0]["bgp_neighbor"] = "169.254.7.2"
    got = diagnose(Config.model_validate(raw), CLEAN)
    assert [(f.check, f.subject) for f in got] == [("bgp-neighbor", "tun1")]
    assert "169.254.7.2 is on none of vti1's subnets (169.254.1.1/30)" in got[0].message


def test_modules_not_needed_when_their_interfaces_exist() -> None:
    # vti1 and xfrm2 exist: ip_vti and xfrm_interface are there; only esp4 is asked for.
    missing = [f.message for f in diagnose(CFG, broken(modules=frozenset(), sas=()))]
    assert [m.split()[2] for m in missing if "kernel module" in m] == ["esp4"]
    no_links = broken(links={"isp1": LINKS["isp1"], "isp2": LINKS["isp2"]}, modules=frozenset())
    named = [f.message.split()[2] for f in diagnose(CFG, no_links) if f.check == "modules"]
    # The SAs prove ESP is there.
    assert named == ["ip_vti", "xfrm_interface"]
    unsure = [f for f in diagnose(CFG, dataclasses.replace(no_links, builtin_known=False))
              if f.check == "modules"]  # fmt: skip
    assert {f.severity for f in unsure} == {"warning"}
    assert "it may be built in" in unsure[0].message


def test_another_tunnels_sa_between_the_same_ends_is_not_a_wrong_mark() -> None:
    raw = json.loads(json.dumps(RAW))
    twin = {**raw["tunnels"][0], "name": "tun3", "interface": "vti3", "key": 3,
            "inner": {"local": "169.254.3.1/30", "peer": "169.254.3.2"},
            "ike": {"connection": "tun3", "child": "tun3"}}  # fmt: skip
    raw["tunnels"].append(twin)
    cfg = Config.model_validate(raw)
    vti3 = dataclasses.replace(LINKS["vti1"], name="vti3", ikey=3, okey=3,
                               addresses=(addr("169.254.3.1/30"),))  # fmt: skip
    view = broken(
        links={**LINKS, "vti3": vti3},
        sas=(*SAS, XfrmState("192.0.2.1", "192.0.2.2", 0x300, mark=3, mark_mask=FULL)),
        sysctls={**SYSCTLS, "net.ipv4.conf.vti3.disable_policy": 1},
        snat_interfaces=frozenset({"*"}),
    )
    assert diagnose(cfg, view) == []


def test_a_tunnel_with_no_sa_yet_is_a_note_not_a_problem() -> None:
    got = diagnose(CFG, broken(sas=(), policies=()))
    assert [(f.check, f.severity) for f in got] == [("sa-mark", "info"), ("sa-mark", "info")]
    assert exit_status(got) == 0


def test_a_masked_mark_matches_by_its_mask() -> None:
    # mark 0x1/0xff: packets marked 0x101 meet it too, but the VTI marks them 1: it matches.
    sa = dataclasses.replace(SAS[0], mark=1, mark_mask=0xFF)
    assert found(broken(sas=(sa, *SAS[1:]))) == []


def test_esp_bound() -> None:
    # 1500 - 20 (IPv4) - 8 (ESP) - 16 (IV) - 16 (ICV) = 1440 bytes for payload + 2 trailer,
    # in 16-byte blocks: 1438. IPv6 outer (40): 1420 -> 1406; NAT-T 8 more: 1432 -> 1422.
    assert esp_inner_mtu(1500, ipv6=False) == 1438
    assert esp_inner_mtu(1500, ipv6=True) == 1406
    assert esp_inner_mtu(1500, ipv6=False, nat_t=True) == 1422
    # At the bound the padded packet fills the underlay exactly.
    inner = esp_inner_mtu(1400, ipv6=False)
    assert 20 + 8 + 16 + -(-(inner + 2) // 16) * 16 + 16 <= 1400
    assert 20 + 8 + 16 + -(-(inner + 3) // 16) * 16 + 16 > 1400


def test_exit_status_and_renderings() -> None:
    findings = [
        Finding("mtu", "warning", "tun1", "too big", "ip link set dev vti1 mtu 1438"),
        Finding("snat", "info", "system", "cannot tell"),
    ]
    assert exit_status(findings) == 1
    assert exit_status(findings[1:]) == 0
    assert exit_status([]) == 0
    text = StringIO()
    render_text(findings, text)
    assert text.getvalue().splitlines() == [
        "warning: tun1: [mtu] too big; fix: ip link set dev vti1 mtu 1438",
        "info: system: [snat] cannot tell",
        "doctor: 0 error(s), 1 warning(s), 1 note(s)",
    ]
    out = StringIO()
    render_json(findings, out)
    assert json.loads(out.getvalue())["findings"][1] == {
        "check": "snat", "severity": "info", "subject": "system", "message": "cannot tell",
        "fix": None,
    }  # fmt: skip
