"""Process mode: ExaBGP runs the adapter as its API process (stdin/stdout), peering with BIRD."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.adapters.exabgp_config import exabgp_conf, exabgp_env
from tests.bgp.conftest import EXABGP, REMOTE4, Topology, agent_config
from tests.support.bird import Bird

pytestmark = [pytest.mark.root, pytest.mark.services]

SITE = "10.1.0.0/24"
ROOT = Path(__file__).resolve().parents[2]


async def test_exabgp_runs_the_adapter_and_bird_sees_its_announcements(
    topo: Topology, bird_peer: Bird, tmp_path: Path
) -> None:
    cfg = agent_config(topo, tmp_path / "unused", mode="process")
    yaml_path = tmp_path / "agent.yaml"
    # The harness reads the same settings back; a minimal YAML mirror of the config is enough.
    yaml_path.write_text(json.dumps(cfg.model_dump(mode="json")))
    sock = tmp_path / "control.sock"
    conf = tmp_path / "exabgp.conf"
    conf.write_text(
        exabgp_conf(
            cfg, [sys.executable, "-m", "tests.bgp.process_harness", str(yaml_path), str(sock)]
        )
    )
    got: list[dict[str, object]] = []
    connected: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await connected.put((r, w))

    server = await asyncio.start_unix_server(on_conn, path=str(sock))
    env = {**os.environ, **exabgp_env(), "PYTHONPATH": str(ROOT)}
    exabgp = subprocess.Popen(
        ["ip", "netns", "exec", topo.ns_a, EXABGP, str(conf)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(20):
            reader, writer = await connected.get()

        async def pump() -> None:
            async for raw in reader:
                got.append(json.loads(raw))

        pumping = asyncio.create_task(pump())

        async def wait(pred: object, timeout: float = 30) -> None:
            async with asyncio.timeout(timeout):
                while not any(pred(e) for e in got):  # type: ignore[operator]
                    await asyncio.sleep(0.05)

        def send(obj: dict[str, object]) -> None:
            writer.write((json.dumps(obj) + "\n").encode())

        send(
            {
                "kind": "announce",
                "neighbor": Topology.peer(1),
                "tunnel": "tun1",
                "prefix": SITE,
                "med": 100,
            }
        )
        send(
            {
                "kind": "announce",
                "neighbor": Topology.peer(2),
                "tunnel": "tun2",
                "prefix": SITE,
                "med": 200,
                "as_path_prepend": 1,
                "communities": ["65001:666"],
            }
        )
        await asyncio.to_thread(
            bird_peer.wait_for,
            "announcements",
            lambda: bool(bird_peer.route(SITE, "tun1") and bird_peer.route(SITE, "tun2")),
        )
        two = bird_peer.route(SITE, "tun2")
        assert two is not None
        assert (two.med, two.as_path, two.communities) == (200, (65001, 65001), ("65001:666",))
        await wait(lambda e: e["type"] == "BgpNeighborUp" and e["tunnel"] == "tun2")
        await wait(lambda e: e["type"] == "BgpRoutesChanged" and REMOTE4 in e["announced"])

        send({"kind": "withdraw", "neighbor": Topology.peer(1), "tunnel": "tun1", "prefix": SITE})
        await asyncio.to_thread(
            bird_peer.wait_for, "withdrawal", lambda: bird_peer.route(SITE, "tun1") is None
        )
        bird_peer.birdc("disable", "tun2")
        await wait(lambda e: e["type"] == "BgpNeighborDown" and e["tunnel"] == "tun2")
        writer.close()
        pumping.cancel()
    finally:
        exabgp.terminate()
        try:
            exabgp.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(exabgp.pid, 9)
            exabgp.wait()
        server.close()
