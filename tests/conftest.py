"""Suite-wide rules: under CI=true a skipped test is a failed test; agents lock in a tmp dir."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        # Tests that need root, namespaces, daemons or the VM must run in CI; a skip there
        # would hide exactly the failures they exist to catch.
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which counts as a failure: {reason}"
    del item, call


@pytest.fixture(autouse=True, scope="session")
def _own_lock_dir(tmp_path_factory: pytest.TempPathFactory) -> Generator[None, None, None]:
    """Agents started by this test run lock their agent_id here, not in /run/vti-failover.

    One run of the suite starts agents one after another, but two runs (or a benchmark) on
    one host must not refuse each other's agents of the same agent_id.
    """
    saved = os.environ.get("VTI_FAILOVER_LOCK_DIR")
    os.environ["VTI_FAILOVER_LOCK_DIR"] = str(tmp_path_factory.mktemp("locks"))
    yield
    if saved is None:
        os.environ.pop("VTI_FAILOVER_LOCK_DIR", None)
    else:
        os.environ["VTI_FAILOVER_LOCK_DIR"] = saved
