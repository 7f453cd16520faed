"""All four liveness inputs in one real agent: `vti-failover run --dry-run` in site A's namespace.

Two charons (kernel-libipsec) hold two IKE connections with one CHILD_SA each; two veth
pairs stand in for the tunnel interfaces, so in-tunnel ICMP probes really cross a link.
The agent watches charon over VICI, probes through the stand-ins and follows their
netlink state. The test breaks one input at a time and reads the actions the agent
prints: each failure moves traffic to the backup with the reason of the input that saw
it, and a charon crash (SA state unknown, probes fine) moves nothing.

The fourth source, kernel XFRM, can only be shown here holding a tunnel down: this
kernel has no ESP, so it holds no SA (kernel-libipsec keeps charon's SAs in userspace).
Its SAs coming and going need the VM lab's kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.probes.lab import Link, add_link, nft, nft_dropped
from tests.support.charon import Charon, IpsecTunnel, two_sites
from tests.support.system import netns, require_tool, run

pytestmark = [pytest.mark.root, pytest.mark.services]

COMMAND = Path(sys.prefix) / "bin" / "vti-failover"
REMOTE = "10.2.0.0/24"

# Traffic selectors on loopback /32s: the SAs carry nothing the probes depend on, and with
# install_routes off charon changes no route in either namespace.
SITE_A = [
    IpsecTunnel("tun1", "192.0.2.1", "192.0.2.2", "a-tun1", "b-tun1", "psk-one-0123456789",
                "10.0.1.1/32", "10.0.2.1/32", mark=1),
    IpsecTunnel("tun2", "198.51.100.1", "198.51.100.2", "a-tun2", "b-tun2", "psk-two-0123456789",
                "10.1.1.1/32", "10.1.2.1/32", mark=2),
]  # fmt: skip

# Generous for a loaded 2-core machine: every wait ends as soon as its line is printed.
WAIT_S = 20.0
HOLD_DOWN_S = 2.0
# Each printed stamp is read just after its decision: a busy machine may delay one of them.
STAMP_JITTER_S = 0.1


ALL_BUT_XFRM = "vici, probe, link"


def agent_config(vici_uri: str, tun1: str = ALL_BUT_XFRM, tun2: str = ALL_BUT_XFRM) -> str:
    """The site A config; tun1 and tun2 name their liveness sources."""
    probe = "{kind: icmp, interval_s: 0.1, timeout_s: 0.5}"
    return f"""\
agent_id: site-a
tunnels:
  - name: tun1
    interface: vti1
    kind: vti
    underlay: {{local: 192.0.2.1, remote: 192.0.2.2}}
    key: 1
    ike: {{connection: tun1, child: tun1}}
    inner: {{local: 169.254.1.1/30, peer: 169.254.1.2}}
    role: primary
    sources: [{tun1}]
    probe: {probe}
  - name: tun2
    interface: vti2
    kind: vti
    underlay: {{local: 198.51.100.1, remote: 198.51.100.2}}
    key: 2
    ike: {{connection: tun2, child: tun2}}
    inner: {{local: 169.254.2.1/30, peer: 169.254.2.2}}
    role: backup
    sources: [{tun2}]
    probe: {probe}
remote_prefixes:
  static: [{REMOTE}]
policy:
  rise: 3
  fall: 5
  # Probes still in flight when a cut is detected are lost after the repair too; a wide
  # margin keeps them from making the repaired tunnel DEGRADED (and its failback slow).
  loss_window: 50
  loss_down: 40
  loss_degraded: 30
  preempt_hold_down_s: {HOLD_DOWN_S:g}
  # Dry-run applies nothing; with none, the core's picture matches the real links.
  link_control: none
  # tun1 flaps three times on purpose within a minute.
  dampening: {{enabled: false}}
vici:
  socket: {vici_uri}
  poll_interval_s: 0.5
