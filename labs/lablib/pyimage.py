"""The venv's Python on a disk image for the VM, so the guest does not import it over 9p.

The guest's root is the host's, over 9p without a cache: under TCG every stat and read of
an import is a round trip through QEMU, and a bare `python -c pass` takes 4.4 s, importing
agent.cli 18 s, one `vti-failover doctor` 31 s. The same trees read from an ext4 image on
virtio-blk (mounted as the top layer of an overlay on their own paths, so anything left
out still comes from 9p) take 0.6 s, 5.8 s and 11.4 s. The image is a throw-away copy,
built in ~3 s before each boot.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from lablib.topology import TOP

__all__ = ["GUEST_MODULES", "GUEST_MOUNT", "build_image"]

MOUNTED = "/run/vtl-py"
GUEST_MODULES = ("virtio_blk", "ext4", "overlay")
# The guest's step once GUEST_MODULES are loaded: the image's trees over their paths; with
# no image (or a kernel that cannot mount it) it carries on over 9p, only slower. Short:
# the guest's command line travels on the kernel's.
GUEST_MOUNT = (
    f"mkdir -p {MOUNTED}&&mount -r /dev/vda {MOUNTED}&&sh {MOUNTED}/mount.sh||echo python over 9p;"
)

# Never imported in the guest; the overlay would still find them on 9p.
_LEFT_OUT = {
    "stdlib": ("test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
               "site-packages", "config-*"),
    "site": ("mypy", "mypyc", "*__mypyc*", "pip"),
}  # fmt: skip

_PATHS = """
import json, os, sysconfig
v = sysconfig.get_config_vars()
lib = os.path.join(v["LIBDIR"], v["INSTSONAME"]) if v.get("Py_ENABLE_SHARED") else None
print(json.dumps({"stdlib": sysconfig.get_paths()["stdlib"],
                  "site": sysconfig.get_paths()["purelib"], "libpython": lib}))
"""


def _trees(python: Path) -> dict[str, str | None]:
    out = subprocess.run(
        [str(python), "-c", _PATHS], capture_output=True, text=True, check=True, timeout=60
    )
    found: dict[str, str | None] = json.loads(out.stdout)
    found["agent"] = str(TOP / "agent")
    return found


def build_image(workdir: Path, python: Path = TOP / ".venv" / "bin" / "python") -> Path | None:
    """An ext4 image of the venv's interpreter, stdlib, site-packages and the agent, with
    the mount.sh the guest runs; None (with the reason printed) if it cannot be built."""
    if shutil.which("mkfs.ext4") is None:
        print("==> no mkfs.ext4: the guest imports Python over 9p", flush=True)
        return None
    stage = workdir / "python-stage"
    image = workdir / "python.ext4"
    try:
        trees = _trees(python)
        lines = ["set -e"]
        for name, path in trees.items():
            # overlayfs' lowerdir splits on ':' and ',': such a path stays on 9p.
            if path is None or not os.path.exists(path) or any(c in path for c in ":,"):
                continue
            if os.path.isdir(path):
                ignore = shutil.ignore_patterns(*_LEFT_OUT.get(name, ()))
                shutil.copytree(path, stage / name, symlinks=True, ignore=ignore)
                lower = shlex.quote(f"lowerdir={MOUNTED}/{name}:{path}")
                lines.append(f"mount -t overlay overlay -o {lower} {shlex.quote(path)}")
            else:
                stage.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, stage / name)
                lines.append(f"mount --bind {MOUNTED}/{name} {shlex.quote(path)}")
        lines.append(f"echo '==> the guest imports Python from its image ({len(lines) - 1} trees)'")
        (stage / "mount.sh").write_text("\n".join(lines) + "\n")
        size = sum(f.stat().st_size for f in stage.rglob("*") if f.is_file() and not f.is_symlink())
        count = sum(1 for _ in stage.rglob("*"))
        with image.open("wb") as f:
            f.truncate(size * 5 // 4 + (64 << 20))
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", "-N", str(count + 4096),
             "-d", str(stage), str(image)],
            capture_output=True, text=True, check=True, timeout=300,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        print(f"==> no Python image for the guest ({exc}): it imports over 9p", flush=True)
        image.unlink(missing_ok=True)
        return None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return image
