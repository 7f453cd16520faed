"""`vti-failover apply` run in a namespace the way an operator runs it, on this kernel.

This kernel has no VTI or XFRM interfaces (the VM lab creates those: tests/lab/guest_apply.py),
so a tap tunnel stands in for what apply configures on an existing link: address, MTU,
sysctls, up, SNAT in the agent's own table; then nothing the second time. Veths named like a
tunnel are the interfaces apply must refuse (or, carrying its alias, re-create).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.runner import COMMAND, REPO
from tests.support.netns_links import add_veth
from tests.support.system import netns, run, sh_in

pytestmark = pytest.mark.root

PYTHON = Path(COMMAND).parent / "python"
TABLE = "vti_failover_ns_a"


def apply(ns: str, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, str(COMMAND), "apply", str(config), *args],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )  # fmt: skip


def write_config(path: Path, *tunnels: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"agent_id": "ns-a", "tunnels": list(tunnels)}))
    return path


def tunnel(i: int, kind: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": f"tun{i}", "interface": f"vti{i}", "kind": kind,
        "underlay": {"local": f"192.0.2.{4 * i - 3}", "remote": f"192.0.2.{4 * i - 2}"},
        "inner": {"local": f"169.254.{i}.1/30", "peer": f"169.254.{i}.2"},
        "sources": ["probe", "link"], **extra,
    }  # fmt: skip


def system(ns: str) -> dict[str, Any]:
    """Everything apply may change, as the kernel and nft report it."""
    links = json.loads(run("ip", "-n", ns, "-j", "-d", "addr", "show").stdout)
    for link in links:
        # Counters and timers move on their own.
        for key in ("stats64", "addr_info"):
            link.pop(key, None)
    addrs = run("ip", "-n", ns, "-j", "addr", "show").stdout
    sysctls = sh_in(
        ns, "sysctl", "-a", "--pattern", r"net\.ipv4\.conf\..*(rp_filter|disable_policy)"
    )
    return {"links": links, "addrs": json.loads(addrs), "sysctls": sysctls.stdout,
            "nft": sh_in(ns, "nft", "list", "ruleset").stdout}  # fmt: skip


class LinkMonitor:
    """`ip monitor link address` in the namespace: every change the kernel announces."""

    def __init__(self, ns: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "-n", ns, "monitor", "link", "address"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        time.sleep(0.3)  # ip subscribes right after it starts

    def stop(self) -> list[str]:
        time.sleep(0.3)
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=5)
        return [line for line in out.splitlines() if line.strip()]


@pytest.fixture
def site() -> Iterator[str]:
    """isp1 holding tun1's underlay address and a tap vti1 as it comes from `ip tuntap add`."""
    with netns("vtf-apply") as ns:
        # No IPv6 link-local addresses arriving (after DAD) while the monitors listen.
        for conf in ("all", "default"):
            sh_in(ns, "sysctl", "-qw", f"net.ipv6.conf.{conf}.disable_ipv6=1")
        add_veth(ns, "isp1")
        run("ip", "-n", ns, "addr", "add", "192.0.2.1/30", "dev", "isp1")
        sh_in(ns, "ip", "tuntap", "add", "mode", "tap", "name", "vti1")
        sh_in(ns, "sysctl", "-qw", "net.ipv4.conf.vti1.rp_filter=1")
        yield ns


def test_a_tap_tunnel_is_configured_once_and_the_second_run_changes_nothing(
    site: str, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "c.yaml", tunnel(1, "tap", mtu=1400, snat={"source": "10.1.0.1"}))
    first = apply(site, cfg)
    assert (first.returncode, first.stderr) == (0, ""), first.stdout
    assert first.stdout.splitlines() == [
        "ip link set dev vti1 mtu 1400",
        "sysctl -w net.ipv4.conf.vti1.disable_policy=1",
        "sysctl -w net.ipv4.conf.vti1.rp_filter=2",
        "ip addr add 169.254.1.1/30 dev vti1",
        "ip link set dev vti1 up",
        f"nft 'add table inet {TABLE}'",
        f"nft 'add chain inet {TABLE} postrouting {{ type nat hook postrouting priority "
        "srcnat; policy accept; }'",
        f'nft \'add rule inet {TABLE} postrouting oifname "vti1" ip saddr 169.254.1.1 '
        "ip daddr != 169.254.1.0/30 snat ip to 10.1.0.1'",
        "apply: 8 change(s) made",
    ]
    link = json.loads(run("ip", "-n", site, "-j", "addr", "show", "dev", "vti1").stdout)[0]
    assert link["mtu"] == 1400
    assert "UP" in link["flags"]
    assert [(a["local"], a["prefixlen"]) for a in link["addr_info"]] == [("169.254.1.1", 30)]
    assert link.get("ifalias") is None  # configured, not created: never ours to delete
    assert sh_in(site, "sysctl", "-n", "net.ipv4.conf.vti1.disable_policy").stdout.strip() == "1"
    assert sh_in(site, "sysctl", "-n", "net.ipv4.conf.vti1.rp_filter").stdout.strip() == "2"
    nft = sh_in(site, "nft", "list", "table", "inet", TABLE).stdout
    assert "snat ip to 10.1.0.1" in nft

    before = system(site)
    monitor = LinkMonitor(site)
    second = apply(site, cfg)
    assert monitor.stop() == []
    assert (second.returncode, second.stdout, second.stderr) == (0, "nothing to do\n", "")
    assert system(site) == before


