"""apply's planner on hand-built facts: what it plans from nothing, nothing on a built site,
what it refuses on interfaces it did not create, what it fixes on the ones it did."""

from __future__ import annotations

import dataclasses
import ipaddress

from agent.apply_facts import (
    ChangeVti,
    CreateVti,
    DeleteLink,
    LinkFacts,
    NftFacts,
    SnatRule,
    SystemFacts,
)
from agent.apply_plan import plan
from tests.apply.fake_system import carry_out
from tests.apply.site import ALIAS, built, config, raw, underlay_only


def lines(facts: SystemFacts, body: dict | None = None) -> list[str]:  # type: ignore[type-arg]
    p = plan(config(body), facts)
    assert p.refusals == ()
    return [s.line for s in p.steps]


def with_link(facts: SystemFacts, link: LinkFacts) -> SystemFacts:
    return dataclasses.replace(facts, links={**facts.links, link.name: link})


def test_from_nothing_it_creates_marks_and_configures_both_tunnels() -> None:
    assert lines(underlay_only()) == [
        "ip link add vti1 type vti local 192.0.2.1 remote 192.0.2.2 key 1",
        f"ip link set dev vti1 alias {ALIAS}",
        "ip link set dev vti1 mtu 1400",
        "sysctl -w net.ipv4.conf.vti1.disable_policy=1",
        "sysctl -w net.ipv4.conf.vti1.rp_filter=2",
        "ip addr add 169.254.1.1/30 dev vti1",
        "ip link set dev vti1 up",
        "ip link add xfrm2 type xfrm dev isp2 if_id 2",
        f"ip link set dev xfrm2 alias {ALIAS}",
        # No mtu in the config: what ESP leaves of isp2's 1500.
        "ip link set dev xfrm2 mtu 1438",
        "sysctl -w net.ipv4.conf.xfrm2.disable_policy=1",
        "sysctl -w net.ipv4.conf.xfrm2.rp_filter=2",
        "ip addr add 169.254.2.1/30 dev xfrm2",
        "ip link set dev xfrm2 up",
    ]


def test_a_site_built_by_hand_the_same_way_needs_nothing() -> None:
    assert lines(built()) == []


def test_each_difference_on_an_interface_it_did_not_create_is_fixed_but_its_identity() -> None:
    facts = built()
    wrong_length = frozenset({ipaddress.ip_interface("169.254.1.1/29")})
    vti = dataclasses.replace(facts.links["vti1"], up=False, mtu=1500, addresses=wrong_length)
    facts = with_link(facts, vti)
    facts = dataclasses.replace(
        facts, sysctls={**facts.sysctls, "net.ipv4.conf.vti1.rp_filter": 1,
                        "net.ipv4.conf.vti1.disable_policy": 0},
    )  # fmt: skip
    assert lines(facts) == [
        "ip link set dev vti1 mtu 1400",
        "sysctl -w net.ipv4.conf.vti1.disable_policy=1",
        "sysctl -w net.ipv4.conf.vti1.rp_filter=2",
        "ip addr del 169.254.1.1/29 dev vti1",
        "ip addr add 169.254.1.1/30 dev vti1",
        "ip link set dev vti1 up",
    ]


def test_rp_filter_0_on_the_tunnel_is_strict_when_conf_all_is_1() -> None:
    facts = built()
    assert lines(facts) == []
    strict_all = dataclasses.replace(
        facts, sysctls={**facts.sysctls, "net.ipv4.conf.all.rp_filter": 1}
    )
    assert lines(strict_all) == [
        "sysctl -w net.ipv4.conf.vti1.rp_filter=2",
        "sysctl -w net.ipv4.conf.xfrm2.rp_filter=2",
    ]


def test_a_wrong_kind_it_did_not_create_is_refused_and_nothing_planned_for_it() -> None:
    veth = LinkFacts("vti1", 9, "veth", mtu=1500, up=True)
    p = plan(config(), with_link(built(), veth))
    assert [(r.subject, r.message) for r in p.refusals] == [
        ("tun1", "vti1 is a veth interface, the config says vti: apply did not create it "
         "(its alias is None, not 'vti-failover:site-a'), so it leaves it as it is"),
    ]  # fmt: skip
    assert [s for s in p.steps if getattr(s, "interface", None) == "vti1"] == []


def test_a_wrong_key_it_did_not_create_is_refused() -> None:
    facts = built(alias="someone-else")
    facts = with_link(facts, dataclasses.replace(facts.links["vti1"], ikey=5, okey=5))
    p = plan(config(), facts)
    assert len(p.refusals) == 1
    assert "ikey 5 okey 5" in p.refusals[0].message
    assert "key 1" in p.refusals[0].message


