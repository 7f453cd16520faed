"""The ExaBGP line protocol without a daemon: rendered commands, parsed JSON, the config file.

JSON samples in data/ were captured from a real ExaBGP 5.0.15 peering with BIRD 2.0.12.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from agent.adapters import exabgp_api as api
from agent.adapters.exabgp import ExaBgpAdapter
from agent.adapters.exabgp_config import exabgp_conf
from agent.config import parse_config
from agent.core.actions import AnnouncePrefix, WithdrawPrefix
from agent.core.events import BgpNeighborDown, BgpNeighborUp, BgpRoutesChanged, Event
from tests.support.system import run

SAMPLES = [
    line
    for line in (Path(__file__).parent / "data" / "exabgp-5.0.15-receive.jsonl")
    .read_text()
    .splitlines()
    if line
]
EXABGP = str(Path(sys.executable).with_name("exabgp"))

CONFIG = """
agent_id: a
tunnels:
  - {name: tun1, interface: v1, key: 1, sources: [probe],
     underlay: {local: 192.0.2.1, remote: 192.0.2.2},
     inner: {local: 169.254.1.1/30, peer: 169.254.1.2}}
  - {name: tun2, interface: v2, key: 2, sources: [probe], role: backup,
     underlay: {local: 198.51.100.1, remote: 198.51.100.2},
     inner: {local: "fd00:2::1/64", peer: "fd00:2::2"}}
site_prefixes: [10.1.0.0/24]
bgp: {local_as: 65001, peer_as: 65002, router_id: 10.1.0.1, hold_time_s: 6}
"""


def test_announce_line_carries_med_prepend_and_communities() -> None:
    action = AnnouncePrefix("169.254.2.2", "tun2", "10.1.0.0/24", 200, 2, ("65001:666", "65001:7"))
    assert api.announce_line(action, 65001) == (
        "neighbor 169.254.2.2 announce route 10.1.0.0/24 next-hop self origin igp med 200 "
        "as-path [ 65001 65001 65001 ] community [ 65001:666 65001:7 ]"
    )


def test_announce_line_without_prepend_leaves_the_as_path_to_exabgp() -> None:
    line = api.announce_line(AnnouncePrefix("169.254.1.2", "tun1", "2001:DB8:A:0::/48", 100), 65001)
    assert line == (
        "neighbor 169.254.1.2 announce route 2001:db8:a::/48 next-hop self origin igp med 100"
    )


def test_withdraw_line() -> None:
    assert api.withdraw_line(WithdrawPrefix("169.254.1.2", "tun1", "10.1.0.0/24")) == (
        "neighbor 169.254.1.2 withdraw route 10.1.0.0/24 next-hop self"
    )


def test_captured_exabgp_lines_parse() -> None:
    parsed = [api.parse_line(line) for line in SAMPLES]
    assert parsed == [
        api.NeighborChanged("169.254.2.2", "connected"),
        api.NeighborChanged("169.254.2.2", "up"),
        api.RoutesChanged("169.254.2.2", ("10.2.0.0/24",), ()),
        api.EndOfRib("169.254.2.2", "ipv4"),
        api.RoutesChanged("169.254.2.2", ("2001:db8:b::/48",), ()),
        api.NeighborChanged("169.254.1.2", "down", "stop, message [shutting down]"),
        api.Ack(ok=False, shutdown=True),
    ]


def test_withdrawals_and_compact_nlri_parse_to_canonical_prefixes() -> None:
    obj = json.loads(SAMPLES[2])
    obj["neighbor"]["message"]["update"] = {
        "withdraw": {
            "ipv4 unicast": [{"nlri": "10.2.0.0/24"}, "10.3.0.0/16"],
            "ipv6 unicast": [{"nlri": "2001:DB8:B:0:0::/48"}],
            "ipv4 flow": [{"nlri": "whatever"}],
        }
    }
    assert api.parse_line(json.dumps(obj)) == api.RoutesChanged(
        "169.254.2.2", (), ("10.2.0.0/24", "10.3.0.0/16", "2001:db8:b::/48")
    )


def test_acks() -> None:
    assert api.parse_line("done\n") == api.Ack(ok=True)
    assert api.parse_line("error") == api.Ack(ok=False)


@pytest.mark.parametrize(
    "line",
    [
        "hello",
        "{not json",
        "[1, 2]",
        '{"type": "state"}',
        '{"type": "update", "neighbor": {"address": {"peer": "not-an-ip"}}}',
        SAMPLES[2].replace("10.2.0.0/24", "10.2.0.0/99"),
        SAMPLES[2].replace('{ "nlri": "10.2.0.0/24" }', "42"),
    ],
)
def test_bad_lines_are_parse_errors(line: str) -> None:
    with pytest.raises(api.ApiParseError):
        api.parse_line(line)


def test_generated_config_passes_exabgp_validate(tmp_path: Path) -> None:
    cfg = parse_config(CONFIG)
    text = exabgp_conf(cfg, [sys.executable, "-m", "agent.adapters.exabgp_relay", "/x/api.sock"])
    conf = tmp_path / "exabgp.conf"
    conf.write_text(text)
    result = run(EXABGP, "validate", str(conf), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    # One session per tunnel, bound to the tunnel's inner address.
    assert "neighbor 169.254.1.2 {" in text
    assert "local-address 169.254.1.1;" in text
    assert "neighbor fd00:2::2 {" in text
    assert "local-address fd00:2::1;" in text
    assert "hold-time 6;" in text


class _Pipe:
    """What the adapter writes to ExaBGP, kept in memory."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        pass


