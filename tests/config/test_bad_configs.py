"""Every bad config is refused by `vti-failover check` (and `run`) the same way.

Exit status 2, nothing on stdout, no traceback, and one stderr line per problem that
names the file and line, the field path (tunnels by name) and the offending value.
Each case is the valid BASE with one edit, so the edit alone explains the refusal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.cli.runner import Result, vtf

BASE = """\
agent_id: site-a
tunnels:
  - name: tun1
    interface: vti1
    kind: vti
    underlay: {local: 192.0.2.1, remote: 192.0.2.2}
    key: 1
    mark: 1
    ike: {connection: tun1, child: tun1}
    inner: {local: 169.254.1.1/30, peer: 169.254.1.2}
    role: primary
    probe: {kind: icmp, interval_s: 0.2, timeout_s: 0.5}
  - name: tun2
    interface: vti2
    kind: vti
    underlay: {local: 198.51.100.1, remote: 198.51.100.2}
    key: 2
    ike: {connection: tun2, child: tun2}
    inner: {local: 169.254.2.1/30, peer: 169.254.2.2}
    role: backup
site_prefixes: [10.1.0.0/24]
remote_prefixes:
  static: [10.2.0.0/24]
  learned_from_bgp: true
bgp:
  local_as: 65001
  peer_as: 65002
  router_id: 10.1.0.1
  standby: {med: 200, as_path_prepend: 2, communities: ["65001:666"]}
policy:
  rise: 3
  fall: 5
  loss_window: 50
  loss_down: 25
  preempt_hold_down_s: 30
"""

TUN1_XFRM = """\
    interface: vti1
    kind: vti
    underlay: {local: 192.0.2.1, remote: 192.0.2.2}
    key: 1
    mark: 1
