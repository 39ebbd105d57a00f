"""JSON-RPC 2.0 envelopes, bytes in, calls and errors out (no sockets)."""

from __future__ import annotations

import json

from hypothesis import given, strategies as st

from vmd.proto import jsonrpc


def test_single_call_and_notification():
    members, batch = jsonrpc.parse(b'{"jsonrpc":"2.0","method":"query-status","id":7}')
    assert not batch and members[0].method == "query-status" and members[0].id == 7
    assert not members[0].is_notification
    members, _ = jsonrpc.parse(b'{"jsonrpc":"2.0","method":"stop"}')
    assert members[0].is_notification


def test_spec_error_cases():
    assert jsonrpc.parse(b'{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]')["error"]["code"] == -32700
    assert jsonrpc.parse(b"[]")["error"]["code"] == -32600
    members, batch = jsonrpc.parse(b"[1,2]")
    assert batch and [m.response["error"]["code"] for m in members] == [-32600, -32600]
    members, _ = jsonrpc.parse(b'{"jsonrpc":"1.0","method":"x","id":1}')
    assert members[0].response["error"]["code"] == -32600 and members[0].response["id"] == 1
    members, _ = jsonrpc.parse(b'{"jsonrpc":"2.0","method":"x","params":[1],"id":1}')
    assert members[0].response["error"]["code"] == -32602
    members, _ = jsonrpc.parse(b'{"jsonrpc":"2.0","method":"x","id":{"a":1}}')
    assert members[0].response["error"]["code"] == -32600 and members[0].response["id"] is None


def test_batch_is_bounded():
    body = json.dumps([{"jsonrpc": "2.0", "method": "x", "id": i} for i in range(jsonrpc.MAX_BATCH + 1)])
    assert jsonrpc.parse(body.encode())["error"]["code"] == -32600


@given(st.binary(max_size=300))
def test_any_bytes_give_calls_or_errors_never_exceptions(data):
    out = jsonrpc.parse(data)
    if isinstance(out, dict):
        assert out["error"]["code"] in (-32700, -32600)
    else:
        members, _ = out
        assert all(isinstance(m, (jsonrpc.Call, jsonrpc.Reject)) for m in members)
