"""The whole agent against a real BIRD that announces hostile prefixes: only the good one
reaches the kernel, and every refusal shows in the log and in the metrics.

Same two sites as test_routing_failover (real Runtime, NetlinkActuator, ExaBgpAdapter with
a real exabgp; BIRD 2 at site B over two veth "tunnels"), with a metrics exporter beside
them. BIRD announces, over both sessions, besides site B's own prefixes: a default route,
tun1's underlay far end, a prefix covering the underlay's near ends and our own site prefix.
Assertions read the world: `ip -j route` in A and an HTTP scrape.

BIRD will not originate loopback, multicast or link-local prefixes at all ("Ignoring bogus
route"): the test asks it to and checks that it refused, so martians from a peer are the
core tests' (tests/core/test_imports.py) and the hypothesis property's to cover.
"""

from __future__ import annotations

import ipaddress
import logging
import urllib.request
from pathlib import Path

import pytest

from agent.adapters.metrics import MetricsExporter
from agent.config import MetricsSettings
from tests.integration.sites import (
    REMOTE4,
    REMOTE6,
    SITE,
    STATIC,
    Sites,
    agent_config,
    kernel_routes,
    running_agent,
    two_sites,
)
from tests.integration.test_routing_failover import until
from tests.support.bird import bgp_peer_block, bird
from tests.support.netns_links import routes
from tests.support.system import free_port, require_tool

pytestmark = [pytest.mark.root, pytest.mark.services]

GOOD = "10.44.0.0/24"
UNDERLAY_FAR_END = "198.51.100.1/32"  # tun1's underlay remote in agent_config
UNDERLAY_NEAR_ENDS = "192.0.2.0/24"  # covers both tunnels' underlay local
HOSTILE4 = ("0.0.0.0/0", UNDERLAY_FAR_END, UNDERLAY_NEAR_ENDS, SITE)
MARTIANS4 = ("127.0.0.0/8", "224.0.0.0/4")
MARTIANS6 = ("fe80::/64",)
REFUSED = {"default": 1, "underlay": 2, "site": 1}
WANTED = sorted(
    (prefix, f"vti{n}", metric)
    for prefix in (REMOTE4, REMOTE6, STATIC, GOOD)
    for n, metric in ((1, 10), (2, 100))
)


def hostile_bird_config() -> str:
    """Site B announcing its prefixes, a good one and the hostile ones on both sessions."""
    v4 = " ".join(f"route {p} blackhole;" for p in (REMOTE4, GOOD, *HOSTILE4, *MARTIANS4))
    v6 = " ".join(f"route {p} blackhole;" for p in (REMOTE6, *MARTIANS6))
    statics = f"""
protocol static st4 {{ ipv4; {v4} }}
protocol static st6 {{ ipv6; {v6} }}
"""
    return statics + "".join(
        bgp_peer_block(
            f"tun{n}",
            Sites.peer(n),
            65002,
            Sites.local(n),
            65001,
            export4='where proto = "st4"',
            export6='where proto = "st6"',
            next_hop6=f"2001:db8:ff:{n}::2",
        )
        for n in (1, 2)
    )


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        name: float(value)
        for line in text.splitlines()
        if line and not line.startswith("#")
        for name, value in [line.rsplit(" ", 1)]
    }


def rejected(samples: dict[str, float], tunnel: str) -> dict[str, float]:
    head = "vti_failover_learned_rejected_total{"
    out = {}
    for name, value in samples.items():
        if name.startswith(head) and f'tunnel="{tunnel}"' in name:
            reason = name.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = value
    return out


async def test_only_the_good_prefix_is_installed_and_refusals_are_told(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    require_tool("bird")
    caplog.set_level(logging.INFO)
    port = free_port()
    metrics = MetricsExporter(
        MetricsSettings(enabled=True, listen=ipaddress.IPv4Address("127.0.0.1"), port=port),
        "site-a",
    )
    with (
        two_sites("vtip") as sites,
        bird(sites.b, hostile_bird_config(), tmp_path / "bird") as peer,
    ):
        a = sites.a
        cfg = agent_config(sites, tmp_path / "exabgp")
        async with running_agent(sites, cfg, extra=[metrics]):
            await until("the good prefix via both tunnels", lambda: kernel_routes(a) == WANTED, 40)
            await until(
                "every refusal counted",
                lambda: all(rejected(scrape(port), t) == REFUSED for t in ("tun1", "tun2")),
                20,
            )
            # BIRD sent the hostile ones (it is the agent that refused them) ...
            sent = {r.prefix for r in peer.routes("st4")}
            assert sent >= {*HOSTILE4, GOOD}
            # ... but would not even hold the martians.
            bird_log = (tmp_path / "bird" / "bird.log").read_text()
            for prefix in (*MARTIANS4, *MARTIANS6):
                assert f"Ignoring bogus route {prefix}" in bird_log
            # Nothing of ours routes them, in any table.
            ours = routes(a, "proto", "157") + routes(a, "proto", "157", family="-6")
            assert not {r["dst"] for r in ours} & {"default", *HOSTILE4}
        await metrics.close(cleanup=False)
    told = [r.getMessage() for r in caplog.records if "learned-rejected" in r.getMessage()]
    for tunnel in ("tun1", "tun2"):
        line = next(t for t in told if f"learned from {tunnel}:" in t)
        assert "0.0.0.0/0 (default: a default route)" in line, line
        assert (
            f"{UNDERLAY_FAR_END} (underlay: covers tun1's underlay remote 198.51.100.1)" in line
        ), line
        assert f"{UNDERLAY_NEAR_ENDS} (underlay: covers tun1's underlay local 192.0.2.1)" in line
        assert f"{SITE} (site: covers site prefix {SITE})" in line, line
