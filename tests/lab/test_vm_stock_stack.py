"""The VM lab itself, end to end: real VTIs, charons, ExaBGP and BIRD, then a silent cut."""

from __future__ import annotations

from typing import Any

import pytest

from tests.lab.vmrun import stock_part

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.root, pytest.mark.services]


@pytest.fixture(scope="module")
def stock_cut(stock_lab: dict[str, Any]) -> dict[str, object]:
    """The stock lab with isp1 cut (the shared stock VM's first guest); what it recorded."""
    return stock_part(stock_lab, "stock_cut")


def test_lab_comes_up_with_both_tunnels_and_bgp_on_the_primary(stock_cut: dict) -> None:
    before = stock_cut["before"]
    assert before["tun1_sa"] is True
    assert before["tun2_sa"] is True
    # BIRD also peers over xfrm3 (tun3), which the stock ExaBGP config does not: not up.
    bgp = before["bgp"]
    assert (bgp["tun1"], bgp["tun2"]) == ("Established", "Established"), bgp
    assert bgp.get("tun3") != "Established", bgp
    # MED 100 via vti1 beats MED 200 via vti2 at site B.
    assert before["siteB_route_devs"][0] == "vti1"


def test_bird_moves_to_vti2_only_after_the_hold_timer(stock_cut: dict) -> None:
    moved = stock_cut["route_moved_s"]
    assert moved is not None, "site B never moved site A's LAN off vti1"
    # Nothing in the stock stack reacts before BGP's hold timer (9 s, keepalive 3 s).
    assert 4.0 <= moved <= 20.0
    at_move = stock_cut.get("at_route_move", {})
    assert at_move["bgp"]["tun1"] != "Established"
    assert at_move["bgp"]["tun2"] == "Established"
    assert at_move["tun2_sa"] is True


def test_vti1_stays_up_after_its_sa_is_gone(stock_cut: dict) -> None:
    assert stock_cut["sa_gone_s"] is not None, "DPD never deleted tun1's CHILD_SA"
    after = stock_cut["after_sa_gone"]
    assert after["tun1_sa"] is False
    # The gap the agent closes: the kernel keeps the VTI up with no SA behind it ...
    assert "UP" in after["vti1_flags"]
    assert "LOWER_UP" in after["vti1_flags"]
    # ... and keeps sending into it: those packets fail as carrier errors.
    assert after["vti1_tx_carrier_errors"] > stock_cut["before"]["vti1_tx_carrier_errors"]
