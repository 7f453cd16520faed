"""The agent's configuration: pydantic models loaded from YAML, every cross-field rule here.

A config that loads is one the rest of the agent can trust: names, keys, interfaces and
neighbors are unique, inner addresses sit inside their subnets, a VTI key equals its IPsec
mark. Nothing here touches the system.
"""

from __future__ import annotations

import difflib
import enum
import functools
import ipaddress
import re
import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    IPvAnyInterface,
    IPvAnyNetwork,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

__all__ = [
    "AttributeSet",
    "BgpSettings",
    "BothDown",
    "Config",
    "ConfigError",
    "Dampening",
    "ExaBgpSettings",
    "InnerAddressing",
    "LinkControl",
    "MetricsSettings",
    "MqttSettings",
    "NetlinkSettings",
    "Policy",
    "PolicyMode",
    "ProbeKind",
    "ProbeSettings",
    "RemotePrefixes",
    "Source",
    "TlsSettings",
    "Tunnel",
    "TunnelKind",
    "Underlay",
    "ViciSettings",
    "load_config",
    "parse_config",
]

IPAddress = IPvAnyAddress
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_INTERFACE_PATTERN = r"^[A-Za-z0-9_.@-]+$"
_COMMUNITY_PATTERN = r"^\d{1,5}:\d{1,5}$"
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=_NAME_PATTERN)]
# Linux IFNAMSIZ is 16 including the terminating NUL.
InterfaceName = Annotated[str, Field(min_length=1, max_length=15, pattern=_INTERFACE_PATTERN)]
Seconds = Annotated[float, Field(gt=0, le=86400)]
Community = Annotated[str, Field(pattern=_COMMUNITY_PATTERN)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


class ConfigError(Exception):
    """A config that cannot be used; `lines` holds one readable line per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


Loc = tuple[int | str, ...]
Problem = tuple[Loc, str]


class _FieldProblemsError(ValueError):
    """Raised by cross-field rules: each problem names the field a person has to change."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(message for _, message in self.problems))


def _raise_if(problems: list[Problem]) -> None:
    if problems:
        raise _FieldProblemsError(problems)


def _repeats(entries: Iterable[tuple[Loc, object, str]], used_as: str) -> list[Problem]:
    """One problem per repeated value, at the repeat: (location, value, who has it)."""
    first: dict[object, str] = {}
    problems: list[Problem] = []
    for loc, value, owner in entries:
        if value in first:
            problems.append((loc, f"{value} is already {used_as} {first[value]}"))
        else:
            first[value] = owner
    return problems


class TunnelKind(enum.StrEnum):
    VTI = "vti"
    XFRM = "xfrm"
    GRE = "gre"
    TAP = "tap"
    # The seed article's iptables variant: no tunnel interface of its own, traffic is
    # steered into the SA by a firewall mark on a plain interface.
    MARK = "mark"


class Source(enum.StrEnum):
    """Where the agent learns a tunnel's liveness."""

    VICI = "vici"
    XFRM = "xfrm"
    PROBE = "probe"
    LINK = "link"


class ProbeKind(enum.StrEnum):
    ICMP = "icmp"
    UDP = "udp"


class PolicyMode(enum.StrEnum):
    ACTIVE_STANDBY = "active-standby"
    ACTIVE_ACTIVE = "active-active"


class BothDown(enum.StrEnum):
    """What routing does when no tunnel is eligible."""

    # Remove our routes and announcements: traffic falls back to whatever else routes it.
    WITHDRAW = "withdraw"
    # Keep the last carrier's routes and announcements: better a maybe-dead path than none.
    KEEP_LAST = "keep-last"


class LinkControl(enum.StrEnum):
    """When the agent sets a tunnel interface administratively down."""

    NONE = "none"
    # Only while the SA is known to be gone.
    SA_DOWN = "sa-down"
    # Whenever the tunnel is DOWN; raised again for probation (see Policy.probation_after_s).
    DOWN = "down"


class Underlay(_Model):
    local: IPAddress
    remote: IPAddress

    @model_validator(mode="after")
    def _same_family(self) -> Underlay:
        if self.local.version != self.remote.version:
            raise _FieldProblemsError(
                [
                    (
                        ("remote",),
                        f"{self.remote} is IPv{self.remote.version} but local {self.local} "
                        f"is IPv{self.local.version}: both ends must be the same family",
                    )
                ]
            )
        if self.local == self.remote:
            raise _FieldProblemsError(
                [(("remote",), f"{self.remote} is also the local address: the ends must differ")]
            )
        return self


class InnerAddressing(_Model):
    """The tunnel's inside: our address with its prefix length, and the far end's address."""

    local: IPvAnyInterface
    peer: IPAddress

    @model_validator(mode="after")
    def _peer_in_subnet(self) -> InnerAddressing:
        if self.local.version != self.peer.version:
            message = (
                f"{self.peer} is IPv{self.peer.version} but local {self.local} is "
                f"IPv{self.local.version}: both must be the same family"
            )
        elif self.peer not in self.local.network:
            message = (
                f"{self.peer} is outside the local subnet {self.local.network} "
                f"(local {self.local}): the peer must be on the tunnel's own subnet"
            )
        elif self.peer == self.local.ip:
            message = f"{self.peer} is the local address itself: give the far end's address"
        else:
            return self
        raise _FieldProblemsError([(("peer",), message)])


class IkeNames(_Model):
    """strongSwan names: the IKE connection and its CHILD_SA as in swanctl.conf."""

    connection: Name
    child: Name


class ProbeSettings(_Model):
    kind: ProbeKind = ProbeKind.ICMP
    interval_s: Annotated[float, Field(ge=0.05, le=60)] = 0.2
    timeout_s: Annotated[float, Field(ge=0.01, le=60)] = 0.5
    # Only for kind=udp: the peer's echo port.
    udp_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    payload_bytes: Annotated[int, Field(ge=0, le=1400)] = 16

    @model_validator(mode="after")
    def _udp_needs_port(self) -> ProbeSettings:
        if self.kind is ProbeKind.UDP and self.udp_port is None:
            raise _FieldProblemsError(
                [(("udp_port",), "required with kind: udp (the port of the peer's echo service)")]
            )
        if self.kind is ProbeKind.ICMP and self.udp_port is not None:
            raise _FieldProblemsError(
                [(("udp_port",), f"{self.udp_port} is only used with kind: udp (kind is icmp)")]
            )
        return self


class Tunnel(_Model):
    name: Name
    interface: InterfaceName
    kind: TunnelKind = TunnelKind.VTI
    underlay: Underlay
    # VTI key (ikey = okey) for kind=vti; the IPsec mark strongSwan puts on the SA.
    key: Annotated[int, Field(ge=1, le=0xFFFFFFFF)] | None = None
    mark: Annotated[int, Field(ge=1, le=0xFFFFFFFF)] | None = None
    if_id: Annotated[int, Field(ge=1, le=0xFFFFFFFF)] | None = None
    ike: IkeNames | None = None
    inner: InnerAddressing
    role: Literal["primary", "backup"] = "primary"
    # Lower is preferred; defaults by role (primary 100, backup 200).
    priority: Annotated[int, Field(ge=0, le=65535)] | None = None
    sources: tuple[Source, ...] = (Source.VICI, Source.PROBE, Source.LINK)
    probe: ProbeSettings = ProbeSettings()
    # The BGP neighbor over this tunnel; defaults to the inner peer address when bgp is on.
    bgp_neighbor: IPAddress | None = None
    # Routing table for this tunnel's routes; defaults to the policy's table.
    table: Annotated[int, Field(ge=1, le=0xFFFFFFFF)] | None = None

    @property
    def effective_priority(self) -> int:
        if self.priority is not None:
            return self.priority
        return 100 if self.role == "primary" else 200

    @model_validator(mode="after")
    def _kind_rules(self) -> Tunnel:
        problems: list[Problem] = []
        if self.kind is TunnelKind.VTI:
            if self.key is None and self.mark is None:
                problems.append((("key",), "required for kind: vti (equal to its IPsec mark)"))
            if self.key is not None and self.mark is not None and self.key != self.mark:
                problems.append(
                    (
                        ("key",),
                        f"VTI key {self.key} must equal the IPsec mark {self.mark}: the kernel "
                        "matches SAs to the VTI by that mark",
                    )
                )
            if self.if_id is not None:
                problems.append(
                    (("if_id",), f"{self.if_id} is for kind: xfrm; a vti tunnel uses key")
                )
        elif self.kind is TunnelKind.XFRM:
            if self.if_id is None:
                problems.append(
                    (("if_id",), "required for kind: xfrm (strongSwan if_id_in/if_id_out)")
                )
            if self.key is not None:
                problems.append((("key",), f"{self.key} is for kind: vti; xfrm uses if_id"))
        elif self.kind is TunnelKind.MARK and self.mark is None:
            problems.append((("mark",), "required for kind: mark (the firewall/IPsec mark)"))
        repeated = [s.value for s, n in Counter(self.sources).items() if n > 1]
        if repeated:
            problems.append((("sources",), f"{', '.join(repeated)} listed more than once"))
        if not self.sources:
            problems.append((("sources",), "name at least one liveness source"))
        if Source.VICI in self.sources and self.ike is None:
            problems.append(
                (("ike",), "required with source vici: {connection: NAME, child: NAME}")
            )
        _raise_if(problems)
        return self

    @property
    def sa_mark(self) -> int | None:
        """The mark that ties SAs to this tunnel (VTI key or explicit mark)."""
        return self.mark if self.mark is not None else self.key


class RemotePrefixes(_Model):
    static: tuple[IPvAnyNetwork, ...] = ()
    # Install the prefixes each tunnel's BGP neighbor announces, via that tunnel.
    learned_from_bgp: bool = False


class AttributeSet(_Model):
    """BGP attributes for one role."""

    med: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] = 100
    as_path_prepend: Annotated[int, Field(ge=0, le=10)] = 0
    communities: tuple[Community, ...] = ()


