"""Nexthop-group routing on the VM lab's kernel: real VTIs, charons, ExaBGP, BIRD.

One VM: the agent routes IPv4 and IPv6 static prefixes through its nexthop groups
(`netlink.nexthop_groups: true`); a silent cut moves them by a group replace, a repair moves
them back, a restart on the same config adopts the groups without a kernel change, and a
restart on the ECMP variant replaces the groups in place with both tunnels
(guest_group_routing.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab.vmrun import TOP, facts_from_vm

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.root, pytest.mark.services]

Facts = dict[str, Any]
LAB_CONFIG = TOP / "labs" / "dual-vti" / "siteA" / "vti-failover.yaml"
PROTOCOL = 157  # the default route_protocol; our nexthop ids are PROTOCOL << 20 + n
V4 = ["10.2.0.0/24", *(f"10.3.{i}.0/24" for i in range(16))]
V6 = ["2001:db8:2::/48", *(f"2001:db8:3:{i:x}::/64" for i in range(16))]


def write_config(path: Path, mode: str) -> Path:
    """The lab's agent config with groups on and static prefixes of both families only.

    Learned routes are left out (learned_from_bgp false) so that every route the test sees
    is one of these; the hold-down is short so the failback comes within the phase.
    """
    cfg = yaml.safe_load(LAB_CONFIG.read_text())
    cfg["remote_prefixes"] = {"static": V4 + V6, "learned_from_bgp": False}
    cfg["netlink"] = {"nexthop_groups": True}
    cfg["policy"].update(mode=mode, preempt_hold_down_s=5)
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Facts:
    results = tmp_path_factory.mktemp("vmgroups")
    standby = write_config(results / "groups.yaml", "active-standby")
    ecmp = write_config(results / "groups-ecmp.yaml", "active-active")
    args = [f"--config={standby}", f"--ecmp-config={ecmp}"]
    return facts_from_vm(
        results, "agent", "guest_group_routing.py", *args, agent_config=standby, timeout=900
    )


def why(facts: Facts) -> str:
    return "\n".join(["agent log:", *facts.get("agent_log", [])[-80:]])


def phase(facts: Facts, name: str) -> Facts:
    # A phase that did not complete fails its own tests, not the ones before it.
    if name not in facts["phases"]:
        pytest.fail(f"phase {name} did not complete: {facts.get('error')}\n{why(facts)}")
    found: Facts = facts["phases"][name]
    return found


def ours(k: Facts) -> dict[int, Facts]:
    """Our nexthop objects by kernel id."""
    base = PROTOCOL << 20
    return {o["id"]: o for o in k["nexthops"] if base <= o["id"] < (PROTOCOL + 1) << 20}


def group_devs(k: Facts, group_id: int) -> list[str]:
    """The devices of a group's members, in kernel order."""
    objects = {o["id"]: o for o in k["nexthops"]}
    return [objects[m["id"]]["dev"] for m in objects[group_id]["group"]]


def carrying(k: Facts, prefix: str) -> Facts:
    best: Facts = min(k["routes"][prefix], key=lambda r: r["metric"])
    return best


def test_guest_kernel_has_nexthop_objects(lab: Facts) -> None:
    start = phase(lab, "start")
    assert lab["kernel_release"].startswith("6.1"), lab["kernel_release"]
    groups = [o for o in ours(start).values() if "group" in o]
    assert groups, start["nexthops"]


def test_every_static_prefix_of_both_families_routes_through_our_groups(lab: Facts) -> None:
    start = phase(lab, "start")
    objects = ours(start)
    for prefix in V4 + V6:
        routes = start["routes"][prefix]
        assert routes, f"no route for {prefix}"
        for r in routes:
            assert r["nhid"] in objects, (prefix, r)
            assert "group" in objects[r["nhid"]], (prefix, r)
    # One carrying group per family, whatever the number of prefixes.
    assert len({carrying(start, p)["nhid"] for p in V4}) == 1
    assert len({carrying(start, p)["nhid"] for p in V6}) == 1
    assert start["get"] == {"10.2.0.10": "vti1", "2001:db8:2::10": "vti1"}
    assert group_devs(start, carrying(start, V4[0])["nhid"]) == ["vti1"]
    assert group_devs(start, carrying(start, V6[0])["nhid"]) == ["vti1"]


def test_a_cut_moves_both_families_by_group_replace_not_by_route_writes(lab: Facts) -> None:
    start, cut = phase(lab, "start"), phase(lab, "cut")
    assert cut["get"] == {"10.2.0.10": "vti2", "2001:db8:2::10": "vti2"}, why(lab)
    for prefix in V4 + V6:
        # The same routes on the same groups: only the groups' members changed.
        assert carrying(cut, prefix) == carrying(start, prefix), prefix
    assert group_devs(cut, carrying(cut, V4[0])["nhid"]) == ["vti2"]
    assert group_devs(cut, carrying(cut, V6[0])["nhid"]) == ["vti2"]


def test_the_repair_moves_them_back_through_the_same_groups(lab: Facts) -> None:
    start, back = phase(lab, "start"), phase(lab, "back")
    assert back["get"] == {"10.2.0.10": "vti1", "2001:db8:2::10": "vti1"}
    for prefix in V4 + V6:
        assert carrying(back, prefix) == carrying(start, prefix), prefix


def test_a_restart_adopts_our_groups_without_a_kernel_change(lab: Facts) -> None:
    back, restart = phase(lab, "back"), phase(lab, "restart")
    # Nothing in `ip monitor nexthop route` from SIGTERM until the new agent was settled
    # and BIRD had both sessions back (from the new ExaBGP) for 5 s.
    assert phase(lab, "restart_monitor") == [], why(lab)
    assert ours(restart) == ours(back)
    assert restart["routes"] == back["routes"]


def test_the_ecmp_variant_replaces_the_groups_in_place_with_both_tunnels(lab: Facts) -> None:
    back, ecmp = phase(lab, "back"), phase(lab, "ecmp")
    for prefix in V4 + V6:
        # The same group carries the prefix: a config change is a group replace too.
        assert carrying(ecmp, prefix)["nhid"] == carrying(back, prefix)["nhid"], prefix
    assert sorted(group_devs(ecmp, carrying(ecmp, V4[0])["nhid"])) == ["vti1", "vti2"]
    assert sorted(group_devs(ecmp, carrying(ecmp, V6[0])["nhid"])) == ["vti1", "vti2"]
