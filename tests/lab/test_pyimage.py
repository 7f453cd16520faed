"""The guest's Python image, built on the host and read back with debugfs (no mount)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.support.system import require_tool

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "labs"))
from lablib import pyimage

TOP = Path(__file__).resolve().parents[2]


def debugfs(image: Path, request: str) -> str:
    out = subprocess.run(
        ["debugfs", "-R", request, str(image)], capture_output=True, text=True, check=True
    )
    return out.stdout


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("mkfs.ext4")
    require_tool("debugfs")
    built = pyimage.build_image(tmp_path_factory.mktemp("pyimage"))
    assert built is not None
    return built


def test_mount_script_lays_each_tree_over_its_own_path(image: Path) -> None:
    script = debugfs(image, "cat /mount.sh").splitlines()
    stdlib = sysconfig.get_paths()["stdlib"]
    site = sysconfig.get_paths()["purelib"]
    assert f"mount -t overlay overlay -o lowerdir=/run/vtl-py/stdlib:{stdlib} {stdlib}" in script
    assert f"mount -t overlay overlay -o lowerdir=/run/vtl-py/site:{site} {site}" in script
    agent = TOP / "agent"
    assert f"mount -t overlay overlay -o lowerdir=/run/vtl-py/agent:{agent} {agent}" in script
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        lib = Path(sysconfig.get_config_var("LIBDIR")) / sysconfig.get_config_var("INSTSONAME")
        assert f"mount --bind /run/vtl-py/libpython {lib}" in script
    # Any failed step leaves the rest on 9p and says so (set -e, then the caller's echo).
    assert script[0] == "set -e"


def test_the_image_holds_what_the_guest_imports_and_not_the_tools(image: Path) -> None:
    site = debugfs(image, "ls /site")
    for package in ("pydantic", "pyroute2", "exabgp", "aiomqtt", "yaml"):
        assert package in site.split(), package
    assert "mypy" not in site.split()
    stdlib = debugfs(image, "ls /stdlib").split()
    assert "asyncio" in stdlib
    assert "test" not in stdlib
    assert "cli.py" in debugfs(image, "ls /agent").split()


def test_the_guest_step_is_short_enough_for_the_kernel_command_line() -> None:
    # It travels base64-encoded with the rest of the guest's command on the kernel's.
    assert len(pyimage.GUEST_MOUNT) < 120
    assert pyimage.GUEST_MOUNT.endswith(";")


def test_an_unusable_python_means_no_image_and_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-python"
    assert pyimage.build_image(tmp_path, python=missing) is None
    assert "imports over 9p" in capsys.readouterr().out
    assert not (tmp_path / "python.ext4").exists()
