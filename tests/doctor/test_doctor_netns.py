"""`vti-failover doctor` run in a namespace the way an operator runs it, on a real kernel.

This kernel has no VTI: a veth named vti1 stands in for a misbuilt one (wrong kind, strict
rp_filter, disable_policy 0, an MTU ESP cannot carry), a missing vti2, strongSwan's table
220. A tap tunnel set up as it should be shows the same checks silent. VTI keys against
SA marks need real VTIs: tests/lab/guest_doctor.py checks them in the VM lab.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.runner import COMMAND, REPO
from tests.support.netns_links import add_veth
from tests.support.system import netns, run, sh_in

pytestmark = pytest.mark.root

PYTHON = Path(COMMAND).parent / "python"


def doctor(ns: str, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, str(COMMAND), "doctor", str(config), *args],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )  # fmt: skip


def findings(ns: str, config: Path) -> tuple[int, list[dict[str, Any]]]:
    proc = doctor(ns, config, "--json")
    assert proc.stderr == "", proc.stderr
    found: list[dict[str, Any]] = json.loads(proc.stdout)["findings"]
    return proc.returncode, found


def write_config(path: Path, tunnels: list[dict[str, Any]], **extra: Any) -> Path:
    body = {"agent_id": "doc", "tunnels": tunnels, **extra}
    path.write_text(json.dumps(body))  # YAML reads JSON
    return path


def tunnel(name: str, interface: str, kind: str, local: str, remote: str, inner: str,
           **extra: Any) -> dict[str, Any]:  # fmt: skip
    iface = ipaddress.IPv4Interface(inner)
    peer = str(iface.ip + 1)
    return {
        "name": name, "interface": interface, "kind": kind,
        "underlay": {"local": local, "remote": remote},
        "inner": {"local": inner, "peer": peer}, "sources": ["probe", "link"], **extra,
    }  # fmt: skip


def sysctl(ns: str, key: str, value: int) -> None:
    sh_in(ns, "sysctl", "-qw", f"{key}={value}")


@pytest.fixture
def named_proto() -> Iterator[str]:
    """A namespace whose /etc/iproute2 (ip netns exec's /etc/netns bind) names our id."""
    with netns("vtf-doc") as ns:
        etc = Path("/etc/netns") / ns / "iproute2" / "rt_protos.d"
        etc.mkdir(parents=True)
        (etc / "vti-failover.conf").write_text("157 vti-failover\n")
        try:
            yield ns
        finally:
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)


def test_a_misbuilt_site_gives_each_finding(tmp_path: Path) -> None:
    with netns("vtf-doc") as ns:
        add_veth(ns, "isp1")
        add_veth(ns, "isp2")
        run("ip", "-n", ns, "addr", "add", "192.0.2.1/30", "dev", "isp1")
        run("ip", "-n", ns, "addr", "add", "198.51.100.1/30", "dev", "isp2")
        add_veth(ns, "vti1")  # a veth, not a VTI; veth's mtu 1500 leaves no room for ESP
        run("ip", "-n", ns, "addr", "add", "169.254.1.1/30", "dev", "vti1")
        sysctl(ns, "net.ipv4.conf.vti1.rp_filter", 1)
        sysctl(ns, "net.ipv4.conf.vti1.disable_policy", 0)
        run("ip", "-n", ns, "route", "add", "10.2.0.0/24", "dev", "isp1", "table", "220")
        run("ip", "-n", ns, "rule", "add", "pref", "220", "lookup", "220")
        cfg = write_config(
            tmp_path / "site.yaml",
            [
                tunnel("tun1", "vti1", "vti", "192.0.2.1", "192.0.2.2", "169.254.1.1/30", key=1),
                tunnel("tun2", "vti2", "vti", "198.51.100.1", "198.51.100.2", "169.254.2.1/30",
                       key=2, role="backup"),
            ],
            remote_prefixes={"static": ["10.2.0.0/24"]},
        )  # fmt: skip
        code, found = findings(ns, cfg)
        got = {(f["check"], f["subject"]) for f in found if f["severity"] != "info"}
        assert {
            ("interface", "tun1"),
            ("interface", "tun2"),
            ("rp-filter", "vti1"),
            ("disable-policy", "vti1"),
            ("mtu", "tun1"),
            ("table-220", "system"),
            ("rt-protos", "system"),
        } <= got, found
        assert code == 1
        by = {(f["check"], f["subject"]): f for f in found}
        assert by["interface", "tun1"]["message"].startswith("vti1 is a veth interface")
        assert by["interface", "tun2"]["fix"] == (
            "ip link add vti2 type vti local 198.51.100.1 remote 198.51.100.2 key 2 && "
            "ip link set vti2 up"
        )
        assert by["mtu", "tun1"]["fix"] == "ip link set dev vti1 mtu 1438"
        text = doctor(ns, cfg)
        assert text.returncode == 1
        lines = text.stdout.splitlines()
        assert len(lines) == len(found) + 1
        assert "error: tun2: [interface] interface vti2 does not exist" in text.stdout
        assert lines[-1].startswith("doctor: ")


