"""A real BIRD2 in a network namespace, and its RIB read back through birdc."""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.system import require_tool, run

__all__ = ["Bird", "BirdRoute", "bgp_peer_block", "bird"]

# Fast timers so sessions come back in seconds (the default error wait is 60 s).
FAST_TIMERS = "hold time 9; keepalive time 3; connect retry time 2; error wait time 1, 5;"


def site_b_config(
    remote4: str, remote6: str, peer: Callable[[int], str], local: Callable[[int], str]
) -> str:
    """BIRD as site B (AS 65002): announces remote4/remote6 on tun1 and tun2, imports all.

    peer(n) is BIRD's address on tunnel n, local(n) the agent's (AS 65001).
    """
    statics = f"""
protocol static st4 {{ ipv4; route {remote4} blackhole; }}
protocol static st6 {{ ipv6; route {remote6} blackhole; }}
"""
    return statics + "".join(
        bgp_peer_block(
            f"tun{n}",
            peer(n),
            65002,
            local(n),
            65001,
            export4='where proto = "st4"',
            export6='where proto = "st6"',
            next_hop6=f"2001:db8:ff:{n}::2",
        )
        for n in (1, 2)
    )


def bgp_peer_block(
    name: str,
    local: str,
    local_as: int,
    neighbor: str,
    neighbor_as: int,
    export4: str = "none",
    export6: str = "none",
    next_hop6: str | None = None,
    timers: str = FAST_TIMERS,
) -> str:
    """One `protocol bgp` that imports everything and exports the given filter expression.

    An IPv6 channel over an IPv4 session needs an IPv6 next hop of its own (`next_hop6`).
    """
    nh6 = f" next hop address {next_hop6};" if next_hop6 else ""
    return f"""
protocol bgp {name} {{
    local {local} as {local_as};
    neighbor {neighbor} as {neighbor_as};
    {timers}
    ipv4 {{ import all; export {export4}; }};
    ipv6 {{ import all; export {export6};{nh6} }};
}}
"""


@dataclass(frozen=True)
class BirdRoute:
    """One path of `show route all`, the attributes the tests look at."""

    prefix: str
    protocol: str
    primary: bool
    med: int | None
    as_path: tuple[int, ...]
    communities: tuple[str, ...]
    next_hop: str | None
    attrs: dict[str, str] = field(default_factory=dict, compare=False)


_HEAD = re.compile(r"^(?P<prefix>\S+/\d+)?\s+\S+\s+\[(?P<proto>[^\s\]]+) [^\]]*\](?P<star> \*)?")


def parse_show_route_all(text: str) -> list[BirdRoute]:
    routes: list[BirdRoute] = []
    current: dict[str, object] | None = None
    prefix = ""

    def flush() -> None:
        if current is not None:
            attrs: dict[str, str] = current["attrs"]  # type: ignore[assignment]
            med = attrs.get("BGP.med")
            path = attrs.get("BGP.as_path", "")
            comms = re.findall(r"\((\d+),(\d+)\)", attrs.get("BGP.community", ""))
            routes.append(
                BirdRoute(
                    prefix=str(current["prefix"]),
                    protocol=str(current["proto"]),
                    primary=bool(current["primary"]),
                    med=int(med) if med is not None else None,
                    as_path=tuple(int(a) for a in path.split()),
                    communities=tuple(f"{a}:{b}" for a, b in comms),
                    next_hop=attrs.get("BGP.next_hop"),
                    attrs=attrs,
                )
            )

    for line in text.splitlines():
        if not line.strip() or line.startswith(("Table ", "BIRD ")):
            continue
        m = _HEAD.match(line)
        if m and not line.startswith("\t"):
            flush()
            prefix = m.group("prefix") or prefix
            current = {
                "prefix": prefix,
                "proto": m.group("proto"),
                "primary": m.group("star") is not None,
                "attrs": {},
            }
            continue
        if current is None:
            continue
        stripped = line.strip()
        if ":" in stripped and stripped.startswith(("BGP.", "Type")):
            key, _, value = stripped.partition(":")
            current["attrs"][key.strip()] = value.strip()  # type: ignore[index]
    flush()
    return routes


@dataclass
class Bird:
    ns: str
    ctl: Path
    proc: subprocess.Popen[bytes]

    def birdc(self, *args: str) -> str:
        return run(require_tool("birdc"), "-s", str(self.ctl), *args).stdout

    def routes(self, protocol: str | None = None) -> list[BirdRoute]:
        out = self.birdc("show", "route", "all", *(("protocol", protocol) if protocol else ()))
        return parse_show_route_all(out)

    def route(self, prefix: str, protocol: str) -> BirdRoute | None:
        return next(
            (r for r in self.routes(protocol) if r.prefix == prefix and r.protocol == protocol),
            None,
        )

    def protocol_state(self, name: str) -> str:
        for line in self.birdc("show", "protocols", name).splitlines():
            parts = line.split()
            if parts and parts[0] == name:
                return parts[5] if len(parts) > 5 else parts[3]
        return "?"

    def graceful_restart_active(self, name: str) -> bool:
        """True while BIRD keeps the routes of a restarting neighbor as stale (RFC 4724)."""
        return "Neighbor graceful restart active" in self.birdc("show", "protocols", "all", name)

    def wait_for(
        self, what: str, check: Callable[[], bool], timeout: float = 30.0, every: float = 0.2
    ) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}\n"
                    + self.birdc("show", "protocols")
                    + self.birdc("show", "route", "all")
                )
            time.sleep(every)


@contextlib.contextmanager
def bird(ns: str, config: str, workdir: Path, router_id: str = "10.2.0.1") -> Iterator[Bird]:
    """Start `bird -f` in `ns` with `config` (after a generated header); stop it afterwards."""
    exe = require_tool("bird")
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "bird.conf"
    ctl = workdir / "bird.ctl"
    log = workdir / "bird.log"
    conf.write_text(f'router id {router_id};\nlog "{log}" all;\nprotocol device {{}}\n' + config)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, exe, "-f", "-c", str(conf), "-s", str(ctl)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not ctl.exists():
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"bird exited: {err}")
            if time.monotonic() > deadline:
                raise RuntimeError("bird did not create its control socket")
            time.sleep(0.05)
        yield Bird(ns=ns, ctl=ctl, proc=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
