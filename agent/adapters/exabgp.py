"""BGP through ExaBGP: announce/withdraw actions become API lines; ExaBGP's JSON becomes events.

One object is both the Actuator (AnnouncePrefix / WithdrawPrefix) and the Source
(BgpNeighborUp/Down, BgpRoutesChanged per UPDATE, BgpEndOfRib). It keeps the announcements
the core asked for and replays them whenever a neighbor comes up or ExaBGP (re)connects, so
a restart on either side ends with the same announcements. Two ways to reach ExaBGP:
supervise (exabgp_supervisor starts `exabgp` from a generated config that already carries
those announcements; its API process relays to our Unix socket) and process (ExaBGP started
us; we speak on stdin/stdout), set up by exabgp_link. The ack channel itself is
exabgp_session.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from agent.adapters import exabgp_api as api
from agent.adapters.exabgp_config import exabgp_conf, exabgp_env
from agent.adapters.exabgp_link import over_socket, over_stdio
from agent.adapters.exabgp_session import AckSession, Writer
from agent.adapters.exabgp_supervisor import ExaBgpSupervisor
from agent.adapters.exabgp_unsent import UnsentWithdrawals
from agent.config import Config
from agent.core.actions import Action, AnnouncePrefix, WithdrawPrefix
from agent.core.events import (
    BgpEndOfRib,
    BgpNeighborDown,
    BgpNeighborUp,
    BgpRoutesChanged,
    Event,
)
from agent.ports import AdapterError, Emit

__all__ = ["ExaBgpAdapter"]

log = logging.getLogger("vti_failover.exabgp")

Mode = Literal["supervise", "process"]
Key = tuple[str, str]  # (neighbor, canonical prefix)

_BACKLOG = 10_000


class ExaBgpAdapter:
    """Actuator and Source for BGP over ExaBGP 5 (see the module docstring)."""

    name = "exabgp"

    def __init__(
        self,
        cfg: Config,
        *,
        mode: Mode | None = None,
        workdir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._mode: Mode = mode if mode is not None else cfg.exabgp.mode
        self._workdir = workdir if workdir is not None else cfg.exabgp.workdir
        self._desired: dict[Key, AnnouncePrefix] = {}
        self._up: set[str] = set()
        self._unsent = UnsentWithdrawals()
        # Neighbor address -> tunnel, as the config last said.
        self._tunnel_of: dict[str, str] = {}
        self._skipped: set[Key] = set()
        self._session: AckSession | None = None
        self._emit: Emit | None = None
        self._backlog: collections.deque[Event] = collections.deque(maxlen=_BACKLOG)
        self._supervisor = ExaBgpSupervisor(
            self._workdir,
            shlex.split(cfg.exabgp.executable),
            {**os.environ, **exabgp_env()},
            clock,
            emit=self._event,
        )
        self._started_conf: str | None = None
        self._connected = asyncio.Event()
        self.lines_sent = 0
        self.last_write_at: float | None = None
        self.configure(cfg)

    # -- configuration ---------------------------------------------------------------

    def configure(self, cfg: Config) -> None:
        """Adopt a reloaded config; a supervised exabgp restarts if its config changed."""
        if cfg.bgp is None:
            raise AdapterError("the exabgp adapter needs a bgp section in the config")
        self._cfg = cfg
        self._local_as = cfg.bgp.local_as
        before = self._tunnel_of
        self._tunnel_of = {}
        for t in cfg.tunnels:
            neighbor = str(cfg.neighbor_of(t))
            self._tunnel_of[neighbor] = t.name
        # A session up under the old config whose neighbor now belongs to no tunnel, or to
        # another one, is not that tunnel's session any more: it went down for the core.
        for neighbor in sorted(self._up):
            if self._tunnel_of.get(neighbor) != before.get(neighbor):
                self._up.discard(neighbor)
                if neighbor in before:
                    self._event(BgpNeighborDown(tunnel=before[neighbor], at=self._clock()))
        self._ack_timeout_s = cfg.exabgp.ack_timeout_s
        self._supervisor.executable = shlex.split(cfg.exabgp.executable)
        if (
            self._mode == "supervise"
            and self._supervisor.pid is not None
            and self._started_conf != self._conf_text()
        ):
            log.info("exabgp config changed: restarting exabgp")
            # Its sessions end with it: nothing more goes to the old one, and the core hears
            # of them now. What the new config announces waits in _desired for the next
            # exabgp's start config.
            session, self._session = self._session, None
            if session is not None:
                session.fail_pending()
            self._connected.clear()
            self._unsent.forget()
            self._all_down("exabgp restarting for a changed config")
            self._supervisor.restart()

    @property
    def socket_path(self) -> Path:
        return self._supervisor.workdir / "api.sock"

    @property
    def exabgp_pid(self) -> int | None:
        """The supervised exabgp's pid while it runs (supervise mode)."""
        return self._supervisor.pid

    def _conf_text(self) -> str:
        """exabgp.conf without the announcements: what a reload compares."""
        return exabgp_conf(self._cfg, self._relay())

    def _start_text(self) -> str:
        """exabgp.conf for the next start: the config plus what the core asks us to announce."""
        self._started_conf = self._conf_text()
        routes: dict[str, list[str]] = {}
        for (neighbor, _), action in sorted(self._desired.items()):
            if self._sendable(action):
                # The API command minus its "neighbor X announce " head is the same route
                # statement in exabgp.conf's grammar.
                route = self._announce(action).split(" announce ", 1)[1]
                routes.setdefault(api.canonical_address(neighbor), []).append(route)
        return exabgp_conf(self._cfg, self._relay(), routes)

    def _relay(self) -> list[str]:
        return [sys.executable, "-m", "agent.adapters.exabgp_relay", str(self.socket_path)]

    # -- Actuator --------------------------------------------------------------------

    def wants(self, action: Action) -> bool:
        return isinstance(action, AnnouncePrefix | WithdrawPrefix)

    async def apply(self, actions: Sequence[Action]) -> None:
        """Record the wanted announcements; send the changes and wait for ExaBGP's acks.

        Without a connected ExaBGP nothing is lost: the set is replayed when it connects.
        """
        lines: list[str] = []
        for action in actions:
            if isinstance(action, AnnouncePrefix):
                key = (action.neighbor, api.canonical_prefix(action.prefix))
                if self._desired.get(key) == action:
                    continue
                self._desired[key] = action
                self._unsent.cancel(api.canonical_address(key[0]), key[1])
                if self._sendable(action):
                    lines.append(self._announce(action))
            elif isinstance(action, WithdrawPrefix):
                key = (action.neighbor, api.canonical_prefix(action.prefix))
                self._desired.pop(key, None)
                if self._sendable(action):
                    lines.append(self._withdraw(action))
        session = self._session
        if not lines or session is None or session.closed:
            if lines:
                log.info("exabgp not connected: %d change(s) kept for replay", len(lines))
            return
        futures = self._send(session, lines)
        try:
            async with asyncio.timeout(self._ack_timeout_s):
                answers = await asyncio.gather(*futures)
        except TimeoutError as exc:
            raise AdapterError(
                f"exabgp did not answer {len(lines)} command(s) within {self._ack_timeout_s}s"
            ) from exc
        refused = [line for line, ok in zip(lines, answers, strict=True) if not ok]
        if refused:
            raise AdapterError(f"exabgp refused {len(refused)} command(s), first: {refused[0]}")

    async def close(self, cleanup: bool) -> None:
        session = self._session
        if cleanup and session is not None and not session.closed and self._desired:
            lines = [
                self._withdraw(
                    WithdrawPrefix(
                        neighbor=a.neighbor, tunnel=a.tunnel, prefix=a.prefix, next_hop=a.next_hop
                    )
                )
                for a in self._desired.values()
                if self._sendable(a)
            ]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._ack_timeout_s):
                    await asyncio.gather(*self._send(session, lines))
        self._desired.clear()
        if self._unsent:
            # Stopped before they are on the wire, they would stay at the peer (see
            # exabgp_unsent); bounded, since a session can stall without going down.
            try:
                async with asyncio.timeout(self._ack_timeout_s):
                    await self._unsent.drained()
            except TimeoutError:
                log.warning(
                    "exabgp: %d withdrawal(s) not reported sent within %ss; stopping it anyway",
                    len(self._unsent),
                    self._ack_timeout_s,
                )
        await self._supervisor.stop()

    # -- Source and connection -------------------------------------------------------

    async def run(self, emit: Emit | None = None) -> None:
        """As a Source (with emit): deliver events. As an Actuator: hold the ExaBGP link."""
        if emit is not None:
            await self._deliver(emit)
        elif self._mode == "process":
            await over_stdio(self._serve)
        else:
            await over_socket(self.socket_path, self._supervisor, self._start_text, self._serve)

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def _deliver(self, emit: Emit) -> None:
        self._emit = emit
        try:
            while self._backlog:
                emit(self._backlog.popleft())
            await asyncio.get_running_loop().create_future()
        finally:
            self._emit = None

    def _event(self, event: Event) -> None:
        if self._emit is not None:
            self._emit(event)
        else:
            self._backlog.append(event)

    def _announce(self, action: AnnouncePrefix) -> str:
        return api.announce_line(action, self._local_as)

    def _withdraw(self, action: WithdrawPrefix) -> str:
        """The withdraw line; one to an up session is awaited on the wire before a stop."""
        peer = api.canonical_address(action.neighbor)
        if peer in self._up:
            self._unsent.expect(peer, api.canonical_prefix(action.prefix))
        return api.withdraw_line(action)

    def _sendable(self, action: AnnouncePrefix | WithdrawPrefix) -> bool:
        """False for a prefix of the other family than the session, unless it comes with a
        next hop of its own family (see api.same_family)."""
        if api.same_family(action.prefix, action.next_hop or action.neighbor):
            return True
        key = (action.neighbor, action.prefix)
        if key not in self._skipped:
            self._skipped.add(key)
            log.warning(
                "exabgp: not announcing %s to %s: the session is of the other address family",
                action.prefix,
                action.neighbor,
            )
        return False

    def _send(self, session: AckSession, lines: Sequence[str]) -> list[asyncio.Future[bool]]:
        futures = session.send(lines)
        self.lines_sent += len(lines)
        self.last_write_at = self._clock()
        return futures

    def _replay(self, session: AckSession, neighbor: str | None) -> None:
        """Send the wanted announcements (of one neighbor, or all) without waiting for acks."""
        lines = [
            self._announce(a)
            for (n, _), a in sorted(self._desired.items())
            if (neighbor is None or n == neighbor) and self._sendable(a)
        ]
        if lines:
            log.info("exabgp: replaying %d announcement(s) to %s", len(lines), neighbor or "all")
            self._send(session, lines)

    async def _serve(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        """Speak with one connected ExaBGP until it goes away."""
        old = self._session
        if old is not None:
            old.fail_pending()
            old.writer.close()
        session = AckSession(writer)
        self._session = session
        self._connected.set()
        # A fresh ExaBGP (or relay) may have lost what we announced: give it everything.
        self._replay(session, None)
        try:
            while True:
                try:
                    raw = await reader.readline()
                except ValueError:
                    # A line longer than the reader's limit: skip it, keep the session.
                    log.warning("exabgp: over-long line dropped")
                    continue
                if not raw:
                    break
                if self._handle(session, raw.decode("utf-8", "replace")):
                    break
        finally:
            session.fail_pending()
            if self._session is session:
                self._session = None
                self._connected.clear()
                self._unsent.forget()
                self._all_down()

    def _all_down(self, reason: str = "exabgp connection closed") -> None:
        for neighbor in sorted(self._up):
            tunnel = self._tunnel_of.get(neighbor)
            if tunnel is not None:
                self._event(
                    BgpNeighborDown(
                        tunnel=tunnel, reason=reason, at=self._clock(), speaker_lost=True
                    )
                )
        self._up.clear()

    def _handle(self, session: AckSession, line: str) -> bool:
        """Act on one line from ExaBGP; True when ExaBGP says it is shutting down."""
        if not line.strip():
            return False
        try:
            msg = api.parse_line(line)
        except api.ApiParseError as exc:
            log.warning("exabgp: %s", exc)
            return False
        now = self._clock()
        match msg:
            case api.Ack(shutdown=True):
                log.info("exabgp is shutting down")
                return True
            case api.Ack(ok=ok):
                session.answered(ok)
            case api.NeighborChanged(peer=peer, state=state, reason=reason):
                tunnel = self._tunnel_of.get(peer)
                if tunnel is None:
                    log.warning("exabgp: state of unknown neighbor %s ignored", peer)
                elif state == "up":
                    self._up.add(peer)
                    self._event(BgpNeighborUp(tunnel=tunnel, at=now))
                    self._replay(session, peer)
                elif state == "down":
                    log.info("exabgp: neighbor %s (%s) down: %s", peer, tunnel, reason or "-")
                    self._up.discard(peer)
                    self._unsent.forget(peer)
                    self._event(BgpNeighborDown(tunnel=tunnel, reason=reason, at=now))
            case api.RoutesChanged(peer=peer, announced=announced, withdrawn=withdrawn):
                tunnel = self._tunnel_of.get(peer)
                if tunnel is None:
                    log.warning("exabgp: routes from unknown neighbor %s ignored", peer)
                    return False
                # One event per UPDATE: a table of 100,000 prefixes is a few hundred steps.
                self._event(
                    BgpRoutesChanged(
                        tunnel=tunnel, announced=announced, withdrawn=withdrawn, at=now
                    )
                )
            case api.RoutesSent(peer=peer, withdrawn=withdrawn):
                self._unsent.sent(peer, withdrawn)
            case api.EndOfRib(peer=peer, family=family):
                tunnel = self._tunnel_of.get(peer)
                if tunnel is not None:
                    self._event(BgpEndOfRib(tunnel=tunnel, family=family, at=now))
            case api.Ignored():
                pass
        return False
