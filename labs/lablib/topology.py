"""The lab's topology, read from its containerlab file: one definition for both runners."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["LAB_DIR", "STATE_ROOT", "TOP", "Link", "Topology", "load_topology"]

TOP = Path(__file__).resolve().parents[2]
LAB_DIR = TOP / "labs" / "dual-vti"
CLAB_FILE = LAB_DIR / "dual-vti.clab.yml"
# Fixed, like the agent config's vici socket path that points into it.
STATE_ROOT = Path("/run/vti-failover-lab")
# Namespace names carry a prefix so the lab never collides with anything else on a host.
NS_PREFIX = "vtl-"


@dataclass(frozen=True)
class Link:
    a_node: str
    a_if: str
    b_node: str
    b_if: str


@dataclass(frozen=True)
class Topology:
    name: str
    nodes: tuple[str, ...]  # in the order containerlab's file lists them: bring-up order
    links: tuple[Link, ...]
    node_args: dict[str, tuple[str, ...]]  # node.sh arguments per node, from its exec line

    @staticmethod
    def netns(node: str) -> str:
        return NS_PREFIX + node


def _node_args(node: str, spec: dict[str, Any]) -> tuple[str, ...]:
    for line in spec.get("exec", []):
        words = str(line).split()
        if len(words) >= 3 and words[0] == "bash" and words[1].endswith("/node.sh"):
            return tuple(words[2:])
    raise ValueError(f"{CLAB_FILE}: node {node} has no 'bash .../node.sh {node}' exec line")


def load_topology(path: Path = CLAB_FILE) -> Topology:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    topo = raw["topology"]
    nodes = tuple(topo["nodes"])
    links = []
    for link in topo["links"]:
        (a_node, a_if), (b_node, b_if) = (e.split(":", 1) for e in link["endpoints"])
        links.append(Link(a_node, a_if, b_node, b_if))
    args = {n: _node_args(n, topo["nodes"][n] or {}) for n in nodes}
    return Topology(name=raw["name"], nodes=nodes, links=tuple(links), node_args=args)
