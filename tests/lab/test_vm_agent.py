"""vti-failover in the VM lab: real charons, VTIs, ExaBGP, BIRD and mosquitto, a silent cut."""

from __future__ import annotations

import json

import pytest

from tests.lab.vmrun import facts_from_vm

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.root, pytest.mark.services]


@pytest.fixture(scope="module")
def agent_cut(tmp_path_factory: pytest.TempPathFactory) -> dict:  # type: ignore[type-arg]
    """Boot the VM, bring the lab up with the agent on site A, cut isp1; what the guest saw."""
    return facts_from_vm(tmp_path_factory.mktemp("vmlab"), "agent", "guest_agent_cut.py")


def first(changes: list[dict], key: str, value: object) -> dict | None:  # type: ignore[type-arg]
    return next((c for c in changes if key in c and c[key] == value), None)


def test_agent_routes_site_b_over_the_primary_at_start(agent_cut: dict) -> None:  # type: ignore[type-arg]
    before = agent_cut["before"]
    assert before["vti1_up"] is True
    # The route to site B's LAN is the agent's (nothing else in site A installs one).
    assert before["siteA_route"] == "vti1"
    assert before["siteB_route"] == "vti1"
    assert before["siteB_tun1"] == "Established"


def test_agent_takes_vti1_out_before_bgp_notices(agent_cut: dict) -> None:  # type: ignore[type-arg]
    down = first(agent_cut["changes"], "vti1_up", False)
    assert down is not None, "the agent never set vti1 down:\n" + "\n".join(agent_cut["agent_log"])
    # At that moment site B's session over the dead tunnel still looked fine: the agent,
    # not the BGP hold timer, noticed the cut.
    assert down["siteB_tun1"] == "Established"
    moved = first(agent_cut["changes"], "siteA_route", "vti2")
    assert moved is not None
    assert agent_cut["after"]["siteA_route"] == "vti2"


def test_agent_alerts_over_mqtt(agent_cut: dict) -> None:  # type: ignore[type-arg]
    events = [
        json.loads(line.split(" ", 1)[1])
        for line in agent_cut["mqtt"]
        if line.startswith("vti-failover/site-a/event ")
    ]
    failovers = [e for e in events if e.get("kind") == "failover"]
    assert failovers, agent_cut["mqtt"]
    assert failovers[0]["from"] == ["tun1"]
    assert failovers[0]["to"] == ["tun2"]
    states = [ln for ln in agent_cut["mqtt"] if ln.startswith("vti-failover/site-a/tunnel/tun1/")]
    assert any('"health":"DOWN"' in ln for ln in states)