"""


@dataclass(frozen=True)
class Bad:
    """A bad config: BASE with `edits` applied (or raw `content`), and the lines it must give.

    Each entry of `lines` is the substrings one stderr line must hold; `{f}` is the file
    (a missing field is reported on the line of the mapping that lacks it).
    """

    id: str
    lines: list[tuple[str, ...]]
    edits: list[tuple[str, str]] = field(default_factory=list)
    content: str | bytes | None = None

    def text(self) -> str | bytes:
        if self.content is not None:
            return self.content
        text = BASE
        for old, new in self.edits:
            assert text.count(old) == 1, f"{self.id}: {old!r} must occur once in BASE"
            text = text.replace(old, new)
        return text


CASES = [
    Bad(
        "yaml-syntax-unclosed-brace",
        [("{f}:7:", "YAML syntax error", "expected ',' or '}'")],
        edits=[("remote: 192.0.2.2}", "remote: 192.0.2.2")],
    ),
    Bad(
        "yaml-tab-indent",
        [("{f}:4:", "YAML syntax error", "spaces, not tabs")],
        edits=[("    interface: vti1\n", "\tinterface: vti1\n")],
    ),
    Bad(
        "duplicate-yaml-key-top",
        [("{f}:2:", "duplicate key 'agent_id'", "first on line 1")],
        edits=[("agent_id: site-a\n", "agent_id: site-a\nagent_id: site-b\n")],
    ),
    Bad(
        "duplicate-yaml-key-in-tunnel",
        [("{f}:8:", "duplicate key 'key'", "first on line 7")],
        edits=[("    key: 1\n    mark: 1\n", "    key: 1\n    key: 7\n    mark: 1\n")],
    ),
    Bad("empty-file", [("{f}: ", "empty")], content=""),
    Bad("only-comments", [("{f}: ", "empty")], content="# agent_id: x\n\n# tunnels: []\n"),
    Bad("top-level-list", [("{f}: ", "top level must be a mapping", "list")], content="- a\n"),
    Bad(
        "non-utf8-bytes",
        [("{f}:1:", "not UTF-8", "0xe9")],
        content=BASE.replace("site-a", "caf\u00e9").encode("latin-1"),
    ),
    Bad(
        "wrong-type-key",
        [("{f}:17:", "tunnels[tun2].key:", "whole number", "'two'")],
        edits=[("    key: 2\n", "    key: two\n")],
    ),
    Bad(
        "wrong-type-bool",
        [("policy.rise:", "whole number", "'three'")],
        edits=[("  rise: 3\n", "  rise: three\n")],
    ),
    Bad(
        "wrong-type-mapping",
        [
            (
                "tunnels[tun1].underlay:",
                "must be a mapping with device, local, remote",
                "'192.0.2.1'",
            )
        ],
        edits=[("{local: 192.0.2.1, remote: 192.0.2.2}", "192.0.2.1")],
    ),
    Bad(
        "bad-underlay-address",
        [("{f}:6:", "tunnels[tun1].underlay.local:", "not an IPv4 or IPv6 address", "192.0.2.300")],
        edits=[("local: 192.0.2.1,", "local: 192.0.2.300,")],
    ),
    Bad(
        "underlay-mixed-families",
        [("tunnels[tun2].underlay.remote:", "2001:db8::2", "same family")],
        edits=[("remote: 198.51.100.2}", "remote: '2001:db8::2'}")],
    ),
    Bad(
        "router-id-not-ipv4",
        [("bgp.router_id:", "not an IPv4 address", "2001:db8::1")],
        edits=[("router_id: 10.1.0.1", "router_id: '2001:db8::1'")],
    ),
    Bad(
        "vti-key-differs-from-mark",
        [("{f}:7:", "tunnels[tun1].key:", "VTI key 1 must equal the IPsec mark 3")],
        edits=[("    mark: 1\n", "    mark: 3\n")],
    ),
    Bad(
        "unknown-top-level-field",
        [("polcy", "unknown field", "did you mean policy?")],
        edits=[("policy:\n", "polcy:\n")],
    ),
    Bad(
        "unknown-tunnel-field-and-missing-interface",
        [
            ("{f}:13:", "tunnels[tun2].interface:", "required field missing"),
            ("{f}:14:", "tunnels[tun2].intreface:", "unknown field", "did you mean interface?"),
        ],
        edits=[("    interface: vti2\n", "    intreface: vti2\n")],
    ),
    Bad(
        "duplicate-tunnel-names",
        [("{f}:13:", "tunnels[tun1].name:", "tun1 is already the name of tunnel #1")],
        edits=[("  - name: tun2\n", "  - name: tun1\n")],
    ),
    Bad(
        "duplicate-interfaces",
        [("tunnels[tun2].interface:", "vti1 is already the interface of tunnel tun1")],
        edits=[("    interface: vti2\n", "    interface: vti1\n")],
    ),
    Bad(
        "duplicate-vti-keys",
        [("tunnels[tun2].key:", "1 is already the key/IPsec mark of tunnel tun1")],
        edits=[("    key: 2\n", "    key: 1\n")],
    ),
    Bad(
        "duplicate-if-ids",
        [("tunnels[tun2].if_id:", "5 is already the if_id of tunnel tun1")],
        edits=[
            (
                TUN1_XFRM,
                "    interface: xfrm1\n    kind: xfrm\n    if_id: 5\n"
                "    underlay: {local: 192.0.2.1, remote: 192.0.2.2}\n",
            ),
            ("    key: 2\n", "    if_id: 5\n"),
            ("    interface: vti2\n    kind: vti\n", "    interface: xfrm2\n    kind: xfrm\n"),
        ],
    ),
    Bad(
        "duplicate-bgp-neighbors",
        [("tunnels[tun2].bgp_neighbor:", "169.254.1.2 is already the BGP neighbor of tunnel tun1")],
        edits=[("    role: backup\n", "    role: backup\n    bgp_neighbor: 169.254.1.2\n")],
    ),
    Bad(
        "duplicate-inner-addresses",
        [("tunnels[tun2].inner.local:", "169.254.1.1 is already the inner address of tunnel tun1")],
        edits=[
            (
                "{local: 169.254.2.1/30, peer: 169.254.2.2}",
                "{local: 169.254.1.1/30, peer: 169.254.1.3}",
            )
        ],
    ),
    Bad(
        "inner-peer-outside-subnet",
        [
            (
                "{f}:19:",
                "tunnels[tun2].inner.peer:",
                "169.254.3.2 is outside the local subnet 169.254.2.0/30",
            )
        ],
        edits=[("peer: 169.254.2.2}", "peer: 169.254.3.2}")],
    ),
    Bad(
        "inner-local-without-prefix-length-garbage",
        [("tunnels[tun1].inner.local:", "address with prefix length", "'169.254.1'")],
        edits=[("{local: 169.254.1.1/30,", "{local: 169.254.1,")],
    ),
    Bad(
        "loss-down-over-window",
        [("{f}:34:", "policy.loss_down:", "60 exceeds loss_window 50")],
        edits=[("  loss_down: 25\n", "  loss_down: 60\n")],
    ),
    Bad(
        "prefix-with-host-bits",
        [
            (
                "remote_prefixes.static[0]:",
                "10.2.0.1/24 has host bits set",
                "did you mean 10.2.0.0/24?",
            )
        ],
        edits=[("static: [10.2.0.0/24]", "static: [10.2.0.1/24]")],
    ),
    Bad(
        "prefix-length-too-long",
        [("site_prefixes[1]:", "not an IPv4 or IPv6 prefix", "'10.9.0.0/33'")],
        edits=[("site_prefixes: [10.1.0.0/24]", "site_prefixes: [10.1.0.0/24, 10.9.0.0/33]")],
    ),
    Bad(
        "prefix-both-site-and-remote",
        [("remote_prefixes.static[1]:", "10.1.0.0/24 is also in site_prefixes")],
        edits=[("static: [10.2.0.0/24]", "static: [10.2.0.0/24, 10.1.0.0/24]")],
    ),
    Bad(
        "udp-probe-without-port",
        [("{f}:12:", "tunnels[tun1].probe.udp_port:", "required with kind: udp")],
        edits=[("probe: {kind: icmp,", "probe: {kind: udp,")],
    ),
    Bad(
        "negative-intervals",
        [
            ("tunnels[tun1].probe.interval_s:", "at least 0.05", "(got -0.2)"),
            ("policy.preempt_hold_down_s:", "at least 0", "(got -5)"),
        ],
        edits=[
            ("interval_s: 0.2,", "interval_s: -0.2,"),
            ("preempt_hold_down_s: 30", "preempt_hold_down_s: -5"),
        ],
    ),
    Bad(
        "interval-with-unit",
        [("tunnels[tun1].probe.interval_s:", "plain number", "'200ms'")],
        edits=[("interval_s: 0.2,", "interval_s: 200ms,")],
    ),
    Bad(
        "xfrm-without-if-id",
        [("{f}:3:", "tunnels[tun1].if_id:", "required for kind: xfrm")],
        edits=[
            (
                TUN1_XFRM,
                "    interface: xfrm1\n    kind: xfrm\n"
                "    underlay: {local: 192.0.2.1, remote: 192.0.2.2}\n",
            ),
        ],
    ),
    Bad(
        "no-tunnels",
        [("{f}:2:", "tunnels:", "at least 1 entry")],
        content="agent_id: site-a\ntunnels: []\n",
    ),
    Bad(
        "missing-agent-id",
        [("agent_id:", "required field missing")],
        edits=[("agent_id: site-a\n", "")],
    ),
    Bad(
        "interface-name-too-long",
        [("tunnels[tun1].interface:", "at most 15 characters", "'vti-to-frankfurt1'")],
        edits=[("    interface: vti1\n", "    interface: vti-to-frankfurt1\n")],
    ),
    Bad(
        "unquoted-community-read-as-number",
        [("bgp.standby.communities[0]:", "YAML read 65001:10 as 3900070", "quotes")],
        edits=[('communities: ["65001:666"]', "communities: [65001:10]")],
    ),
    Bad(
        "vici-source-without-ike",
        [("tunnels[tun2].ike:", "required with source vici")],
        edits=[("    ike: {connection: tun2, child: tun2}\n", "")],
    ),
    Bad(
        "source-listed-twice",
        [("tunnels[tun2].sources:", "probe listed more than once")],
        edits=[("    role: backup\n", "    role: backup\n    sources: [vici, probe, probe]\n")],
    ),
    Bad(
        "unknown-enum-value",
        [("tunnels[tun2].role:", "must be 'primary' or 'backup'", "'standby'")],
        edits=[("    role: backup\n", "    role: standby\n")],
    ),
    Bad(
        "learned-from-bgp-without-bgp",
        [("remote_prefixes.learned_from_bgp:", "needs a bgp section")],
        edits=[
            (
                "bgp:\n  local_as: 65001\n  peer_as: 65002\n  router_id: 10.1.0.1\n"
                '  standby: {med: 200, as_path_prepend: 2, communities: ["65001:666"]}\n',
                "",
            )
        ],
    ),
    Bad(
        "three-problems-three-lines",
        [
            ("tunnels[tun1].underlay.remote:", "'192.0.2'"),
            ("tunnels[tun2].key:", "'two'"),
            ("policy.fall:", "at least 1", "(got 0)"),
        ],
        edits=[
            ("remote: 192.0.2.2}", "remote: 192.0.2}"),
            ("    key: 2\n", "    key: two\n"),
            ("  fall: 5\n", "  fall: 0\n"),
        ],
    ),
]


def _assert_refused(result: Result, name: str, lines: list[tuple[str, ...]]) -> None:
    assert result.code == 2, result
    assert result.out == "", result
    assert "Traceback" not in result.err, result.err
    got = result.err_lines
    assert len(got) == len(lines), f"want {len(lines)} line(s), got:\n{result.err}"
    for line, wanted in zip(got, lines, strict=True):
        assert line.startswith(f"error: {name}"), line
        for part in wanted:
            want = part.replace("{f}", name)
            assert want in line, f"{want!r} not in {line!r}"


def _write(tmp_path: Path, case: Bad) -> Path:
    path = tmp_path / "site.yaml"
    text = case.text()
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_enough_distinct_bad_configs() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 25
    assert len({c.text() for c in CASES}) == len(CASES)


def test_base_config_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(BASE)
    result = vtf("check", path)
    assert result.code == 0, result.err
    assert result.err == ""


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_check_refuses(tmp_path: Path, case: Bad) -> None:
    path = _write(tmp_path, case)
    _assert_refused(vtf("check", path), str(path), case.lines)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    _assert_refused(vtf("check", path), str(path), [("{f}: no such file",)])


def test_directory(tmp_path: Path) -> None:
    _assert_refused(vtf("check", tmp_path), str(tmp_path), [("{f}: is a directory",)])


RUN_CASES = [
    c
    for c in CASES
    if c.id
    in {"yaml-syntax-unclosed-brace", "vti-key-differs-from-mark", "three-problems-three-lines"}
]


@pytest.mark.parametrize("mode", [(), ("--dry-run",)], ids=["live", "dry-run"])
@pytest.mark.parametrize("case", RUN_CASES, ids=[c.id for c in RUN_CASES])
def test_run_refuses_like_check(tmp_path: Path, case: Bad, mode: tuple[str, ...]) -> None:
    path = _write(tmp_path, case)
    result = vtf("run", path, *mode)
    _assert_refused(result, str(path), case.lines)
    assert result.err == vtf("check", path).err


def test_run_refuses_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "gone.yaml"
    _assert_refused(vtf("run", path, "--dry-run"), str(path), [("{f}: no such file",)])
