"""The control socket of the real Runtime, in this process: status, watch, drain, undrain and
hostile clients, over a real unix socket. The sources are scripted, the actuator records.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agent.config import load_config
from agent.control import socket_path
from agent.core import events as ev
from agent.runtime import Adapters, Runtime
from tests.runtime.fakes import Recorder, ScriptedSource, config_text, healthy, until, write


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, raw: bytes) -> None:
        self.writer.write(raw)
        await self.writer.drain()

    async def answer(self) -> dict[str, Any]:
        async with asyncio.timeout(5):
            line = await self.reader.readline()
        assert line.endswith(b"\n"), line
        out: dict[str, Any] = json.loads(line)
        return out

    async def ask(self, **request: Any) -> dict[str, Any]:
        await self.send(json.dumps(request).encode() + b"\n")
        return await self.answer()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


class Agent:
    def __init__(self, tmp_path: Path, hold: float = 30.0) -> None:
        self.cfg = load_config(write(tmp_path / "site.yaml", config_text(hold)))
        self.source = ScriptedSource(healthy("tun1", "tun2"))
        self.recorder = Recorder()
        self.runtime = Runtime(self.cfg, self.build)
        self.path = socket_path(self.cfg)

    def build(self, _: object) -> Adapters:
        return Adapters(sources=[self.source], actuators=[self.recorder])

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[Client]:
        reader, writer = await asyncio.open_unix_connection(str(self.path))
        c = Client(reader, writer)
        try:
            yield c
        finally:
            await c.close()


@contextlib.asynccontextmanager
async def running(tmp_path: Path, hold: float = 30.0) -> AsyncIterator[Agent]:
    agent = Agent(tmp_path, hold)
    task = asyncio.create_task(agent.runtime.run())
    try:
        await until(lambda: agent.recorder.first("install route 10.2.0.0/24 dev vti1 metric 10"))
        await until(agent.path.exists)
        yield agent
    finally:
        agent.runtime.stop()
        async with asyncio.timeout(5):
            assert await task == 0
    # The socket leaves with the agent.
    assert not agent.path.exists()


def tunnel(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in status["tunnels"] if t["name"] == name)


async def test_status_is_the_cores_snapshot_on_a_root_only_socket(tmp_path: Path) -> None:
    async with running(tmp_path) as agent, agent.client() as c:
        assert stat.S_IMODE(os.stat(agent.path).st_mode) == 0o600
        answer = await c.ask(command="status")
        assert answer["ok"] is True
        status = answer["status"]
        assert status["agent_id"] == "rt"
        assert status["carriers"] == ["tun1"]
        assert tunnel(status, "tun1")["role"] == "carrying"
        assert tunnel(status, "tun2")["metric"] == 100
        # The same connection serves one request after another.
        assert (await c.ask(command="status"))["ok"] is True


async def test_drain_moves_traffic_before_the_answer_and_the_last_tunnel_is_refused(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, hold=0.2) as agent, agent.client() as c:
        before = len(agent.recorder.applied)
        answer = await c.ask(command="drain", tunnel="tun1", wait=True)
        assert answer["accepted"] is True
        assert answer["drained"] is True
        assert answer["state"]["health"] == "ADMIN_DOWN"
        assert answer["state"]["carrying"] is False
        # Carried out when the answer came, make-before-break: the carrier route is replaced
        # in place (same prefix and metric, one atomic write) before tun2's standby route goes.
        lines = agent.recorder.lines(before)
        new = lines.index("install route 10.2.0.0/24 dev vti2 metric 10")
        standby = lines.index("remove route 10.2.0.0/24 dev vti2 metric 100")
        assert new < standby
        assert not any(line.startswith("remove route 10.2.0.0/24 dev vti1") for line in lines)
        assert "alert failover: tun1 -> tun2 (tun1 drained over the control socket)" in lines

        refused = await c.ask(command="drain", tunnel="tun2")
        assert refused["ok"] is True
        assert refused["accepted"] is False
        assert "last usable tunnel" in refused["reason"]
        assert agent.runtime.state.carriers == ("tun2",)

        back = await c.ask(command="undrain", tunnel="tun1")
        assert back["accepted"] is True
        assert back["state"]["health"] == "INIT"
        # Probes prove it again, and after its hold-down it takes traffic back.
        agent.source.push(*healthy("tun1"))
        await until(lambda: agent.runtime.state.carriers == ("tun1",))

        forced = await c.ask(command="drain", tunnel="tun2", force=True)
        assert forced["accepted"] is True
        assert forced["state"]["health"] == "ADMIN_DOWN"


async def test_watch_sends_a_new_snapshot_when_the_state_changes(tmp_path: Path) -> None:
    async with running(tmp_path) as agent, agent.client() as c:
        await c.send(b'{"command": "watch", "interval_s": 0.1}\n')
        first = (await c.answer())["status"]
        assert first["carriers"] == ["tun1"]
        agent.source.push(ev.ChildSaDown(tunnel="tun1"))
        async with asyncio.timeout(5):
            while True:
                status = (await c.answer())["status"]
                if status["carriers"] == ["tun2"]:
                    break
        assert status["last_move"]["kind"] == "failover"
        assert status["last_move"]["reason"] == "tun1 child-sa-down"


async def test_garbage_gets_an_error_answer_and_the_agent_carries_on(tmp_path: Path) -> None:
    async with running(tmp_path) as agent:
        async with agent.client() as c:
            for raw, error in [
                (b"hello\n", "not JSON"),
                (b"\xff\xfe\x00\n", "not UTF-8"),
                (b"[1, 2]\n", "expected an object"),
                (b'{"command": "reboot"}\n', "command must be one of"),
                (b'{"command": "status", "x": 1}\n', "status takes no x"),
                (b'{"command": "drain"}\n', "needs a tunnel name"),
                (b'{"command": "drain", "tunnel": "tun1", "force": "yes"}\n', "true or false"),
                (b'{"command": "watch", "interval_s": 0}\n', "from 0.1 to 60"),
                (b'{"command": "watch", "interval_s": 1e999}\n', "out of range"),
                (b'{"command": "drain", "tunnel": "nope"}\n', "no tunnel named 'nope'"),
                (b"[" * 40 + b"\n", "nested"),
            ]:
                await c.send(raw)
                answer = await c.answer()
                assert answer["ok"] is False, raw
                assert error in answer["error"], (raw, answer)
            # After all that, the same connection still answers.
            assert (await c.ask(command="status"))["ok"] is True
        async with agent.client() as c:
            # A line past the bound ends the connection, with one answer saying why.
            await c.send(b"x" * 5000 + b"\n")
            assert "longer than 1024 bytes" in (await c.answer())["error"]
            async with asyncio.timeout(5):
                assert await c.reader.read() == b""
        # A client that connects and leaves at once, mid-request.
        async with agent.client() as c:
            await c.send(b'{"command": "sta')
        # The agent still decides and still answers.
        agent.source.push(ev.ChildSaDown(tunnel="tun1"))
        await until(lambda: agent.runtime.state.carriers == ("tun2",))
        async with agent.client() as c:
            assert (await c.ask(command="status"))["status"]["carriers"] == ["tun2"]
