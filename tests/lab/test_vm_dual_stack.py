"""IPv6 end to end in the VM lab (guest_dual_stack.py): three tunnels over mixed underlays
(vti1 over IPv4; vti2, an ip6 VTI, and xfrm3, an XFRM interface, over IPv6), each carrying
IPv4 and IPv6 inside over one BGP session per tunnel (MP-BGP), real charons, ExaBGP and
BIRD 2 on site B, UDP streams in both families both ways.
"""

from __future__ import annotations

import pytest

from tests.lab.test_vm_faults import Facts, phase, why

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.root, pytest.mark.services]

STREAMS = ("to_a4", "to_b4", "to_a6", "to_b6")


@pytest.fixture(scope="module")
def lab(three_dual_lab: Facts) -> Facts:
    return three_dual_lab


def report(p: Facts, step: str) -> str:
    s = p[step]
    gaps = ", ".join(f"{n} {s['gap_s'][n]:.2f}" for n in STREAMS)
    return f"{p['name']}/{step}: moved in {s['took_s']} s; longest gap per stream (s): {gaps}"


def test_both_families_fail_over_from_an_ipv4_underlay_to_an_ip6_vti_and_back(
    lab: Facts,
) -> None:
    p = phase(lab, "v4_underlay")
    for step in ("cut_isp1", "repair_isp1"):
        print(report(p, step))
    # A silent cut is detected by probes (1 s) and acted on at once: generous under TCG.
    cut = p["cut_isp1"]
    assert all(cut["gap_s"][n] < 10 for n in STREAMS), report(p, "cut_isp1")
    # Failback is make-before-break: no stream loses more than a moment.
    back = p["repair_isp1"]
    assert all(back["gap_s"][n] < 2 for n in STREAMS), report(p, "repair_isp1")


def test_both_families_fail_over_between_ipv6_underlays_vti6_and_xfrm(lab: Facts) -> None:
    p = phase(lab, "v6_underlay")
    for step in ("cut_isp1", "cut_isp2", "repair_isp2", "repair_isp1"):
        print(report(p, step))
    assert all(p["cut_isp2"]["gap_s"][n] < 10 for n in STREAMS), report(p, "cut_isp2")
    for step in ("repair_isp2", "repair_isp1"):
        assert all(p[step]["gap_s"][n] < 2 for n in STREAMS), report(p, step)


def test_a_dead_sa_takes_its_learned_ipv6_prefix_out_of_the_fib(lab: Facts) -> None:
    p = phase(lab, "sa_death")
    print(
        f"tun1's SA terminated: learned {p['learned_before']} -> {p['learned_after']} "
        f"in {p['left_vti1_s']} s; back on vti1 in {p['sa_back']['took_s']} s"
    )
    assert p["learned_before"][:1] == ["vti1"], why(lab)
    assert "vti1" not in p["learned_after"]
    assert p["learned_after"][:1] == ["vti2"]
    assert p["left_vti1_s"] < 10
    assert all(devs == ["vti2", "vti2"] for devs in p["carriers_after"].values())
    assert p["learned_back"][:1] == ["vti1"]
