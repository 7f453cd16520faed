"""snapshot(state, now): what `status` shows, read off the core after real event sequences."""

from __future__ import annotations

import json
from typing import Any

from agent.core import events as ev
from agent.core.snapshot import snapshot

from .sim import Sim, make_config, tunnel


def snap(sim: Sim, later_s: float = 0.0) -> dict[str, Any]:
    """The snapshot as a client receives it: through JSON (it must survive the trip)."""
    out: dict[str, Any] = json.loads(json.dumps(snapshot(sim.state, sim.now + later_s)))
    return out


def by_name(s: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in s["tunnels"]}


def started(**kw: Any) -> Sim:
    sim = Sim(make_config(**kw))
    sim.bring_up()
    return sim


def test_before_the_first_decision_nothing_carries_and_settling_is_pending() -> None:
    sim = Sim(make_config())
    s = snap(sim)
    assert s["settled"] is False
    assert s["settled_at"] is None
    assert s["deadlines"]["settles_at"] == sim.state.settle_by
    assert s["deadlines"]["sweeps_at"] == sim.state.sweep_by
    assert s["next_deadline"] == min(sim.state.deadlines)
    assert s["carriers"] == []
    assert s["last_move"] is None
    tun1 = by_name(s)["tun1"]
    assert (tun1["health"], tun1["reason"], tun1["role"], tun1["metric"]) == (
        "INIT",
        "starting",
        "idle",
        None,
    )
    assert tun1["link"] == {"present": True, "oper_up": True, "admin_up": None}
    assert tun1["learned"] == {
        "count": 0,
        "rejected": 0,
        "rejected_by_reason": {},
        "over_limit": False,
    }


def test_both_up_shows_roles_metrics_announcements_probes_and_sessions() -> None:
    sim = started()
    sim.step(ev.BgpNeighborUp(tunnel="tun1", at=sim.now))
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="10.3.0.0/24", at=sim.now))
    sim.step(ev.BgpRouteLearned(tunnel="tun1", prefix="127.0.0.0/8", at=sim.now))
    s = snap(sim)
    assert s["settled"] is True
    assert "settles_at" not in s["deadlines"]
    assert "sweeps_at" not in s["deadlines"]  # every End-of-RIB came
    assert s["carriers"] == ["tun1"]
    assert s["standbys"] == ["tun2"]
    assert s["both_down"] is False
    assert s["policy"]["mode"] == "active-standby"
    tun1, tun2 = by_name(s)["tun1"], by_name(s)["tun2"]
    assert (tun1["role"], tun1["carrying"], tun1["metric"]) == ("carrying", True, 10)
    assert (tun2["role"], tun2["carrying"], tun2["metric"]) == ("standby", False, 100)
    assert tun1["health"] == "UP"
    assert tun1["sa"] == "up"
    assert tun1["sa_by_source"] == {"vici": "up"}
    assert tun1["probes"] == {
        "lost": 0,
        "of": 3,
        "window": 10,
        "rtt_median_ms": 5.0,
        "answered_in_a_row": 3,
        "lost_in_a_row": 0,
    }
    assert tun1["bgp"] == {"neighbor": "169.254.1.2", "state": "up", "lost_at": None}
    assert tun2["bgp"]["state"] == "down"
    assert tun1["announced"] == [
        {
            "prefix": "10.1.0.0/24",
            "neighbor": "169.254.1.2",
            "med": 100,
            "as_path_prepend": 0,
            "communities": [],
        }
    ]
    assert tun2["announced"][0]["med"] == 200
    assert tun2["announced"][0]["as_path_prepend"] == 2
    assert tun1["learned"] == {
        "count": 1,
        "rejected": 1,
        "rejected_by_reason": {"martian": 1},
        "over_limit": False,
    }
    assert tun1["dampening"] == {"penalty": 0.0, "suppressed": False, "suppressed_until": None}
    assert tun1["deadlines"] == {}


