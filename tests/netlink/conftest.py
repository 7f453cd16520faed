"""A namespace with two veth stand-ins for tunnels (vti1, vti2), and an actuator in it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from agent.adapters.netlink import NetlinkActuator
from tests.support.netns_links import add_veth
from tests.support.system import netns


@pytest.fixture
def ns() -> Iterator[str]:
    with netns("vtf-nl") as name:
        add_veth(name, "vti1")
        add_veth(name, "vti2")
        yield name


@pytest.fixture
async def actuator(ns: str) -> AsyncIterator[NetlinkActuator]:
    act = NetlinkActuator(netns=ns)
    try:
        yield act
    finally:
        await act.close(cleanup=False)
