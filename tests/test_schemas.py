"""schemas/ is generated from the registry's declarations and must not drift."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from vmd.api.commands import build_registry
from vmd.schemas import render_files

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def test_schema_files_match_the_code():
    expected = render_files(build_registry())
    on_disk = {str(p.relative_to(SCHEMAS)): p.read_text() for p in SCHEMAS.rglob("*.json")}
    stale = sorted(set(on_disk) - set(expected))
    missing = sorted(set(expected) - set(on_disk))
    changed = sorted(k for k in expected if k in on_disk and on_disk[k] != expected[k])
    assert not (stale or missing or changed), (
        f"schemas/ drifted from the code (run: python -m vmd.schemas): "
        f"stale={stale} missing={missing} changed={changed}"
    )


@pytest.mark.parametrize("path", sorted(SCHEMAS.rglob("*.json")), ids=lambda p: p.name)
def test_every_schema_file_is_a_valid_json_schema(path):
    doc = json.loads(path.read_text())
    for part in ("arguments", "returns"):
        if part in doc:
            jsonschema.Draft202012Validator.check_schema(doc[part])
    if "arguments" not in doc:
        jsonschema.Draft202012Validator.check_schema(doc)


def test_every_command_and_event_has_a_schema():
    registry = build_registry()
    names = {p.stem for p in (SCHEMAS / "commands").glob("*.json")}
    assert names == set(registry.commands)
    from vmd.api.models import EVENTS

    assert {p.stem for p in (SCHEMAS / "events").glob("*.json")} == set(EVENTS)
