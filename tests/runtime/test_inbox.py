"""The inbox: evidence before BGP, each lane in order, a bound that never drops failures."""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.core import events as ev
from agent.inbox import Inbox


def drain(inbox: Inbox[str]) -> list[object]:
    out: list[object] = []
    while (item := inbox.pop()) is not None:
        out.append(item)
    return out


def test_evidence_goes_before_bgp_and_each_lane_keeps_its_order() -> None:
    inbox: Inbox[str] = Inbox()
    routes = ev.BgpRoutesChanged(tunnel="tun1", announced=("10.2.0.0/24",))
    eor = ev.BgpEndOfRib(tunnel="tun1")
    down = ev.BgpNeighborDown(tunnel="tun1")
    lost = ev.ProbeLost(tunnel="tun1")
    sa = ev.ChildSaDown(tunnel="tun2")
    for item in (routes, eor, lost, down, sa, "reload"):
        inbox.put(item)
    assert len(inbox) == 6
    assert drain(inbox) == [lost, sa, "reload", routes, eor, down]


def test_past_the_bound_only_proof_of_life_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    inbox: Inbox[str] = Inbox(bound=10)
    caplog.set_level(logging.WARNING, "vti_failover.runtime")
    for _ in range(10):
        inbox.put(ev.ProbeSucceeded(tunnel="tun1", rtt_ms=1.0))
    failures: list[ev.Event] = [
        ev.ProbeLost(tunnel="tun1"),
        ev.ChildSaDown(tunnel="tun1"),
        ev.LinkChanged(tunnel="tun1", present=True, admin_up=True, oper_up=False),
        ev.AdminDisabled(tunnel="tun1"),
    ]
    for _ in range(100):
        inbox.put(ev.ProbeSucceeded(tunnel="tun1", rtt_ms=1.0))
        inbox.put(ev.InboundTrafficSeen(tunnel="tun1", packets=1))
    for f in failures:
        inbox.put(f)
    assert inbox.dropped == 200
    got = drain(inbox)
    assert got[-4:] == failures
    assert len(got) == 14
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2  # once when it began, once when it caught up
    assert "dropping probe answers" in warnings[0]
    assert "200 probe answers were dropped" in warnings[1]


@given(st.lists(st.sampled_from(["lost", "ok", "bgp", "reload"]), max_size=200))
def test_nothing_but_proof_of_life_is_ever_lost(kinds: list[str]) -> None:
    inbox: Inbox[str] = Inbox(bound=20)
    made: list[object] = []
    for i, kind in enumerate(kinds):
        item: object
        if kind == "lost":
            item = ev.ProbeLost(tunnel=f"t{i}")
        elif kind == "ok":
            item = ev.ProbeSucceeded(tunnel=f"t{i}", rtt_ms=1.0)
        elif kind == "bgp":
            item = ev.BgpRouteLearned(tunnel=f"t{i}", prefix="10.0.0.0/8")
        else:
            item = f"reload{i}"
        made.append(item)
        inbox.put(item)  # type: ignore[arg-type]
    got = drain(inbox)
    kept = [m for m in made if not isinstance(m, ev.ProbeSucceeded)]
    assert [g for g in got if not isinstance(g, ev.ProbeSucceeded)] == [
        k for k in kept if not isinstance(k, ev.BgpRouteLearned)
    ] + [k for k in kept if isinstance(k, ev.BgpRouteLearned)]
    assert len(got) + inbox.dropped == len(made)


async def test_wait_returns_on_an_item_or_the_timeout() -> None:
    inbox: Inbox[str] = Inbox()
    assert await inbox.wait(0.01) is False
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, inbox.put, ev.ProbeLost(tunnel="tun1"))
    assert await inbox.wait(5) is True
    assert await inbox.wait(0) is True
    assert inbox.pop() == ev.ProbeLost(tunnel="tun1")
