"""The control socket: a unix stream socket (0600) where operators ask the running agent.

It translates only. `status` and `watch` answer the core's snapshot; `drain` and `undrain`
become AdminDisabled / AdminEnabled, submitted through the agent's one event queue, and the
answer says what the core made of them (a drain-refused alert is a refusal). Whatever a
client sends, the worst it gets is an error answer: requests are bounded, clients are
counted, and a client that is not root (or the agent's own user) is turned away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Protocol

from agent.adapters.control_wire import (
    MAX_REQUEST_BYTES,
    Drain,
    RequestError,
    Status,
    Undrain,
    Watch,
    encode,
    failure,
    parse_request,
)
from agent.core.actions import Action, PublishAlert
from agent.core.events import AdminDisabled, AdminEnabled, Event
from agent.core.snapshot import Json
from agent.ports import AdapterError, Emit

__all__ = ["ControlServer", "ControlledAgent"]

log = logging.getLogger("vti_failover.control")

# Beyond this many clients at once, a new one is told so and closed: a loop of `status`
# calls gone wrong cannot take every file descriptor.
MAX_CLIENTS = 16
# How long a client may take to send its request.
REQUEST_TIMEOUT_S = 10.0
# How long the core may take to step a submitted event (it is queued behind evidence).
SUBMIT_TIMEOUT_S = 10.0
# How often a drain with wait looks at the core again.
WAIT_POLL_S = 0.05
_UCRED = struct.Struct("3i")


class ControlledAgent(Protocol):
    """What the control socket may ask of the running agent (the runtime provides it)."""

    def snapshot(self) -> dict[str, Json]: ...

    def version(self) -> object:
        """A value that is another one whenever the core's state changed."""
        ...

    def tunnels(self) -> Collection[str]: ...

    async def submit(self, event: Event) -> Sequence[Action]:
        """Step the core with `event` through the event queue; its actions, once applied."""
        ...


