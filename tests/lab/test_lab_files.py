"""The lab's files hang together: containerlab topology, node image, shared configs.

Docker cannot run here, so the containerlab side is checked as files: its YAML shape,
that everything it and the Dockerfile reference exists, and that the namespace runner
reads this same topology and the same config files. The daemons' own parsers check
the configs (ExaBGP, BIRD, vti-failover).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent.config import load_config
from tests.support.system import require_tool

TOP = Path(__file__).resolve().parents[2]
LAB = TOP / "labs" / "dual-vti"
CLAB = LAB / "dual-vti.clab.yml"
IN_IMAGE = Path("/opt/vti-failover")  # where the Dockerfile puts the checkout

sys.path.insert(0, str(TOP / "labs"))
from lablib.topology import load_topology  # noqa: E402


@pytest.fixture(scope="module")
def clab() -> dict:
    doc: dict = yaml.safe_load(CLAB.read_text())
    return doc


def host_path(container_path: str, binds: list[str]) -> Path:
    """Map a path inside a node container back to the checkout, through binds or the image."""
    for bind in binds:
        src, dst = bind.split(":")[:2]
        if container_path.startswith(dst.rstrip("/") + "/"):
            return (CLAB.parent / src / container_path[len(dst.rstrip("/")) + 1 :]).resolve()
    return TOP / Path(container_path).relative_to(IN_IMAGE)


def test_clab_topology_shape(clab: dict) -> None:
    assert set(clab) == {"name", "topology"}
    topo = clab["topology"]
    assert set(topo["nodes"]) == {"siteA", "siteB", "lanA", "lanB"}
    endpoints = [tuple(link["endpoints"]) for link in topo["links"]]
    for ends in endpoints:
        assert len(ends) == 2
        for end in ends:
            node, iface = end.split(":")
            assert node in topo["nodes"], end
            assert re.fullmatch(r"[a-z0-9]{1,15}", iface), end
    # Three underlay paths between the sites, a LAN behind each.
    for isp in ("isp1", "isp2", "isp3"):
        assert (f"siteA:{isp}", f"siteB:{isp}") in endpoints
    used = [end for ends in endpoints for end in ends]
    assert len(used) == len(set(used)), "an interface is used by two links"


def test_every_referenced_file_exists(clab: dict) -> None:
    defaults = clab["topology"]["defaults"]
    binds = defaults["binds"]
    for bind in binds:
        src = (CLAB.parent / bind.split(":")[0]).resolve()
        assert src.exists(), bind
    assert defaults["image"].startswith("vti-failover-lab")
    for name, node in clab["topology"]["nodes"].items():
        for line in node["exec"]:
            words = shlex.split(line)
            script = host_path(words[1], binds)
            assert script.is_file(), f"{name}: {line}"
            assert words[2] == name


def test_dockerfile_copies_what_exists() -> None:
    text = (LAB / "Dockerfile").read_text()
    copies = re.findall(r"^COPY (.+)$", text, flags=re.MULTILINE)
    assert copies
    for line in copies:
        *sources, _dest = line.split()
        for src in sources:
            if "*" not in src:
                assert (TOP / src).exists(), f"Dockerfile: COPY {src}"
    # The image's own packages: what node.sh runs.
    for pkg in ("strongswan-charon", "strongswan-swanctl", "bird2", "mosquitto", "busybox-static"):
        assert pkg in text


def test_node_script_uses_only_files_that_exist() -> None:
    script = (LAB / "node.sh").read_text()
    for rel in re.findall(r'"\$here/([^"$]+)"', script):
        assert (LAB / rel).exists(), rel
    for stack in ("stock", "healthcheck"):
        assert (LAB / "siteA" / f"exabgp-{stack}.conf").is_file()


def test_namespace_runner_reads_the_same_topology(clab: dict) -> None:
    topo = load_topology()
    assert list(topo.nodes) == list(clab["topology"]["nodes"])
    links = {(x.a_node, x.a_if, x.b_node, x.b_if) for x in topo.links}
    want = {
        tuple(a.split(":") + b.split(":"))
        for a, b in (link["endpoints"] for link in clab["topology"]["links"])
    }
    assert links == want
    assert topo.node_args["siteA"] == ("siteA", "stock")


@pytest.mark.parametrize(
    "name",
    [
        "vti-failover.yaml",
        "vti-failover-xfrm.yaml",
        "vti-failover-three.yaml",
        "vti-failover-three-dual.yaml",
    ],
)
def test_agent_configs_load_and_match_the_lab(name: str) -> None:
    cfg = load_config(LAB / "siteA" / name)
    swanctl = (LAB / "siteA" / "swanctl.conf").read_text()
    bird = (LAB / "siteB" / "bird.conf").read_text()
    for t in cfg.tunnels:
        # The names and keys the agent looks for are the ones charon and node.sh create.
        assert re.search(rf"^\s+{t.ike.connection} {{", swanctl, flags=re.MULTILINE)
        n = t.sa_mark if t.sa_mark is not None else t.if_id
        if t.interface.startswith("xfrm"):
            # The third path is an XFRM interface in every variant (node.sh xfrm_tunnel).
            assert f"if_id_in = {n}" in swanctl
            assert t.interface == f"xfrm{n}"
        else:
            assert f"mark_in = {n}" in swanctl
            assert t.interface == f"vti{n}"
        # Site B peers every tunnel's inner address.
        assert f"neighbor {t.inner.local.ip} as 65001" in bird
    assert cfg.vici.socket == "unix:///run/vti-failover-lab/siteA/run/charon.vici"
    # Every variant carries both families inside, over one session per tunnel.
    assert [str(p) for p in cfg.site_prefixes] == ["10.1.0.0/24", "2001:db8:1::/64"]
    for t in cfg.tunnels:
        n = t.name[-1]
        assert t.inner6 is not None
        assert (str(t.inner6.local), str(t.inner6.peer)) == (f"fd00:{n}::1/64", f"fd00:{n}::2")
        assert f"next hop address fd00:{n}::2;" in bird


@pytest.mark.parametrize("stack", ["stock", "healthcheck"])
def test_exabgp_accepts_site_a_configs(stack: str) -> None:
    exabgp = TOP / ".venv" / "bin" / "exabgp"
    res = subprocess.run(
        [str(exabgp), "validate", str(LAB / "siteA" / f"exabgp-{stack}.conf")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_bird_accepts_site_b_config() -> None:
    bird = require_tool("bird")
    res = subprocess.run(
        [bird, "-p", "-c", str(LAB / "siteB" / "bird.conf")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 0, res.stderr
