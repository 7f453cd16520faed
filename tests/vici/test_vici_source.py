"""The VICI source against two real charons: what the core hears when SAs come and go."""

from __future__ import annotations

import asyncio
import signal

import pytest

from agent.core.events import (
    ChildSaDown,
    ChildSaRekeyed,
    ChildSaUp,
    Event,
    InboundTrafficSeen,
    SourceLost,
    SourceRecovered,
)
from tests.support.charon import Charon
from tests.support.system import sh_in
from tests.vici.conftest import Sites, running, vici_source

pytestmark = [pytest.mark.root, pytest.mark.services]


def is_(kind: type[Event], tunnel: str | None = None) -> object:
    def want(e: Event) -> bool:
        return isinstance(e, kind) and (tunnel is None or getattr(e, "tunnel", None) == tunnel)

    return want


async def swanctl(c: Charon, *args: str) -> None:
    await asyncio.to_thread(c.swanctl, *args)


async def test_start_states_every_tunnel_then_follows_up_and_down(sites: Sites) -> None:
    async with running(vici_source(sites.a.vici_uri)) as rec:
        # No SA yet: the first list-sas says so for both tunnels.
        first = [await rec.next(is_(ChildSaDown)) for _ in range(2)]
        assert {e.tunnel for e in first if isinstance(e, ChildSaDown)} == {"tun1", "tun2"}

        await swanctl(sites.a, "--initiate", "--child", "tun1")
        up = await rec.next(is_(ChildSaUp))
        assert up == ChildSaUp(tunnel="tun1", source="vici", at=up.at)

        # tun2 is named differently in swanctl.conf: found by its if_id.
        await swanctl(sites.a, "--initiate", "--child", "isp2")
        assert (await rec.next(is_(ChildSaUp))).tunnel == "tun2"  # type: ignore[attr-defined]

        await swanctl(sites.a, "--terminate", "--child", "tun1")
        down = await rec.next(is_(ChildSaDown))
        assert down.tunnel == "tun1"  # type: ignore[attr-defined]
        assert "child-updown" in down.reason  # type: ignore[attr-defined]
        # tun2 did not move.
        assert not any(isinstance(e, ChildSaDown) and e.tunnel == "tun2" for e in rec.events[2:]), (
            rec.events
        )


async def test_peer_deleting_the_ike_sa_takes_the_tunnel_down(sites: Sites) -> None:
    async with running(vici_source(sites.a.vici_uri)) as rec:
        await rec.next(is_(ChildSaDown, "tun1"))
        await swanctl(sites.a, "--initiate", "--child", "tun1")
        await rec.next(is_(ChildSaUp, "tun1"))
        # The far end terminates the whole IKE SA.
        await swanctl(sites.b, "--terminate", "--ike", "tun1")
        down = await rec.next(is_(ChildSaDown, "tun1"))
        assert down.source == "vici"  # type: ignore[attr-defined]


async def test_rekeys_never_look_like_a_failure(sites: Sites) -> None:
    async with running(vici_source(sites.a.vici_uri, poll_interval_s=0.1)) as rec:
        await swanctl(sites.a, "--initiate", "--child", "tun1")
        await rec.next(is_(ChildSaUp, "tun1"))
        start = len(rec.events)
        await swanctl(sites.a, "--rekey", "--child", "tun1")
        await rec.next(is_(ChildSaRekeyed, "tun1"))
        # The far end rekeys too, then the IKE SA itself is rekeyed from both sides.
        await swanctl(sites.b, "--rekey", "--child", "tun1")
        await rec.next(is_(ChildSaRekeyed, "tun1"))
        await swanctl(sites.a, "--rekey", "--ike", "tun1")
        await swanctl(sites.b, "--rekey", "--ike", "tun1")
        # Several polls pass while old SAs are being deleted, and the CHILD_SA settles on
        # the new IKE SA (on a loaded machine the listing can still show only the old,
        # REKEYED one for a while: wait for the new one, generously).
        await asyncio.sleep(1.0)
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            listed = await asyncio.to_thread(sites.a.swanctl, "--list-sas")
            if "INSTALLED" in listed.stdout:
                break
            assert asyncio.get_running_loop().time() < deadline, listed.stdout
            await asyncio.sleep(0.2)
        seen = rec.since(start)
        assert not [e for e in seen if isinstance(e, ChildSaDown | SourceLost)], seen


