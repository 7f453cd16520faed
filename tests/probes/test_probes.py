"""The probe source against real kernels: veth stand-ins, far namespaces answering pings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.adapters.probes import ProbeSource
from agent.config import ProbeKind, Tunnel
from agent.core.health import Health
from tests.probes.lab import CUT, CoreFeed, add_link, nft, nft_dropped, running, tunnel
from tests.support.system import free_port, netns, sh_in

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
# The default policy: DOWN after `fall` losses in a row, or 25 of the last 50.
FALL = 5


@contextlib.contextmanager
def far_process(ns: str, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _check_cut_detection(feed: CoreFeed, t: Tunnel, cut_before: float, cut_after: float) -> None:
    down = [(emitted, at) for emitted, at, name, h in feed.transitions
            if name == t.name and h is Health.DOWN and at >= cut_before]  # fmt: skip
    assert down, f"{t.name} never went DOWN: {feed.transitions}"
    emitted, at = down[0]
    interval, timeout = t.probe.interval_s, t.probe.timeout_s
    bound = FALL * interval + timeout
    # The fall-th lost probe was sent at least (fall-1) intervals after the first one.
    assert at - cut_after >= (FALL - 1) * interval + timeout - 0.05, (at - cut_after, bound)
    # When the core was told (`at` = that probe's timeout) and when the event reached it.
    assert at - cut_before <= bound + 0.02, (at - cut_before, bound)
    assert emitted - cut_before <= bound + 0.15, (emitted - cut_before, bound)


async def test_total_cut_is_detected_within_fall_intervals_plus_timeout(
    near: str, far: str
) -> None:
    link = add_link(near, far, 1)
    t = tunnel("tun1", link.near_if, link.v4_near, link.v4_far, interval_s=0.1, timeout_s=0.3)
    feed = CoreFeed.of(t)
    async with running(ProbeSource([t], netns=near), feed):
        await feed.wait_for("tun1", Health.UP, within=2.0)
        ok, _ = feed.of_tunnel("tun1")
        # Answered by the far kernel, over a veth: well under a millisecond or two.
        assert all(0 < e.rtt_ms < 50 for e in ok)
        cut_before = time.monotonic()
        with nft(far, *CUT):
            cut_after = time.monotonic()
            await feed.wait_for("tun1", Health.DOWN, within=3.0)
        _check_cut_detection(feed, t, cut_before, cut_after)
        # Repaired: back UP after `rise` answered probes.
        await feed.wait_for("tun1", Health.UP, within=2.0)


async def test_five_percent_random_loss_never_takes_the_tunnel_down(near: str, far: str) -> None:
    """300 probes at 5% loss, default policy: no false DOWN, and every drop is reported.

    A false DOWN needs 5 losses in a row (chance ~ 300 * 0.05**5 ~ 1e-4 per run) or 25 of
    50 (~1e-18). The loss count must equal what netem dropped: a source that lost,
    duplicated or invented probe results would fail here even when no DOWN followed.
    """
    link = add_link(near, far, 1)
    t = tunnel("tun1", link.near_if, link.v4_near, link.v4_far, interval_s=0.05, timeout_s=0.25)
    feed = CoreFeed.of(t)
    sent: list[float] = []
    source = ProbeSource([t], netns=near, on_send=lambda _n, _p, actual: sent.append(actual))
    with nft(far, "icmp type echo-request numgen random mod 100 < 5 counter drop"):
        async with running(source, feed):
            while len(sent) < 300:
                await asyncio.sleep(0.1)
            # Let the last probes answer or time out.
            await asyncio.sleep(0.3)
        dropped = nft_dropped(far)
    ok, lost = feed.of_tunnel("tun1")
    reported = [e for e in ok if e.at <= sent[299]] + [
        e for e in lost if e.at <= sent[299] + t.probe.timeout_s
    ]
    assert Health.DOWN not in [h for _, _, _, h in feed.transitions], feed.transitions
    assert feed.health("tun1") in (Health.UP, Health.DEGRADED)
    assert len(reported) == 300, "each probe sent must be reported exactly once"
    assert 0 < dropped < 60
    assert abs(len(lost) - dropped) <= 2, (len(lost), dropped)


async def test_ipv6_probes_are_answered_and_a_cut_detected(near: str, far: str) -> None:
    link = add_link(near, far, 2)
    t = tunnel("tun6", link.near_if, link.v6_near, link.v6_far, interval_s=0.1, timeout_s=0.3)
    feed = CoreFeed.of(t)
    async with running(ProbeSource([t], netns=near), feed):
        await feed.wait_for("tun6", Health.UP, within=2.0)
        cut_before = time.monotonic()
        with nft(far, *CUT):
            cut_after = time.monotonic()
            await feed.wait_for("tun6", Health.DOWN, within=3.0)
    ok, _ = feed.of_tunnel("tun6")
    assert len(ok) >= 3
    assert all(0 < e.rtt_ms < 50 for e in ok)
    _check_cut_detection(feed, t, cut_before, cut_after)


async def test_replies_for_another_tunnel_sequence_or_payload_do_not_count(near: str) -> None:
    """Tunnel B's far end answers only with forged replies; B must see nothing but loss."""
    with netns("vtfpf") as far_a, netns("vtfpf") as far_b:
        link_a = add_link(near, far_a, 1)
        link_b = add_link(near, far_b, 2)
        sh_in(far_b, "sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1")
        a = tunnel("a", link_a.near_if, link_a.v4_near, link_a.v4_far)
        b = tunnel("b", link_b.near_if, link_b.v4_near, link_b.v4_far)
        feed = CoreFeed.of(a, b)
        source = ProbeSource([a, b], netns=near)
        spoof = ["tests/probes/spoof_echo.py", "--ident", str(source.ident_of("b")),
                 "--fake-source", link_a.v4_far]  # fmt: skip
        async with running(source, feed):
            with far_process(far_b, *spoof) as proc:
                await feed.wait_for("b", Health.DOWN, within=3.0)
                await asyncio.sleep(0.5)
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            forged_phase = len(feed.events)
            # The same far end answering honestly is heard: the forged replies did arrive
            # through the same path, they were refused on their merits.
            with far_process(far_b, *spoof, "--honest"):
                await feed.wait_for("b", Health.UP, within=3.0)
        ok_b, lost_b = feed.of_tunnel("b")
        assert not [e for e in ok_b if feed.events.index(e) < forged_phase]
        assert len(lost_b) >= FALL
        ok_a, lost_a = feed.of_tunnel("a")
        assert len(ok_a) >= 10
        assert not lost_a


