"""The site-wide sections and Config, with the rules that span sections and tunnels."""

from __future__ import annotations

import functools
import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, IPvAnyAddress, model_validator

from agent.config.control import ControlSettings
from agent.config.imports import ImportPolicy
from agent.config.problems import FieldProblemsError, Problem, raise_if, repeats
from agent.config.rules import config_problems
from agent.config.scalars import (
    BothDown,
    Community,
    FrozenModel,
    HostName,
    IPAddress,
    IPNetwork,
    IPv4Address,
    LinkControl,
    Name,
    PolicyMode,
    RouteProtocol,
    RouteTable,
    Seconds,
    ShellCommand,
    TopicPrefix,
)
from agent.config.tunnel import Tunnel


class RemotePrefixes(FrozenModel):
    # A dump is written as it is read: `import`, never the attribute's name.
    model_config = ConfigDict(serialize_by_alias=True)

    static: tuple[IPNetwork, ...] = ()
    # Install the prefixes each tunnel's BGP neighbor announces, via that tunnel.
    learned_from_bgp: bool = False
    # Which of them (`import` in the file: a Python keyword, hence the alias).
    import_: ImportPolicy = Field(default=ImportPolicy(), alias="import")


class AttributeSet(FrozenModel):
    """BGP attributes for one role."""

    med: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] = 100
    as_path_prepend: Annotated[int, Field(ge=0, le=10)] = 0
    communities: tuple[Community, ...] = ()


class BgpSettings(FrozenModel):
    local_as: Annotated[int, Field(ge=1, le=0xFFFFFFFF)]
    peer_as: Annotated[int, Field(ge=1, le=0xFFFFFFFF)]
    router_id: IPv4Address
    hold_time_s: Annotated[int, Field(ge=3, le=65535)] = 9
    # RFC 4724 restart time announced to the peers: they keep our routes (stale) this long
    # while exabgp or the agent restarts. 0 = off; the field on the wire has 12 bits.
    graceful_restart_s: Annotated[int, Field(ge=0, le=4095)] = 120
    # The tunnel carrying traffic and a healthy standby announce with these.
    active: AttributeSet = AttributeSet(med=100)
    standby: AttributeSet = AttributeSet(med=200, as_path_prepend=2)
    # A carrier standing in for a preferred tunnel announces active.med minus one per such
    # tunnel: the far side keeps the dead tunnel's routes until its hold timer (our
    # withdrawal cannot cross a dead tunnel), and only a better MED moves it at once.
    takeover_med: bool = True


class ExaBgpSettings(FrozenModel):
    # supervise: the agent starts exabgp from a generated config.
    # process: exabgp starts the agent as its API process (stdin/stdout).
    mode: Literal["supervise", "process"] = "supervise"
    # supervise only: the command starting exabgp, split like a shell would
    # (e.g. "ip netns exec site-a exabgp" to run it in another namespace).
    executable: ShellCommand = "exabgp"
    # supervise only: where the generated exabgp.conf and the API socket live.
    workdir: Path = Path("/run/vti-failover/exabgp")
    # How long an announce/withdraw may wait for exabgp's done/error before it is an error.
    ack_timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0


class Dampening(FrozenModel):
    """BGP-style flap dampening of a tunnel's eligibility (RFC 2439 vocabulary)."""

    enabled: bool = True
    penalty_per_flap: Annotated[float, Field(gt=0)] = 1000.0
    suppress_above: Annotated[float, Field(gt=0)] = 2500.0
    reuse_below: Annotated[float, Field(gt=0)] = 800.0
    half_life_s: Seconds = 60.0
    max_suppress_s: Seconds = 600.0

    @model_validator(mode="after")
    def _thresholds(self) -> Dampening:
        if self.reuse_below >= self.suppress_above:
            raise FieldProblemsError(
                [
                    (
                        ("reuse_below",),
                        f"{self.reuse_below:g} must be below suppress_above "
                        f"{self.suppress_above:g}",
                    )
                ]
            )
        return self


