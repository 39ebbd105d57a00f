"""JSON-RPC 2.0 envelopes, sans I/O (https://www.jsonrpc.org/specification).

:func:`parse` turns a request body into calls (or ready-made error
responses); :func:`result` and :func:`error` build responses.  The HTTP
transport decides nothing about the protocol itself.

Limits: a batch holds at most :data:`MAX_BATCH` calls; larger ones are refused
whole with Invalid Request, so a single POST cannot queue unbounded work.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from vmd.errors import RPC_INVALID_PARAMS, RPC_INVALID_REQUEST, RPC_PARSE_ERROR

MAX_BATCH = 256
_NO_ID = object()


@dataclass(frozen=True)
class Call:
    method: str
    params: dict[str, Any]
    id: Any  # _NO_ID for a notification

    @property
    def is_notification(self) -> bool:
        return self.id is _NO_ID


@dataclass(frozen=True)
class Reject:
    """A member of the request that gets an error without being run."""

    response: dict[str, Any]


def result(call_id: Any, value: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "result": value, "id": call_id}


def error(call_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "error": err, "id": call_id}


def _reject_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (RFC 8259); answering them would not be JSON either."""
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is out of range")
    return value


def _one(obj: Any) -> Call | Reject:
    if not isinstance(obj, dict):
        return Reject(error(None, RPC_INVALID_REQUEST, "Invalid Request: a request must be an object"))
    raw_id = obj.get("id", _NO_ID)
    valid_id = raw_id is None or (isinstance(raw_id, (str, int, float)) and not isinstance(raw_id, bool))
    if raw_id is not _NO_ID and not valid_id:
        return Reject(error(None, RPC_INVALID_REQUEST, "Invalid Request: 'id' must be a string, a number or null"))
    reply_id = None if raw_id is _NO_ID else raw_id
    if obj.get("jsonrpc") != "2.0":
        return Reject(error(reply_id, RPC_INVALID_REQUEST, "Invalid Request: 'jsonrpc' must be \"2.0\""))
    method = obj.get("method")
    if not isinstance(method, str):
        return Reject(error(reply_id, RPC_INVALID_REQUEST, "Invalid Request: 'method' must be a string"))
    unexpected = sorted(set(obj) - {"jsonrpc", "method", "params", "id"})
    if unexpected:
        return Reject(error(reply_id, RPC_INVALID_REQUEST, f"Invalid Request: member '{unexpected[0]}' is unexpected"))
    params = obj.get("params", {})
    if isinstance(params, list):
        if params:
            return Reject(error(reply_id, RPC_INVALID_PARAMS, "Invalid params: pass arguments by name (an object)"))
        params = {}
    elif not isinstance(params, dict):
        return Reject(error(reply_id, RPC_INVALID_REQUEST, "Invalid Request: 'params' must be an object"))
    return Call(method, params, raw_id)


def parse(body: bytes) -> tuple[list[Call | Reject], bool] | dict[str, Any]:
    """A request body -> (members, is_batch), or a single error response for the whole body."""
    try:
        doc = json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return error(None, RPC_PARSE_ERROR, "Parse error")
    if isinstance(doc, list):
        if not doc:
            return error(None, RPC_INVALID_REQUEST, "Invalid Request: empty batch")
        if len(doc) > MAX_BATCH:
            return error(None, RPC_INVALID_REQUEST, f"Invalid Request: a batch holds at most {MAX_BATCH} calls")
        return [_one(item) for item in doc], True
    return [_one(doc)], False
