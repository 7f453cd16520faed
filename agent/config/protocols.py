"""Route protocol ids that belong to someone else: the kernel, routing daemons, this host.

The agent changes and sweeps every route carrying its protocol id, in every table: an id
that BIRD or zebra also uses would make it delete their routes. The well-known ids are
Linux's rtnetlink.h, iproute2's rt_protos and FRR's zebra/rt_netlink.h; the host's own
names in /etc/iproute2/rt_protos{,.d/*.conf} are read by `host_owner`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["RT_PROTOS_PATHS", "WELL_KNOWN", "host_owner", "route_protocol_owner"]

WELL_KNOWN: dict[int, str] = {
    0: "the kernel (unspec)",
    1: "the kernel (redirect)",
    2: "the kernel (kernel)",
    3: "the kernel (boot)",
    4: "the kernel (static: ip route add without proto)",
    8: "gated",
    9: "router advertisements (ra)",
    10: "mrt",
    11: "zebra (Quagga/FRR)",
    12: "BIRD",
    13: "DECnet routing (dnrouted)",
    14: "XORP",
    15: "Netsukuku (ntk)",
    16: "DHCP clients",
    17: "mrouted",
    18: "keepalived",
    42: "babel",
    99: "Open/R",
    186: "FRR bgpd",
    187: "FRR isisd",
    188: "FRR ospfd",
    189: "FRR ripd",
    190: "FRR ripngd",
    191: "FRR nhrpd",
    192: "FRR eigrpd",
    193: "FRR ldpd",
    194: "FRR sharpd",
    195: "FRR pbrd",
    196: "FRR staticd",
    197: "FRR fabricd (openfabric)",
    198: "FRR pathd (srte)",
}

RT_PROTOS_PATHS = (
    Path("/etc/iproute2/rt_protos"),
    Path("/usr/share/iproute2/rt_protos"),
    Path("/etc/iproute2/rt_protos.d"),
    Path("/usr/share/iproute2/rt_protos.d"),
)
# The names README suggests for our own entry; an id named so is ours.
_OURS = frozenset({"vti-failover", "vti_failover", "vtifailover"})


def route_protocol_owner(number: int) -> str | None:
    """Who else uses this id, by the well-known list; None when nobody does."""
    return WELL_KNOWN.get(number)


def _files(paths: Iterable[Path]) -> Iterable[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(path.glob("*.conf"))
        elif path.is_file():
            yield path


def host_owner(number: int, paths: Iterable[Path] = RT_PROTOS_PATHS) -> str | None:
    """The name this host's iproute2 files give the id, unless it names us; None if none."""
    for path in _files(paths):
        try:
            # These files are a few hundred bytes; a huge one is not iproute2's.
            text = path.read_text(encoding="utf-8", errors="replace")[: 1 << 20]
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) < 2:
                continue
            try:
                value = int(words[0], 0)
            except ValueError:
                continue
            if value == number and words[1].lower() not in _OURS:
                return f"{words[1]!r} in {path}"
    return None
