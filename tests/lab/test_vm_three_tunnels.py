"""Three tunnels in the VM lab (vti1, vti2, the XFRM interface xfrm3): preemption goes to
the best *usable* tunnel, one step at a time (guest_faults.py's phase three_order, run last
by guest_dual_stack.py on the mixed-underlay lab).

Every path cut (all down: withdrawn, told), isp3 repaired (traffic on xfrm3, told as a
recovery), isp2 repaired, then isp1 10 s later: traffic moves to vti2 once it has been
healthy for the hold-down (30 s), then to vti1 once vti1 has.
"""

from __future__ import annotations

import pytest

from tests.lab.test_vm_faults import Facts, moves, phase, why

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.root, pytest.mark.services]


@pytest.fixture(scope="module")
def lab(three_dual_lab: Facts) -> Facts:
    # The dual-stack run's lab has the same three tunnels: its last phase is this one.
    return three_dual_lab


def test_preemption_steps_through_the_best_usable_tunnel(lab: Facts) -> None:
    p = phase(lab, "three_order")
    seen = p["carriers_after_repair"]
    print(f"after isp2's repair (isp1 {p['isp1_after_isp2_s']} s later): {seen}")
    order = [dev for _, dev in seen if dev != "split"]
    assert order == ["xfrm3", "vti2", "vti1"], seen
    at = {dev: t for t, dev in reversed(seen)}
    # Each move waits for its tunnel's hold-down (30 s), no longer than the polling allows.
    assert 30 <= at["vti2"] <= 60, seen
    assert at["vti1"] - p["isp1_after_isp2_s"] >= 30, seen


def test_all_down_then_one_back_is_told_and_routed(lab: Facts) -> None:
    p = phase(lab, "three_order")
    kinds = [(e["kind"], e["to"]) for e in moves(lab, p)]
    # The three cuts land a moment apart: a failover or two may come before both-down.
    assert ("recovered", ["tun3"]) in kinds, (kinds, why(lab))
    back = kinds.index(("recovered", ["tun3"]))
    assert kinds[back - 1] == ("both-down", []), kinds
    assert all(kind == "failover" for kind, _ in kinds[: back - 1]), kinds
    assert kinds[back + 1 :] == [("failback", ["tun2"]), ("failback", ["tun1"])], kinds
