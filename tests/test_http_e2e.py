"""JSON-RPC 2.0 over HTTP with aiohttp's client, against a vmd process."""

from __future__ import annotations

import asyncio
import json
import os
import stat

import aiohttp


def auth(vm) -> dict:
    return {"Authorization": f"Bearer {vm.token}"}


async def rpc(session, vm, body):
    async with session.post(f"{vm.api_url}/rpc", json=body, headers=auth(vm)) as resp:
        if resp.status == 204:
            return None
        return await resp.json()


async def test_token_file_is_private_and_required(vmd):
    assert stat.S_IMODE(os.stat(vmd.token_file).st_mode) == 0o600
    async with aiohttp.ClientSession() as session:
        body = {"jsonrpc": "2.0", "method": "query-status", "id": 1}
        async with session.post(f"{vmd.api_url}/rpc", json=body) as resp:
            assert resp.status == 401
        async with session.post(f"{vmd.api_url}/rpc", json=body, headers={"Authorization": "Bearer nope"}) as resp:
            assert resp.status == 401
        async with session.get(f"{vmd.api_url}/events") as resp:
            assert resp.status == 401
        reply = await rpc(session, vmd, body)
        assert reply == {"jsonrpc": "2.0", "result": {"status": "running", "singlestep": False, "running": True},
                         "id": 1}


async def test_same_commands_and_errors_as_qmp(vmd):
    async with aiohttp.ClientSession() as session:
        ok = await rpc(session, vmd, {"jsonrpc": "2.0", "method": "device_add",
                                      "params": {"driver": "virtio-rng", "id": "r1", "devno": "fe.0.0042"}, "id": "a"})
        assert ok == {"jsonrpc": "2.0", "result": {}, "id": "a"}
        got = await rpc(session, vmd, {"jsonrpc": "2.0", "method": "qom-get",
                                       "params": {"path": "/machine/peripheral/r1", "property": "subch_id"}, "id": 2})
        assert got["result"] == "fe.0.0000"
        dup = await rpc(session, vmd, {"jsonrpc": "2.0", "method": "device_add",
                                       "params": {"driver": "virtio-rng", "id": "r1"}, "id": 3})
        assert dup["error"] == {"code": -32000, "message": "Duplicate device ID 'r1'", "data": {"class": "GenericError"}}
        missing = await rpc(session, vmd, {"jsonrpc": "2.0", "method": "device_del", "params": {"id": "zz"}, "id": 4})
        assert missing["error"]["data"] == {"class": "DeviceNotFound"}
        assert missing["error"]["message"] == "Device 'zz' not found"
        unknown = await rpc(session, vmd, {"jsonrpc": "2.0", "method": "nope", "id": 5})
        assert unknown["error"]["code"] == -32601 and unknown["error"]["data"] == {"class": "CommandNotFound"}
        bad = await rpc(session, vmd, {"jsonrpc": "2.0", "method": "device_del", "params": {}, "id": 6})
        assert bad["error"]["code"] == -32602 and bad["error"]["message"] == "Parameter 'id' is missing"


async def test_batches_and_notifications(vmd):
    async with aiohttp.ClientSession() as session:
        batch = [
            {"jsonrpc": "2.0", "method": "query-status", "id": 1},
            {"jsonrpc": "2.0", "method": "stop"},
            {"jsonrpc": "2.0", "method": "query-status", "id": 2},
            {"foo": "bar"},
        ]
        replies = await rpc(session, vmd, batch)
        assert [r.get("id") for r in replies] == [1, 2, None]
        assert replies[0]["result"]["status"] == "running" and replies[1]["result"]["status"] == "paused"
        assert replies[2]["error"]["code"] == -32600
        assert await rpc(session, vmd, {"jsonrpc": "2.0", "method": "cont"}) is None
        async with session.post(f"{vmd.api_url}/rpc", data=b"{nope", headers=auth(vmd)) as resp:
            assert (await resp.json())["error"]["code"] == -32700
        async with session.post(f"{vmd.api_url}/rpc", data=b"x" * (2 << 20), headers=auth(vmd)) as resp:
            assert resp.status == 413


async def test_event_stream(vmd):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{vmd.api_url}/events", headers=auth(vmd)) as stream:
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            await stream.content.readline()  # the stream's opening comment
            await stream.content.readline()
            await rpc(session, vmd, {"jsonrpc": "2.0", "method": "stop", "id": 1})
            lines = []
            while len(lines) < 2:
                line = (await asyncio.wait_for(stream.content.readline(), 5)).decode().rstrip("\n")
                if line:
                    lines.append(line)
        assert lines[0] == "event: STOP"
        event = json.loads(lines[1].removeprefix("data: "))
        assert event["event"] == "STOP" and "timestamp" in event


async def test_schema_endpoint_lists_every_command(vmd):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{vmd.api_url}/schema", headers=auth(vmd)) as resp:
            schema = await resp.json()
    assert "device_add" in schema["commands"] and "DEVICE_DELETED" in schema["events"]
    alternatives = schema["commands"]["device_add"]["arguments"]["oneOf"]
    assert any(alt["title"] == "virtio-net-ccw" for alt in alternatives)
