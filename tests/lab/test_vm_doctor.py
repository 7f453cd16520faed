"""doctor on the VM lab's real VTIs: silent about keys and SAs on the known-good lab, and a
wrong key, in the kernel or in the config, found against the real SAs' and policies' marks
(guest_doctor.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.lab.vmrun import stock_part

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.root, pytest.mark.services]

Facts = dict[str, Any]
TUNNEL_CHECKS = {"interface", "sa-mark", "sa-endpoints", "disable-policy", "rp-filter", "mtu",
                 "source-address", "bgp-neighbor", "vici", "modules", "table-220"}  # fmt: skip


@pytest.fixture(scope="module")
def facts(stock_lab: dict[str, Any]) -> Facts:
    return stock_part(stock_lab, "doctor")


def problems(run: Facts) -> list[tuple[str, str, str]]:
    assert run["findings"] is not None, run["stderr"]
    return [(f["check"], f["subject"], f["message"]) for f in run["findings"]
            if f["severity"] != "info"]  # fmt: skip


def test_the_known_good_lab_has_no_vti_or_xfrm_finding(facts: Facts) -> None:
    assert facts["sas_up"]
    found = [p for p in problems(facts["good"]) if p[0] in TUNNEL_CHECKS]
    assert found == []
    # The SAs were there to compare with: no "nothing to compare" note either.
    notes = [f for f in facts["good"]["findings"] if f["check"] in ("sa-mark", "xfrm")]
    assert notes == []


def test_a_wrong_key_in_the_kernel_is_found(facts: Facts) -> None:
    found = [p for p in problems(facts["vti_key_5"]) if p[0] == "sa-mark"]
    assert [(c, s) for c, s, _ in found] == [("sa-mark", "tun1")]
    assert "ikey 5 okey 5" in found[0][2]
    assert facts["vti_key_5"]["code"] == 1


def test_a_wrong_key_in_the_config_is_found_against_the_sas(facts: Facts) -> None:
    found = [p for p in problems(facts["config_key_5"]) if p[0] == "sa-mark"]
    messages = " | ".join(m for _, _, m in found)
    assert {s for _, s, _ in found} == {"tun1"}
    assert "SA 192.0.2.1 -> 192.0.2.2" in messages, messages
    assert "policy dir out" in messages, messages
    assert "mark 5 (the key of vti1)" in messages


# guest_doctor.PITFALLS in order, each with the subject its finding names.
PITFALL_SUBJECTS = [("sa-endpoints", "tun1"), ("sa-mark", "tun3"), ("disable-policy", "vti2"),
                    ("rp-filter", "vti1"), ("mtu", "tun2"), ("source-address", "tun3"),
                    ("table-220", "system"), ("interface", "tun2")]  # fmt: skip


def test_each_pitfall_broken_alone_is_found_and_its_fix_silences_it(facts: Facts) -> None:
    runs = facts["pitfalls"]
    assert [(r["name"]) for r in runs] == [name for name, _ in PITFALL_SUBJECTS]
    # The run after each: the next pitfall's, and for the last the text run (which breaks
    # other pitfalls than "interface").
    after = [*(r["run"] for r in runs[1:]), facts["several"]]
    for (name, subject), pitfall, next_run in zip(PITFALL_SUBJECTS, runs, after, strict=True):
        assert pitfall["failed"] == [], pitfall["failed"]
        found = {(c, s) for c, s, _ in problems(pitfall["run"])}
        assert (name, subject) in found, (name, found)
        assert pitfall["run"]["code"] == 1
        # Fixed before the next run: its finding is gone there.
        if next_run["findings"] is None:
            assert f"[{name}]" not in next_run["stdout"], (name, next_run["stdout"])
        else:
            assert name not in {c for c, _, _ in problems(next_run)}, (name, next_run)


def test_several_pitfalls_at_once_are_each_told_with_the_fix(facts: Facts) -> None:
    run = facts["several"]
    assert facts["several_failed"] == []
    assert run["code"] == 1, run["stderr"]
    for check in ("disable-policy", "mtu", "sa-mark", "table-220"):
        lines = [line for line in run["stdout"].splitlines() if f"[{check}]" in line]
        assert lines, (check, run["stdout"])
        assert all("; fix: " in line for line in lines), (check, run["stdout"])


def test_the_lab_fixed_again_has_no_tunnel_finding(facts: Facts) -> None:
    assert [p for p in problems(facts["fixed"]) if p[0] in TUNNEL_CHECKS] == []
