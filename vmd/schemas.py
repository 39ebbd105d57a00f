"""JSON Schemas of the API, generated from the same declarations the registry validates with.

``python -m vmd.schemas`` rewrites ``schemas/``: one ``commands/<name>.json``
per command (arguments and result) and one ``events/<NAME>.json`` per event.
tests/test_schemas.py fails when the files drift from the code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vmd.api.models import EVENTS
from vmd.api.registry import Registry

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def event_schema(name: str) -> dict:
    model = EVENTS[name]
    data = model.model_json_schema(by_alias=True) if model is not None else None
    props: dict = {
        "event": {"const": name},
        "timestamp": {
            "type": "object",
            "properties": {"seconds": {"type": "integer"}, "microseconds": {"type": "integer"}},
            "required": ["seconds", "microseconds"],
            "additionalProperties": False,
        },
    }
    required = ["event", "timestamp"]
    if data is not None:
        props["data"] = data
        required.append("data")
    return {"$schema": DRAFT, "title": name, "type": "object", "properties": props, "required": required,
            "additionalProperties": False}


def full_schema(registry: Registry) -> dict:
    commands = {}
    for name, entry in registry.schema().items():
        commands[name] = {
            "$schema": DRAFT,
            "title": name,
            "description": entry["description"],
            "arguments": entry["arguments"],
            "returns": entry["returns"],
        }
    return {"commands": commands, "events": {name: event_schema(name) for name in sorted(EVENTS)}}


def render_files(registry: Registry) -> dict[str, str]:
    """Relative path -> file text, for every schema file."""
    schema = full_schema(registry)
    files = {}
    for name, doc in schema["commands"].items():
        files[f"commands/{name}.json"] = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    for name, doc in schema["events"].items():
        files[f"events/{name}.json"] = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    return files


def write(root: Path) -> list[str]:
    from vmd.api.commands import build_registry

    files = render_files(build_registry())
    for sub in ("commands", "events"):
        d = root / sub
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("*.json"):
            if f"{sub}/{old.name}" not in files:
                old.unlink()
    for rel, text in files.items():
        (root / rel).write_text(text)
    return sorted(files)


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "schemas"
    written = write(root)
    print(f"wrote {len(written)} schema files to {root}")
