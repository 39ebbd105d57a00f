"""QEMU property types, declared once for pydantic.

Every device property is a pydantic field whose type is one of the annotated
types below.  The annotation carries three things at once:

* how a value is parsed: from a command-line string (``on``, ``0x10``, ``4k``)
  or from a typed JSON value (QMP ``device_add``);
* the QEMU type name shown by ``-device X,help`` and ``device-list-properties``
  (``bool``, ``uint32``, ``str``, ``link<rng-backend>`` ...);
* the wording of QEMU's error when the value does not parse
  ("Parameter 'max-bytes' expects uint64").

Validation errors carry a ``qemu`` error type whose context holds what QEMU
would say; :func:`render_validation_error` turns the first one into QEMU's text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, ValidationError
from pydantic_core import PydanticCustomError

_TRUE = {"on", "yes", "true", "y"}
_FALSE = {"off", "no", "false", "n"}


@dataclass(frozen=True)
class QType:
    """Marker: the QEMU type name of a property, as ``-device X,help`` prints it."""

    name: str


def _expects(what: str) -> PydanticCustomError:
    return PydanticCustomError("qemu_expects", "expects {what}", {"what": what})


def _json_type(expected: str) -> PydanticCustomError:
    return PydanticCustomError("qemu_json_type", "expected: {expected}", {"expected": expected})


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise _expects("'on' or 'off'")
    raise _json_type("boolean")


def _parse_int_text(text: str) -> int:
    # QEMU's qemu_strtou64/qemu_strtoi64 take decimal, 0x hex and 0 octal.
    t = text.strip()
    if not t or t != text:
        raise ValueError(text)
    return int(t, 0) if not re.fullmatch(r"[+-]?0[0-7]+", t) else int(t, 8)


def _int_parser(bits: int, signed: bool):
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    name = f"{'int' if signed else 'uint'}{bits}"

    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise _json_type("integer")
        if isinstance(value, int):
            n = value
        elif isinstance(value, str):
            try:
                n = _parse_int_text(value)
            except ValueError:
                raise _expects("integer") from None
        else:
            raise _json_type("integer")
        if not lo <= n <= hi:
            # QEMU's visitor names the C type when the number does not fit
            raise _expects(name if bits == 64 else f"{name}_t")
        return n

    return parse


_SIZE_SUFFIX = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50, "e": 1 << 60}


def parse_size(text: str, default_suffix: str = "") -> int:
    """QEMU's qemu_strtosz: a number with an optional binary suffix (B, K, M, G, T, P, E).

    :raises ValueError: when ``text`` is not a size.
    """
    m = re.fullmatch(r"(\d+(?:\.\d+)?|0x[0-9a-fA-F]+)([bBkKmMgGtTpPeE]?)", text)
    if not m:
        raise ValueError(text)
    num, suffix = m.groups()
    mult = _SIZE_SUFFIX[(suffix or default_suffix).lower()]
    if num.startswith("0x"):
        if suffix:
            raise ValueError(text)
        value = int(num, 16)
    elif "." in num:
        value = int(float(num) * mult)
        if not suffix or mult == 1:
            raise ValueError(text)
        return value
    else:
        value = int(num) * mult
    if value >= 1 << 64:
        raise ValueError(text)
    return value


def _parse_size_value(value: Any) -> int:
    if isinstance(value, bool):
        raise _json_type("integer")
    if isinstance(value, int):
        if value < 0 or value >= 1 << 64:
            raise _expects("a non-negative integer below 2^64")
        return value
    if isinstance(value, str):
        try:
            return parse_size(value)
        except ValueError:
            raise _expects("a non-negative integer below 2^64") from None
    raise _json_type("integer")


def _parse_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise _json_type("string")


def _enum_parser(values: tuple[str, ...]):
    def parse(value: Any) -> str:
        if isinstance(value, str) and value in values:
            return value
        if isinstance(value, str):
            raise PydanticCustomError("qemu_enum", "does not accept value '{value}'", {"value": value})
        raise _json_type("string")

    return parse


QBool = Annotated[bool, BeforeValidator(_parse_bool), QType("bool")]
QUint8 = Annotated[int, BeforeValidator(_int_parser(8, False)), QType("uint8")]
QUint16 = Annotated[int, BeforeValidator(_int_parser(16, False)), QType("uint16")]
QUint32 = Annotated[int, BeforeValidator(_int_parser(32, False)), QType("uint32")]
QUint64 = Annotated[int, BeforeValidator(_int_parser(64, False)), QType("uint64")]
QInt32 = Annotated[int, BeforeValidator(_int_parser(32, True)), QType("int32")]
QInt64 = Annotated[int, BeforeValidator(_int_parser(64, True)), QType("int")]
QSize = Annotated[int, BeforeValidator(_parse_size_value), QType("size")]
QStr = Annotated[str, BeforeValidator(_parse_str), QType("str")]
QOnOffAuto = Annotated[str, BeforeValidator(_enum_parser(("on", "off", "auto"))), QType("OnOffAuto")]
QBlockdevOnError = Annotated[
    str, BeforeValidator(_enum_parser(("report", "ignore", "enospc", "stop", "auto"))), QType("BlockdevOnError")
]


def QLink(target: str):  # noqa: N802 - reads like a type, as in QEMU's DEFINE_PROP_LINK
    """A link to another object by id, e.g. ``link<rng-backend>``."""
    return Annotated[str, BeforeValidator(_parse_str), QType(f"link<{target}>")]


def qtype_of(field_info) -> str:
    """The QEMU type name of a pydantic field (looking inside ``Optional[...]``)."""
    for meta in field_info.metadata:
        if isinstance(meta, QType):
            return meta.name
    found = _qtype_in(field_info.annotation)
    return found or "str"


def _qtype_in(annotation: Any) -> str | None:
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, QType):
            return meta.name
    for arg in getattr(annotation, "__args__", ()):
        found = _qtype_in(arg)
        if found:
            return found
    return None


def render_validation_error(exc: ValidationError, typename: str) -> str:
    """QEMU's text for the first problem in a property ValidationError."""
    err = exc.errors(include_url=False)[0]
    loc = err.get("loc") or ()
    name = str(loc[0]) if loc else "?"
    etype = err["type"]
    ctx = err.get("ctx") or {}
    if etype == "extra_forbidden":
        return f"Property '{typename}.{name}' not found"
    if etype == "missing":
        return f"Parameter '{name}' is missing"
    if etype == "qemu_expects":
        return f"Parameter '{name}' expects {ctx['what']}"
    if etype == "qemu_json_type":
        return f"Invalid parameter type for '{name}', expected: {ctx['expected']}"
    if etype == "qemu_enum":
        return f"Parameter '{name}' does not accept value '{ctx['value']}'"
    if etype == "qemu_message":
        return str(ctx["message"])
    return f"Parameter '{name}': {err['msg']}"


def qemu_message(message: str) -> PydanticCustomError:
    """A validation error whose whole text is QEMU's own (e.g. the devno errors)."""
    return PydanticCustomError("qemu_message", "{message}", {"message": message})