class BgpSettings(_Model):
    local_as: Annotated[int, Field(ge=1, le=0xFFFFFFFF)]
    peer_as: Annotated[int, Field(ge=1, le=0xFFFFFFFF)]
    router_id: ipaddress.IPv4Address
    hold_time_s: Annotated[int, Field(ge=3, le=65535)] = 9
    # The tunnel carrying traffic and a healthy standby announce with these.
    active: AttributeSet = AttributeSet(med=100)
    standby: AttributeSet = AttributeSet(med=200, as_path_prepend=2)
    # A carrier standing in for a preferred tunnel announces active.med minus one per such
    # tunnel: the far side keeps the dead tunnel's routes until its hold timer (our
    # withdrawal cannot cross a dead tunnel), and only a better MED moves it at once.
    takeover_med: bool = True


class ExaBgpSettings(_Model):
    # supervise: the agent starts exabgp from a generated config.
    # process: exabgp starts the agent as its API process (stdin/stdout).
    mode: Literal["supervise", "process"] = "supervise"
    # supervise only: the command starting exabgp, split like a shell would
    # (e.g. "ip netns exec site-a exabgp" to run it in another namespace).
    executable: str = Field(default="exabgp", min_length=1)
    # supervise only: where the generated exabgp.conf and the API socket live.
    workdir: Path = Path("/run/vti-failover/exabgp")
    # How long an announce/withdraw may wait for exabgp's done/error before it is an error.
    ack_timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0


