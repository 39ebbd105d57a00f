"""QMP over real sockets with the official client (qemu.qmp), against a vmd process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat

import pytest
from qemu.qmp import ExecuteError, QMPClient

from conftest import raw_qmp


async def connect(path) -> QMPClient:
    qmp = QMPClient("test")
    await qmp.connect(str(path))
    return qmp


async def test_greeting_and_status(vmd):
    qmp = await connect(vmd.qmp_path)
    try:
        greeting = qmp.greeting
        assert greeting.QMP.version["qemu"]["major"] == 7 and "oob" in greeting.QMP.capabilities
        status = await qmp.execute("query-status")
        assert status == {"status": "running", "singlestep": False, "running": True}
        assert await qmp.execute("query-name") == {"name": "test"}
        names = {c["name"] for c in await qmp.execute("query-commands")}
        assert {"device_add", "device_del", "qom-get", "__org.vmd_query-css", "query-qmp-schema"} <= names
    finally:
        await qmp.disconnect()


def test_monitor_socket_is_private(vmd):
    mode = stat.S_IMODE(os.stat(vmd.qmp_path).st_mode)
    assert mode == 0o600


async def test_css_rst_examples_over_qmp(vmd):
    """css.rst's examples as device_add, with dev_id/subch_id read back through qom-get."""
    qmp = await connect(vmd.qmp_path)
    try:
        cases = [
            ("virtio-net-ccw", None, "fe.0.0000", "fe.0.0000"),
            ("virtio-rng-ccw", "fe.0.0042", "fe.0.0042", "fe.0.0001"),
            ("virtio-gpu-ccw", "fe.2.1111", "fe.2.1111", "fe.2.0000"),
            ("virtio-mouse-ccw", "2.0.2222", "2.0.2222", "2.0.0000"),
            ("virtio-keyboard-ccw", "0.0.1234", "0.0.1234", "0.0.0000"),
        ]
        for n, (driver, devno, dev_id, subch_id) in enumerate(cases):
            args = {"driver": driver, "id": f"d{n}"}
            if devno:
                args["devno"] = devno
            assert await qmp.execute("device_add", args) == {}
            path = f"/machine/peripheral/d{n}"
            assert await qmp.execute("qom-get", {"path": path, "property": "dev_id"}) == dev_id
            assert await qmp.execute("qom-get", {"path": path, "property": "subch_id"}) == subch_id
        css = await qmp.execute("__org.vmd_query-css")
        visible = {s["device"]: s.get("visible-as") for s in css["subchannels"]}
        assert visible["d0"] == "0.0.0000" and visible["d3"] is None and visible["d4"] is None
        qtree = await qmp.execute("human-monitor-command", {"command-line": "info qtree"})
        assert 'dev: virtio-rng-ccw, id "d1"' in qtree and 'dev_id = "fe.0.0042"' in qtree
    finally:
        await qmp.disconnect()


async def test_device_add_errors_change_nothing(vmd):
    qmp = await connect(vmd.qmp_path)
    try:
        await qmp.execute("device_add", {"driver": "virtio-rng-ccw", "id": "r1", "devno": "fe.0.0005"})
        bad = [
            ({"driver": "virtio-rng-ccw", "id": "r1"}, "GenericError", "Duplicate device ID 'r1'"),
            ({"driver": "virtio-rng-ccw", "devno": "fe.0.0005"}, "GenericError", "Device fe.0.0005 already exists"),
            ({"driver": "nope"}, "GenericError", "'nope' is not a valid device model name"),
            ({"id": "x"}, "GenericError", "Parameter 'driver' is missing"),
            ({"driver": "virtio-rng-ccw", "devno": "fe.0.42"}, "GenericError",
             "Property 'virtio-rng-ccw.devno' doesn't take value 'fe.0.42'"),
            ({"driver": "virtio-rng-ccw", "foo": 1}, "GenericError", "Property 'virtio-rng-ccw.foo' not found"),
        ]
        before = await qmp.execute("__org.vmd_query-css")
        for args, cls, desc in bad:
            with pytest.raises(ExecuteError) as exc:
                await qmp.execute("device_add", args)
            assert (exc.value.error_class, str(exc.value)) == (cls, desc)
        assert await qmp.execute("__org.vmd_query-css") == before
        with pytest.raises(ExecuteError) as exc:
            await qmp.execute("device_del", {"id": "nope"})
        assert (exc.value.error_class, str(exc.value)) == ("DeviceNotFound", "Device 'nope' not found")
    finally:
        await qmp.disconnect()


async def test_device_del_sends_device_deleted_to_every_client(vmd):
    a, b = await connect(vmd.qmp_path), await connect(vmd.qmp_path)
    try:
        await a.execute("device_add", {"driver": "virtio-rng-ccw", "id": "r9"})
        with b.listener() as listener:
            await a.execute("device_del", {"id": "r9"})
            seen = []
            while len(seen) < 2:
                event = await asyncio.wait_for(listener.get(), 5)
                seen.append(event)
        assert [e["event"] for e in seen] == ["DEVICE_DELETED", "DEVICE_DELETED"]
        assert seen[1]["data"] == {"device": "r9", "path": "/machine/peripheral/r9"}
        assert set(seen[0]["timestamp"]) == {"seconds", "microseconds"}
    finally:
        await a.disconnect()
        await b.disconnect()


