"""The stall report's questions to QEMU, asked of a real (stopped, kernel-less) QEMU."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.system import require_tool

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "labs"))
from lablib.qemu_monitor import Symbols, parse_registers, stall_report

# A made-up guest's text symbols: a kernel one and one in a module.
KALLSYMS = """\
0000000000000000 A fixed_percpu_data
000000000000ffe0 T reset_entry
0000000000010000 t after_reset
ffffffffc0a01000 t esp_input\t[esp4]
ffffffffc0a02000 d esp_data\t[esp4]
"""


@pytest.fixture
def stopped_qemu(tmp_path: Path) -> Iterator[Path]:
    """A two-vCPU QEMU held before its first instruction, its monitor on a socket."""
    qemu = require_tool("qemu-system-x86_64")
    sock = tmp_path / "monitor.sock"
    monitor = f"unix:{sock},server=on,wait=off"
    proc = subprocess.Popen(
        [qemu, "-nodefaults", "-display", "none", "-smp", "2", "-S", "-monitor", monitor],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.1)
        yield sock
    finally:
        proc.kill()
        proc.wait()


def test_each_vcpu_is_named_by_the_guests_symbols(stopped_qemu: Path, tmp_path: Path) -> None:
    kallsyms = tmp_path / "kallsyms"
    kallsyms.write_text(KALLSYMS)
    report = stall_report(stopped_qemu, kallsyms, samples=2).splitlines()
    # x86 resets to f000:fff0; the second vCPU waits there, halted, for its start-up IPI.
    assert report == [
        f"sample {s} cpu {c}: rip=0xfff0 cpl=0 halted={c} reset_entry+0x10"
        for s in range(2)
        for c in range(2)
    ]


def test_without_symbols_the_address_alone_is_reported(stopped_qemu: Path, tmp_path: Path) -> None:
    report = stall_report(stopped_qemu, tmp_path / "absent", samples=1)
    assert report.splitlines()[0] == "sample 0 cpu 0: rip=0xfff0 cpl=0 halted=0 0xfff0"


def test_module_symbols_carry_their_module_and_data_is_not_code() -> None:
    symbols = Symbols(KALLSYMS)
    assert symbols.name(0xFFFFFFFFC0A01010) == "esp_input+0x10 [esp4]"
    # esp_data is data (d): an address past esp_input stays esp_input's.
    assert symbols.name(0xFFFFFFFFC0A02008) == "esp_input+0x1008 [esp4]"
    assert symbols.name(0x100) == "0x100"


def test_registers_of_a_64_bit_guest_parse() -> None:
    text = (
        "CPU#0\nRAX=0000000000000000 RBX=ffffffff96a0b000\n"
        "RIP=ffffffff958592eb RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\n"
        "CPU#1\nRIP=00007f7763891bf9 RFL=00000202 [-------] CPL=3 II=0 A20=1 SMM=0 HLT=0\n"
    )
    cpus = parse_registers(text)
    assert [(c.rip, c.cpl, c.halted) for c in cpus] == [
        (0xFFFFFFFF958592EB, 0, True),
        (0x7F7763891BF9, 3, False),
    ]