async def test_unsendable_probes_are_lost_and_logged_once(
    near: str, far: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No interface yet: every probe is lost, one warning; once it exists, probes pass."""
    t = tunnel("late", "late0", "169.254.3.1", "169.254.3.2", interval_s=0.05, timeout_s=0.2)
    feed = CoreFeed.of(t)
    caplog.set_level(logging.INFO, logger="vti_failover.probes")
    async with running(ProbeSource([t], netns=near), feed):
        await feed.wait_for("late", Health.DOWN, within=2.0)
        await asyncio.sleep(0.3)
        add_link(near, far, 3, near_if="late0")
        await feed.wait_for("late", Health.UP, within=3.0)
    _, lost = feed.of_tunnel("late")
    assert len(lost) >= 10
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(warnings) == 1
    assert "late0" in warnings[0].getMessage()
    assert len(infos) == 1
    assert "again" in infos[0].getMessage()


@pytest.mark.parametrize("family", [4, 6])
async def test_udp_echo_probes_through_the_shipped_responder(
    near: str, far: str, family: int
) -> None:
    link = add_link(near, far, 4)
    port = free_port()
    local, peer = (link.v4_near, link.v4_far) if family == 4 else (link.v6_near, link.v6_far)
    t = tunnel("udp", link.near_if, local, peer, kind=ProbeKind.UDP, udp_port=port)
    feed = CoreFeed.of(t)
    serve = ["-c", "import asyncio, sys; from agent.adapters.probes import serve_udp_echo; "
             f"asyncio.run(serve_udp_echo({port}))"]  # fmt: skip
    with far_process(far, *serve):
        async with running(ProbeSource([t], netns=near), feed):
            await feed.wait_for("udp", Health.UP, within=3.0)
            with nft(far, f"udp dport {port} drop"):
                await feed.wait_for("udp", Health.DOWN, within=3.0)
    ok, _ = feed.of_tunnel("udp")
    assert all(0 < e.rtt_ms < 50 for e in ok)


async def test_a_blocked_loop_is_reported_once_and_recovery_too(
    near: str, far: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The scheduler cannot keep its rate while the loop is blocked: it says so, once."""
    link = add_link(near, far, 1)
    t = tunnel("a", link.near_if, link.v4_near, link.v4_far, interval_s=0.05, timeout_s=0.2)
    source = ProbeSource([t], netns=near)
    feed = CoreFeed.of(t)
    caplog.set_level(logging.INFO, logger="vti_failover.probes")
    async with running(source, feed):
        await feed.wait_for("a", Health.UP, within=3.0)
        for _ in range(3):
            time.sleep(0.3)  # the whole event loop stalls, as under a busy core
            await asyncio.sleep(0.5)
    assert source.late_sends >= 3
    late = [r.getMessage() for r in caplog.records if "late" in r.getMessage()]
    again = [r.getMessage() for r in caplog.records if "on schedule again" in r.getMessage()]
    assert len(late) == 3, late
    assert len(again) == 3, again
