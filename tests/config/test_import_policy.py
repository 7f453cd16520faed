"""remote_prefixes.import: what loads, and one line naming the field for what does not."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from agent.config import ConfigError, OnMaxPrefixes, PrefixRange, parse_config
from agent.config.imports import parse_prefix_range
from tests.cli.runner import vtf
from tests.config.test_bad_configs import BASE

LEARNING = "  learned_from_bgp: true\n"


def with_import(section: str) -> str:
    assert BASE.count(LEARNING) == 1
    return BASE.replace(LEARNING, LEARNING + f"  import: {section}\n")


def test_the_defaults_refuse_the_default_and_limit_each_neighbor() -> None:
    policy = parse_config(BASE).remote_prefixes.import_
    assert not policy.allow_default
    assert policy.accept == ()
    assert policy.max_prefixes == 10_000
    assert policy.on_max_prefixes is OnMaxPrefixes.WITHDRAW_ALL


def test_a_full_section_loads() -> None:
    cfg = parse_config(
        with_import(
            "{allow_default: true, accept: ['10.0.0.0/8 le 24', '2001:db8::/32 ge 48 le 64',"
            " '172.16.0.0/12', '192.168.0.0/16 ge 24'], max_prefixes: null,"
            " on_max_prefixes: ignore-excess}"
        )
    )
    policy = cfg.remote_prefixes.import_
    assert policy.allow_default
    assert [(str(e.prefix), e.ge, e.le) for e in policy.accept] == [
        ("10.0.0.0/8", 8, 24),
        ("2001:db8::/32", 48, 64),
        ("172.16.0.0/12", 12, 12),
        ("192.168.0.0/16", 24, 32),
    ]
    assert [str(e) for e in policy.accept] == [
        "10.0.0.0/8 le 24",
        "2001:db8::/32 ge 48 le 64",
        "172.16.0.0/12",
        "192.168.0.0/16 ge 24 le 32",
    ]
    assert policy.max_prefixes is None
    assert policy.on_max_prefixes is OnMaxPrefixes.IGNORE_EXCESS
    # Written back as text, it loads as the same entries.
    dumped = cfg.model_dump(mode="json", by_alias=True)["remote_prefixes"]["import"]
    assert dumped["accept"][0] == "10.0.0.0/8 le 24"
    assert [parse_prefix_range(t) for t in dumped["accept"]] == list(policy.accept)


def test_a_range_is_its_own_parse() -> None:
    entry = PrefixRange(ipaddress.ip_network("10.0.0.0/8"), 16, 24)
    assert parse_prefix_range(entry) is entry


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "{accept: ['10.0.0.0/8 le 40']}",
            "accept[0]: '10.0.0.0/8 le 40': le 40 must be between 8 and 32",
        ),
        ("{accept: ['10.0.0.0/8 ge 4']}", "ge 4 must be between the prefix length 8 and 32"),
        ("{accept: ['10.0.0.0/16 ge 24 le 20']}", "le 20 must be between 24 and 32"),
        ("{accept: ['2001:db8::/32 le 129']}", "le 129 must be between 32 and 128"),
        ("{accept: ['10.0.0.1/8']}", "'10.0.0.1/8' is not a prefix: 10.0.0.1/8 has host bits set"),
        ("{accept: ['ten/8']}", "'ten/8' is not a prefix"),
        ("{accept: ['10.0.0.0/8 le']}", "is not a prefix range: write PREFIX [ge N] [le M]"),
        ("{accept: ['']}", "is not a prefix range"),
        ("{accept: ['10.0.0.0/8 le 24 ge 16 le 28']}", "is not a prefix range"),
        ("{accept: ['10.0.0.0/8 upto 24']}", "expected ge N or le N after the prefix"),
        ("{accept: ['10.0.0.0/8 le 99999']}", "expected ge N or le N after the prefix"),
        ("{accept: ['10.0.0.0/8 le 24 le 25']}", "le given twice"),
        ("{accept: [10]}", "accept[0]: must be text: write PREFIX [ge N] [le M]"),
        (
            "{accept: ['10.0.0.0/8 le 24', '10.0.0.0/8 le 24']}",
            "accept[1]: 10.0.0.0/8 le 24 is already listed as entry #1",
        ),
        ("{accept: '10.0.0.0/8'}", "accept: must be a list"),
        ("{max_prefixes: 0}", "max_prefixes: must be at least 1"),
        ("{max_prefixes: 20000000}", "max_prefixes: must be at most 10000000"),
        ("{max_prefixes: many}", "max_prefixes: must be a whole number"),
        ("{on_max_prefixes: teardown}", "on_max_prefixes:"),
        ("{allow_default: maybe}", "allow_default: must be true or false"),
        ("{max_prefix: 10}", "max_prefix"),
    ],
)
def test_a_bad_section_is_one_line_naming_the_field(section: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(with_import(section))
    (line,) = caught.value.lines
    assert "remote_prefixes.import." in line, line
    assert message in line, line


def test_check_refuses_a_bad_range_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(with_import("{accept: ['10.0.0.0/8 le 40']}"))
    result = vtf("check", path)
    assert result.code == 2
    assert result.out == ""
    assert result.err_lines == [
        f"error: {path}:25: remote_prefixes.import.accept[0]: '10.0.0.0/8 le 40': le 40 must "
        "be between 8 and 32"
    ]
