"""Typed block options, checked with QEMU 7.2's texts.

``-blockdev`` options are QAPI ``BlockdevOptions``: from key=value syntax every value is a
string ("on", "4096"), from JSON every value has its JSON type, and each form has its own
errors. ``-drive`` options are QemuOpts strings. This module turns either into Python values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from vmd.block.base import BlockError

KEYVAL, JSON, QEMUOPTS = "keyval", "json", "qemuopts"

_TRUE = ("on", "yes", "true", "y")
_FALSE = ("off", "no", "false", "n")
SIZE_HINT = ("Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
             "and exabytes, respectively.")

#: QEMU 7.2's BlockdevDriver enumeration
QEMU_DRIVERS = frozenset((
    "blkdebug", "blklogwrites", "blkreplay", "blkverify", "bochs", "cloop", "compress",
    "copy-before-write", "copy-on-read", "dmg", "file", "snapshot-access", "ftp", "ftps",
    "gluster", "host_cdrom", "host_device", "http", "https", "io_uring", "iscsi", "luks",
    "nbd", "nfs", "null-aio", "null-co", "nvme", "nvme-io_uring", "parallels", "preallocate",
    "qcow", "qcow2", "qed", "quorum", "raw", "rbd", "replication", "ssh", "throttle", "vdi",
    "vhdx", "vmdk", "vpc", "vvfat",
))
PROTOCOL_DRIVERS = ("file", "host_device", "host_cdrom")
FORMAT_DRIVERS = ("raw", "qcow2")


@dataclass(frozen=True)
class T:
    """A QAPI member type: its name in QEMU's "expected: ..." texts and how to parse it."""

    kind: str  # bool, int, str, enum, ref, ref_or_null, struct, any
    values: tuple = ()
    members: tuple = ()  # (name, T, required) for structs

    @property
    def qapi_name(self) -> str:
        return {"bool": "boolean", "int": "integer", "str": "string", "enum": "string",
                "ref": "BlockdevRef", "ref_or_null": "BlockdevRefOrNull", "struct": "object"}.get(self.kind, "")


BOOL, INT, STR, ANY = T("bool"), T("int"), T("str"), T("any")
REF, REF_OR_NULL = T("ref"), T("ref_or_null")


def enum(*values: str) -> T:
    return T("enum", values)


def struct(*members) -> T:
    return T("struct", members=tuple(members))


CACHE = struct(("direct", BOOL, False), ("no-flush", BOOL, False))
BASE_MEMBERS = (
    ("driver", enum(*sorted(QEMU_DRIVERS)), True),
    ("node-name", STR, False),
    ("discard", enum("ignore", "unmap"), False),
    ("cache", CACHE, False),
    ("read-only", BOOL, False),
    ("auto-read-only", BOOL, False),
    ("force-share", BOOL, False),
    ("detect-zeroes", enum("off", "on", "unmap"), False),
)
FILE_MEMBERS = (
    ("filename", STR, True),
    ("pr-manager", STR, False),
    ("locking", enum("off", "on", "auto"), False),
    ("aio", enum("threads", "native", "io_uring"), False),
    ("aio-max-batch", INT, False),
    ("drop-cache", BOOL, False),
    ("x-check-cache-dropped", BOOL, False),
)
DRIVER_MEMBERS: dict[str, tuple] = {
    "file": FILE_MEMBERS,
    "host_device": FILE_MEMBERS,
    "host_cdrom": FILE_MEMBERS,
    "raw": (("file", REF, True), ("offset", INT, False), ("size", INT, False)),
    "qcow2": (
        ("file", REF, True), ("backing", REF_OR_NULL, False), ("lazy-refcounts", BOOL, False),
        ("pass-discard-request", BOOL, False), ("pass-discard-snapshot", BOOL, False),
        ("pass-discard-other", BOOL, False), ("overlap-check", ANY, False), ("cache-size", INT, False),
        ("l2-cache-size", INT, False), ("l2-cache-entry-size", INT, False),
        ("refcount-cache-size", INT, False), ("cache-clean-interval", INT, False),
        ("encrypt", ANY, False), ("data-file", REF, False),
    ),
}


def parse_bool(value: str, name: str) -> bool:
    low = value
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise BlockError(f"Parameter '{name}' expects 'on' or 'off'")


def parse_int(value: str, name: str) -> int:
    """qemu_strtoi64 with base 0: decimal, 0x hex, leading-zero octal."""
    text = value.strip()
    sign, digits = ("-", text[1:]) if text[:1] == "-" else ("", text.lstrip("+"))
    number = _c_integer(digits)
    if number is None:
        raise BlockError(f"Parameter '{name}' expects integer")
    return -number if sign else number


def _c_integer(digits: str) -> int | None:
    """strtoull with base 0: 0x hex, leading-zero octal, else decimal."""
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", digits):
        return int(digits, 16)
    if re.fullmatch(r"0[0-7]*", digits):
        return int(digits, 8)
    if re.fullmatch(r"[1-9][0-9]*", digits):
        return int(digits)
    return None


