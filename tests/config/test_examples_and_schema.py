"""Every shipped example passes `check`, and the shipped JSON Schema is current and fits them.

The examples are found by listing config/, so a new example is covered without a test edit.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.cli.runner import REPO, vtf

EXAMPLES = sorted((REPO / "config").glob("*.yaml"))
SCHEMA_FILE = REPO / "config" / "schema" / "config.schema.json"


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
    return schema


def test_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"dual-vti.yaml", "xfrm-active-active.yaml", "single-mark.yaml", "ipv6-inner.yaml"} <= (
        names
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_check_accepts_example(path: Path) -> None:
    result = vtf("check", path)
    assert result.code == 0, result.err
    assert result.err == ""
    doc = yaml.safe_load(path.read_text())
    lines = result.out.splitlines()
    assert lines[0].startswith(f"config ok: agent {doc['agent_id']}, {len(doc['tunnels'])} tunnel")
    for tunnel in doc["tunnels"]:
        assert any(line.startswith(f"  {tunnel['name']}: ") for line in lines), result.out
    single = "  warning: only one tunnel: there is nothing to fail over to"
    assert (single in lines) == (len(doc["tunnels"]) == 1), result.out


def test_single_tunnel_example_warns() -> None:
    result = vtf("check", REPO / "config" / "single-mark.yaml")
    assert result.code == 0
    assert "warning: only one tunnel" in result.out
    assert "dc: mark eth1 (mark 42)" in result.out


def test_schema_file_is_current() -> None:
    result = vtf("schema")
    assert result.code == 0, result.err
    if json.loads(result.out) != _schema():
        diff = difflib.unified_diff(
            SCHEMA_FILE.read_text().splitlines(),
            result.out.splitlines(),
            "shipped",
            "from the models",
            lineterm="",
        )
        pytest.fail(
            "config/schema/config.schema.json is stale; regenerate it with\n"
            "  vti-failover schema > config/schema/config.schema.json\n"
            + "\n".join(list(diff)[:60])
        )


def test_schema_is_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(_schema())


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_fits_schema(path: Path) -> None:
    validator = jsonschema.Draft202012Validator(_schema())
    errors = [
        f"{list(e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(yaml.safe_load(path.read_text()))
    ]
    assert errors == []


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda d: d.update(polcy={}), []),
        (lambda d: d["tunnels"][0].update(key="one"), ["tunnels", 0, "key"]),
        (lambda d: d["tunnels"][0].update(kind="ipip"), ["tunnels", 0, "kind"]),
        (
            lambda d: d["tunnels"][0]["probe"].update(interval_s=-1),
            ["tunnels", 0, "probe", "interval_s"],
        ),
        (lambda d: d.pop("agent_id"), []),
    ],
    ids=["unknown-field", "wrong-type", "bad-enum", "negative-interval", "missing-required"],
)
def test_schema_rejects_what_check_rejects(edit: Any, where: list[Any], tmp_path: Path) -> None:
    doc = yaml.safe_load((REPO / "config" / "dual-vti.yaml").read_text())
    edit(doc)
    errors = list(jsonschema.Draft202012Validator(_schema()).iter_errors(doc))
    assert errors, "the schema accepted a config check refuses"
    assert any(list(e.absolute_path) == where for e in errors), [e.message for e in errors]
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert vtf("check", path).code == 2