def test_a_failover_is_the_last_move_with_its_reason_and_the_way_back_is_pending() -> None:
    sim = started()
    sim.now += 1
    sim.step(ev.ChildSaDown(tunnel="tun1", at=sim.now))
    s = snap(sim)
    assert s["carriers"] == ["tun2"]
    move = s["last_move"]
    assert (move["kind"], move["from"], move["to"]) == ("failover", ["tun1"], ["tun2"])
    assert move["reason"] == "tun1 child-sa-down"
    assert move["at"] == sim.now
    tun1 = by_name(s)["tun1"]
    assert (tun1["health"], tun1["since"], tun1["reason"]) == ("DOWN", sim.now, "child-sa-down")
    assert tun1["role"] == "idle"
    assert tun1["sa"] == "down"
    assert tun1["dampening"]["penalty"] == 1000.0

    # The SA is back and the probes answer: tun1 is UP, and its hold-down is pending.
    sim.now += 1
    sim.step(ev.ChildSaUp(tunnel="tun1", at=sim.now))
    sim.probes("tun1", 3)
    up_at = sim.state.health["tun1"].since
    s = snap(sim)
    hold = sim.cfg.policy.preempt_hold_down_s
    assert by_name(s)["tun1"]["health"] == "UP"
    assert by_name(s)["tun1"]["deadlines"] == {
        "preempts_at": up_at + hold,
        "proven_at": up_at + hold,
    }
    assert s["next_deadline"] == up_at + hold
    # Half a half-life later the penalty has decayed (read at `now`, not stored).
    assert by_name(snap(sim, 30))["tun1"]["dampening"]["penalty"] < 1000.0 * 0.75

    sim.advance(up_at + hold)
    s = snap(sim)
    assert s["carriers"] == ["tun1"]
    assert s["last_move"]["kind"] == "failback"
    assert by_name(s)["tun1"]["deadlines"] == {}


def test_a_drained_tunnel_and_both_down() -> None:
    sim = started()
    sim.step(ev.AdminDisabled(tunnel="tun2", at=sim.now))
    tun2 = by_name(snap(sim))["tun2"]
    assert (tun2["health"], tun2["role"], tun2["reason"]) == ("ADMIN_DOWN", "drained", "admin")
    sim.now += 1
    sim.step(ev.ChildSaDown(tunnel="tun1", at=sim.now))
    s = snap(sim)
    assert s["both_down"] is True
    assert s["last_move"]["kind"] == "both-down"
    assert s["carriers"] == []


def test_a_tunnel_held_down_shows_when_its_probation_starts() -> None:
    sim = started(link_control="down")
    sim.probes("tun1", 3, ok=False)
    tun1 = by_name(snap(sim))["tun1"]
    assert tun1["health"] == "DOWN"
    assert tun1["link"]["admin_up"] is False
    since = sim.state.health["tun1"].since
    assert tun1["deadlines"] == {"probation_at": since + sim.cfg.policy.probation_after_s}


def test_a_suppressed_tunnel_shows_until_when() -> None:
    sim = started(dampening={"penalty_per_flap": 3000, "half_life_s": 60})
    sim.now += 1
    sim.step(ev.ChildSaDown(tunnel="tun1", at=sim.now))
    tun1 = by_name(snap(sim))["tun1"]
    assert tun1["dampening"]["suppressed"] is True
    until = tun1["dampening"]["suppressed_until"]
    assert until > sim.now
    assert tun1["deadlines"]["reuse_at"] == until


def test_without_probes_or_bgp_those_parts_are_null() -> None:
    cfg = make_config(tunnels=[tunnel(1, sources=["vici"]), tunnel(2)], bgp=False)
    sim = Sim(cfg)
    sim.bring_up()
    tun1 = by_name(snap(sim))["tun1"]
    assert tun1["probes"] is None
    assert tun1["bgp"] is None
    assert tun1["announced"] == []


def test_components_lost_are_listed_with_since_when() -> None:
    sim = started()
    sim.now += 1
    sim.step(ev.SourceLost(source="vici", detail="charon gone", at=sim.now))
    s = snap(sim)
    assert s["components_lost"] == {"vici": sim.now}
    assert by_name(s)["tun1"]["blind_sources"] == ["vici"]
    assert by_name(s)["tun1"]["sa"] == "unknown"