def parse_size(value: str, name: str) -> int:
    """QemuOpts sizes (qemu_strtosz): a number with an optional k/M/G/T/P/E suffix."""
    m = re.fullmatch(r"\s*(0[xX][0-9a-fA-F]+|\d+(?:\.\d+)?|\.\d+)\s*([bBkKmMgGtTpPeE]?)", value)
    error = BlockError(f"Parameter '{name}' expects a non-negative number below 2^64\n{SIZE_HINT}")
    if not m:
        raise error
    number, suffix = m.groups()
    scale = 1 << (10 * "BKMGTPE".index(suffix.upper())) if suffix else 1
    if number.lower().startswith("0x"):
        if suffix and suffix.upper() != "B":
            raise error
        result = int(number, 16) * scale
    elif "." in number:
        if not suffix:
            raise error
        result = int(float(number) * scale)
    else:
        result = int(number) * scale
    if result >= 1 << 64:
        raise error
    return result


def parse_number(value: str, name: str) -> int:
    """QemuOpts numbers (``index=``)."""
    result = _c_integer(value)
    if result is None:
        raise BlockError(f"Parameter '{name}' expects a number")
    return result


def check_struct(obj: Any, members: tuple, mode: str, prefix: str = "") -> dict:
    """QAPI's visit of a struct: members in declaration order, then leftovers are unexpected."""
    out: dict[str, Any] = {}
    for name, typ, required in members:
        full = prefix + name
        if name not in obj:
            if required:
                raise BlockError(f"Parameter '{full}' is missing")
            continue
        out[name] = check_value(obj[name], typ, mode, full)
    for key in obj:
        if key not in out and not any(key == m[0] for m in members):
            raise BlockError(f"Parameter '{prefix}{key}' is unexpected")
    return out


def check_value(value: Any, typ: T, mode: str, name: str) -> Any:
    kind = typ.kind
    if kind == "any":
        return value
    if kind in ("ref", "ref_or_null"):
        if value is None and kind == "ref_or_null" and mode == JSON:
            return None
        if kind == "ref_or_null" and mode != JSON and value == "":
            return None  # keyval spells null as an empty string
        if isinstance(value, str):
            return value
        if isinstance(value, dict):
            return check_blockdev(value, mode, name + ".")
        raise BlockError(f"Invalid parameter type for '{name}', expected: {typ.qapi_name}")
    if kind == "struct":
        if not isinstance(value, dict):
            raise BlockError(f"Invalid parameter type for '{name}', expected: object")
        return check_struct(value, typ.members, mode, name + ".")
    if mode == JSON:
        if kind == "bool" and isinstance(value, bool):
            return value
        if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind in ("str", "enum") and isinstance(value, str):
            if kind == "enum" and value not in typ.values:
                raise BlockError(f"Parameter '{name}' does not accept value '{value}'")
            return value
        raise BlockError(f"Invalid parameter type for '{name}', expected: {typ.qapi_name}")
    if not isinstance(value, str):
        raise BlockError(f"Invalid parameter type for '{name}', expected: {typ.qapi_name}")
    if kind == "bool":
        return parse_bool(value, name)
    if kind == "int":
        return parse_int(value, name)
    if kind == "enum" and value not in typ.values:
        raise BlockError(f"Parameter '{name}' does not accept value '{value}'")
    return value


def check_blockdev(obj: Any, mode: str, prefix: str = "") -> dict:
    """A whole ``BlockdevOptions`` tree, typed; nested ``file``/``backing`` dicts included."""
    if not isinstance(obj, dict):
        raise BlockError(f"Invalid parameter type for '{prefix.rstrip('.') or 'None'}', expected: object")
    if "driver" not in obj:
        raise BlockError(f"Parameter '{prefix}driver' is missing")
    driver = check_value(obj["driver"], BASE_MEMBERS[0][1], mode, prefix + "driver")
    members = BASE_MEMBERS + DRIVER_MEMBERS.get(driver, ())
    if driver not in DRIVER_MEMBERS:
        # a QEMU driver vmd does not implement: its members are not known, only the base ones
        known = {m[0] for m in members}
        return {**{k: v for k, v in obj.items() if k not in known},
                **check_struct({k: v for k, v in obj.items() if k in known}, members, mode, prefix)}
    return check_struct(obj, members, mode, prefix)


def guess_mode(options: dict) -> str:
    """How ``-blockdev`` options were written: JSON keeps types, keyval has only strings."""
    origin = options.get("origin")
    if isinstance(origin, str) and origin.startswith("-blockdev"):
        return JSON if origin[len("-blockdev"):].lstrip().startswith("{") else KEYVAL

    def typed(value) -> bool:
        if isinstance(value, dict):
            return any(typed(v) for v in value.values())
        return not isinstance(value, str)

    return JSON if any(typed(v) for k, v in options.items() if k != "origin") else KEYVAL


def nest_dotted(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"file.driver": "file"}`` -> ``{"file": {"driver": "file"}}`` (a QDict's flat keys as a tree).

    A key that is both a value and a prefix (``file=x`` with ``file.locking=off``) keeps the
    value under the empty key; callers that allow it (``-drive file=``) take it out first.
    """
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {} if child is None else {"": child}
                node[part] = child
            node = child
        last = parts[-1]
        if isinstance(node.get(last), dict) and isinstance(value, dict):
            node[last] = {**node[last], **value}
        else:
            node[last] = value
    return out