class Policy(FrozenModel):
    mode: PolicyMode = PolicyMode.ACTIVE_STANDBY
    rise: Annotated[int, Field(ge=1, le=100)] = 3
    fall: Annotated[int, Field(ge=1, le=100)] = 5
    # DOWN when at least loss_down of the last loss_window probes were lost. The window is
    # long (10 s at 5 probes/s) so 5% random loss never reaches it; `fall` catches cuts fast.
    loss_window: Annotated[int, Field(ge=1, le=1000)] = 50
    loss_down: Annotated[int, Field(ge=1, le=1000)] = 25
    # DEGRADED when at least loss_degraded of the window were lost (but fewer than loss_down).
    # 15 of 50 (30%): a path losing 5% each way loses ~10% of round trips, and a sliding
    # window of 50 reaches 10 such losses within minutes by chance alone (15: < 1% in 3 min).
    loss_degraded: Annotated[int, Field(ge=1, le=1000)] = 15
    # DEGRADED when the median RTT of the last rtt_samples answers is over rtt_degraded_ms:
    # one slow answer (a busy CPU, a queue) is not a slow path.
    rtt_degraded_ms: Annotated[float, Field(gt=0)] | None = 250.0
    rtt_samples: Annotated[int, Field(ge=1, le=1000)] = 5
    # Move back to a better tunnel once it has been eligible this long.
    preempt: bool = True
    preempt_hold_down_s: Annotated[float, Field(ge=0, le=86400)] = 30.0
    dampening: Dampening = Dampening()
    both_down: BothDown = BothDown.WITHDRAW
    link_control: LinkControl = LinkControl.DOWN
    # With link_control=down and the SA still present, raise the link again after this
    # long so probes can show whether the tunnel recovered.
    probation_after_s: Seconds = 10.0
    # Count inbound SA traffic as a good probe (Juniper's "optimized" monitor).
    traffic_counts_as_life: bool = False
    active_metric: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] = 10
    standby_metric: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] = 100
    # Routes via this many standbys (best first, metric standby_metric + rank): a fallback
    # for when the carrier's routes vanish with its link before the agent acts. More ranks
    # only cost route writes on every failover (each rank shifts), so the rest get none.
    standby_routes: Annotated[int, Field(ge=0, le=64)] = 2
    table: RouteTable = 254
    # Only on exit: remove our routes and withdraw announcements (default: leave them).
    cleanup_on_exit: bool = False

    @model_validator(mode="after")
    def _windows(self) -> Policy:
        problems: list[Problem] = []
        if self.loss_down > self.loss_window:
            problems.append(
                (
                    ("loss_down",),
                    f"{self.loss_down} exceeds loss_window {self.loss_window}: "
                    "loss could never mark a tunnel down",
                )
            )
        if self.loss_degraded > self.loss_down:
            problems.append(
                (
                    ("loss_degraded",),
                    f"{self.loss_degraded} exceeds loss_down {self.loss_down}",
                )
            )
        if self.standby_metric <= self.active_metric:
            problems.append(
                (
                    ("standby_metric",),
                    f"{self.standby_metric} must be higher than active_metric {self.active_metric}",
                )
            )
        raise_if(problems)
        return self


class TlsSettings(FrozenModel):
    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            raise FieldProblemsError([((missing,), "cert_file and key_file go together")])
        return self


class MqttSettings(FrozenModel):
    enabled: bool = True
    host: HostName = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    topic_prefix: TopicPrefix = "vti-failover"
    username: str | None = None
    # Secrets come from a file or an environment variable, never from this file.
    password_file: Path | None = None
    password_env: str | None = None
    tls: TlsSettings | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 15
    queue_size: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    reconnect_min_s: Seconds = 0.5
    reconnect_max_s: Seconds = 30.0
    # Subscribe to <prefix>/<agent>/cmd for drain/undrain; off unless asked for.
    commands: bool = False
    # Loss and RTT in the retained tunnel state (and the metrics) are refreshed this often
    # at most: they change with every probe, and a dashboard needs no more.
    quality_interval_s: Annotated[float, Field(ge=1, le=3600)] = 10.0

    @model_validator(mode="after")
    def _secrets(self) -> MqttSettings:
        problems: list[Problem] = []
        if self.password_file is not None and self.password_env is not None:
            problems.append((("password_env",), "give password_file or password_env, not both"))
        if self.reconnect_min_s > self.reconnect_max_s:
            problems.append(
                (
                    ("reconnect_min_s",),
                    f"{self.reconnect_min_s:g} exceeds reconnect_max_s {self.reconnect_max_s:g}",
                )
            )
        raise_if(problems)
        return self


class MetricsSettings(FrozenModel):
    enabled: bool = False
    listen: IPAddress = ipaddress.IPv4Address("127.0.0.1")
    port: Annotated[int, Field(ge=1, le=65535)] = 9468


class ViciSettings(FrozenModel):
    socket: str = "unix:///var/run/charon.vici"
    poll_interval_s: Annotated[float, Field(ge=0.1, le=3600)] = 1.0
    # A charon that crashed and came back has no SAs until it has negotiated them again,
    # while the kernel still holds the old ones: a missing SA counts as down only if it is
    # still missing this long after vici answers again (0: at once). Probes still see a
    # real outage meanwhile.
    restart_grace_s: Annotated[float, Field(ge=0, le=600)] = 15.0


class NetlinkSettings(FrozenModel):
    """The netlink actuator's routing-table settings."""

    # The routing-protocol id on every route the agent installs; it changes only routes
    # carrying it. Name it for `ip route`: echo "157 vti-failover" >
    # /etc/iproute2/rt_protos.d/vti-failover.conf. 0-4 are the kernel's own.
    route_protocol: RouteProtocol = 157
    # Read our routes back this often when nothing else happened, and repair what is missing.
    resync_interval_s: Seconds = 30.0
    # Routes point at kernel nexthop groups the agent owns (kernel >= 5.3), so a failover
    # moves every prefix with one group write. auto: when the kernel has nexthop objects.
    # (true/false, or YAML's on/off, force it.)
    nexthop_groups: bool | Literal["auto"] = "auto"


