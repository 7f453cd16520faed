"""A real mosquitto on a free loopback port: plain, with a password file, or with TLS.

Certificates are made here with openssl (a CA, a server cert for 127.0.0.1, a client
cert, and a stranger CA that signed nothing). The broker can be stopped and started again
on the same port to simulate an outage; it is always stopped by pid on exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.system import free_port, require_tool, run

__all__ = ["Broker", "Certs", "make_certs", "mosquitto"]


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    # A CA that signed nothing here: trusting only it must fail verification.
    stranger_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["openssl", *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=60
    )


def _ca(d: Path, name: str) -> tuple[Path, Path]:
    key, cert = d / f"{name}.key", d / f"{name}.crt"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
        "-subj", f"/CN={name}", cwd=d,
    )  # fmt: skip
    return key, cert


def _leaf(d: Path, name: str, ca_key: Path, ca_cert: Path, ext: str) -> tuple[Path, Path]:
    key, csr, cert, extfile = (d / f"{name}{s}" for s in (".key", ".csr", ".crt", ".ext"))
    extfile.write_text(ext + "\n")
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}", cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(extfile), cwd=d,
    )  # fmt: skip
    return key, cert


def make_certs(d: Path) -> Certs:
    require_tool("openssl")
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca = _ca(d, "test-ca")
    _, stranger = _ca(d, "stranger-ca")
    server_key, server_cert = _leaf(
        d, "broker", ca_key, ca, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"
    )
    client_key, client_cert = _leaf(d, "agent", ca_key, ca, "extendedKeyUsage=clientAuth")
    return Certs(ca, server_cert, server_key, client_cert, client_key, stranger)


@dataclass
class Broker:
    """One mosquitto; `stop()` and `start()` simulate an outage on the same port."""

    workdir: Path
    port: int
    users: dict[str, str] = field(default_factory=dict)
    certs: Certs | None = None
    # Keep sessions and queued messages across stop()/start(), as a real broker would.
    persistent: bool = False
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def _config(self) -> Path:
        lines = [
            f"listener {self.port} {self.host}",
            "persistence true" if self.persistent else "persistence false",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.log_path}",
            "log_type all",
            # Started as root, mosquitto would switch to its own user and lose our files.
            "user root",
        ]
        if self.users:
            pwfile = self.workdir / "passwords"
            pwfile.write_text("")
            for user, password in self.users.items():
                run("mosquitto_passwd", "-b", str(pwfile), user, password)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        if self.certs is not None:
            lines += [
                f"cafile {self.certs.ca}",
                f"certfile {self.certs.server_cert}",
                f"keyfile {self.certs.server_key}",
                "require_certificate true",
            ]
        path = self.workdir / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> None:
        conf = self._config()
        self.proc = subprocess.Popen(
            [require_tool("mosquitto"), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log_path.read_text() if self.log_path.exists() else ""
                raise RuntimeError(f"mosquitto exited {self.proc.returncode}: {log[-2000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.2),
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.host}:{self.port}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@contextlib.contextmanager
def mosquitto(
    workdir: Path,
    *,
    users: dict[str, str] | None = None,
    certs: Certs | None = None,
    persistent: bool = False,
) -> Iterator[Broker]:
    """A running broker on a free loopback port, stopped on exit even if the test fails."""
    require_tool("mosquitto")
    if users:
        require_tool("mosquitto_passwd")
    workdir.mkdir(parents=True, exist_ok=True)
    broker = Broker(
        workdir=workdir,
        port=free_port(),
        users=dict(users or {}),
        certs=certs,
        persistent=persistent,
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
