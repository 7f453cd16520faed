"""The bench's one-line summary of site B's BGP paths, from BIRD's own output."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "labs" / "bench"))
from failover import describe_paths, parse_bird_paths

# `birdc show route for 10.1.0.0/24 all` on site B, as BIRD 2.0.12 printed it in the lab.
BOTH_PATHS = """\
Table master4:
10.1.0.0/24          unicast [tun1 18:22:32.953] * (100) [AS65001i]
\tvia 169.254.1.1 on vti1
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 65001
\tBGP.next_hop: 169.254.1.1
\tBGP.med: 100
\tBGP.local_pref: 100
                     unicast [tun2 18:22:32.938] (100) [AS65001i]
\tvia 169.254.2.1 on vti2
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 65001 65001 65001
\tBGP.next_hop: 169.254.2.1
\tBGP.med: 200
\tBGP.local_pref: 100
\tBGP.community: (65001,666)
"""


def test_every_path_with_its_med_and_the_best_marked() -> None:
    assert describe_paths(parse_bird_paths(BOTH_PATHS)) == "tun1 med 100 (best), tun2 med 200"


def test_a_path_without_med_and_no_paths_at_all() -> None:
    no_med = "\n".join(ln for ln in BOTH_PATHS.splitlines() if "med: 200" not in ln)
    assert describe_paths(parse_bird_paths(no_med)) == "tun1 med 100 (best), tun2 med -"
    assert describe_paths(parse_bird_paths("Table master4:\n")) == "none"


def test_paths_are_named_by_their_whole_protocol_name() -> None:
    assert [p.protocol for p in parse_bird_paths(BOTH_PATHS)] == ["tun1", "tun2"]
    tun1_only = BOTH_PATHS.partition("                     unicast [tun2")[0]
    assert [p.protocol for p in parse_bird_paths(tun1_only)] == ["tun1"]
