"""The agent's configuration: pydantic models loaded from YAML; import it from here.

A config that loads is one the rest of the agent can trust: names, keys, interfaces and
neighbors are unique, inner addresses sit inside their subnets, a VTI key equals its IPsec
mark. Nothing here touches the system.

Inside, imports point one way: scalars and problems <- tunnel <- models (the pydantic models
and every cross-field rule) <- messages (operator-facing lines) <- loader (YAML in, Config out).
"""

# json_schema is not in __all__ (it never was); the CLI's `schema` command imports it from here.
from agent.config.control import ControlSettings
from agent.config.imports import ImportPolicy, PrefixRange
from agent.config.loader import json_schema as json_schema
from agent.config.loader import load_config, parse_config
from agent.config.models import (
    AttributeSet,
    BgpSettings,
    Config,
    Dampening,
    ExaBgpSettings,
    MetricsSettings,
    MqttSettings,
    NetlinkSettings,
    Policy,
    RemotePrefixes,
    TlsSettings,
    ViciSettings,
)
from agent.config.problems import ConfigError
from agent.config.scalars import (
    BothDown,
    LinkControl,
    OnMaxPrefixes,
    PolicyMode,
    ProbeKind,
    Source,
    TunnelKind,
)
from agent.config.tunnel import InnerAddressing, ProbeSettings, Tunnel, Underlay

__all__ = [
    "AttributeSet",
    "BgpSettings",
    "BothDown",
    "Config",
    "ConfigError",
    "ControlSettings",
    "Dampening",
    "ExaBgpSettings",
    "ImportPolicy",
    "InnerAddressing",
    "LinkControl",
    "MetricsSettings",
    "MqttSettings",
    "NetlinkSettings",
    "OnMaxPrefixes",
    "Policy",
    "PolicyMode",
    "PrefixRange",
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
