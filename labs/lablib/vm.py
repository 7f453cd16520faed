"""Decides whether this kernel can run the lab, and if not re-runs a command in a VM.

The VM is virtme-ng booting the distribution kernel over the host's own root filesystem
(read-only, throw-away overlays): the guest sees the checkout, .venv and every installed
package; only the --rwdir directory comes back to the host.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from lablib import pyimage
from lablib.qemu_monitor import stall_report
from lablib.topology import TOP

__all__ = ["GUEST_MODULES", "STALLED", "in_vm", "kernel_image", "kernel_ready", "run_in_vm"]

GUEST_MODULES = (
    *("ip_vti", "ip6_vti", "xfrm_interface", "esp4", "esp6", "xfrm_user", "veth"),
    *("authenc", "cbc", "aes_generic", "sha256_generic", "hmac"),
    *("sch_ingress", "cls_matchall", "act_gact", "sch_netem"),
)
IN_VM_ENV = "VTI_FAILOVER_LAB_IN_VM"


def in_vm() -> bool:
    return os.environ.get(IN_VM_ENV) == "1"


def _quiet(*cmd: str) -> bool:
    return subprocess.run(list(cmd), capture_output=True, check=False, timeout=30).returncode == 0


def kernel_ready() -> bool:
    """True when this kernel can build a VTI and hold a kernel ESP SA (tried in a scratch netns)."""
    _quiet("modprobe", "-q", "-a", *GUEST_MODULES)
    ns = f"vtl-probe-{uuid.uuid4().hex[:8]}"
    if not _quiet("ip", "netns", "add", ns):
        return False
    try:
        vti = _quiet(
            "ip",
            "-n",
            ns,
            "link",
            "add",
            "vtiprobe",
            "type",
            "vti",
            "local",
            "192.0.2.1",
            "remote",
            "192.0.2.2",
            "key",
            "7",
        )
        esp = _quiet(
            "ip",
            "-n",
            ns,
            "xfrm",
            "state",
            "add",
            "src",
            "192.0.2.1",
            "dst",
            "192.0.2.2",
            "proto",
            "esp",
            "spi",
            "0x100",
            "mode",
            "tunnel",
            "mark",
            "7",
            "enc",
            "cbc(aes)",
            "0x" + "11" * 32,
            "auth",
            "hmac(sha256)",
            "0x" + "22" * 32,
        )
        return vti and esp
    finally:
        _quiet("ip", "netns", "del", ns)


def kernel_image() -> Path:
    """The newest distribution kernel in /boot (its version moves with Debian updates)."""
    images = sorted(Path("/boot").glob("vmlinuz-*"), key=lambda p: _version_key(p.name))
    if not images:
        raise FileNotFoundError("no /boot/vmlinuz-*: apt-get install linux-image-amd64")
    return images[-1]


def _version_key(name: str) -> list[int | str]:
    parts: list[int | str] = []
    for piece in name.removeprefix("vmlinuz-").replace("-", ".").split("."):
        parts.append(int(piece) if piece.isdigit() else piece)
    return parts


STALLED = 124  # run_in_vm's status for a guest that stopped beating (as timeout(1) says)


def run_in_vm(
    argv: list[str],
    rwdir: Path,
    *,
    memory: str = "2G",
    cpus: int = 2,
    heartbeat: Path | None = None,
    stall_s: float = 300.0,
) -> int:
    """Boot the distribution kernel and run `labs/lab argv` in it; its exit status.

    With `heartbeat` (a file in `rwdir` the guest touches while it makes progress), a
    guest that has not touched it for `stall_s` is asked where its vCPUs are, panicked by
    an NMI for its backtraces, stopped, and STALLED returned: an emulated VM has been seen
    to stop responding in long runs.
    """
    vng = TOP / ".venv" / "bin" / "vng"
    if not vng.exists() and shutil.which("vng") is None:
        raise FileNotFoundError("no vng: bash labs/install.sh installs virtme-ng into .venv")
    rwdir.mkdir(parents=True, exist_ok=True)
    kallsyms = rwdir / "kallsyms"
    # For a stall report: the symbols to name the vCPUs' addresses by, and an NMI that
    # panics the guest so the console gets its backtraces.
    diagnosable = (
        f"grep ' [tTwW] ' /proc/kallsyms > {shlex.quote(str(kallsyms))}; "
        "sysctl -qw kernel.unknown_nmi_panic=1 kernel.panic_print=64; "
        if heartbeat is not None
        else ""
    )
    workdir = Path(tempfile.mkdtemp(prefix="vtl-vm-"))
    image = pyimage.build_image(workdir)
    modules = GUEST_MODULES if image is None else (*GUEST_MODULES, *pyimage.GUEST_MODULES)
    guest = (
        f"modprobe -q -a {' '.join(modules)}; {pyimage.GUEST_MOUNT if image else ''}{diagnosable}"
        f"export {IN_VM_ENV}=1 PATH={shlex.quote(str(TOP / '.venv' / 'bin'))}:$PATH; "
        f"cd {shlex.quote(str(TOP))} && exec labs/lab {shlex.join(argv)}"
    )
    env = dict(os.environ)
    # vng starts virtme-run by name.
    env["PATH"] = f"{TOP / '.venv' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    cmd = [
        str(vng) if vng.exists() else "vng",
        "--run",
        str(kernel_image()),
        "--memory",
        memory,
        "--cpus",
        str(cpus),
        # KVM guests hang on these machines; TCG is slow to fork but dependable.
        "--disable-kvm",
        "--rwdir",
        str(rwdir),
        "--exec",
        f"bash -c {shlex.quote(guest)}",
    ]
    if image is not None:
        # The guest's /dev/vda (the root is 9p, no other disk).
        cmd.append(f"--qemu-opts=-drive file={image},if=virtio,format=raw,readonly=on")
    monitor = None
    if heartbeat is not None:
        monitor = workdir / "monitor.sock"
        # Kernel warnings (RCU stalls, soft lockups, a panic) on the console, and a
        # monitor socket to ask a stalled guest where its CPUs are.
        cmd[1:1] = [
            *("--verbose", "--append", "loglevel=5"),
            f"--qemu-opts=-monitor unix:{monitor},server=on,wait=off",
        ]
    started = time.time()
    if heartbeat is not None:
        heartbeat.unlink(missing_ok=True)
    # Through a pipe: qemu reopens its stdout and stderr by path, which truncates a file
    # they were redirected to. Its own session, so a stalled guest's qemu goes down with vng.
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    copier = threading.Thread(target=_copy_out, args=(proc.stdout,), daemon=True)
    copier.start()
    # SIGTERM (a test's timeout, `timeout`) must take the VM down too: unwind through the
    # finally below instead of dying with qemu still running in its own session.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while proc.poll() is None:
            time.sleep(1)
            if heartbeat is None or monitor is None:
                continue
            beat = heartbeat.stat().st_mtime if heartbeat.exists() else started
            if time.time() - beat > stall_s:
                print(f"==> no progress in the VM for {stall_s:.0f}s: stopping it", flush=True)
                _report_stall(monitor, kallsyms, rwdir)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=60)  # the panic's backtraces print slowly under TCG
                return STALLED
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        copier.join(timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
    return proc.returncode


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _report_stall(monitor: Path, kallsyms: Path, rwdir: Path) -> None:
    """Where the stalled guest's CPUs are (a file in rwdir), and its panic on the console."""
    try:
        report = stall_report(monitor, kallsyms)
    except OSError as exc:
        report = f"no answer from the QEMU monitor: {exc}\n"
    out = rwdir / f"stall-cpus-{time.strftime('%H%M%S')}.txt"
    out.write_text(report)
    print(f"==> the stalled VM's vCPUs (then an NMI, its panic follows): {out}", flush=True)
    print(report, flush=True)


def _copy_out(pipe: io.BufferedReader | None) -> None:
    if pipe is None:
        return
    for chunk in iter(lambda: pipe.read1(65536), b""):
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
