"""At scale, the agent process as operators run it: 200 tunnels, a 5,000-prefix BGP burst, a cut.

The real `vti-failover run` (this tree's `python -m agent`) in a namespace with 200 veth
stand-ins (labs/lablib/standins.py) probed at 5/s, ExaBGP supervised by the agent, and a
real BIRD 2 in the far namespace with a session over every tunnel: tun1 (the carrier)
teaches a few prefixes, tun2 (the backup) the burst. Every assertion reads the kernel
(`ip route`, protocol 157) or BIRD. No bound here is a timing claim: each only keeps a stuck
agent from hanging the suite (labs/bench/agent_scale.py measures times). BGP hold time is
240 s, so routes learned over the cut tunnel can only leave because the agent decided so.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "labs"))
from lablib.agentproc import AgentProcess, running_agent, standby_routes
from lablib.standins import (
    RouteSet,
    StandIns,
    active_standby,
    agent_config,
    route_set,
    stand_ins,
    via,
    wait_routes,
)

from tests.support.bird import Bird, bgp_peer_block, bird
from tests.support.system import require_root, require_tool

pytestmark = [pytest.mark.root, pytest.mark.services, pytest.mark.slow]

TUNNELS = 200
BURST = 5000
HOLD_TIME_S = 240
STATICS = tuple(f"10.96.{i}.0/24" for i in range(4))
FEW = tuple(f"10.193.{i}.0/24" for i in range(4))  # BIRD's, over tun1
EXABGP = str(Path(sys.executable).with_name("exabgp"))
# Generous: the agent at this scale is known to be slow; these only bound a hang.
START_S = 120.0
INSTALL_S = 300.0
MOVE_S = 60.0
FAILOVER = re.compile(r"decided alert failover: tun1 -> tun2\b")


def burst_prefixes() -> list[str]:
    # /26s from 10.194.0.0 on (5,000 reach 10.198.x): apart from FEW, statics, stand-ins.
    base = (10 << 24) | (194 << 16)
    out = []
    for i in range(BURST):
        a = base + i * 64
        out.append(f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}/26")
    return out


def far_side(lab: StandIns, burst: list[str]) -> str:
    """BIRD's config: a session over every tunnel (a site has one per tunnel); FEW exported
    over tun1, the burst (disabled until enabled) over tun2, nothing over the others."""
    routes = "".join(f"    route {net} blackhole;\n" for net in burst)
    few = "".join(f"    route {net} blackhole;\n" for net in FEW)
    # Keepalives at the default hold/3: 200 sessions at 3 s would be traffic of their own.
    timers = f"hold time {HOLD_TIME_S}; connect retry time 2; error wait time 1, 5;"
    exports = {1: 'where proto = "few"', 2: 'where proto = "burst"'}
    return (
        f"protocol static few {{\n    ipv4;\n{few}}}\n"
        f"protocol static burst {{\n    ipv4;\n    disabled;\n{routes}}}\n"
        + "".join(
            bgp_peer_block(
                p.name,
                str(p.peer),
                65002,
                str(p.local),
                65001,
                export4=exports.get(p.index, "none"),
                timers=timers,
            )
            for p in lab.pairs
        )
    )


def describe(have: RouteSet, want: RouteSet) -> str:
    missing, extra = want - have, have - want
    return (
        f"{len(have)} routes of protocol 157, {len(missing)} missing "
        f"(e.g. {sorted(missing)[:3]}), {len(extra)} unexpected (e.g. {sorted(extra)[:3]})"
    )


def established(b: Bird, session: str) -> bool:
    return b.protocol_state(session) == "Established"


def until_routes(
    lab: StandIns, agent: AgentProcess, want: RouteSet, timeout: float, what: str
) -> float:
    t0 = time.monotonic()
    if wait_routes(lab.near, want, timeout, agent.alive) is None:
        have = route_set(lab.near)
        tail = "\n".join(agent.tail(15))
        alive = "running" if agent.alive() else f"exited ({agent.proc and agent.proc.returncode})"
        pytest.fail(
            f"{what}: not within {timeout:g} s: {describe(have, want)}; agent {alive}\n{tail}"
        )
    return time.monotonic() - t0


def test_a_silent_cut_moves_200_tunnels_routes_and_a_5000_prefix_burst(tmp_path: Path) -> None:
    require_root()
    require_tool("bird")
    burst = burst_prefixes()
    # The agent routes via its first `standbys` standbys (None: all); tun2 must be one.
    standbys = standby_routes()
    assert standbys is None or standbys >= 1, "tun2's learned routes need a standby route"
    took: dict[str, float] = {}
    with stand_ins(TUNNELS, "vtft") as lab:
        t1, t2 = lab[1], lab[2]
        with bird(lab.far, far_side(lab, burst), tmp_path / "bird") as b:
            cfg = tmp_path / "agent.yaml"
            cfg.write_text(
                agent_config(
                    lab.pairs,
                    STATICS,
                    bgp_workdir=tmp_path / "exabgp",
                    exabgp=EXABGP,
                    hold_time_s=HOLD_TIME_S,
                )
            )
            with running_agent(lab.near, cfg, tmp_path / "agent.log") as agent:
                # tun1 carries (metric 10), the other 199 stand by (100, 101, ...);
                # what BIRD teaches over tun1 goes via tun1 only.
                normal = active_standby(lab.pairs, STATICS, standbys) | via(t1, 10, FEW)
                took["start"] = until_routes(lab, agent, normal, START_S, "routes at start")
                b.wait_for(
                    "sessions over tun1 and tun2",
                    lambda: established(b, "tun1") and established(b, "tun2"),
                    timeout=START_S,
                )

                # The burst over tun2's session: installed via tun2, the standby's metric.
                t0 = time.monotonic()
                b.birdc("enable", "burst")
                learned = normal | via(t2, 100, burst)
                took["burst"] = until_routes(lab, agent, learned, INSTALL_S, "the burst")
                assert time.monotonic() - t0 < INSTALL_S

                # Silent cut of the carrier: its link stays up, BGP over it still looks up.
                mark = agent.mark()
                lab.cut(1)
                t0 = time.monotonic()
                decided = agent.wait_for(FAILOVER, MOVE_S, mark)
                assert decided is not None, (
                    f"no failover decision within {MOVE_S:g} s\n" + "\n".join(agent.tail(15))
                )
                took["decision"] = time.monotonic() - t0
                # Statics on tun2 at metric 10, the rest one rank up; tun2's burst becomes
                # the carrier's; what tun1 taught leaves the FIB with tun1.
                failed = active_standby(lab.pairs[1:], STATICS, standbys) | via(t2, 10, burst)
                moved = until_routes(lab, agent, failed, MOVE_S, "routes after the cut")
                took["move"] = took["decision"] + moved
                # Not the hold timer: BIRD still holds the session over the dead tunnel.
                assert established(b, "tun1")
                assert agent.alive()
    print(f"\ntimes (s): {', '.join(f'{k} {v:.1f}' for k, v in took.items())}")
