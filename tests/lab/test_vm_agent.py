"""vti-failover in the VM lab: real charons, VTIs or XFRM interfaces, ExaBGP, BIRD, mosquitto.

One VM per tunnel kind; in it guest_agent_scenarios.py breaks the ISP paths one way after
another (5% loss, a silent cut and its repair, an underlay link down, then the backup too)
and records what the kernel, BIRD and an MQTT subscriber saw.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.lab.vmrun import facts_from_vm

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.root, pytest.mark.services]

Facts = dict[str, Any]
HOLD_DOWN_S = 30.0  # labs/dual-vti/siteA/vti-failover*.yaml: policy.preempt_hold_down_s


def scenarios(tmp: pytest.TempPathFactory, kind: str, *args: str, timeout: float) -> Facts:
    """Boot a VM, bring the lab up with the agent on `kind` tunnels, run the given phases."""
    return facts_from_vm(
        tmp.mktemp("vmlab"), "agent", "guest_agent_scenarios.py", *args, kind=kind, timeout=timeout
    )


@pytest.fixture(scope="module")
def vti(tmp_path_factory: pytest.TempPathFactory) -> Facts:
    phases = ("--phases=loss,cut,linkdown,bothdown", "--loss-pct=5", "--loss-s=150")
    return scenarios(tmp_path_factory, "vti", *phases, timeout=1200)


@pytest.fixture(scope="module")
def xfrm(tmp_path_factory: pytest.TempPathFactory) -> Facts:
    return scenarios(tmp_path_factory, "xfrm", "--phases=cut", timeout=600)


def phase(facts: Facts, name: str) -> Facts:
    found: Facts = next(p for p in facts["phases"] if p["name"] == name)
    return found


def events(facts: Facts, name: str, kind: str | None = None) -> list[Facts]:
    """The MQTT events decided during a phase (of one kind)."""
    p = phase(facts, name)
    return [
        e
        for e in facts["events"]
        if p["start"] <= e["at_epoch"] <= p["end"] and kind in (None, e["kind"])
    ]


def first(changes: list[Facts], key: str, value: object) -> Facts | None:
    return next((c for c in changes if key in c and c[key] == value), None)


def why(facts: Facts) -> str:
    return "\n".join(["agent log:", *facts["agent_log"][-60:], "mqtt:", *facts["mqtt"][-30:]])


def test_agent_routes_both_directions_over_the_primary_at_start(vti: Facts) -> None:
    before = vti["phases"][0]["before"]
    assert before["vti1_up"] is True
    # The route to site B's LAN is the agent's (nothing else in site A installs one).
    assert before["siteA_route"] == "vti1"
    assert before["siteB_route"] == "vti1"
    assert (before["siteB_tun1"], before["siteB_tun2"]) == ("Established", "Established")


@pytest.mark.parametrize("kind", ["vti", "xfrm"])
def test_the_guest_imported_python_from_its_image(
    kind: str, request: pytest.FixtureRequest
) -> None:
    facts: Facts = request.getfixturevalue(kind)
    assert facts["python_image"] is True


def test_five_percent_loss_for_minutes_is_no_failover(vti: Facts) -> None:
    loss = phase(vti, "loss")
    assert loss["end"] - loss["start"] >= 150
    assert events(vti, "loss", "failover") == [], why(vti)
    seen = [loss["before"], *loss["changes"], loss["after"]]
    assert {s["siteA_route"] for s in seen} == {"vti1"}, loss["changes"]
    assert {s["siteB_route"] for s in seen} == {"vti1"}, loss["changes"]
    assert all(s["vti1_up"] for s in seen)


@pytest.mark.parametrize("kind", ["vti", "xfrm"])
def test_silent_cut_moves_both_directions_to_the_backup_before_bgp_notices(
    kind: str, request: pytest.FixtureRequest
) -> None:
    facts: Facts = request.getfixturevalue(kind)
    assert (facts["kind"], facts["stack"]) == (kind, "agent")
    cut = phase(facts, "cut")
    assert cut["before"]["siteA_route"] == "vti1"
    down = first(cut["changes"], "vti1_up", False)
    assert down is not None, "the agent never set vti1 down:\n" + why(facts)
    # At that moment site B's session over the dead tunnel still looked fine: the agent,
    # not the BGP hold timer, noticed the cut.
    assert down["siteB_tun1"] == "Established"
    a_moved = first(cut["changes"], "siteA_route", "vti2")
    b_moved = first(cut["changes"], "siteB_route", "vti2")
    assert a_moved is not None, cut["changes"]
    assert b_moved is not None, cut["changes"]
    # BIRD on site B prefers tun2 for site A's LAN: the agent re-announced it there.
    assert b_moved["t"] < cut["repaired_at"]
    assert a_moved["t"] < cut["repaired_at"]


@pytest.mark.parametrize("kind", ["vti", "xfrm"])
def test_silent_cut_raises_exactly_one_failover_alert(
    kind: str, request: pytest.FixtureRequest
) -> None:
    facts: Facts = request.getfixturevalue(kind)
    failovers = events(facts, "cut", "failover")
    assert len(failovers) == 1, why(facts)
    assert (failovers[0]["from"], failovers[0]["to"]) == (["tun1"], ["tun2"])
    assert failovers[0]["reason"].startswith("tun1 ")


@pytest.mark.parametrize("kind", ["vti", "xfrm"])
def test_repaired_primary_takes_traffic_back_after_the_hold_down(
    kind: str, request: pytest.FixtureRequest
) -> None:
    facts: Facts = request.getfixturevalue(kind)
    cut = phase(facts, "cut")
    assert cut["back"] is True, "no failback within 120 s of the repair:\n" + why(facts)
    after = [c for c in cut["changes"] if c["t"] >= cut["repaired_at"]]
    back = next(c for c in after if c["siteA_route"] == "vti1" and c["siteB_route"] == "vti1")
    # preempt: true with a 30 s hold-down: not before tun1 has been healthy that long.
    assert back["t"] - cut["repaired_at"] >= HOLD_DOWN_S
    failbacks = events(facts, "cut", "failback")
    assert [(e["from"], e["to"]) for e in failbacks] == [(["tun2"], ["tun1"])]


@pytest.mark.parametrize("kind", ["vti", "xfrm"])
def test_status_during_the_cut_shows_the_move(kind: str, request: pytest.FixtureRequest) -> None:
    facts: Facts = request.getfixturevalue(kind)
    status = phase(facts, "cut")["status"]
    assert status["code"] == 0, status["stderr"]
    lines = status["stdout"].splitlines()
    assert "carrying tun2" in lines[0], status["stdout"]
    assert lines[1].startswith("last move: failover tun1 -> tun2"), status["stdout"]
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("tun")}
    assert rows["tun1"][2] == "DOWN", status["stdout"]
    assert rows["tun2"][2] == "UP", status["stdout"]
    assert "carrying" in rows["tun2"], status["stdout"]


def test_underlay_link_down_fails_over(vti: Facts) -> None:
    down = phase(vti, "linkdown")
    assert down["before"]["siteA_route"] == "vti1"
    assert down["after"]["siteA_route"] == "vti2"
    assert down["after"]["siteB_route"] == "vti2"
    assert down["after"]["siteB_tun2"] == "Established"
    failovers = events(vti, "linkdown", "failover")
    assert [(e["from"], e["to"]) for e in failovers] == [(["tun1"], ["tun2"])], why(vti)


def test_backup_failing_while_the_primary_is_down_is_alerted_both_down(vti: Facts) -> None:
    both = phase(vti, "bothdown")
    alerts = events(vti, "bothdown", "both-down")
    assert [(e["from"], e["to"]) for e in alerts] == [(["tun2"], [])], why(vti)
    # both_down: withdraw: nothing is routed or announced into dead tunnels.
    assert both["during"]["siteA_route"] == "none"
    assert both["during"]["siteB_route"] == "none"


def test_both_down_recovers_when_the_paths_return(vti: Facts) -> None:
    both = phase(vti, "bothdown")
    assert both["back"] is True, "site B got no route back within 120 s:\n" + why(vti)
    recovered = events(vti, "bothdown", "recovered")
    assert len(recovered) == 1, why(vti)
    assert recovered[0]["from"] == []
