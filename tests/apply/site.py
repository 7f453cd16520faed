"""A two-tunnel site (a VTI on isp1, an XFRM interface on isp2) as config and as facts."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from typing import Any

from agent.apply_facts import LinkFacts, SystemFacts
from agent.config import Config, parse_config

__all__ = ["built", "config", "raw", "underlay_only"]

ALIAS = "vti-failover:site-a"


def raw(**tunnel_extra: Any) -> dict[str, Any]:
    return {
        "agent_id": "site-a",
        "tunnels": [
            {
                "name": "tun1", "interface": "vti1", "kind": "vti", "key": 1,
                "underlay": {"local": "192.0.2.1", "remote": "192.0.2.2"},
                "inner": {"local": "169.254.1.1/30", "peer": "169.254.1.2"},
                "sources": ["probe", "link"], "mtu": 1400, **tunnel_extra,
            },
            {
                "name": "tun2", "interface": "xfrm2", "kind": "xfrm", "if_id": 2,
                "role": "backup",
                "underlay": {"local": "198.51.100.1", "remote": "198.51.100.2"},
                "inner": {"local": "169.254.2.1/30", "peer": "169.254.2.2"},
                "sources": ["probe", "link"],
            },
        ],
    }  # fmt: skip


def config(body: dict[str, Any] | None = None) -> Config:
    return parse_config(json.dumps(body if body is not None else raw()))


def _isp(name: str, index: int, address: str) -> LinkFacts:
    return LinkFacts(name, index, "veth", mtu=1500, up=True,
                     addresses=frozenset({ipaddress.ip_interface(address)}))  # fmt: skip


DEFAULTS = {
    "net.ipv4.conf.all.rp_filter": 0,
    "net.ipv4.conf.default.rp_filter": 1,
    "net.ipv4.conf.all.disable_policy": 0,
    "net.ipv4.conf.default.disable_policy": 0,
}


def underlay_only() -> SystemFacts:
    """The site before apply: the ISP interfaces and their addresses, no tunnel."""
    links = {
        "lo": LinkFacts("lo", 1, None, mtu=65536, up=True),
        "isp1": _isp("isp1", 2, "192.0.2.1/30"),
        "isp2": _isp("isp2", 3, "198.51.100.1/30"),
    }
    return SystemFacts(links=links, sysctls=dict(DEFAULTS))


def built(*, alias: str | None = None) -> SystemFacts:
    """The site as its lab script builds it: both tunnels right, up, with their sysctls."""
    base = underlay_only()
    vti = LinkFacts("vti1", 4, "vti", mtu=1400, alias=alias, up=True,
                    addresses=frozenset({ipaddress.ip_interface("169.254.1.1/30")}),
                    local="192.0.2.1", remote="192.0.2.2", ikey=1, okey=1)  # fmt: skip
    xfrm = LinkFacts("xfrm2", 5, "xfrm", mtu=1400, alias=alias, up=True,
                     addresses=frozenset({ipaddress.ip_interface("169.254.2.1/30")}),
                     if_id=2, link=3)  # fmt: skip
    sysctls = dict(base.sysctls)
    for dev in ("vti1", "xfrm2"):
        sysctls[f"net.ipv4.conf.{dev}.disable_policy"] = 1
        sysctls[f"net.ipv4.conf.{dev}.rp_filter"] = 0
    return dataclasses.replace(
        base, links={**base.links, "vti1": vti, "xfrm2": xfrm}, sysctls=sysctls
    )
