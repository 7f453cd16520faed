"""The agent's own failures in the VM lab, under UDP streams both ways (guest_faults.py).

Real VTIs, charons, ExaBGP (supervised, graceful restart on), BIRD 2 on site B and
mosquitto: kill -9 of the agent and its restart, kill -9 of its ExaBGP, a storm of 100
SIGHUPs, and the broker gone for 60 s across a failover and a failback.
"""

from __future__ import annotations

from datetime import datetime
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
        results, "agent", "guest_faults.py", f"--config={LAB_CONFIG}", timeout=1800
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
    print(f"broker back: the kept events arrived {p['delivered_after_s']} s later")
    start, end = p["decided_at"]
    kinds = [e["kind"] for e in events(lab, start, end) if e["log"] == "mqtt-sub2.log"]
    assert "failover" in kinds, (kinds, why(lab))
    assert "failback" in kinds, kinds


def moves(facts: Facts, p: Facts) -> list[Facts]:
    """The decisions that moved traffic in a phase, as the first MQTT subscriber saw them."""
    kinds = ("failover", "failback", "both-down", "recovered")
    return [
        e
        for e in events(facts, p["start"], p["end"])
        if e["kind"] in kinds and e["log"] == "mqtt-sub.log"
    ]


def test_a_charon_crash_whose_sas_return_within_the_grace_moves_nothing(lab: Facts) -> None:
    p = phase(lab, "charon_back")
    print(
        f"charon kill -9 and restart: answers in {p['answers_s']} s, SAs back in "
        f"{p['sas_back_s']} s, lost {p['lost_to_a']}/{p['lost_to_b']} datagrams to A/B"
    )
    assert moves(lab, p) == [], why(lab)
    assert p["monitor"] == [], why(lab)
    assert p["on_vti1"] is True
    told = [e for e in events(lab, p["start"], p["end"]) if e["log"] == "mqtt-sub.log"]
    assert ("component-lost", "vici") in {(e["kind"], e.get("component")) for e in told}, told


def test_a_charon_crash_whose_sa_stays_missing_fails_over_when_the_grace_ends(
    lab: Facts,
) -> None:
    p = phase(lab, "charon_late")
    failovers = [e for e in moves(lab, p) if e["kind"] == "failover"]
    assert [(e["from"], e["to"]) for e in failovers] == [(["tun1"], ["tun2"])], moves(lab, p)
    after = failovers[0]["at_epoch"] - p["back_at"]
    print(f"charon back without tun1's SA: failover {after:.1f} s after it answered")
    # Not before the grace (15 s) from the moment the agent saw charon again (this script
    # polls charon every 0.3 s, so it may see it answer a little after the agent did),
    # and not much after: at most the agent's reconnect backoff.
    assert 15.0 - 1.0 <= after <= 15.0 + 20.0, after
    assert "child-sa-down" in failovers[0]["reason"]
    assert p["failback_s"] < 240


def test_flapping_at_half_a_hertz_costs_at_most_a_failover_and_a_failback(lab: Facts) -> None:
    p = phase(lab, "flapping")
    yardstick = phase(lab, "hup_storm")["monitor_failover_failback"]
    moved = moves(lab, p)
    print(
        f"flapping 0.5 Hz for {p['flapped_s']} s: {len(moved)} moves, {len(p['monitor'])} "
        f"kernel route/nexthop changes (a failover and a failback: {len(yardstick)})"
    )
    assert len(moved) <= 2, moved
    assert len(p["monitor"]) <= len(yardstick), "\n".join(p["monitor"])
    assert yardstick, "the cut and repair changed nothing: no yardstick"
    # BGP over the stable tunnel never dropped.
    session = p["tun2_session"]
    assert session["state"] == "Established"
    # BIRD derives the "since" it prints from its clock: the same moment can differ by ms.
    before, after = (datetime.fromisoformat(session[k]) for k in ("before", "after"))
    assert abs((after - before).total_seconds()) < 1, session