class Config(FrozenModel):
    agent_id: Name
    tunnels: tuple[Tunnel, ...] = Field(min_length=1)
    site_prefixes: tuple[IPNetwork, ...] = ()
    remote_prefixes: RemotePrefixes = RemotePrefixes()
    bgp: BgpSettings | None = None
    exabgp: ExaBgpSettings = ExaBgpSettings()
    policy: Policy = Policy()
    mqtt: MqttSettings | None = None
    metrics: MetricsSettings = MetricsSettings()
    vici: ViciSettings = ViciSettings()
    netlink: NetlinkSettings = NetlinkSettings()
    control: ControlSettings = ControlSettings()

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        tunnels = list(enumerate(self.tunnels))
        problems = repeats(
            ((("tunnels", i, "name"), t.name, f"#{i + 1} in the list") for i, t in tunnels),
            "the name of tunnel",
        )
        problems += repeats(
            ((("tunnels", i, "interface"), t.interface, t.name) for i, t in tunnels),
            "the interface of tunnel",
        )
        problems += repeats(
            (
                (("tunnels", i, "key" if t.key is not None else "mark"), t.sa_mark, t.name)
                for i, t in tunnels
                if t.sa_mark is not None
            ),
            "the key/IPsec mark of tunnel",
        )
        problems += repeats(
            ((("tunnels", i, "if_id"), t.if_id, t.name) for i, t in tunnels if t.if_id is not None),
            "the if_id of tunnel",
        )
        problems += repeats(
            ((("tunnels", i, "inner", "local"), t.inner.local.ip, t.name) for i, t in tunnels),
            "the inner address of tunnel",
        )
        problems += repeats(
            (
                (("tunnels", i, "ike", "child"), f"{t.ike.connection}/{t.ike.child}", t.name)
                for i, t in tunnels
                if t.ike is not None
            ),
            "the IKE connection/child of tunnel",
        )
        problems += repeats(
            ((("site_prefixes", i), p, "above") for i, p in enumerate(self.site_prefixes)),
            "listed",
        )
        problems += repeats(
            (
                (("remote_prefixes", "static", i), p, "above")
                for i, p in enumerate(self.remote_prefixes.static)
            ),
            "listed",
        )
        if self.bgp is not None:
            problems += repeats(
                (
                    (
                        ("tunnels", i, "bgp_neighbor")
                        if t.bgp_neighbor is not None
                        else ("tunnels", i, "inner", "peer"),
                        self.neighbor_of(t),
                        t.name,
                    )
                    for i, t in tunnels
                ),
                "the BGP neighbor of tunnel",
            )
        elif self.remote_prefixes.learned_from_bgp:
            problems.append((("remote_prefixes", "learned_from_bgp"), "true needs a bgp section"))
        for i, net in enumerate(self.remote_prefixes.static):
            if net in self.site_prefixes:
                problems.append(
                    (
                        ("remote_prefixes", "static", i),
                        f"{net} is also in site_prefixes: a prefix is either ours or the far "
                        "side's",
                    )
                )
        problems += config_problems(self)
        raise_if(problems)
        return self

    @property
    def quality_interval_s(self) -> float:
        """How often loss and RTT are told (mqtt.quality_interval_s, also without mqtt)."""
        return (self.mqtt if self.mqtt is not None else MqttSettings()).quality_interval_s

    def neighbor_of(self, tunnel: Tunnel) -> IPvAnyAddress:
        return tunnel.bgp_neighbor if tunnel.bgp_neighbor is not None else tunnel.inner.peer

    def session_next_hops(self, tunnel: Tunnel) -> dict[int, str | None]:
        """IP version -> the next hop our prefixes of it carry over this tunnel's session
        (None: `next-hop self`, the session's own family). A family not in it cannot be
        announced there: its next hop must be an address of that family on the tunnel."""
        own = self.neighbor_of(tunnel).version
        hops: dict[int, str | None] = {own: None}
        if own == 4 and tunnel.inner6 is not None:
            hops[6] = str(tunnel.inner6.local.ip)
        return hops

    @functools.cached_property
    def _tunnel_by_name(self) -> dict[str, Tunnel]:
        return {t.name: t for t in self.tunnels}

    def tunnel(self, name: str) -> Tunnel:
        # Called in per-tunnel loops of the core: a lookup, not a scan (1,000 tunnels).
        return self._tunnel_by_name[name]

    def advisories(self) -> list[str]:
        """Things that are legal but probably not what a site wants."""
        notes = []
        if len(self.tunnels) == 1:
            notes.append("only one tunnel: there is nothing to fail over to")
        if self.bgp is None and not self.remote_prefixes.static:
            notes.append("no bgp and no remote prefixes: the agent will only toggle links")
        for t in self.tunnels:
            if t.probe.timeout_s > t.probe.interval_s * self.policy.fall:
                notes.append(
                    f"tunnel {t.name}: probe timeout {t.probe.timeout_s}s is longer than "
                    f"fall x interval; detection waits on the timeout"
                )
        return notes
