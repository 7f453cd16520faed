"""Namespaces for probe tests: a near one holding the tunnels, a far one answering."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.system import netns, sh_in


@pytest.fixture
def near() -> Iterator[str]:
    with netns("vtfpn") as ns:
        # A forged reply arrives on the "wrong" tunnel on purpose: let it through to us.
        for conf in ("all", "default"):
            sh_in(ns, "sysctl", "-qw", f"net.ipv4.conf.{conf}.rp_filter=0")
        yield ns


@pytest.fixture
def far() -> Iterator[str]:
    with netns("vtfpf") as ns:
        yield ns
