"""The exabgp.conf a supervised ExaBGP starts from: graceful restart and the announcements."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.adapters.exabgp import ExaBgpAdapter
from agent.config import parse_config
from agent.core.actions import AnnouncePrefix, WithdrawPrefix
from tests.bgp.conftest import EXABGP
from tests.support.system import run

CONFIG = """
agent_id: a
tunnels:
  - {name: tun1, interface: v1, key: 1, sources: [probe],
     underlay: {local: 192.0.2.1, remote: 192.0.2.2},
     inner: {local: 169.254.1.1/30, peer: 169.254.1.2}}
  - {name: tun2, interface: v2, key: 2, sources: [probe], role: backup,
     underlay: {local: 198.51.100.1, remote: 198.51.100.2},
     inner: {local: "fd00:2::1/64", peer: "fd00:2::2"}}
site_prefixes: [10.1.0.0/24, "2001:db8:a::/48"]
bgp: {local_as: 65001, peer_as: 65002, router_id: 10.1.0.1, graceful_restart_s: GR}
"""


def _neighbor_block(text: str, neighbor: str) -> str:
    start = text.index(f"neighbor {neighbor} {{")
    return text[start : text.index("\n}\n", start)]


async def test_start_config_carries_graceful_restart_and_what_we_announce(
    tmp_path: Path,
) -> None:
    adapter = ExaBgpAdapter(parse_config(CONFIG.replace("GR", "120")), workdir=tmp_path)
    # Not connected: kept for the next start (and for a replay when exabgp connects).
    await adapter.apply(
        [
            AnnouncePrefix("169.254.1.2", "tun1", "10.1.0.0/24", 100),
            AnnouncePrefix("169.254.1.2", "tun1", "10.1.9.0/24", 100),
            AnnouncePrefix("fd00:2::2", "tun2", "2001:db8:a::/48", 200, 2, ("65001:666",)),
            # The other family than tun2's session: never sent there, nor written.
            AnnouncePrefix("fd00:2::2", "tun2", "10.1.0.0/24", 200),
        ]
    )
    await adapter.apply([WithdrawPrefix("169.254.1.2", "tun1", "10.1.9.0/24")])
    text = adapter._start_text()
    one, two = _neighbor_block(text, "169.254.1.2"), _neighbor_block(text, "fd00:2::2")
    for block in (one, two):
        assert "    capability {\n        graceful-restart 120;\n    }" in block
    assert "        route 10.1.0.0/24 next-hop self origin igp med 100;" in one
    assert "10.1.9.0/24" not in text
    assert (
        "        route 2001:db8:a::/48 next-hop self origin igp med 200 "
        "as-path [ 65001 65001 65001 ] community [ 65001:666 ];"
    ) in two
    assert "10.1.0.0/24" not in two
    conf = tmp_path / "exabgp.conf"
    conf.write_text(text)
    result = run(EXABGP, "validate", str(conf), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_graceful_restart_zero_leaves_the_capability_out(tmp_path: Path) -> None:
    adapter = ExaBgpAdapter(parse_config(CONFIG.replace("GR", "0")), workdir=tmp_path)
    text = adapter._start_text()
    assert "graceful-restart" not in text
    assert "static {" not in text


@pytest.mark.parametrize("value", ["-1", "4096"])
def test_graceful_restart_out_of_range_names_the_field(value: str) -> None:
    with pytest.raises(Exception, match="graceful_restart_s") as err:
        parse_config(CONFIG.replace("GR", value))
    assert "Traceback" not in str(err.value)
