"""A real charon in a network namespace, with a private /run and its own VICI socket.

strongSwan 5.9 hard-codes /var/run/charon.pid, so each charon gets a private tmpfs on
/run (`unshare -m`); its VICI socket lives in its own directory so several charons (and
the host's, if any) never meet. It is stopped by its pid, never by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.system import require_root, require_tool, run

__all__ = ["CHARON_PLUGINS", "Charon", "IpsecTunnel", "charon", "swanctl_conf", "veth_pair"]

# No openssl/gcm here: the plain-C crypto plugins carry aes256-sha256-modp2048. The host
# kernel has no ESP, so kernel-libipsec does ESP in userspace over a TUN device.
CHARON_PLUGINS = (
    "random nonce aes sha1 sha2 hmac gmp kdf pem pkcs1 x509 pubkey "
    "kernel-libipsec kernel-netlink socket-default vici updown"
)


def _strongswan_conf(vici_path: Path, log_path: Path, install_routes: bool) -> str:
    return f"""\
charon {{
    load_modular = no
    load = {CHARON_PLUGINS}
    install_routes = {"yes" if install_routes else "no"}
    # Give up on a silent peer in seconds, not the default ~165 s.
    retransmit_timeout = 1.0
    retransmit_base = 1.4
    retransmit_tries = 3
    plugins {{
        vici {{
            socket = unix://{vici_path}
        }}
    }}
    syslog {{
        daemon {{
            default = -1
        }}
        auth {{
            default = -1
        }}
    }}
    filelog {{
        log {{
            path = {log_path}
            time_format = %H:%M:%S
            default = 1
            ike = 1
            knl = 1
            flush_line = yes
        }}
    }}
}}
swanctl {{
    load = pem pkcs1 x509 pubkey
}}
"""


@dataclass
class Charon:
    """One charon daemon: start, load a swanctl config, drive it with swanctl, stop."""

    ns: str
    name: str = "charon"
    install_routes: bool = False
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="vtf-ch-")))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def vici_path(self) -> Path:
        return self.workdir / "charon.vici"

    @property
    def vici_uri(self) -> str:
        return f"unix://{self.vici_path}"

    @property
    def conf_path(self) -> Path:
        return self.workdir / "strongswan.conf"

    @property
    def swanctl_conf_path(self) -> Path:
        return self.workdir / "swanctl.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "charon.log"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self, timeout: float = 10.0) -> None:
        """Start charon and wait until its VICI socket accepts connections."""
        require_root()
        binary = require_tool("charon")
        self.conf_path.write_text(
            _strongswan_conf(self.vici_path, self.log_path, self.install_routes)
        )
        env = dict(os.environ, STRONGSWAN_CONF=str(self.conf_path))
        # ip netns exec and unshare exec in place, and sh ends with exec: the Popen pid
        # is charon's own pid.
        self.proc = subprocess.Popen(
            [
                "ip", "netns", "exec", self.ns, "unshare", "-m", "sh", "-c",
                f'mount -t tmpfs tmpfs /run && exec "{binary}"',
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "charon.stderr").open("wb"),
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: charon exited: {self._tail()}")
            if self._vici_answers():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name}: VICI socket never answered: {self._tail()}")

    def _vici_answers(self) -> bool:
        if not self.vici_path.exists():
            return False
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(self.vici_path))
            except OSError:
                return False
        return True

    def _tail(self) -> str:
        texts = []
        for p in (self.workdir / "charon.stderr", self.log_path):
            with contextlib.suppress(OSError):
                texts.append(p.read_text(errors="replace")[-2000:])
        return "\n".join(texts)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop this charon by its pid (SIGKILL if it ignores `sig`)."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout)
        self.proc = None

    def swanctl(
        self, command: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `swanctl <command> --uri <ours> <args>` (swanctl wants the command first)."""
        tool = require_tool("swanctl")
        env = dict(os.environ, STRONGSWAN_CONF=str(self.conf_path))
        proc = subprocess.run(
            [tool, command, "--uri", self.vici_uri, *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{self.name}: swanctl {command} {' '.join(args)} failed: "
                f"{proc.stdout}{proc.stderr}"
            )
        return proc

    def load(self, swanctl_conf: str) -> None:
        """Load connections and secrets from swanctl.conf text."""
        self.swanctl_conf_path.write_text(swanctl_conf)
        self.swanctl("--load-all", "--noprompt", "--file", str(self.swanctl_conf_path))

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def charon(ns: str, name: str = "charon", *, install_routes: bool = False) -> Iterator[Charon]:
    """A started charon in `ns`, stopped by pid and its files removed afterwards."""
    daemon = Charon(ns=ns, name=name, install_routes=install_routes)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.cleanup()


def veth_pair(ns_a: str, ns_b: str, addr_a: str, addr_b: str, prefix: int = 30) -> None:
    """Join two namespaces by a veth pair with one address at each end."""
    tag = os.urandom(3).hex()
    a, b = f"va{tag}", f"vb{tag}"
    run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
    run("ip", "link", "set", a, "netns", ns_a)
    run("ip", "link", "set", b, "netns", ns_b)
    run("ip", "-n", ns_a, "addr", "add", f"{addr_a}/{prefix}", "dev", a)
    run("ip", "-n", ns_b, "addr", "add", f"{addr_b}/{prefix}", "dev", b)
    run("ip", "-n", ns_a, "link", "set", a, "up")
    run("ip", "-n", ns_b, "link", "set", b, "up")


@dataclass(frozen=True)
class IpsecTunnel:
    """One IKE connection with one CHILD_SA, seen from one side."""

    name: str
    local_addr: str
    remote_addr: str
    local_id: str
    remote_id: str
    psk: str
    local_ts: str = "0.0.0.0/0"
    remote_ts: str = "0.0.0.0/0"
    mark: int | None = None
    if_id: int | None = None
    # Seconds; 0 keeps strongSwan's default (an hour).
    rekey_time: int = 0

    def far_side(self) -> IpsecTunnel:
        """The same tunnel as the peer configures it."""
        return dataclasses.replace(
            self,
            local_addr=self.remote_addr,
            remote_addr=self.local_addr,
            local_id=self.remote_id,
            remote_id=self.local_id,
            local_ts=self.remote_ts,
            remote_ts=self.local_ts,
        )


def swanctl_conf(tunnels: list[IpsecTunnel]) -> str:
    """swanctl.conf text for `tunnels` (aes256-sha256-modp2048, ESP aes256-sha256, PSK)."""
    conns, secrets = [], []
    for t in tunnels:
        child_extra = ""
        if t.mark is not None:
            child_extra += (
                f"\n                mark_in = {t.mark}\n                mark_out = {t.mark}"
            )
        if t.if_id is not None:
            child_extra += (
                f"\n                if_id_in = {t.if_id}\n                if_id_out = {t.if_id}"
            )
        rekey = f"\n                rekey_time = {t.rekey_time}s" if t.rekey_time else ""
        conns.append(
            f"""\
    {t.name} {{
        version = 2
        local_addrs = {t.local_addr}
        remote_addrs = {t.remote_addr}
        proposals = aes256-sha256-modp2048
        mobike = no
        dpd_delay = 2s
        local {{
            auth = psk
            id = {t.local_id}
        }}
        remote {{
            auth = psk
            id = {t.remote_id}
        }}
        children {{
            {t.name} {{
                local_ts = {t.local_ts}
                remote_ts = {t.remote_ts}
                esp_proposals = aes256-sha256{child_extra}{rekey}
            }}
        }}
    }}
"""
        )
        secrets.append(
            f"""\
    ike-{t.name} {{
        id-local = {t.local_id}
        id-remote = {t.remote_id}
        secret = "{t.psk}"
    }}
"""
        )
    return "connections {\n" + "".join(conns) + "}\nsecrets {\n" + "".join(secrets) + "}\n"


@contextlib.contextmanager
def two_sites(
    ns_a: str, ns_b: str, site_a: list[IpsecTunnel], *, install_routes: bool = False
) -> Iterator[tuple[Charon, Charon]]:
    """Underlays, traffic-selector addresses on lo and a loaded charon on each side.

    Each tunnel of `site_a` gets its own veth underlay; site B runs the far sides.
    """
    for t in site_a:
        veth_pair(ns_a, ns_b, t.local_addr, t.remote_addr)
        for ns, ts in ((ns_a, t.local_ts), (ns_b, t.remote_ts)):
            run("ip", "-n", ns, "addr", "add", ts, "dev", "lo")
    with (
        charon(ns_a, "site-a", install_routes=install_routes) as a,
        charon(ns_b, "site-b", install_routes=install_routes) as b,
    ):
        # The responder first: an initiator that meets no config gives up for good.
        b.load(swanctl_conf([t.far_side() for t in site_a]))
        a.load(swanctl_conf(site_a))
        yield a, b
