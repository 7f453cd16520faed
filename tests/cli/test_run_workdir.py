"""`run` checks a supervised ExaBGP's workdir before anything starts: one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.runner import REPO, vtf

CONFIG = REPO / "config" / "dual-vti.yaml"


@pytest.mark.root
def test_a_refused_workdir_ends_run_with_one_line_and_exit_2(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    workdir = tmp_path / "exabgp"
    workdir.symlink_to(target)
    config = tmp_path / "site.yaml"
    config.write_text(
        CONFIG.read_text().replace("mode: supervise", f"mode: supervise\n  workdir: {workdir}")
    )
    result = vtf("run", config, timeout=60)
    assert result.code == 2, result
    assert result.err_lines == [
        f"error: exabgp.workdir {workdir}: is a symlink; refusing it (use a directory)"
    ]
    assert list(target.iterdir()) == []