# Route lines name their next hops (with groups, a failover is a group line instead).
netlink: {{nexthop_groups: false}}
"""


@dataclass
class StandIns:
    """Site A and site B joined by veth pairs standing in for the tunnel interfaces."""

    ns_a: str
    ns_b: str
    vti1: Link
    vti2: Link


@dataclass
class Sites(StandIns):
    """The stand-ins plus underlays and a charon on each side."""

    a: Charon
    b: Charon


@pytest.fixture
def standins() -> Iterator[StandIns]:
    require_tool("nft")
    with netns("vtfla") as ns_a, netns("vtflb") as ns_b:
        # vti1/vti2 in site A, 169.254.N.1/30 <-> .2 (p1/p2 in site B).
        vti1 = add_link(ns_a, ns_b, 1, near_if="vti1")
        vti2 = add_link(ns_a, ns_b, 2, near_if="vti2")
        yield StandIns(ns_a, ns_b, vti1, vti2)


@pytest.fixture
def sites(standins: StandIns) -> Iterator[Sites]:
    ns_a, ns_b = standins.ns_a, standins.ns_b
    with two_sites(ns_a, ns_b, SITE_A) as (a, b):
        for child in ("tun1", "tun2"):
            a.swanctl("--initiate", "--child", child)
        yield Sites(ns_a, ns_b, standins.vti1, standins.vti2, a, b)


@dataclass
class Agent:
    """The running agent: its stdout read line by line as it prints."""

    proc: asyncio.subprocess.Process
    stderr_path: Path
    lines: list[str] = field(default_factory=list)
    cursor: int = 0
    reader: asyncio.Task[None] | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _closed: bool = False

    async def read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode().rstrip("\n"))
            self._arrived.set()
        self._closed = True
        self._arrived.set()

    def transcript(self) -> str:
        err = self.stderr_path.read_text(errors="replace")[-4000:]
        return "stdout:\n" + "\n".join(self.lines) + "\nstderr (tail):\n" + err

    async def expect(self, pattern: str, timeout: float = WAIT_S) -> list[str]:
        """Lines printed since the last match, up to the first one matching `pattern`."""
        regex = re.compile(pattern)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for i in range(self.cursor, len(self.lines)):
                        if regex.search(self.lines[i]):
                            batch = self.lines[self.cursor : i + 1]
                            self.cursor = i + 1
                            return batch
                    if self._closed:
                        break
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            pass
        pytest.fail(f"no line matching {pattern!r} within {timeout}s\n{self.transcript()}")

    def since_cursor(self) -> list[str]:
        return self.lines[self.cursor :]

    async def exit_status(self, timeout: float = WAIT_S) -> int:
        """Wait for the agent to exit and for its last line to be read."""
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
            if self.reader is not None:
                await self.reader
        return code


@contextlib.asynccontextmanager
async def dry_run_agent(ns: str, config: Path) -> AsyncIterator[Agent]:
    stderr_path = config.with_suffix(".stderr")
    with stderr_path.open("wb") as stderr:
        # ip netns exec execs in place: the pid is the agent's own.
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", ns, str(COMMAND), "run", str(config), "--dry-run",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )  # fmt: skip
    agent = Agent(proc, stderr_path)
    agent.reader = reader = asyncio.create_task(agent.read(), name="agent-stdout")
    try:
        yield agent
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        await asyncio.wait([reader], timeout=5)


def route(interface: str, metric: int) -> str:
    return f"install route {REMOTE} dev {interface} metric {metric}"


def stamp(line: str) -> float:
    """The agent's own clock, printed at the start of each dry-run line."""
    found = re.match(r"\[\s*([0-9.]+)\]", line)
    assert found is not None, line
    return float(found.group(1))


async def swanctl(c: Charon, *args: str) -> None:
    await asyncio.to_thread(c.swanctl, *args)


