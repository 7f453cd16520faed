"""SIGHUP: read the config off the event loop, one reload at a time, and say what cannot change.

Signals only mark a reload as wanted; one task reads the file in a thread (a slow disk or a
hostile path never holds up failover) and hands the result to the core's consumer, which
applies it between two events. SIGHUPs arriving meanwhile collapse into one more read of
the newest file, so a storm ends in one consistent config.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.config import Config, ConfigError
from agent.ports import AdapterError

__all__ = ["Loaded", "Reloader", "refusal"]

log = logging.getLogger("vti_failover.runtime")


@dataclass(frozen=True)
class Loaded:
    """Inbox marker: a config read for a reload (or why it was refused), for the consumer."""

    path: Path
    cfg: Config | None
    problems: tuple[str, ...] = ()
    done: asyncio.Future[None] | None = None


def refusal(running: Config, new: Config) -> str | None:
    """Why `new` cannot replace `running` in a live agent; None when it can."""
    if new.agent_id != running.agent_id:
        # The instance lock, the MQTT client id and topics are all the agent's identity.
        return (
            f"agent_id cannot change from {running.agent_id} to {new.agent_id}: restart the agent"
        )
    old_proto, new_proto = running.netlink.route_protocol, new.netlink.route_protocol
    if new_proto != old_proto:
        # Our routes in the kernel carry the old id: a new one would no longer see them as
        # ours (never replaced, never removed). Migrating rewrites every route twice for a
        # setting that names who we are; do it across a restart, with the old ones flushed.
        return (
            f"netlink.route_protocol cannot change from {old_proto} to {new_proto} while "
            f"routes of protocol {old_proto} are ours; flush them "
            f"(ip route flush proto {old_proto}) and restart the agent"
        )
    if running.bgp is not None and new.bgp is not None:
        if new.exabgp.mode != running.exabgp.mode:
            return (
                f"exabgp.mode cannot change from {running.exabgp.mode} to {new.exabgp.mode}: "
                "restart the agent"
            )
        if new.exabgp.workdir != running.exabgp.workdir:
            return (
                f"exabgp.workdir cannot change from {running.exabgp.workdir} to "
                f"{new.exabgp.workdir} while exabgp runs there: restart the agent"
            )
    if running.bgp is None and new.bgp is not None and new.exabgp.mode == "process":
        return "a bgp section in exabgp.mode process needs exabgp to start the agent: restart it"
    return None


class Reloader:
    """Turns reload requests into Loaded markers; at most one read and one marker at a time."""

    def __init__(
        self,
        path: Path | None,
        load: Callable[[Path], Config],
        deliver: Callable[[Loaded], None],
    ) -> None:
        self.path = path
        self.load = load
        self.deliver = deliver
        self._wanted = asyncio.Event()
        self.requests = 0
        self.reads = 0

    def request(self) -> None:
        """From the signal handler: cheap, and as often as it likes."""
        self.requests += 1
        self._wanted.set()

    async def run(self) -> None:
        while True:
            await self._wanted.wait()
            # Cleared before the read: a SIGHUP during it means "read it again afterwards".
            self._wanted.clear()
            if self.path is None:
                log.warning("SIGHUP: no config file to reload")
                continue
            self.reads += 1
            loaded = await self._read(self.path)
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.deliver(Loaded(loaded.path, loaded.cfg, loaded.problems, done))
            # One reload in flight: the next read starts from the config this one set.
            await done

    async def _read(self, path: Path) -> Loaded:
        try:
            cfg = await asyncio.to_thread(self.load, path)
        except ConfigError as exc:
            return Loaded(path, None, tuple(exc.lines))
        except AdapterError as exc:
            return Loaded(path, None, (str(exc),))
        return Loaded(path, cfg)