async def test_run_control_events(vmd):
    qmp = await connect(vmd.qmp_path)
    try:
        with qmp.listener() as listener:
            await qmp.execute("stop")
            assert (await asyncio.wait_for(listener.get(), 5))["event"] == "STOP"
            assert (await qmp.execute("query-status"))["status"] == "paused"
            await qmp.execute("cont")
            assert (await asyncio.wait_for(listener.get(), 5))["event"] == "RESUME"
            await qmp.execute("system_reset")
            event = await asyncio.wait_for(listener.get(), 5)
            assert event["event"] == "RESET" and event["data"] == {"guest": False, "reason": "host-qmp-system-reset"}
            await qmp.execute("system_powerdown")
            assert (await asyncio.wait_for(listener.get(), 5))["event"] == "POWERDOWN"
    finally:
        await qmp.disconnect()


def test_negotiation_and_dispatch_errors_on_the_wire(vmd):
    """Raw bytes: QEMU's texts, id echo, and events only after negotiation."""
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(5)
    sock.connect(str(vmd.qmp_path))
    f = sock.makefile("rb")

    def ask(line: bytes) -> dict:
        sock.sendall(line)
        return json.loads(f.readline())

    assert "QMP" in json.loads(f.readline())
    assert ask(b'{"execute":"query-status","id":1}') == {
        "id": 1, "error": {"class": "CommandNotFound",
                           "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}
    assert ask(b'{"execute":"qmp_capabilities","id":"a"}') == {"return": {}, "id": "a"}
    assert ask(b'{"execute":"qmp_capabilities","id":2}')["error"] == {
        "class": "CommandNotFound", "desc": "Capabilities negotiation is already complete, command ignored"}
    assert ask(b'{"execute":"nope","id":[1]}') == {
        "id": [1], "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}
    assert ask(b'{"execute":"device_del","id":3}')["error"]["desc"] == "Parameter 'id' is missing"
    assert ask(b'{"execute":"device_del","arguments":{"id":5},"id":4}')["error"]["desc"] == \
        "Invalid parameter type for 'id', expected: string"
    assert ask(b'{"execute":"query-status","arguments":{"a":1}}')["error"]["desc"] == "Parameter 'a' is unexpected"
    assert ask(b"[1]")["error"]["desc"] == "QMP input must be a JSON object"
    assert ask(b"{'execute': 'query-status'}")["return"]["status"] == "running"
    sock.close()


def test_oversized_and_hostile_input_does_not_kill_the_daemon(vmd):
    replies = raw_qmp(vmd.qmp_path, [
        b'{"execute":"qmp_capabilities"}\n',
        b"{" * 5000 + b"\n",
        b'"' + b"x" * (2 << 20) + b'"\n',
        b"\xff\xfe garbage \x00\n",
        b'{"execute":"query-status"}\n',
    ])
    assert replies[-1]["return"]["status"] == "running"
    assert any("error" in r for r in replies[2:-1])
    # a fresh client still works
    assert raw_qmp(vmd.qmp_path, [b'{"execute":"qmp_capabilities"}\n'])[-1] == {"return": {}}


async def test_quit_sends_shutdown_then_exits_zero(vmd):
    qmp = await connect(vmd.qmp_path)
    with qmp.listener() as listener:
        await qmp.execute("quit")
        event = await asyncio.wait_for(listener.get(), 5)
    assert event["event"] == "SHUTDOWN" and event["data"] == {"guest": False, "reason": "host-qmp-quit"}
    with contextlib.suppress(EOFError):  # the server hung up after answering, as QEMU does
        await qmp.disconnect()
    assert vmd.proc.wait(10) == 0


def test_sigterm_is_a_clean_exit(vmd):
    vmd.proc.terminate()
    assert vmd.proc.wait(10) == 0
    assert not vmd.qmp_path.exists()


async def test_query_qmp_schema_describes_every_command_and_event(vmd):
    qmp = await connect(vmd.qmp_path)
    try:
        schema = await qmp.execute("query-qmp-schema")
        commands = await qmp.execute("query-commands")
    finally:
        await qmp.disconnect()
    by_name = {entry["name"]: entry for entry in schema}
    for command in commands:
        entry = by_name[command["name"]]
        assert entry["meta-type"] == "command"
        assert entry["arg-type"] in by_name and entry["ret-type"] in by_name
    for event in ("SHUTDOWN", "STOP", "RESUME", "RESET", "POWERDOWN", "DEVICE_DELETED"):
        assert by_name[event]["meta-type"] == "event"
    deleted = by_name[by_name["DEVICE_DELETED"]["arg-type"]]
    members = {m["name"]: m for m in deleted["members"]}
    assert "default" not in members["path"] and "default" in members["device"]
    qom_get_args = by_name[by_name["qom-get"]["arg-type"]]
    assert [m["name"] for m in qom_get_args["members"]] == ["path", "property"]
