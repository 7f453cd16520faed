"""The agent's configuration: pydantic models loaded from YAML, every cross-field rule here.

A config that loads is one the rest of the agent can trust: names, keys, interfaces and
neighbors are unique, inner addresses sit inside their subnets, a VTI key equals its IPsec
mark. Nothing here touches the system.
"""

from __future__ import annotations

import enum
import ipaddress
import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

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
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
# Linux IFNAMSIZ is 16 including the terminating NUL.
InterfaceName = Annotated[str, Field(min_length=1, max_length=15, pattern=r"^[A-Za-z0-9_.@-]+$")]
Seconds = Annotated[float, Field(gt=0, le=86400)]
Community = Annotated[str, Field(pattern=r"^\d{1,5}:\d{1,5}$")]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


class ConfigError(Exception):
    """A config that cannot be used; `lines` holds one readable line per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


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
            raise ValueError("underlay local and remote must be the same address family")
        if self.local == self.remote:
            raise ValueError("underlay local and remote must differ")
        return self


class InnerAddressing(_Model):
    """The tunnel's inside: our address with its prefix length, and the far end's address."""

    local: IPvAnyInterface
    peer: IPAddress

    @model_validator(mode="after")
    def _peer_in_subnet(self) -> InnerAddressing:
        if self.local.version != self.peer.version:
            raise ValueError("inner local and peer must be the same address family")
        if self.peer not in self.local.network:
            raise ValueError(
                f"inner peer {self.peer} is outside the local subnet {self.local.network}"
            )
        if self.peer == self.local.ip:
            raise ValueError("inner peer must differ from inner local")
        return self


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
            raise ValueError("udp probes need udp_port")
        if self.kind is ProbeKind.ICMP and self.udp_port is not None:
            raise ValueError("udp_port is only for kind: udp")
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
        if self.kind is TunnelKind.VTI:
            if self.key is None and self.mark is None:
                raise ValueError("a vti tunnel needs key (equal to its IPsec mark)")
            if self.key is not None and self.mark is not None and self.key != self.mark:
                raise ValueError(
                    f"VTI key {self.key} must equal the IPsec mark {self.mark}: the kernel "
                    "matches SAs to the VTI by that mark"
                )
            if self.if_id is not None:
                raise ValueError("if_id is for kind: xfrm, not vti")
        elif self.kind is TunnelKind.XFRM:
            if self.if_id is None:
                raise ValueError("an xfrm tunnel needs if_id")
            if self.key is not None:
                raise ValueError("key is for kind: vti, not xfrm")
        elif self.kind is TunnelKind.MARK and self.mark is None:
            raise ValueError("a mark tunnel needs mark")
        if len(set(self.sources)) != len(self.sources):
            raise ValueError("sources lists a source twice")
        if not self.sources:
            raise ValueError("sources must name at least one liveness source")
        if Source.VICI in self.sources and self.ike is None:
            raise ValueError("source vici needs ike: {connection, child}")
        if self.underlay.local.version != self.underlay.remote.version:
            raise ValueError("underlay address families differ")
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


class ExaBgpSettings(_Model):
    # supervise: the agent starts exabgp from a generated config.
    # process: exabgp starts the agent as its API process (stdin/stdout).
    mode: Literal["supervise", "process"] = "supervise"
    executable: str = "exabgp"


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
            raise ValueError("reuse_below must be below suppress_above")
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
    loss_degraded: Annotated[int, Field(ge=1, le=1000)] = 10
    rtt_degraded_ms: Annotated[float, Field(gt=0)] | None = 250.0
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
    table: Annotated[int, Field(ge=1, le=0xFFFFFFFF)] = 254
    # Only on exit: remove our routes and withdraw announcements (default: leave them).
    cleanup_on_exit: bool = False

    @model_validator(mode="after")
    def _windows(self) -> Policy:
        if self.loss_down > self.loss_window:
            raise ValueError(f"loss_down {self.loss_down} exceeds loss_window {self.loss_window}")
        if self.loss_degraded > self.loss_down:
            raise ValueError("loss_degraded must not exceed loss_down")
        if self.standby_metric <= self.active_metric:
            raise ValueError("standby_metric must be higher than active_metric")
        return self


class TlsSettings(_Model):
    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
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
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("give password_file or password_env, not both")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s exceeds reconnect_max_s")
        return self


class MetricsSettings(_Model):
    enabled: bool = False
    listen: IPAddress = ipaddress.IPv4Address("127.0.0.1")
    port: Annotated[int, Field(ge=1, le=65535)] = 9468


class ViciSettings(_Model):
    socket: str = "unix:///var/run/charon.vici"
    poll_interval_s: Annotated[float, Field(ge=0.1, le=3600)] = 1.0


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

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        _unique("tunnel name", (t.name for t in self.tunnels))
        _unique("interface", (t.interface for t in self.tunnels))
        _unique("VTI key/mark", (t.sa_mark for t in self.tunnels if t.sa_mark is not None))
        _unique("if_id", (t.if_id for t in self.tunnels if t.if_id is not None))
        _unique("inner local address", (str(t.inner.local.ip) for t in self.tunnels))
        _unique(
            "IKE child",
            (f"{t.ike.connection}/{t.ike.child}" for t in self.tunnels if t.ike is not None),
        )
        _unique("site prefix", (str(p) for p in self.site_prefixes))
        _unique("remote prefix", (str(p) for p in self.remote_prefixes.static))
        if self.bgp is not None:
            _unique("BGP neighbor", (str(self.neighbor_of(t)) for t in self.tunnels))
        elif self.remote_prefixes.learned_from_bgp:
            raise ValueError("remote_prefixes.learned_from_bgp needs a bgp section")
        for net in self.site_prefixes:
            if any(net == r for r in self.remote_prefixes.static):
                raise ValueError(f"{net} is both a site prefix and a remote prefix")
        return self

    def neighbor_of(self, tunnel: Tunnel) -> IPvAnyAddress:
        return tunnel.bgp_neighbor if tunnel.bgp_neighbor is not None else tunnel.inner.peer

    def tunnel(self, name: str) -> Tunnel:
        for t in self.tunnels:
            if t.name == name:
                return t
        raise KeyError(name)

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


def _unique(what: str, values: Iterable[object]) -> None:
    dupes = [v for v, n in Counter(values).items() if n > 1]
    if dupes:
        raise ValueError(f"duplicate {what}: {', '.join(str(d) for d in dupes)}")


def _format_location(loc: tuple[int | str, ...], raw: Any) -> str:
    """Turn pydantic's location into a path a person can find, naming tunnels by name."""
    parts: list[str] = []
    node: Any = raw
    for item in loc:
        if isinstance(item, int):
            name = (
                node[item].get("name")
                if isinstance(node, list) and item < len(node) and isinstance(node[item], dict)
                else None
            )
            parts[-1:] = [f"{parts[-1] if parts else ''}[{name if name else item}]"]
        else:
            parts.append(str(item))
        try:
            node = node[item]
        except (KeyError, IndexError, TypeError):
            node = None
    return ".".join(parts) if parts else "(top level)"