class Dampening(_Model):
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
            raise _FieldProblemsError(
                [
                    (
                        ("reuse_below",),
                        f"{self.reuse_below:g} must be below suppress_above "
                        f"{self.suppress_above:g}",
                    )
                ]
            )
        return self


class Policy(_Model):
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
    table: Annotated[int, Field(ge=1, le=0xFFFFFFFF)] = 254
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
        _raise_if(problems)
        return self


class TlsSettings(_Model):
    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            raise _FieldProblemsError([((missing,), "cert_file and key_file go together")])
        return self


class MqttSettings(_Model):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    topic_prefix: str = Field(default="vti-failover", pattern=r"^[^#+]+$")
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
        _raise_if(problems)
        return self


class MetricsSettings(_Model):
    enabled: bool = False
    listen: IPAddress = ipaddress.IPv4Address("127.0.0.1")
    port: Annotated[int, Field(ge=1, le=65535)] = 9468


class ViciSettings(_Model):
    socket: str = "unix:///var/run/charon.vici"
    poll_interval_s: Annotated[float, Field(ge=0.1, le=3600)] = 1.0


class NetlinkSettings(_Model):
    """The netlink actuator's routing-table settings."""

    # The routing-protocol id on every route the agent installs; it changes only routes
    # carrying it. Name it for `ip route`: echo "157 vti-failover" >
    # /etc/iproute2/rt_protos.d/vti-failover.conf. 0-4 are the kernel's own.
    route_protocol: Annotated[int, Field(ge=5, le=255)] = 157
    # Read our routes back this often when nothing else happened, and repair what is missing.
    resync_interval_s: Seconds = 30.0


