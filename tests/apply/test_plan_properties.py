"""Properties of apply's planner over generated sites and systems (hypothesis), judged with
the fake kernel: a plan carried out leaves nothing to plan; it deletes or changes the tunnel
parameters of no link without our alias; it touches configured interfaces only."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from agent.apply_facts import (
    ChangeVti,
    ChangeXfrm,
    DeleteLink,
    LinkFacts,
    NftCommand,
    NftFacts,
    SnatRule,
    SystemFacts,
)
from agent.apply_plan import plan
from agent.config import Config, parse_config
from tests.apply.fake_system import carry_out

ALIAS = "vti-failover:prop"
KINDS = ("vti", "xfrm", "tap")


@st.composite
def sites(draw: st.DrawFn) -> tuple[Config, SystemFacts]:
    n = draw(st.integers(1, 3))
    tunnels: list[dict[str, Any]] = []
    links: dict[str, LinkFacts] = {"lo": LinkFacts("lo", 1, None, mtu=65536, up=True)}
    sysctls = {
        "net.ipv4.conf.all.rp_filter": draw(st.sampled_from([0, 1, 2])),
        "net.ipv4.conf.default.rp_filter": draw(st.sampled_from([0, 1, 2])),
        "net.ipv4.conf.default.disable_policy": draw(st.sampled_from([0, 1])),
    }
    rules: dict[int, SnatRule | None] = {}
    for i in range(n):
        kind = draw(st.sampled_from(KINDS))
        local, remote = f"192.0.2.{4 * i + 1}", f"192.0.2.{4 * i + 2}"
        inner = ipaddress.ip_interface(f"169.254.{i}.1/30")
        holds = frozenset({ipaddress.ip_interface(f"{local}/30")})
        isp = LinkFacts(f"isp{i}", 10 + i, "veth", mtu=draw(st.sampled_from([1500, 9000])),
                        up=True, addresses=holds)  # fmt: skip
        links[isp.name] = isp
        t: dict[str, Any] = {
            "name": f"tun{i}", "interface": f"t{i}", "kind": kind,
            "underlay": {"local": local, "remote": remote},
            "inner": {"local": str(inner), "peer": f"169.254.{i}.2"}, "sources": ["probe"],
        }  # fmt: skip
        if kind == "vti":
            t["key"] = i + 1
        if kind == "xfrm":
            t["if_id"] = i + 1
        mtu = draw(st.sampled_from([None, 1300, 1400]))
        if mtu is not None:
            t["mtu"] = mtu
        source = ipaddress.ip_address(f"10.1.{i}.1")
        if draw(st.booleans()):
            t["snat"] = {"source": str(source)}
        tunnels.append(t)
        # What nft already holds: this tunnel's rule, a stale one, or something foreign.
        for _ in range(draw(st.integers(0, 2))):
            handle = len(rules) + 2
            rules[handle] = draw(st.sampled_from([
                SnatRule(f"t{i}", inner, source), SnatRule(f"t{i}", inner, inner.ip), None,
            ]))  # fmt: skip
        state = draw(st.sampled_from(["absent", "right", "wrong_params", "wrong_kind"]))
        if state == "absent":
            continue
        right = {"vti": "vti", "xfrm": "xfrm", "tap": "tun"}[kind]
        wrong = state == "wrong_params"
        link = LinkFacts(
            f"t{i}", 20 + i, right if state != "wrong_kind" else "veth",
            alias=draw(st.sampled_from([ALIAS, None, "vti-failover:other"])),
            mtu=draw(st.sampled_from([1300, 1400, 1480, 1500])), up=draw(st.booleans()),
            addresses=frozenset(draw(st.sets(st.sampled_from([
                inner, ipaddress.ip_interface(f"169.254.{i}.1/29"),
                ipaddress.ip_interface("10.9.9.9/24"),
            ])))),
            local=local if kind == "vti" else None, remote=remote if kind == "vti" else None,
            ikey=(i + 1 + wrong) if kind == "vti" else None,
            okey=(i + 1) if kind == "vti" else None,
            if_id=(i + 1 + wrong) if kind == "xfrm" else None,
            link=isp.index if kind == "xfrm" else None,
        )  # fmt: skip
        links[link.name] = link
        for name, values in (("rp_filter", [0, 1, 2]), ("disable_policy", [0, 1])):
            sysctls[f"net.ipv4.conf.t{i}.{name}"] = draw(st.sampled_from(values))
    table = draw(st.booleans())
    nft = NftFacts(table=table, chain_ok=table and draw(st.booleans()),
                   rules=rules if table else {})  # fmt: skip
    cfg = parse_config(json.dumps({"agent_id": "prop", "tunnels": tunnels}))
    return cfg, SystemFacts(links=links, sysctls=sysctls, nft=nft)


@settings(max_examples=300, deadline=None)
@given(sites())
def test_a_plan_carried_out_leaves_nothing_to_do(site: tuple[Config, SystemFacts]) -> None:
    cfg, facts = site
    first = plan(cfg, facts)
    event("refused" if first.refusals else "planned")
    if first.refusals:
        return
    after = carry_out(facts, first.steps)
    again = plan(cfg, after)
    assert again.refusals == ()
    assert again.steps == (), [s.line for s in again.steps]


@settings(max_examples=300, deadline=None)
@given(sites())
def test_only_its_own_links_are_deleted_or_given_other_tunnel_parameters(
    site: tuple[Config, SystemFacts],
) -> None:
    cfg, facts = site
    for step in plan(cfg, facts).steps:
        if isinstance(step, DeleteLink | ChangeVti | ChangeXfrm):
            assert facts.links[step.interface].alias == ALIAS


@settings(max_examples=300, deadline=None)
@given(sites())
def test_only_configured_interfaces_and_its_own_table_are_touched(
    site: tuple[Config, SystemFacts],
) -> None:
    cfg, facts = site
    configured = {t.interface for t in cfg.tunnels}
    for step in plan(cfg, facts).steps:
        if isinstance(step, NftCommand):
            assert " inet vti_failover_prop" in step.body
        else:
            assert step.interface in configured


@settings(max_examples=300, deadline=None)
@given(sites())
def test_a_differing_link_without_our_alias_is_refused(site: tuple[Config, SystemFacts]) -> None:
    cfg, facts = site
    refused = {r.subject for r in plan(cfg, facts).refusals}
    for t in cfg.tunnels:
        link = facts.links.get(t.interface)
        if link is None or link.alias == ALIAS:
            continue
        kind_differs = link.kind != {"vti": "vti", "xfrm": "xfrm", "tap": "tun"}[t.kind.value]
        key_differs = (link.ikey, link.if_id) not in ((t.key, None), (None, t.if_id))
        if kind_differs or (t.kind.value != "tap" and key_differs):
            assert t.name in refused