def test_dry_run_prints_the_plan_and_changes_nothing(site: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", tunnel(1, "tap", snat={"source": "10.1.0.1"}))
    before = system(site)
    monitor = LinkMonitor(site)
    dry = apply(site, cfg, "--dry-run")
    assert monitor.stop() == []
    assert dry.returncode == 0, dry.stdout + dry.stderr
    lines = dry.stdout.splitlines()
    # No mtu in the config: the tap's 1500 is more than ESP leaves of isp1's 1500.
    assert lines[0] == "ip link set dev vti1 mtu 1438"
    assert lines[-1] == "# 8 change(s) planned, none applied (--dry-run)"
    assert system(site) == before
    # The plan is what a run then does, line for line.
    done = apply(site, cfg)
    assert done.stdout.splitlines()[:-1] == lines[:-1]


def test_a_veth_named_like_the_tunnel_is_refused_and_nothing_is_applied(
    site: str, tmp_path: Path
) -> None:
    add_veth(site, "vti2")
    cfg = write_config(tmp_path / "c.yaml", tunnel(1, "tap"), tunnel(2, "vti", key=2))
    before = system(site)
    refused = apply(site, cfg)
    assert refused.returncode == 1
    assert refused.stdout.splitlines() == [
        "refused: tun2: vti2 is a veth interface, the config says vti: apply did not create it "
        "(its alias is None, not 'vti-failover:ns-a'), so it leaves it as it is",
        "apply: 1 refused, nothing applied",
    ]
    # Not even the tap, whose fixes were not refused.
    assert system(site) == before


def test_its_own_link_of_the_wrong_kind_is_deleted_to_be_made_again(
    site: str, tmp_path: Path
) -> None:
    add_veth(site, "vti2")
    run("ip", "-n", site, "link", "set", "dev", "vti2", "alias", "vti-failover:ns-a")
    cfg = write_config(tmp_path / "c.yaml", tunnel(2, "vti", key=2, underlay={
        "local": "192.0.2.1", "remote": "192.0.2.6"}))  # fmt: skip
    dry = apply(site, cfg, "--dry-run")
    assert dry.stdout.splitlines()[:3] == [
        "ip link del dev vti2",
        "ip link add vti2 type vti local 192.0.2.1 remote 192.0.2.6 key 2",
        "ip link set dev vti2 alias vti-failover:ns-a",
    ]
    # This kernel cannot make a VTI: the run stops there, saying why.
    done = apply(site, cfg)
    assert done.returncode == 1
    assert done.stdout.splitlines()[:2] == [
        "ip link del dev vti2",
        "failed: ip link add vti2 type vti local 192.0.2.1 remote 192.0.2.6 key 2: Operation "
        "not supported (errno 95): this kernel cannot make that kind of link (modprobe ip_vti)",
    ]


GUARDED = """
import asyncio, sys
from agent.apply_execute import ApplyError, execute
from agent.apply_facts import DeleteLink, MarkOwned, Plan, SetMtu
steps = (SetMtu("vti1", 1300), MarkOwned("vti1", "vti-failover:ns-b"), DeleteLink("vti1"))
plan = Plan(steps=steps, kinds={"vti1": "tun"})
try:
    asyncio.run(execute(plan, "vti-failover:ns-a", print))
except ApplyError as exc:
    print("refused at write:", exc)
"""


def test_the_executor_checks_the_alias_again_when_it_writes(site: str) -> None:
    # A plan made while vti1 carried our alias, carried out after it got another agent's:
    # the delete is refused when it would be written, not taken on the plan's word.
    proc = subprocess.run(
        ["ip", "netns", "exec", site, str(PYTHON), "-c", GUARDED],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )  # fmt: skip
    assert proc.stdout.splitlines() == [
        "ip link set dev vti1 mtu 1300",
        "ip link set dev vti1 alias vti-failover:ns-b",
        "refused at write: ip link del dev vti1: vti1 no longer carries the alias "
        "vti-failover:ns-a: left alone",
    ], proc.stderr
    link = json.loads(run("ip", "-n", site, "-j", "link", "show", "vti1").stdout)[0]
    assert (link["mtu"], link["ifalias"]) == (1300, "vti-failover:ns-b")


def test_a_config_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", tunnel(1, "tap", snat={"source": "2001:db8::1"}))
    proc = subprocess.run([str(COMMAND), "apply", str(cfg), "--dry-run"], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "snat.source" in proc.stderr