class Config(_Model):
    agent_id: Name
    tunnels: tuple[Tunnel, ...] = Field(min_length=1)
    site_prefixes: tuple[IPvAnyNetwork, ...] = ()
    remote_prefixes: RemotePrefixes = RemotePrefixes()
    bgp: BgpSettings | None = None
    exabgp: ExaBgpSettings = ExaBgpSettings()
    policy: Policy = Policy()
    mqtt: MqttSettings | None = None
    metrics: MetricsSettings = MetricsSettings()
    vici: ViciSettings = ViciSettings()
    netlink: NetlinkSettings = NetlinkSettings()

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        tunnels = list(enumerate(self.tunnels))
        problems = _repeats(
            ((("tunnels", i, "name"), t.name, f"#{i + 1} in the list") for i, t in tunnels),
            "the name of tunnel",
        )
        problems += _repeats(
            ((("tunnels", i, "interface"), t.interface, t.name) for i, t in tunnels),
            "the interface of tunnel",
        )
        problems += _repeats(
            (
                (("tunnels", i, "key" if t.key is not None else "mark"), t.sa_mark, t.name)
                for i, t in tunnels
                if t.sa_mark is not None
            ),
            "the key/IPsec mark of tunnel",
        )
        problems += _repeats(
            ((("tunnels", i, "if_id"), t.if_id, t.name) for i, t in tunnels if t.if_id is not None),
            "the if_id of tunnel",
        )
        problems += _repeats(
            ((("tunnels", i, "inner", "local"), t.inner.local.ip, t.name) for i, t in tunnels),
            "the inner address of tunnel",
        )
        problems += _repeats(
            (
                (("tunnels", i, "ike", "child"), f"{t.ike.connection}/{t.ike.child}", t.name)
                for i, t in tunnels
                if t.ike is not None
            ),
            "the IKE connection/child of tunnel",
        )
        problems += _repeats(
            ((("site_prefixes", i), p, "above") for i, p in enumerate(self.site_prefixes)),
            "listed",
        )
        problems += _repeats(
            (
                (("remote_prefixes", "static", i), p, "above")
                for i, p in enumerate(self.remote_prefixes.static)
            ),
            "listed",
        )
        if self.bgp is not None:
            problems += _repeats(
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
        _raise_if(problems)
        return self

    def neighbor_of(self, tunnel: Tunnel) -> IPvAnyAddress:
        return tunnel.bgp_neighbor if tunnel.bgp_neighbor is not None else tunnel.inner.peer

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


# Pydantic's wording for the commonest mistakes, said the way an operator would say it.
_TYPE_MESSAGES = {
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "tuple_type": "must be a list, e.g. [a, b]",
    "list_type": "must be a list, e.g. [a, b]",
    "ip_any_address": "not an IPv4 or IPv6 address",
    "ip_v4_address": "not an IPv4 address",
    "ip_v6_address": "not an IPv6 address",
    "ip_any_network": "not an IPv4 or IPv6 prefix",
    "ip_any_interface": "not an address with prefix length, e.g. 169.254.1.1/30",
    "path_type": "must be a file path",
}
_PATTERN_MESSAGES = {
    _NAME_PATTERN: "must be letters, digits, '.', '_' or '-', starting with a letter or digit",
    _INTERFACE_PATTERN: "is not a Linux interface name (letters, digits, '.', '_', '-', '@')",
    _COMMUNITY_PATTERN: "is not a BGP community: write ASN:VALUE, e.g. 65001:666",
    r"^[^#+]+$": "must not contain the MQTT wildcards # or +",
}
# Pydantic adds type names of union branches to locations; they mean nothing in a file.
_BRANCH_NAMES = frozenset(
    {
        "IPv4Address",
        "IPv6Address",
        "IPv4Network",
        "IPv6Network",
        "IPv4Interface",
        "IPv6Interface",
    }
)


def _format_location(loc: Loc, raw: Any) -> str:
    """Turn pydantic's location into a path a person can find, naming tunnels by name."""
    parts: list[str] = []
    node: Any = raw
    for item in loc:
        if isinstance(item, int):
            entry = node[item] if isinstance(node, list) and item < len(node) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            label = name if isinstance(name, str) and name else item
            parts[-1:] = [f"{parts[-1] if parts else ''}[{label}]"]
        else:
            parts.append(str(item))
        try:
            node = node[item]
        except (KeyError, IndexError, TypeError):
            node = None
    return ".".join(parts) if parts else "(top level)"


def _walk(root: yaml.Node | None, loc: Loc) -> tuple[yaml.Node | None, int | None]:
    """The YAML node at loc (None unless found) and the 1-based line of the deepest match."""
    node = root
    line = None if root is None else root.start_mark.line + 1
    for item in loc:
        found: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(item):
                    found, line = value_node, key_node.start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(item, int) and item < len(node.value)
        ):
            found = node.value[item]
            line = found.start_mark.line + 1
        if found is None:
            return None, line
        node = found
    return node, line


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The settings class that owns the mapping at loc, to name its fields."""
    model: type[BaseModel] | None = Config
    for item in loc:
        if model is None:
            return None
        if isinstance(item, str):
            field = model.model_fields.get(item)
            model = None if field is None else _model_in(field.annotation)
    return model


def _value_text(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(err: ErrorDetails, loc: Loc, node: yaml.Node | None) -> str:
    """One readable message for one pydantic error, with the offending value."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    got = f" (got {_value_text(value)})"
    if kind == "missing":
        return "required field missing"
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        known = sorted(model.model_fields) if model is not None else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        if close:
            return f"unknown field {str(loc[-1])!r} (did you mean {close[0]}?)"
        return f"unknown field {str(loc[-1])!r} (known here: {', '.join(known)})"
    if kind in {"model_type", "model_attributes_type", "dict_type"}:
        model = _model_at(loc)
        fields = f" with {', '.join(sorted(model.model_fields))}" if model else ""
        return f"must be a mapping{fields}{got}"
    if kind == "ip_any_network" and isinstance(value, str):
        try:
            net = ipaddress.ip_network(value, strict=False)
        except ValueError:
            pass
        else:
            return f"{value} has host bits set: did you mean {net}?"
    if kind == "string_type" and isinstance(node, yaml.ScalarNode) and node.style is None:
        # YAML 1.1 reads 65001:10 as a sexagesimal number and yes/no/on/off as booleans.
        return f"YAML read {node.value} as {_value_text(value)}: put it in quotes"
    if (
        kind in {"float_parsing", "float_type"}
        and isinstance(value, str)
        and re.fullmatch(r"\s*[\d.]+\s*(ms|s|sec|m|min)\s*", value)
    ):
        return f"give seconds as a plain number, e.g. 0.5 (got {value!r})"
    if kind in _TYPE_MESSAGES:
        return _TYPE_MESSAGES[kind] + got
    if kind == "string_pattern_mismatch":
        hint = _PATTERN_MESSAGES.get(str(ctx.get("pattern")), f"must match {ctx.get('pattern')}")
        return hint + got
    if kind == "string_too_long":
        if loc and loc[-1] == "interface":
            return f"Linux interface names have at most 15 characters{got}"
        return f"at most {ctx.get('max_length')} characters{got}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "too_short":
        n = ctx.get("min_length")
        return f"needs at least {n} entr{'y' if n == 1 else 'ies'}"
    bounds = {
        "greater_than": "greater than {gt}",
        "greater_than_equal": "at least {ge}",
        "less_than": "less than {lt}",
        "less_than_equal": "at most {le}",
    }
    if kind in bounds:
        limits = {k: f"{v:g}" if isinstance(v, float) else v for k, v in ctx.items()}
        return f"must be {bounds[kind].format(**limits)}{got}"
    msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind.startswith(("value_error", "assertion_error")):
        return msg
    msg = re.sub(r"^Input should be ", "must be ", msg)
    return f"{msg}{got}" if "input" in err else msg


