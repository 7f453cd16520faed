"""The supervised ExaBGP's workdir: ours and 0700, its files 0600, no symlink followed.

A workdir someone else owns or may write, or a symlink where exabgp.conf or the pid file
should be, is refused with one line naming it, before anything in it is touched.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.adapters.exabgp import ExaBgpAdapter
from agent.adapters.exabgp_supervisor import CONF_NAME, PID_NAME
from agent.adapters.exabgp_workdir import WorkdirError
from tests.bgp.conftest import Topology, agent_config, supervised

NOBODY = 65534
# No namespaces needed where exabgp is refused before it starts.
NO_TOPO = Topology("unused-a", "unused-b")


async def refused(workdir: Path) -> str:
    adapter = ExaBgpAdapter(agent_config(NO_TOPO, workdir))
    with pytest.raises(WorkdirError) as err:
        await adapter.run()
    message = str(err.value)
    assert "\n" not in message
    return message


def _other_owner(d: Path) -> None:
    os.chown(d, NOBODY, NOBODY)


def _shared(d: Path) -> None:
    os.chmod(d, 0o777)  # noqa: S103 - the permissive mode is what is under test


@pytest.mark.root
@pytest.mark.parametrize(
    ("spoil", "says"),
    [
        (_other_owner, r"owned by uid 65534, not by this agent"),
        (_shared, r"writable by group or others \(mode 0777\)"),
    ],
    ids=["other-owner", "world-writable"],
)
async def test_workdir_not_ours_is_refused_and_left_untouched(
    tmp_path: Path, spoil: Callable[[Path], None], says: str
) -> None:
    workdir = tmp_path / "exabgp"
    workdir.mkdir(mode=0o700)
    conf = workdir / CONF_NAME
    conf.write_text("theirs\n")
    spoil(workdir)
    message = await refused(workdir)
    assert message.startswith(f"exabgp.workdir {workdir}: ")
    assert re.search(says, message), message
    assert conf.read_text() == "theirs\n"
    assert sorted(p.name for p in workdir.iterdir()) == [CONF_NAME]


async def test_symlinked_workdir_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    real.mkdir(mode=0o700)
    workdir = tmp_path / "exabgp"
    workdir.symlink_to(real)
    assert "is a symlink" in await refused(workdir)
    assert list(real.iterdir()) == []


@pytest.mark.parametrize("name", [CONF_NAME, PID_NAME])
async def test_symlink_in_the_workdir_is_refused_and_its_target_untouched(
    tmp_path: Path, name: str
) -> None:
    workdir = tmp_path / "exabgp"
    workdir.mkdir(mode=0o700)
    target = tmp_path / "precious"
    target.write_text("precious\n")
    (workdir / name).symlink_to(target)
    message = await refused(workdir)
    where = workdir.absolute() / name
    assert message == f"{where}: is a symlink; refusing to write or read through it"
    assert target.read_text() == "precious\n"


@pytest.mark.root
@pytest.mark.services
async def test_files_are_private_whatever_the_umask(topo: Topology, tmp_path: Path) -> None:
    workdir = tmp_path / "run" / "vti-failover" / "exabgp"
    old = os.umask(0)
    try:
        async with supervised(topo, workdir):
            modes = {
                p.name: stat.S_IMODE(p.lstat().st_mode)
                for p in (workdir, workdir / CONF_NAME, workdir / PID_NAME, workdir / "api.sock")
            }
            parent = stat.S_IMODE(workdir.parent.lstat().st_mode)
    finally:
        os.umask(old)
    assert modes == {"exabgp": 0o700, CONF_NAME: 0o600, PID_NAME: 0o600, "api.sock": 0o600}
    assert parent == 0o755
    assert workdir.stat().st_uid == os.geteuid()
    # Nothing half-written left behind by the temp-file-and-rename writes.
    assert not [p for p in workdir.iterdir() if p.name.endswith(".tmp")]
