"""Our kernel nexthop objects: one per (device, gateway, family), and the core's groups over them.

Translation only: the core names a group by a small number and lists its next hops; this
keeps the kernel objects that say so. Every object carries our protocol id; kernel ids are
`route_protocol << 20` plus the core's number for groups, and a range above MEMBERS for the
single nexthops, so a restarted agent finds (adopts) exactly its own.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from typing import Any

from agent.adapters import nexthops
from agent.adapters.nexthop_wire import NexthopObject

__all__ = ["MEMBERS", "GroupTable", "Hop"]

MEMBERS = 0x80000
# (ifindex, gateway or None)
Hop = tuple[int, str | None]


class GroupTable:
    def __init__(self, protocol: int) -> None:
        self.protocol = protocol
        self.base = protocol << 20
        # What the kernel holds of ours (by kernel id), as last read or written.
        self.owned: dict[int, NexthopObject] = {}
        self.writes = 0

    def kernel_id(self, group: int) -> int:
        return self.base + group

    def is_group(self, kernel_id: int) -> bool:
        return self.base < kernel_id < self.base + MEMBERS

    async def refresh(self, ipr: Any) -> set[int]:
        """Read our objects back; the kernel ids of groups that vanished since last read.

        The kernel deletes a device's nexthops when it goes down or away, and a group left
        empty with them, routes and all: the caller forgets routes on a vanished group.
        """
        now = await nexthops.dump(ipr, self.protocol)
        gone = {i for i, o in self.owned.items() if o.group and i not in now}
        self.owned = now
        return gone

    def _member(self, family: int, hop: Hop) -> int | None:
        oif, gateway = hop
        for i, o in self.owned.items():
            if not o.group and (o.family, o.oif, o.gateway) == (family, oif, gateway):
                return i
        return None

    def _free_member_id(self) -> int:
        n = self.base + MEMBERS
        while n in self.owned:
            n += 1
        return n

    async def set(self, ipr: Any, group: int, version: int, hops: Iterable[Hop]) -> bool:
        """Make group `group` hold these hops (creating members as needed); True if written."""
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        members = []
        for hop in hops:
            member = self._member(family, hop)
            if member is None:
                member = self._free_member_id()
                single = NexthopObject(
                    id=member, family=family, protocol=self.protocol, oif=hop[0], gateway=hop[1]
                )
                await self._replace(ipr, single)
            members.append(member)
        kernel_id = self.kernel_id(group)
        obj = NexthopObject(
            id=kernel_id,
            family=socket.AF_UNSPEC,
            protocol=self.protocol,
            group=tuple(sorted(members)),
        )
        if self.owned.get(kernel_id) == obj:
            return False
        await self._replace(ipr, obj)
        return True

    async def _replace(self, ipr: Any, obj: NexthopObject) -> None:
        self.writes += 1
        await nexthops.replace(ipr, obj)
        self.owned[obj.id] = obj

    async def remove(self, ipr: Any, group: int) -> None:
        """Delete the group (no route of ours may still use it), then unused members."""
        kernel_id = self.kernel_id(group)
        if kernel_id in self.owned:
            self.writes += 1
            await nexthops.delete(ipr, kernel_id)
            del self.owned[kernel_id]
        await self.collect(ipr)

    async def collect(self, ipr: Any, keep: Callable[[int], bool] = lambda _: True) -> None:
        """Delete groups `keep` does not keep (default: none), then members no group uses."""
        for i, o in list(self.owned.items()):
            if o.group and not keep(i) and self.is_group(i):
                self.writes += 1
                await nexthops.delete(ipr, i)
                del self.owned[i]
        used = {m for o in self.owned.values() for m in o.group}
        for i, o in list(self.owned.items()):
            if not o.group and i not in used:
                self.writes += 1
                await nexthops.delete(ipr, i)
                del self.owned[i]