async def test_sources_drive_failover_and_failback_in_a_dry_run(
    sites: Sites, tmp_path: Path
) -> None:
    config = tmp_path / "site-a.yaml"
    config.write_text(agent_config(sites.a.vici_uri))
    async with dry_run_agent(sites.ns_a, config) as agent:
        # Both SAs up, both stand-ins answering: tun1 carries, tun2 stands by.
        await agent.expect(re.escape(route("vti1", 10)))
        await agent.expect(r"state tun2: UP sa=up standby")
        started_at = agent.cursor

        # VICI: the CHILD_SA is deleted -> failover at once, whatever the probes say.
        await swanctl(sites.a, "--terminate", "--child", "tun1")
        batch = await agent.expect(r"alert failover: tun1 -> tun2 \(tun1 child-sa-down\)")
        assert route("vti2", 10) in "\n".join(batch), agent.transcript()
        await agent.expect(r"state tun1: DOWN sa=down idle")

        # A new CHILD_SA: rise probes make tun1 UP, with no role (not even standby) until
        # it has been healthy for the hold-down; then it carries again.
        await swanctl(sites.a, "--initiate", "--child", "tun1")
        eligible = await agent.expect(r"state tun1: UP sa=up idle")
        batch = await agent.expect(r"alert failback: tun2 -> tun1")
        assert route("vti1", 10) in "\n".join(batch), agent.transcript()
        assert stamp(batch[-1]) - stamp(eligible[-1]) >= HOLD_DOWN_S - STAMP_JITTER_S, (
            agent.transcript()
        )

        # Probes: a silent black hole on tun1's far end; its SA stays up meanwhile.
        with nft(sites.ns_b, f'iifname "{sites.vti1.far_if}" icmp type echo-request counter drop'):
            batch = await agent.expect(r"alert failover: tun1 -> tun2 \(tun1 probe-loss")
            assert route("vti2", 10) in "\n".join(batch), agent.transcript()
            await agent.expect(r"state tun1: DOWN sa=up idle \(probe-loss")
            assert nft_dropped(sites.ns_b) > 0
        batch = await agent.expect(r"alert failback: tun2 -> tun1")
        assert route("vti1", 10) in "\n".join(batch), agent.transcript()

        # charon crashes: its SAs are unknown, not down, and the probes still pass.
        await asyncio.to_thread(sites.a.stop, signal.SIGKILL)
        await agent.expect(r"state tun1: UP sa=unknown carrying")
        # Longer than fall probes plus their timeout, twice over: time for a wrong failover.
        await asyncio.sleep(2.5)
        # Operators hear that charon is gone; routing does not change.
        wrong = [
            line
            for line in agent.since_cursor()
            if ("alert" in line and "component-" not in line) or "route" in line
        ]
        assert not wrong, agent.transcript()

        # Link: tun1's interface vanishes -> failover, with VICI still blind. The kernel
        # takes a deleted interface down before it removes it, so the first sign (and the
        # reason) is usually link-down; link-removed when both notices come in one read.
        await asyncio.to_thread(run, "ip", "-n", sites.ns_a, "link", "del", "vti1")
        batch = await agent.expect(r"alert failover: tun1 -> tun2 \(tun1 link-(down|removed)\)")
        assert route("vti2", 10) in "\n".join(batch), agent.transcript()
        await agent.expect(r"state tun1: DOWN sa=unknown idle \(link-")

        # It comes back under a new ifindex: the link source sees it, the probes find it
        # again, and after rise and the hold-down tun1 carries once more.
        await asyncio.to_thread(add_link, sites.ns_a, sites.ns_b, 1, "vti1")
        eligible = await agent.expect(r"state tun1: UP sa=unknown idle")
        batch = await agent.expect(r"alert failback: tun2 -> tun1")
        assert route("vti1", 10) in "\n".join(batch), agent.transcript()
        assert stamp(batch[-1]) - stamp(eligible[-1]) >= HOLD_DOWN_S - STAMP_JITTER_S, (
            agent.transcript()
        )

        alerts = [line.split("] ", 1)[1] for line in agent.lines[started_at:] if "alert" in line]
        kinds = [a.split(":", 1)[0] for a in alerts]
        moves = [k for k in kinds if k in ("alert failover", "alert failback")]
        assert moves == ["alert failover", "alert failback"] * 3, alerts
        assert "alert component-lost" in kinds, alerts

        # SIGTERM: a clean exit that leaves routing as it is (nothing removed or withdrawn).
        stopped_at = len(agent.lines)
        agent.proc.send_signal(signal.SIGTERM)
        assert await agent.exit_status() == 0, agent.transcript()
        after = agent.lines[stopped_at:]
        assert not [line for line in after if "remove" in line or "withdraw" in line], after
        assert "left as they are" in agent.stderr_path.read_text(), agent.transcript()
        # Shown with -rP: what an operator would have seen.
        print(agent.transcript())


async def test_an_xfrm_listed_tunnel_follows_the_kernel_sas(
    standins: StandIns, tmp_path: Path
) -> None:
    # This kernel holds no SA at all (no ESP): for the XFRM source tun2 has none, so its
    # passing probes must not make it eligible. tun1, which does not list xfrm, carries.
    config = tmp_path / "site-a.yaml"
    config.write_text(agent_config("unix:///nonexistent", "probe, link", "xfrm, probe, link"))
    async with dry_run_agent(standins.ns_a, config) as agent:
        batch = await agent.expect(re.escape(route("vti1", 10)))
        batch += await agent.expect(r"state tun1: UP sa=unknown carrying")
        assert "state tun2: DOWN sa=down idle (child-sa-down)" in "\n".join(batch), (
            agent.transcript()
        )
        # Its probes answer all the while: several rise periods pass without it rising.
        await asyncio.sleep(1.0)
        assert not [line for line in agent.lines if "tun2: UP" in line or "vti2" in line], (
            agent.transcript()
        )
        agent.proc.send_signal(signal.SIGTERM)
        assert await agent.exit_status() == 0, agent.transcript()
        print(agent.transcript())