def _validation_lines(
    exc: ValidationError, raw: Any, root: yaml.Node | None = None, source: str = "<config>"
) -> list[str]:
    """One line per problem: `FILE:LINE: path: message`, the path naming tunnels by name."""
    problems: list[tuple[Loc, ErrorDetails]] = []
    for err in exc.errors(include_url=False):
        loc = tuple(
            x
            for x in err["loc"]
            if not (isinstance(x, str) and (x.startswith("function-") or x in _BRANCH_NAMES))
        )
        value = err.get("input")
        if (
            err["type"] == "too_short"
            and isinstance(value, list)
            and len(value) >= (err.get("ctx") or {}).get("min_length", 0)
        ):
            # Its entries were invalid (reported on their own), not missing.
            continue
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, _FieldProblemsError):
            for sub_loc, message in cause.problems:
                detail: ErrorDetails = {
                    "type": "value_error",
                    "loc": loc + sub_loc,
                    "msg": message,
                    "input": None,
                }
                problems.append((loc + sub_loc, detail))
        else:
            problems.append((loc, err))
    lines = []
    for loc, err in problems:
        node, line = _walk(root, loc)
        where = _format_location(loc, raw)
        at = f"{source}:{line}" if line is not None else source
        lines.append(f"{at}: {where}: {_describe(err, loc, node)}")
    # Unions report the same field once per branch; keep each line once, in order.
    return list(dict.fromkeys(lines))


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML silently keeps the last)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first on line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _yaml_error(exc: yaml.MarkedYAMLError, source: str) -> str:
    mark = exc.problem_mark
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
    problem = exc.problem or str(exc)
    if "'\\t'" in problem:
        problem += " (indent YAML with spaces, not tabs)"
    context = exc.context_mark
    if exc.context and context is not None and (mark is None or context.line != mark.line):
        problem += f" ({exc.context} on line {context.line + 1})"
    if isinstance(exc, yaml.constructor.ConstructorError):
        return f"{where}: {problem}"
    return f"{where}: YAML syntax error: {problem}"


