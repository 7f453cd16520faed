"""Link source -> real core -> netlink actuator, in a namespace: a dead primary moves the route."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from agent.adapters.links import LinkSource
from agent.adapters.netlink import DEFAULT_ROUTE_PROTOCOL, NetlinkActuator
from agent.config import Config
from agent.runtime import Adapters, Runtime
from tests.support.netns_links import add_veth, link_flags, route_monitor, routes
from tests.support.system import netns, run

pytestmark = pytest.mark.root

PROTO = str(DEFAULT_ROUTE_PROTOCOL)


def config() -> Config:
    def tunnel(n: int) -> dict[str, Any]:
        return {
            "name": f"tun{n}",
            "interface": f"vti{n}",
            "kind": "vti",
            "key": n,
            "underlay": {"local": f"192.0.2.{n}", "remote": f"198.51.100.{n}"},
            "inner": {"local": f"169.254.{n}.1/30", "peer": f"169.254.{n}.2"},
            "role": "primary" if n == 1 else "backup",
            "sources": ["link"],
        }

    return Config.model_validate(
        {
            "agent_id": "site-a",
            "tunnels": [tunnel(1), tunnel(2)],
            "remote_prefixes": {"static": ["10.2.0.0/24", "2001:db8:2::/48"]},
            "policy": {"probation_after_s": 3600, "dampening": {"enabled": False}},
        }
    )


def table(ns: str) -> list[tuple[str, str, int]]:
    got = routes(ns, "proto", PROTO) + routes(ns, "proto", PROTO, family="-6")
    return sorted((r["dst"], r["dev"], r["metric"]) for r in got)


async def until(check: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def agent(ns: str, cfg: Config) -> AsyncIterator[Runtime]:
    def build(c: Config) -> Adapters:
        links = {t.name: t.interface for t in c.tunnels}
        return Adapters(
            sources=[LinkSource(links, netns=ns)],
            actuators=[NetlinkActuator(netns=ns)],
        )

    rt = Runtime(cfg, build)
    task = asyncio.create_task(rt.run())
    try:
        yield rt
    finally:
        rt.stop()
        await asyncio.wait_for(task, 10)


async def test_dead_primary_moves_remote_prefix_to_backup_and_restart_is_silent() -> None:
    cfg = config()
    with netns("vtf-fo") as ns:
        add_veth(ns, "vti1")
        add_veth(ns, "vti2")
        # Someone else's route to the same prefix (`ip route add` marks it proto boot): it
        # must survive everything below.
        run("ip", "-n", ns, "route", "add", "10.2.0.0/24", "dev", "vti2", "metric", "500")
        async with agent(ns, cfg):
            # Once the core has seen both links up it installs carrier and standby.
            await until(lambda: len(table(ns)) == 4, timeout=10)
            assert table(ns) == [
                ("10.2.0.0/24", "vti1", 10),
                ("10.2.0.0/24", "vti2", 100),
                ("2001:db8:2::/48", "vti1", 10),
                ("2001:db8:2::/48", "vti2", 100),
            ]
        # Restart with nothing changed: not one route written or deleted.
        with route_monitor(ns) as mon:
            async with agent(ns, cfg):
                # Links seen, core settled and its InstallRoutes applied (against adopted routes).
                await asyncio.sleep(2.0)
                assert len(table(ns)) == 4
                quiet = mon.stop()
        assert quiet == []

        async with agent(ns, cfg):
            await asyncio.sleep(1.0)
            # The far end of tun1 goes away: vti1 loses carrier.
            run("ip", "-n", ns, "link", "set", "vti1p", "down")
            await until(lambda: len(table(ns)) == 2, timeout=5)
            assert table(ns) == [("10.2.0.0/24", "vti2", 10), ("2001:db8:2::/48", "vti2", 10)]
            # link_control=down: the dead tunnel's interface is taken down too.
            await until(lambda: "UP" not in link_flags(ns, "vti1"), timeout=5)
        foreign = routes(ns, "proto", "boot")
        assert [(r["dst"], r["dev"], r["metric"]) for r in foreign] == [
            ("10.2.0.0/24", "vti2", 500)
        ]