async def test_garbage_from_exabgp_is_logged_and_the_session_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    adapter = ExaBgpAdapter(parse_config(CONFIG), mode="process")
    events: list[Event] = []
    deliver = asyncio.create_task(adapter.run(events.append))
    reader = asyncio.StreamReader()
    pipe = _Pipe()
    serving = asyncio.create_task(adapter._serve(reader, pipe))
    up = SAMPLES[1].replace("169.254.2.2", "169.254.1.2")
    learned = SAMPLES[2].replace("169.254.2.2", "169.254.1.2")
    for line in ("garbage", "{bad json", '{"type": "update"}', up, "", learned):
        reader.feed_data(f"{line}\n".encode())
    # A neighbor that is not one of our tunnels is reported, not acted on.
    reader.feed_data(f"{SAMPLES[1].replace('169.254.2.2', '192.0.2.99')}\n".encode())
    reader.feed_eof()
    await serving
    deliver.cancel()
    assert [(type(e), e.tunnel) for e in events] == [
        (BgpNeighborUp, "tun1"),
        (BgpRoutesChanged, "tun1"),
        # ExaBGP went away: the session it carried is down too.
        (BgpNeighborDown, "tun1"),
    ]
    assert "not an ack and not JSON" in caplog.text
    assert "unknown neighbor 192.0.2.99" in caplog.text


async def test_same_announcement_twice_sends_one_line_and_acks_are_matched() -> None:
    adapter = ExaBgpAdapter(parse_config(CONFIG), mode="process")
    reader = asyncio.StreamReader()
    pipe = _Pipe()
    serving = asyncio.create_task(adapter._serve(reader, pipe))
    await asyncio.sleep(0)
    action = AnnouncePrefix("169.254.1.2", "tun1", "10.1.0.0/24", 100)
    first = asyncio.create_task(adapter.apply([action]))
    await asyncio.sleep(0)
    reader.feed_data(b"done\n")
    await first
    await adapter.apply([action])
    assert pipe.data.decode().count("announce route 10.1.0.0/24") == 1
    # The prefix is IPv4 and tun2's session IPv6: nothing is sent for it.
    await adapter.apply([AnnouncePrefix("fd00:2::2", "tun2", "10.1.0.0/24", 200)])
    assert "fd00:2::2" not in pipe.data.decode()
    refused = asyncio.create_task(
        adapter.apply([WithdrawPrefix("169.254.1.2", "tun1", "10.1.0.0/24")])
    )
    await asyncio.sleep(0)
    reader.feed_data(b"error\n")
    with pytest.raises(Exception, match="refused 1 command"):
        await refused
    reader.feed_eof()
    await serving


def _sent(update: dict[str, object], peer: str = "169.254.2.2") -> str:
    """A captured UPDATE line as ExaBGP reports one it wrote (`api { send { update; } }`)."""
    obj = json.loads(SAMPLES[2].replace("169.254.2.2", peer))
    obj["neighbor"]["direction"] = "send"
    obj["neighbor"]["message"] = {"update": update}
    return json.dumps(obj)