def test_a_well_built_tunnel_is_silent(named_proto: str, tmp_path: Path) -> None:
    ns = named_proto
    add_veth(ns, "isp1")
    run("ip", "-n", ns, "addr", "add", "192.0.2.1/30", "dev", "isp1")
    run("ip", "-n", ns, "tuntap", "add", "mode", "tap", "name", "tap1")
    run("ip", "-n", ns, "link", "set", "tap1", "mtu", "1400", "up")
    run("ip", "-n", ns, "addr", "add", "169.254.1.1/30", "dev", "tap1")
    for dev in ("all", "isp1", "tap1"):
        sysctl(ns, f"net.ipv4.conf.{dev}.rp_filter", 2 if dev == "isp1" else 0)
    vici = tmp_path / "charon.vici"
    cfg = write_config(
        tmp_path / "site.yaml",
        [tunnel("tun1", "tap1", "tap", "192.0.2.1", "192.0.2.2", "169.254.1.1/30")],
        remote_prefixes={"static": ["10.2.0.0/24"]},
        vici={"socket": f"unix://{vici}"},
    )
    code, found = findings(ns, cfg)
    quiet = {"interface", "sa-mark", "sa-endpoints", "disable-policy", "rp-filter",
             "source-address", "mtu", "table-220", "vici", "rt-protos", "bgp-neighbor"}  # fmt: skip
    assert [f for f in found if f["check"] in quiet] == []
    # On this kernel (no kernel ESP) only a module finding may make it exit 1.
    assert code == 0 or {f["check"] for f in found if f["severity"] != "info"} == {"modules"}


def test_an_unreachable_vici_socket(tmp_path: Path) -> None:
    with netns("vtf-doc") as ns:
        add_veth(ns, "isp1")
        cfg = write_config(
            tmp_path / "site.yaml",
            [tunnel("tun1", "isp1", "mark", "192.0.2.1", "192.0.2.2", "169.254.1.1/30",
                    mark=7, sources=["vici"], ike={"connection": "c", "child": "c"})],
            vici={"socket": f"unix://{tmp_path}/none.vici"},
        )  # fmt: skip
        code, found = findings(ns, cfg)
        [vici] = [f for f in found if f["check"] == "vici"]
        assert "none.vici" in vici["message"]
        assert code == 1


def test_kernel_policies_are_read_over_netlink_xfrm() -> None:
    with netns("vtf-doc") as ns:
        run("ip", "-n", ns, "xfrm", "policy", "add", "src", "0.0.0.0/0", "dst", "0.0.0.0/0",
            "dir", "out", "tmpl", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp",
            "mode", "tunnel", "mark", "1", "mask", "0xffffffff")  # fmt: skip
        run("ip", "-n", ns, "xfrm", "policy", "add", "src", "10.2.0.0/16", "dst", "10.1.0.0/24",
            "dir", "in", "tmpl", "src", "198.51.100.2", "dst", "198.51.100.1", "proto", "esp",
            "mode", "tunnel", "if_id", "7")  # fmt: skip
        code = (
            "from agent.doctor_collect import read_xfrm; import json; "
            "s, p, e = read_xfrm(); print(json.dumps([s, [x.__dict__ for x in p], e]))"
        )
        out = sh_in(ns, str(PYTHON), "-c", code).stdout
        sas, policies, error = json.loads(out)
        assert error is None
        assert sas == []  # this kernel has no ESP: no SA can exist
        assert sorted(policies, key=lambda p: p["direction"]) == [
            {"direction": "in", "src": "198.51.100.2", "dst": "198.51.100.1", "mark": None,
             "mark_mask": None, "if_id": 7},
            {"direction": "out", "src": "192.0.2.1", "dst": "192.0.2.2", "mark": 1,
             "mark_mask": 0xFFFFFFFF, "if_id": None},
        ]  # fmt: skip
