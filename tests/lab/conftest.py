"""The VM lab runs shared between test modules: one VM boot serves several."""

from __future__ import annotations

from typing import Any

import pytest

from tests.lab.vmrun import TOP, facts_from_vm

DUAL = TOP / "labs" / "dual-vti" / "siteA" / "vti-failover-three-dual.yaml"


@pytest.fixture(scope="session")
def three_dual_lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """guest_dual_stack.py on the three-tunnel, mixed-underlay lab: the dual-stack phases,
    then the three-tunnel preemption order (test_vm_dual_stack.py, test_vm_three_tunnels.py)."""
    results = tmp_path_factory.mktemp("vmdual")
    return facts_from_vm(
        results, "agent", "guest_dual_stack.py", agent_config=DUAL, family="dual", timeout=1500
    )


@pytest.fixture(scope="session")
def stock_lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """guest_stock_lab.py on the stock lab: the stock cut, doctor's pitfalls, then apply
    from nothing (test_vm_stock_stack.py, test_vm_doctor.py, test_vm_apply.py)."""
    results = tmp_path_factory.mktemp("vmstock")
    return facts_from_vm(results, "stock", "guest_stock_lab.py", timeout=1800)
