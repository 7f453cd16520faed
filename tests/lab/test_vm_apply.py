"""apply on the VM lab's real kernel: site A's two VTIs and its XFRM interface deleted, then
made again by `vti-failover apply` from the lab's three-tunnel config; traffic passes through
each over charon's SAs, a second run is a no-op with no link or address event, and --dry-run
changes nothing (guest_apply.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.lab.vmrun import stock_part

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.root, pytest.mark.services]

Facts = dict[str, Any]
ALIAS = "vti-failover:site-a"
TUNNEL_CHECKS = {"interface", "sa-mark", "sa-endpoints", "disable-policy", "rp-filter", "mtu",
                 "source-address"}  # fmt: skip


@pytest.fixture(scope="module")
def facts(stock_lab: dict[str, Any]) -> Facts:
    return stock_part(stock_lab, "apply")


def key(value: Any) -> int:
    # iproute2 prints a VTI key as a dotted quad (0.0.0.1), an if_id in hex (0x3).
    if isinstance(value, str) and "." in value:
        a, b, c, d = (int(x) for x in value.split("."))
        return (a << 24) | (b << 16) | (c << 8) | d
    return int(value, 0) if isinstance(value, str) else int(value)


def test_dry_run_from_nothing_plans_the_three_tunnels_and_changes_nothing(facts: Facts) -> None:
    assert facts["sas_up"]
    dry = facts["dry_from_nothing"]
    assert dry["code"] == 0, dry
    lines = dry["stdout"].splitlines()
    assert "ip link add vti1 type vti local 192.0.2.1 remote 192.0.2.2 key 1" in lines
    assert "ip link add vti2 type vti local 198.51.100.1 remote 198.51.100.2 key 2" in lines
    assert "ip link add xfrm3 type xfrm dev isp3 if_id 3" in lines
    assert lines[-1].endswith("none applied (--dry-run)")
    assert facts["dry_changed_nothing"]


def test_apply_makes_the_tunnels_the_config_describes(facts: Facts) -> None:
    first = facts["first"]
    assert first["code"] == 0, first
    assert first["stdout"].splitlines()[-1].startswith("apply: "), first["stdout"]
    links = facts["links"]
    for dev in ("vti1", "vti2", "xfrm3"):
        link = links[dev]
        assert link is not None, dev
        assert link.get("ifalias") == ALIAS
        assert link["mtu"] == 1400
        assert "UP" in link["flags"]
        i = dev[-1]
        addrs = {(a["local"], a["prefixlen"]) for a in link["addr_info"]}
        assert {(f"169.254.{i}.1", 30), (f"fd00:{i}::1", 64)} <= addrs, addrs
        assert facts["sysctls"][f"ipv4.{dev}.disable_policy"] == "1"
        assert facts["sysctls"][f"ipv4.{dev}.rp_filter"] in ("0", "2")
    vti1 = links["vti1"]["linkinfo"]
    assert vti1["info_kind"] == "vti"
    data = vti1["info_data"]
    assert (data["local"], data["remote"]) == ("192.0.2.1", "192.0.2.2")
    assert (key(data["ikey"]), key(data["okey"])) == (1, 1)
    assert key(links["vti2"]["linkinfo"]["info_data"]["okey"]) == 2
    xfrm3 = links["xfrm3"]
    assert xfrm3["linkinfo"]["info_kind"] == "xfrm"
    assert key(xfrm3["linkinfo"]["info_data"]["if_id"]) == 3
    assert xfrm3.get("link") == "isp3" or xfrm3.get("link_index") == facts["isp3_index"]
    assert 'oifname "vti1" ip saddr 169.254.1.1' in facts["nft"]
    assert "snat ip to 10.1.0.1" in facts["nft"]


def test_traffic_passes_through_each_new_tunnel_over_charons_sas(facts: Facts) -> None:
    assert facts["ping_before"] == {"vti1": True, "vti2": True, "xfrm3": True}
    assert facts["ping_after"] == {"vti1": True, "vti2": True, "xfrm3": True}


def test_the_second_run_is_a_no_op(facts: Facts) -> None:
    second = facts["second"]
    assert (second["code"], second["stdout"], second["stderr"]) == (0, "nothing to do\n", "")
    assert facts["second_events"] == []
    assert facts["second_changed_nothing"]
    assert facts["dry_after"]["stdout"] == "nothing to do\n"


def test_doctor_finds_nothing_wrong_with_what_apply_built(facts: Facts) -> None:
    assert facts["doctor"] is not None, facts.get("doctor_run")
    found = [(f["check"], f["subject"], f["message"]) for f in facts["doctor"]
             if f["check"] in TUNNEL_CHECKS and f["severity"] != "info"]  # fmt: skip
    assert found == []