def test_updates_we_sent_parse_apart_from_updates_we_learned() -> None:
    withdrawn = {"withdraw": {"ipv4 unicast": [{"nlri": "10.1.0.0/24"}]}}
    assert api.parse_line(_sent(withdrawn)) == api.RoutesSent("169.254.2.2", (), ("10.1.0.0/24",))
    announced = json.loads(SAMPLES[2])["neighbor"]["message"]["update"]
    assert api.parse_line(_sent(announced)) == api.RoutesSent("169.254.2.2", ("10.2.0.0/24",), ())
    eor = json.loads(SAMPLES[3])
    eor["neighbor"]["direction"] = "send"
    assert isinstance(api.parse_line(json.dumps(eor)), api.Ignored)
    eor["neighbor"]["direction"] = "sideways"
    assert isinstance(api.parse_line(json.dumps(eor)), api.Ignored)


async def _withdrawn_on_up_session(
    adapter: ExaBgpAdapter,
) -> tuple[asyncio.StreamReader, asyncio.Task[None]]:
    """A session up toward tun1's neighbor and a withdrawal to it that exabgp acked."""
    reader = asyncio.StreamReader()
    serving = asyncio.create_task(adapter._serve(reader, _Pipe()))
    reader.feed_data(f"{SAMPLES[1].replace('169.254.2.2', '169.254.1.2')}\n".encode())
    await asyncio.sleep(0)
    withdrawing = asyncio.create_task(
        adapter.apply([WithdrawPrefix("169.254.1.2", "tun1", "10.1.0.0/24")])
    )
    await asyncio.sleep(0)
    reader.feed_data(b"done\n")
    await withdrawing
    return reader, serving


async def test_exabgp_is_stopped_only_once_the_withdrawal_is_on_the_wire() -> None:
    # Defect: `done` only means queued; stopped at once, exabgp dropped the withdrawal and,
    # with graceful restart, BIRD kept our prefix as stale after a reload removed `bgp:`.
    adapter = ExaBgpAdapter(parse_config(CONFIG), mode="process")
    reader, serving = await _withdrawn_on_up_session(adapter)
    closing = asyncio.create_task(adapter.close(False))
    await asyncio.sleep(0.05)
    assert not closing.done()
    # Sent to another neighbor, or another prefix: still waiting.
    reader.feed_data(f"{_sent({'withdraw': {'ipv4 unicast': ['10.1.0.0/24']}})}\n".encode())
    reader.feed_data(
        f"{_sent({'withdraw': {'ipv4 unicast': ['10.9.0.0/24']}}, '169.254.1.2')}\n".encode()
    )
    await asyncio.sleep(0.05)
    assert not closing.done()
    reader.feed_data(
        f"{_sent({'withdraw': {'ipv4 unicast': ['10.1.0.0/24']}}, '169.254.1.2')}\n".encode()
    )
    async with asyncio.timeout(1):
        await closing
    reader.feed_eof()
    await serving


async def test_a_session_that_goes_down_has_nothing_left_to_send() -> None:
    adapter = ExaBgpAdapter(parse_config(CONFIG), mode="process")
    reader, serving = await _withdrawn_on_up_session(adapter)
    closing = asyncio.create_task(adapter.close(False))
    await asyncio.sleep(0.05)
    assert not closing.done()
    reader.feed_data(f"{SAMPLES[5]}\n".encode())
    async with asyncio.timeout(1):
        await closing
    reader.feed_eof()
    await serving


async def test_a_withdrawal_never_reported_sent_delays_the_stop_by_the_ack_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    adapter = ExaBgpAdapter(parse_config(CONFIG + "exabgp: {ack_timeout_s: 0.3}\n"), mode="process")
    reader, serving = await _withdrawn_on_up_session(adapter)
    started = asyncio.get_running_loop().time()
    async with asyncio.timeout(5):
        await adapter.close(False)
    assert asyncio.get_running_loop().time() - started >= 0.25
    assert "1 withdrawal(s) not reported sent within 0.3s" in caplog.text
    reader.feed_eof()
    await serving