def _value_text(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _validation_lines(exc: ValidationError, raw: Any) -> list[str]:
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        # Tagged/union branches add type names to the location; drop them for readability.
        loc = tuple(
            x
            for x in loc
            if x
            not in {
                "IPv4Address",
                "IPv6Address",
                "IPv4Network",
                "IPv6Network",
                "IPv4Interface",
                "IPv6Interface",
            }
        )
        where = _format_location(loc, raw)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] in {"missing"}:
            lines.append(f"{where}: required field missing")
        elif err["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown field")
        elif (
            err["type"] in {"model_type", "model_attributes_type"}
            or err["type"].startswith("value_error")
            or "input" not in err
        ):
            lines.append(f"{where}: {msg}")
        else:
            lines.append(f"{where}: {msg} (got {_value_text(err['input'])})")
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


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse YAML text into a Config, or raise ConfigError with one line per problem."""
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown line"
        raise ConfigError([f"{source}: YAML syntax error at {where}: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: YAML error: {exc}"]) from None
    if raw is None:
        raise ConfigError([f"{source}: the file is empty"])
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: the top level must be a mapping, not {type(raw).__name__}"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return Config.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(
                [f"{source}: {line}" for line in _validation_lines(exc, raw)]
            ) from None


def load_config(path: Path) -> Config:
    """Read and parse a config file; unreadable files are a ConfigError too."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a directory, not a config file"]) from None
    except PermissionError:
        raise ConfigError([f"{path}: permission denied"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    return parse_config(text, str(path))


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the config file, as shipped in config/."""
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "vti-failover configuration"
    return schema
