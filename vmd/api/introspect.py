"""query-qmp-schema: QMP introspection derived from the registry's JSON Schemas.

The result follows ``qapi/introspect.json``: a list of SchemaInfo entries for
commands, events, object types, enums, arrays and the builtin types.  Type
names are the model titles (QEMU masks its names as numbers; clients must not
rely on them either way).
"""

from __future__ import annotations

from typing import Any

from vmd.api.models import EVENTS
from vmd.api.registry import Registry

BUILTINS = {
    "str": "string",
    "int": "int",
    "number": "number",
    "bool": "boolean",
    "null": "null",
    "any": "value",
}
_JSON_TO_BUILTIN = {"string": "str", "integer": "int", "number": "number", "boolean": "bool", "null": "null"}


class _Builder:
    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}
        self.counter = 0

    def _fresh(self, hint: str) -> str:
        self.counter += 1
        return f"{hint}{self.counter}"

    def type_of(self, schema: dict, defs: dict, hint: str) -> str:
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            if name not in self.entries:
                self.entries[name] = {}  # placeholder against recursion
                self.entries[name] = self.object_entry(name, defs[name], defs)
            return name
        if "anyOf" in schema:
            concrete = [s for s in schema["anyOf"] if s.get("type") != "null"]
            if len(concrete) == 1:
                return self.type_of(concrete[0], defs, hint)
            return "any"
        if "enum" in schema or "const" in schema:
            values = schema.get("enum") or [schema["const"]]
            if all(isinstance(v, str) for v in values):
                name = self._fresh("enum")
                self.entries[name] = {"name": name, "meta-type": "enum", "members": [{"name": v} for v in values],
                                      "values": list(values)}
                return name
        t = schema.get("type")
        if t == "array":
            element = self.type_of(schema.get("items", {}), defs, hint)
            name = f"[{element}]"
            self.entries.setdefault(name, {"name": name, "meta-type": "array", "element-type": element})
            return name
        if t == "object":
            if "properties" in schema:
                name = self._fresh(hint)
                self.entries[name] = self.object_entry(name, schema, defs)
                return name
            return "any"
        if isinstance(t, str) and t in _JSON_TO_BUILTIN:
            return _JSON_TO_BUILTIN[t]
        return "any"

    def object_entry(self, name: str, schema: dict, defs: dict) -> dict:
        required = set(schema.get("required", []))
        members = []
        for key, sub in schema.get("properties", {}).items():
            member: dict[str, Any] = {"name": key, "type": self.type_of(sub, defs, "obj")}
            if key not in required:
                member["default"] = None
            members.append(member)
        return {"name": name, "meta-type": "object", "members": members}


def schema_info(registry: Registry) -> list[dict[str, Any]]:
    builder = _Builder()
    out: list[dict[str, Any]] = []
    for name, spec in sorted(registry.commands.items()):
        arg = spec.arg_schema()
        defs = arg.get("$defs", {})
        if "oneOf" in arg:
            arg_type = "any"  # device_add: properties depend on the driver
        else:
            arg_type = builder.type_of(arg if arg.get("properties") else {"type": "object", "properties": {}},
                                       defs, "args")
        ret = spec.return_schema()
        ret_type = builder.type_of(ret, ret.get("$defs", {}), "ret")
        out.append({"name": name, "meta-type": "command", "arg-type": arg_type, "ret-type": ret_type,
                    "allow-oob": False})
    for name, model in sorted(EVENTS.items()):
        entry: dict[str, Any] = {"name": name, "meta-type": "event"}
        if model is not None:
            schema = model.model_json_schema(by_alias=True)
            entry["arg-type"] = builder.type_of(schema, schema.get("$defs", {}), "event")
        else:
            entry["arg-type"] = builder.type_of({"type": "object", "properties": {}}, {}, "event")
        out.append(entry)
    out.extend(v for v in builder.entries.values() if v)
    out.extend({"name": n, "meta-type": "builtin", "json-type": j} for n, j in BUILTINS.items())
    return out