async def test_graceful_charon_stop_reports_its_deleted_sas(sites: Sites) -> None:
    async with running(vici_source(sites.a.vici_uri)) as rec:
        await swanctl(sites.a, "--initiate", "--child", "tun1")
        await rec.next(is_(ChildSaUp, "tun1"))
        start = len(rec.events)
        # SIGTERM: charon deletes its IKE SAs (and says so) before it closes VICI.
        await asyncio.to_thread(sites.a.stop)
        await rec.next(is_(SourceLost))
        seen = [type(e) for e in rec.since(start)]
        assert seen == [ChildSaDown, SourceLost], rec.since(start)


async def test_charon_crash_is_blindness_then_a_resync(sites: Sites) -> None:
    async with running(vici_source(sites.a.vici_uri)) as rec:
        await swanctl(sites.a, "--initiate", "--child", "tun1")
        await rec.next(is_(ChildSaUp, "tun1"))
        start = len(rec.events)

        # A crash says nothing about the SAs (kernel SAs outlive charon): unknown, not down.
        await asyncio.to_thread(sites.a.stop, signal.SIGKILL)
        lost = await rec.next(is_(SourceLost))
        assert lost.source == "vici"  # type: ignore[attr-defined]
        await asyncio.sleep(1.5)  # several reconnect attempts fail meanwhile
        while_down = rec.since(start)
        assert [type(e) for e in while_down] == [SourceLost], while_down

        await asyncio.to_thread(sites.a.start)
        await rec.next(is_(SourceRecovered))
        # The restarted charon has no SA: the resync says so, for each tunnel.
        assert (await rec.next(is_(ChildSaDown, "tun1"))).reason == "vici list-sas"  # type: ignore[attr-defined]
        await rec.next(is_(ChildSaDown, "tun2"))
        await asyncio.to_thread(sites.a.load, sites.a.swanctl_conf_path.read_text())
        await swanctl(sites.a, "--initiate", "--child", "tun1")
        await rec.next(is_(ChildSaUp, "tun1"))
        assert sum(isinstance(e, SourceLost) for e in rec.events) == 1


async def test_a_socket_that_appears_later_is_picked_up(sites: Sites) -> None:
    await asyncio.to_thread(sites.a.stop)
    async with running(vici_source(sites.a.vici_uri)) as rec:
        await rec.next(is_(SourceLost))
        await asyncio.to_thread(sites.a.start)
        await asyncio.to_thread(sites.a.load, sites.a.swanctl_conf_path.read_text())
        await swanctl(sites.a, "--initiate", "--child", "tun1")
        await rec.next(is_(SourceRecovered))
        await rec.next(is_(ChildSaUp, "tun1"))
        assert sum(isinstance(e, SourceLost) for e in rec.events) == 1


async def test_inbound_traffic_is_seen_in_the_counters(sites: Sites) -> None:
    async with running(vici_source(sites.a.vici_uri, poll_interval_s=0.2)) as rec:
        await swanctl(sites.a, "--initiate", "--child", "tun1")
        await rec.next(is_(ChildSaUp, "tun1"))
        await asyncio.sleep(0.5)
        assert not [e for e in rec.events if isinstance(e, InboundTrafficSeen)], rec.events
        # The far site sends through the tunnel; site A's inbound SA counts it.
        await asyncio.to_thread(
            sh_in, sites.ns_b, "ping", "-c", "5", "-i", "0.05", "-I", "10.0.2.1", "10.0.1.1"
        )
        # The pings may straddle polls: their counts add up.
        counted = 0
        while counted < 5:
            seen = await rec.next(is_(InboundTrafficSeen, "tun1"), timeout=5)
            counted += seen.packets  # type: ignore[attr-defined]
        assert counted == 5
        assert not [
            e for e in rec.events if isinstance(e, InboundTrafficSeen) and e.tunnel == "tun2"
        ]
