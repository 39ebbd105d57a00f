"""The device registry: type names and aliases -> device classes.

Every module in :mod:`vmd.devices.models` is imported once, and each
``@device_type`` class in it registers itself, so adding a device model is
adding one module.  From the registered ``Props`` declarations this module
derives the property tables behind ``-device X,help`` and
``device-list-properties``, and validates device properties with QEMU's texts.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from pydantic import ValidationError

from vmd.devices.base import DEVICE_ALIASES, DEVICE_TYPES, Device, DeviceProps
from vmd.devices.props import qtype_of, render_validation_error
from vmd.errors import GenericError

_loaded = False


def _load_models() -> None:
    global _loaded
    if _loaded:
        return
    import vmd.devices.models as models

    for info in sorted(pkgutil.iter_modules(models.__path__), key=lambda i: i.name):
        importlib.import_module(f"{models.__name__}.{info.name}")
    _loaded = True


def types() -> dict[str, type[Device]]:
    _load_models()
    return DEVICE_TYPES


def resolve(name: str) -> type[Device] | None:
    """The device class for a type name or alias, or None."""
    _load_models()
    canonical = DEVICE_ALIASES.get(name, name)
    return DEVICE_TYPES.get(canonical)


def lookup(name: str) -> type[Device]:
    """:raises GenericError: "'%s' is not a valid device model name"."""
    cls = resolve(name)
    if cls is None:
        raise GenericError(f"'{name}' is not a valid device model name")
    return cls


def validate_props(cls: type[Device], values: dict[str, Any]) -> DeviceProps:
    """Validate property values (strings from a command line, or JSON values).

    :raises GenericError: with QEMU's text for the first bad property.
    """
    try:
        return cls.Props.model_validate(values, context={"typename": cls.type_name})
    except ValidationError as err:
        raise GenericError(render_validation_error(err, cls.type_name)) from err


def property_table(cls: type[Device]) -> list[dict[str, Any]]:
    """QEMU's property list of a type, sorted by name: name, type, description, default-value."""
    cached = cls.__dict__.get("_property_table")
    if cached is not None:
        return cached
    rows: list[dict[str, Any]] = []
    for attr, info in cls.Props.model_fields.items():
        row: dict[str, Any] = {"name": info.alias or attr, "type": qtype_of(info)}
        if info.description:
            row["description"] = info.description
        if info.default is not None and not info.is_required():
            row["default-value"] = info.default
        rows.append(row)
    for name, (qtype, desc) in cls.readonly_props.items():
        rows.append({"name": name, "type": qtype, "description": desc})
    for name, qtype in cls.children.items():
        rows.append({"name": name, "type": qtype})
    rows.sort(key=lambda r: r["name"])
    cls._property_table = rows  # type: ignore[attr-defined]
    return rows


def _help_value(row: dict[str, Any]) -> str | None:
    """The right-hand side of one help line, or None when QEMU prints none."""
    desc = row.get("description") or ""
    if "default-value" not in row:
        return desc or None
    default = row["default-value"]
    if isinstance(default, bool):
        default = "true" if default else "false"
    elif isinstance(default, str):
        default = f'"{default}"'
    return f"{desc} (default: {default})"


def device_help(cls: type[Device]) -> str:
    """The text of ``-device TYPE,help`` (QEMU's layout)."""
    lines = []
    for row in property_table(cls):
        left = f"  {row['name']}=<{row['type']}>"
        text = _help_value(row)
        lines.append(f"{left:<24} - {text}" if text is not None else left)
    lines.sort()  # QEMU sorts the rendered lines, so "a-b=" comes before "a="
    return "\n".join([f"{cls.type_name} options:", *lines]) + "\n"


CATEGORY_ORDER = (
    "Controller/Bridge/Hub devices",
    "USB devices",
    "Storage devices",
    "Network devices",
    "Input devices",
    "Display devices",
    "Sound devices",
    "Misc devices",
    "CPU devices",
    "Watchdog devices",
    "Uncategorized devices",
)


def devices_help() -> str:
    """The text of ``-device help``: every type by category, as QEMU lists them."""
    by_cat: dict[str, list[type[Device]]] = {c: [] for c in CATEGORY_ORDER}
    for cls in types().values():
        by_cat.setdefault(cls.category, []).append(cls)
    blocks = []
    for cat, classes in by_cat.items():
        if not classes:
            continue
        lines = [f"{cat}:"]
        for cls in sorted(classes, key=lambda c: c.type_name):
            line = f'name "{cls.type_name}", bus {cls.bus_type}'
            if cls.aliases:
                line += f', alias "{cls.aliases[0]}"'
            if cls.description:
                line += f', desc "{cls.description}"'
            lines.append(line)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
