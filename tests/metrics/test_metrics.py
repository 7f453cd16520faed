"""The Prometheus exporter, scraped over real HTTP after the real core decided a failover."""

from __future__ import annotations

import ipaddress
import socket
import urllib.request
from pathlib import Path

import pytest

from agent.adapters.metrics import MetricsExporter
from agent.config import MetricsSettings, load_config
from agent.core import engine
from agent.core import events as ev
from agent.core.actions import Action
from tests.support.system import free_port

CONFIG = Path(__file__).parents[2] / "config" / "dual-vti.yaml"


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def _failover_actions() -> list[Action]:
    cfg = load_config(CONFIG)
    state = engine.initial_state(cfg, 0.0)
    out: list[Action] = []
    script: list[tuple[float, ev.Event]] = [
        (0.0, ev.ChildSaUp(tunnel="tun1")),
        (0.0, ev.ChildSaUp(tunnel="tun2")),
    ]
    for i in range(3):
        script += [
            (0.2 * (i + 1), ev.ProbeSucceeded(tunnel="tun1", rtt_ms=3.0)),
            (0.2 * (i + 1), ev.ProbeSucceeded(tunnel="tun2", rtt_ms=3.0)),
        ]
    # The report interval: loss and RTT of both, then tun1 goes down (its window emptied).
    script.append((4.0, ev.ProbeLost(tunnel="tun2")))
    script.append((4.5, ev.ReportIntervalElapsed()))
    script.append((5.0, ev.ChildSaDown(tunnel="tun1", at=4.9)))
    script.append((6.0, ev.ReportIntervalElapsed()))
    for now, event in script:
        state, actions = engine.step(state, event, now)
        out += actions
    return out


async def test_scrape_shows_the_failover() -> None:
    port = free_port()
    exporter = MetricsExporter(
        MetricsSettings(enabled=True, listen=ipaddress.IPv4Address("127.0.0.1"), port=port),
        "site-a",
    )
    await exporter.run()
    try:
        await exporter.apply(_failover_actions())
        samples = _scrape(exporter.port)
    finally:
        await exporter.close(cleanup=False)
    assert samples['vti_failover_tunnel_health{state="DOWN",tunnel="tun1"}'] == 1
    assert samples['vti_failover_tunnel_health{state="UP",tunnel="tun1"}'] == 0
    assert samples['vti_failover_tunnel_carrying{tunnel="tun2"}'] == 1
    assert samples['vti_failover_tunnel_carrying{tunnel="tun1"}'] == 0
    assert samples['vti_failover_alerts_total{kind="failover"}'] == 1
    assert samples['vti_failover_last_detection_seconds{kind="failover"}'] == pytest.approx(0.1)
    assert samples['vti_failover_tunnel_route_metric{tunnel="tun2"}'] == 10
    # tun1 lost its routes: its metric series is gone, not stale.
    assert 'vti_failover_tunnel_route_metric{tunnel="tun1"}' not in samples
    assert samples['vti_failover_actions_total{action="InstallRoute"}'] >= 2
    # Loss and RTT as last told: 1 of tun2's 4 probes lost; tun1 down, its window empty.
    assert samples['vti_failover_tunnel_probe_loss_ratio{tunnel="tun2"}'] == 0.25
    assert samples['vti_failover_tunnel_rtt_milliseconds{tunnel="tun2"}'] == 3.0
    assert 'vti_failover_tunnel_probe_loss_ratio{tunnel="tun1"}' not in samples
    assert samples['vti_failover_tunnel_rtt_milliseconds{tunnel="tun1"}'] == 3.0


def _session_and_restart_actions() -> list[Action]:
    """tun1's session up, lost and back twice; exabgp exits and restarts; VICI goes and comes."""
    cfg = load_config(CONFIG)
    state = engine.initial_state(cfg, 0.0)
    script: list[ev.Event] = [ev.BgpNeighborUp(tunnel="tun1"), ev.BgpNeighborUp(tunnel="tun2")]
    script += [ev.BgpNeighborDown(tunnel="tun1"), ev.BgpNeighborUp(tunnel="tun1")] * 2
    script += [ev.BgpNeighborDown(tunnel="tun2")]
    script += [
        ev.SourceLost(source="exabgp", detail="exited with status -9"),
        ev.ComponentRestarted(component="exabgp", reason="restarted after 0.5s"),
        ev.SourceLost(source="vici", detail="charon unreachable"),
    ]
    out: list[Action] = []
    for i, event in enumerate(script):
        state, actions = engine.step(state, event, float(i))
        out += actions
    return out


async def test_scrape_shows_sessions_and_components() -> None:
    port = free_port()
    exporter = MetricsExporter(
        MetricsSettings(enabled=True, listen=ipaddress.IPv4Address("127.0.0.1"), port=port),
        "site-a",
    )
    await exporter.run()
    try:
        await exporter.apply(_session_and_restart_actions())
        samples = _scrape(exporter.port)
    finally:
        await exporter.close(cleanup=False)
    assert samples['vti_failover_bgp_session_up{tunnel="tun1"}'] == 1
    assert samples['vti_failover_bgp_session_up{tunnel="tun2"}'] == 0
    changes = "vti_failover_bgp_session_changes_total"
    assert samples[f'{changes}{{state="lost",tunnel="tun1"}}'] == 2
    assert samples[f'{changes}{{state="restored",tunnel="tun1"}}'] == 2
    assert samples[f'{changes}{{state="lost",tunnel="tun2"}}'] == 1
    assert samples['vti_failover_component_restarts_total{component="exabgp"}'] == 1
    assert samples['vti_failover_component_up{component="exabgp"}'] == 1
    assert samples['vti_failover_component_up{component="vici"}'] == 0
    assert 'vti_failover_component_restarts_total{component="vici"}' not in samples
    assert samples['vti_failover_alerts_total{kind="bgp-session-lost"}'] == 3


async def test_port_in_use_is_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        exporter = MetricsExporter(
            MetricsSettings(enabled=True, listen=ipaddress.IPv4Address("127.0.0.1"), port=port),
            "site-a",
        )
        await exporter.run()
        # Still usable as an actuator: the failover path must not care.
        await exporter.apply(_failover_actions())
        await exporter.close(cleanup=False)
    assert "cannot listen" in caplog.text


async def test_scrape_counts_refused_learned_prefixes_by_tunnel_and_reason() -> None:
    cfg = load_config(CONFIG)
    state = engine.initial_state(cfg, 0.0)
    out: list[Action] = []
    updates = [
        ("0.0.0.0/0", "127.0.0.0/8", "10.77.0.0/24"),
        ("224.0.0.0/4", "0.0.0.0/0"),  # the default again: refused, not counted twice
    ]
    for i, announced in enumerate(updates):
        event = ev.BgpRoutesChanged(tunnel="tun1", announced=announced)
        state, actions = engine.step(state, event, 1.0 + i)
        out += actions
    port = free_port()
    exporter = MetricsExporter(
        MetricsSettings(enabled=True, listen=ipaddress.IPv4Address("127.0.0.1"), port=port),
        "site-a",
    )
    await exporter.run()
    try:
        await exporter.apply(out)
        samples = _scrape(exporter.port)
    finally:
        await exporter.close(cleanup=False)
    rejected = "vti_failover_learned_rejected_total"
    assert samples[f'{rejected}{{reason="default",tunnel="tun1"}}'] == 1
    assert samples[f'{rejected}{{reason="martian",tunnel="tun1"}}'] == 2
    assert samples['vti_failover_alerts_total{kind="learned-rejected"}'] == 2
