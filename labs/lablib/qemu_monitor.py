"""Asks a stalled emulated VM where its CPUs are, through QEMU's human monitor.

A guest that stops responding cannot write a report itself, so the host reads each
vCPU's instruction pointer a few times (named by the guest's /proc/kallsyms, saved at
boot) and then sends an NMI, which the guest turns into a panic whose backtraces reach
the console.
"""

from __future__ import annotations

import bisect
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuState", "Symbols", "parse_registers", "stall_report"]

PROMPT = b"(qemu) "
_ANSI = re.compile(rb"\x1b\[[0-9;]*[A-Za-z]")
_CPU = re.compile(r"[RE]IP=([0-9a-f]+) .*?CPL=(\d).*?HLT=(\d)")


@dataclass(frozen=True)
class CpuState:
    rip: int
    cpl: int
    halted: bool


def parse_registers(text: str) -> list[CpuState]:
    """The vCPUs in an `info registers -a` answer, in order."""
    return [
        CpuState(int(m.group(1), 16), int(m.group(2)), m.group(3) == "1")
        for m in _CPU.finditer(text)
    ]


class Symbols:
    """Address -> `symbol+offset [module]` from a /proc/kallsyms copy."""

    def __init__(self, kallsyms: str) -> None:
        entries: list[tuple[int, str, str]] = []
        for line in kallsyms.splitlines():
            fields = line.split(maxsplit=3)
            if len(fields) < 3 or fields[1] not in "tTwW":
                continue
            module = f" {fields[3].strip()}" if len(fields) == 4 else ""
            entries.append((int(fields[0], 16), fields[2], module))
        entries.sort()
        self._addrs = [a for a, _, _ in entries]
        self._names = [(n, m) for _, n, m in entries]

    def name(self, addr: int) -> str:
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0 or self._addrs[i] == 0:
            return f"{addr:#x}"
        symbol, module = self._names[i]
        return f"{symbol}+{addr - self._addrs[i]:#x}{module}"


def _command(sock: socket.socket, line: str | None, timeout: float = 10.0) -> str:
    """`line`'s answer (None: the banner), read up to the next prompt."""
    if line is not None:
        sock.sendall(line.encode() + b"\n")
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(PROMPT) and time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        buf += chunk
    return _ANSI.sub(b"", buf).decode(errors="replace")


def stall_report(monitor: Path, kallsyms: Path | None, samples: int = 5) -> str:
    """Where each vCPU is, sampled `samples` times a second apart; then NMI the guest."""
    symbols = Symbols(kallsyms.read_text()) if kallsyms and kallsyms.exists() else None
    lines: list[str] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(monitor))
        _command(sock, None)
        for sample in range(samples):
            for cpu, state in enumerate(parse_registers(_command(sock, "info registers -a"))):
                if state.cpl != 0:
                    where = "user space"
                elif symbols is None:
                    where = f"{state.rip:#x}"
                else:
                    where = symbols.name(state.rip)
                lines.append(
                    f"sample {sample} cpu {cpu}: rip={state.rip:#x} cpl={state.cpl} "
                    f"halted={int(state.halted)} {where}"
                )
            time.sleep(1)
        # The guest set kernel.unknown_nmi_panic: the panic prints every CPU's backtrace.
        _command(sock, "nmi")
        _command(sock, "info status")
    return "\n".join(lines) + "\n"