def test_a_wrong_key_on_its_own_vti_is_changed_in_place() -> None:
    facts = built(alias=ALIAS)
    facts = with_link(facts, dataclasses.replace(facts.links["vti1"], ikey=5, okey=5))
    assert plan(config(), facts).steps == (ChangeVti("vti1", "192.0.2.1", "192.0.2.2", 1),)


def test_its_own_interface_of_the_wrong_kind_is_deleted_and_made_again() -> None:
    veth = LinkFacts("vti1", 9, "veth", mtu=1400, alias=ALIAS, up=True)
    p = plan(config(), with_link(built(), veth))
    assert p.refusals == ()
    assert p.steps[:2] == (
        DeleteLink("vti1"),
        CreateVti("vti1", "192.0.2.1", "192.0.2.2", 1),
    )


def test_an_xfrm_interface_on_another_device_than_the_config_names() -> None:
    body = raw()
    body["tunnels"][1]["underlay"]["device"] = "isp1"
    p = plan(config(body), built())
    assert len(p.refusals) == 1
    assert "if_id 2 on ifindex 3, the config says if_id 2 on isp1 (ifindex 2)" in (
        p.refusals[0].message
    )
    body["tunnels"][1]["underlay"]["device"] = "isp9"
    p = plan(config(body), built())
    assert [r.message for r in p.refusals] == [
        "the underlay device of xfrm2 is unknown (isp9): set underlay.device"
    ]


def test_an_mtu_within_what_esp_leaves_is_kept_when_the_config_sets_none() -> None:
    facts = built()
    assert lines(facts) == []  # xfrm2 has 1400 <= 1438
    big = with_link(facts, dataclasses.replace(facts.links["xfrm2"], mtu=1500))
    assert lines(big) == ["ip link set dev xfrm2 mtu 1438"]


def test_kinds_apply_does_not_create() -> None:
    body = raw()
    body["tunnels"][0].update(kind="tap", key=None)
    body["tunnels"][1].update(kind="mark", if_id=None, mark=7)
    p = plan(config(body), underlay_only())
    assert [r.message for r in p.refusals] == [
        "vti1 does not exist: apply creates vti and xfrm interfaces only; create it, then run apply"
    ]
    assert p.notes == ("tun2: kind mark has no interface of its own: skipped",)


TABLE = "inet vti_failover_site_a"
RULE = ('oifname "vti1" ip saddr 169.254.1.1 ip daddr != 169.254.1.0/30 '
        "snat ip to 10.1.0.1")  # fmt: skip


def test_snat_builds_the_agents_own_table_once() -> None:
    body = raw(snat={"source": "10.1.0.1"})
    got = lines(built(), body)
    assert got == [
        f"nft 'add table {TABLE}'",
        f"nft 'add chain {TABLE} postrouting {{ type nat hook postrouting priority srcnat; "
        "policy accept; }'",
        f"nft 'add rule {TABLE} postrouting {RULE}'",
    ]
    p = plan(config(body), built())
    assert plan(config(body), carry_out(built(), p.steps)).steps == ()


def test_snat_removes_what_the_config_no_longer_asks_for() -> None:
    rule = SnatRule("vti1", ipaddress.ip_interface("169.254.1.1/30"),
                    ipaddress.ip_address("10.1.0.1"))  # fmt: skip
    table = NftFacts(table=True, chain_ok=True, rules={4: rule, 5: None, 6: rule})
    facts = dataclasses.replace(built(), nft=table)
    body = raw(snat={"source": "10.1.0.1"})
    assert lines(facts, body) == [
        f"nft 'delete rule {TABLE} postrouting handle 5'",
        f"nft 'delete rule {TABLE} postrouting handle 6'",
    ]
    assert lines(facts) == [f"nft 'delete table {TABLE}'"]


def test_snat_without_nft_is_refused_and_without_snat_nft_is_not_needed() -> None:
    facts = dataclasses.replace(built(), nft=None, nft_error="nft is not installed")
    assert lines(facts) == []
    p = plan(config(raw(snat={"source": "10.1.0.1"})), facts)
    assert [(r.subject, r.message) for r in p.refusals] == [
        ("snat", "cannot read nftables: nft is not installed")
    ]


def test_a_dual_stack_tunnel_gets_its_ipv6_address_and_ipv6_disable_policy() -> None:
    body = raw(inner6={"local": "fd00:1::1/64", "peer": "fd00:1::2"})
    facts = built()
    facts = dataclasses.replace(facts, sysctls={**facts.sysctls,
                                "net.ipv6.conf.vti1.disable_policy": 0})  # fmt: skip
    assert lines(facts, body) == [
        "sysctl -w net.ipv6.conf.vti1.disable_policy=1",
        "ip addr add fd00:1::1/64 dev vti1",
    ]
    # IPv6 off on the link: no sysctl to write, and none planned.
    assert lines(built(), body) == ["ip addr add fd00:1::1/64 dev vti1"]