_TOP_LEVEL_KINDS = {"list": "a list", "str": "a single string", "int": "a number"}


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse YAML text into a Config, or raise ConfigError with one line per problem."""
    loader = _StrictLoader(text)
    try:
        root = loader.get_single_node()
        raw = None if root is None else loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_yaml_error(exc, source)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: YAML error: {exc}"]) from None
    finally:
        loader.dispose()
    if raw is None:
        raise ConfigError([f"{source}: the file is empty (no settings, only comments or blanks)"])
    if not isinstance(raw, dict):
        kind = _TOP_LEVEL_KINDS.get(type(raw).__name__, type(raw).__name__)
        raise ConfigError(
            [f"{source}: the top level must be a mapping (agent_id: ..., tunnels: ...), not {kind}"]
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return Config.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(_validation_lines(exc, raw, root, source)) from None


def load_config(path: Path) -> Config:
    """Read and parse a config file; unreadable files are a ConfigError too."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a directory, not a config file"]) from None
    except PermissionError:
        raise ConfigError([f"{path}: permission denied"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            [f"{path}:{line}:{column}: not UTF-8 text (byte 0x{data[exc.start]:02x})"]
        ) from None
    return parse_config(text, str(path))


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the config file, as shipped in config/."""
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "vti-failover configuration"
    return schema
