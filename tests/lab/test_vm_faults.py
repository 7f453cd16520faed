"""The agent's own failures in the VM lab, under UDP streams both ways (guest_faults.py).

Real VTIs, charons, ExaBGP (supervised, graceful restart on), BIRD 2 on site B and
mosquitto: kill -9 of the agent and its restart, kill -9 of its ExaBGP, a storm of 100
SIGHUPs, and the broker gone for 60 s across a failover and a failback.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.lab.vmrun import TOP, facts_from_vm

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.root, pytest.mark.services]

Facts = dict[str, Any]
LAB_CONFIG = TOP / "labs" / "dual-vti" / "siteA" / "vti-failover.yaml"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Facts:
    results = tmp_path_factory.mktemp("vmfaults")
    return facts_from_vm(
        results, "agent", "guest_faults.py", f"--config={LAB_CONFIG}", timeout=1200
    )


def phase(facts: Facts, name: str) -> Facts:
    # A phase that did not complete fails its own tests, not the ones before it.
    found = next((p for p in facts["phases"] if p["name"] == name), None)
    if found is None:
        pytest.fail(f"phase {name} did not complete: {facts.get('error')}\n{why(facts)}")
    return found


def why(facts: Facts) -> str:
    return "\n".join(["agent log:", *facts.get("agent_log", [])[-80:]])


def events(facts: Facts, start: float, end: float) -> list[Facts]:
    return [e for e in facts["events"] if start <= e["at_epoch"] <= end]


def test_kill_9_of_the_agent_and_a_restart_cost_nothing(lab: Facts) -> None:
    p = phase(lab, "agent_kill")
    assert (p["lost_to_a"], p["lost_to_b"]) == (0, 0), why(lab)
    # Site A's kernel: not one route or nexthop change from the kill to 5 s after the
    # new agent's sessions were back.
    assert p["monitor"] == [], why(lab)
    # Exactly one ExaBGP, the new agent's; the learned route still in; BIRD never lost ours.
    assert len(p["exabgp_after"]) == 1
    assert p["exabgp_after"] != p["exabgp_before"]
    assert p["site_a_learned"][:1] == ["vti1"]
    assert p["site_b"]["samples"] > 10
    assert p["site_b"]["missing"] == []


def test_kill_9_of_exabgp_leaves_site_b_forwarding_on_our_announcements(lab: Facts) -> None:
    p = phase(lab, "exabgp_kill")
    assert p["lost_to_a"] == 0, why(lab)
    assert p["site_b"]["missing"] == []
    # BIRD kept our routes as stale while exabgp was away (graceful restart) ...
    assert p["site_b"]["restarting"], p["site_b"]
    # ... and had them fresh soon after the new session came up (polled under TCG).
    print(
        f"exabgp kill -9: sessions back {p['sessions_back_s']} s, fresh {p['fresh_after_up_s']} s"
    )
    assert p["fresh_after_up_s"] <= 5.0
    assert len(p["exabgp_after"]) == 1
    assert p["exabgp_after"] != [p["killed"]]
    assert p["monitor"] == [], why(lab)


def test_a_storm_of_sighups_leaves_a_working_agent(lab: Facts) -> None:
    p = phase(lab, "hup_storm")
    assert p["agent_alive"] is True, why(lab)
    assert len(p["exabgp_after"]) == 1
    # It still fails over and back (the phase waits for both, bounded).
    assert p["failover_s"] < 60
    assert p["failback_s"] < 120


def test_failover_without_a_broker_and_every_event_after_it_returns(lab: Facts) -> None:
    p = phase(lab, "broker_down")
    assert p["down_s"] >= 60
    assert p["failover_s"] < 60
    assert p["failback_s"] < 120
    start, end = p["decided_at"]
    kinds = [e["kind"] for e in events(lab, start, end) if e["log"] == "mqtt-sub2.log"]
    assert "failover" in kinds, (kinds, why(lab))
    assert "failback" in kinds, kinds