class ControlServer:
    """A Source in the runtime's TaskGroup: serves until cancelled, then removes its socket."""

    name = "control"

    def __init__(
        self, path: Path, agent: ControlledAgent, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self.agent = agent
        self.clock = clock
        self.clients = 0

    async def run(self, emit: Emit) -> None:
        # Drains go through agent.submit, not emit: it brings the core's answer back.
        del emit
        sock = _bind(self.path)
        inode = os.stat(self.path).st_ino
        try:
            server = await asyncio.start_unix_server(
                self._client, sock=sock, limit=MAX_REQUEST_BYTES
            )
        except OSError as exc:
            sock.close()
            raise AdapterError(f"control socket {self.path}: {exc.strerror or exc}") from exc
        log.info("control socket listening on %s", self.path)
        try:
            async with server:
                await server.serve_forever()
        finally:
            with contextlib.suppress(OSError):
                # Only our own socket: a successor may already have bound this path.
                if os.stat(self.path).st_ino == inode:
                    os.unlink(self.path)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.clients >= MAX_CLIENTS:
            await _send_and_close(writer, failure(f"busy: {MAX_CLIENTS} clients connected"))
            return
        if not _trusted(writer):
            await _send_and_close(writer, failure("permission denied: root only"))
            return
        self.clients += 1
        try:
            await self._serve(reader, writer)
        except (ConnectionError, TimeoutError):
            pass  # the client left or stalled: nothing to tell anyone
        except Exception:  # one client's bad luck must never reach the agent
            log.exception("control socket: a request failed")
        finally:
            self.clients -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    line = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                # The rest of that line cannot be told from the next request: end here.
                await _send(writer, failure(f"bad request: longer than {MAX_REQUEST_BYTES} bytes"))
                return
            if not line:
                return
            if not line.strip():
                continue
            try:
                request = parse_request(line)
            except RequestError as exc:
                await _send(writer, failure(str(exc)))
                continue
            if isinstance(request, Watch):
                await self._watch(reader, writer, request.interval_s)
                return
            await _send(writer, encode(await self._answer(request)))

    async def _answer(self, request: Status | Drain | Undrain) -> dict[str, Json]:
        if isinstance(request, Status):
            return {"ok": True, "status": self.agent.snapshot()}
        name = request.tunnel
        if name not in self.agent.tunnels():
            return {"ok": False, "error": f"no tunnel named {name!r}"}
        event: Event
        if isinstance(request, Drain):
            how = " (forced)" if request.force else ""
            log.info("control: drain %s%s requested", name, how)
            event = AdminDisabled(
                tunnel=name,
                reason="drained over the control socket",
                force=request.force,
                at=self.clock(),
            )
        else:
            log.info("control: undrain %s requested", name)
            event = AdminEnabled(tunnel=name, at=self.clock())
        try:
            async with asyncio.timeout(SUBMIT_TIMEOUT_S):
                actions = await self.agent.submit(event)
        except TimeoutError:
            return {
                "ok": False,
                "error": f"the agent did not step the request in {SUBMIT_TIMEOUT_S:g}s",
            }
        refused = next(
            (
                a.reason
                for a in actions
                if isinstance(a, PublishAlert)
                and a.kind == "drain-refused"
                and a.from_tunnels == (name,)
            ),
            None,
        )
        if refused is not None:
            return {"ok": True, "accepted": False, "tunnel": name, "reason": refused}
        answer: dict[str, Json] = {"ok": True, "accepted": True, "tunnel": name}
        if isinstance(request, Drain) and request.wait:
            answer["drained"] = await self._until_drained(name, request.wait_s)
        answer["state"] = _tunnel_of(self.agent.snapshot(), name)
        return answer

    async def _until_drained(self, name: str, wait_s: float) -> bool:
        """Whether the tunnel became ADMIN_DOWN and stopped carrying within wait_s."""
        deadline = self.clock() + wait_s
        while True:
            now = _tunnel_of(self.agent.snapshot(), name)
            if isinstance(now, dict) and now["health"] == "ADMIN_DOWN" and not now["carrying"]:
                return True
            if self.clock() >= deadline:
                return False
            await asyncio.sleep(WAIT_POLL_S)

    async def _watch(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, interval_s: float
    ) -> None:
        """A snapshot now, then one whenever the core's state changed, at most one per
        interval; until the client closes (or sends anything)."""
        seen: object = None
        sent: dict[str, Json] | None = None
        while True:
            version = self.agent.version()
            if version is not seen:
                seen = version
                snap = self.agent.snapshot()
                # The clock alone (and decay computed from it) is no change of state.
                bare = {k: v for k, v in snap.items() if k != "now"}
                if bare != sent:
                    sent = bare
                    await _send(writer, encode({"ok": True, "status": snap}))
            try:
                async with asyncio.timeout(interval_s):
                    await reader.read(MAX_REQUEST_BYTES)
            except TimeoutError:
                continue
            # The client closed, or spoke: either ends the watch.
            return


def _tunnel_of(snap: dict[str, Json], name: str) -> Json:
    tunnels = snap.get("tunnels")
    if isinstance(tunnels, tuple | list):
        for t in tunnels:
            if isinstance(t, dict) and t.get("name") == name:
                return t
    return None


def _bind(path: Path) -> socket.socket:
    """A unix socket bound at `path`, mode 0600 before it listens (nobody connects earlier)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            mode = os.lstat(path).st_mode
            if not stat.S_ISSOCK(mode):
                raise AdapterError(f"control socket {path}: exists and is not a socket")
            # A socket left by an agent that died: the instance lock says none runs now.
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(str(path))
            os.chmod(path, 0o600)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        raise AdapterError(f"control socket {path}: {exc.strerror or exc}") from exc
    return sock


def _trusted(writer: asyncio.StreamWriter) -> bool:
    """Root or the agent's own user: 0600 says the same, unless the file's mode was changed."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return False
    try:
        _, uid, _ = _UCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
    except OSError:
        return False
    return uid in (0, os.geteuid())


async def _send(writer: asyncio.StreamWriter, line: bytes) -> None:
    writer.write(line)
    await writer.drain()


async def _send_and_close(writer: asyncio.StreamWriter, line: bytes) -> None:
    with contextlib.suppress(ConnectionError):
        await _send(writer, line)
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
