"""vmd against qemu-system-s390x on the same command line and the same QMP conversation.

QEMU runs with -S (no guest code) and -no-shutdown; both answer the same
requests over a unix socket, and the replies are compared after removing what
legitimately differs (timestamps, the version package string).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.qemu

COMMON = ["-M", "s390-ccw-virtio", "-nodefaults", "-nographic", "-S", "-no-shutdown", "-name", "diff",
          "-uuid", "12345678-1234-1234-1234-123456789abc", "-smp", "2",
          "-device", "virtio-net-ccw,id=n0",
          "-device", "virtio-rng-ccw,id=r0,devno=fe.0.0042",
          "-device", "virtio-gpu-ccw,id=g0,devno=fe.2.1111",
          "-device", "virtio-mouse-ccw,id=m0,devno=2.0.2222",
          "-device", "virtio-keyboard-ccw,id=k0,devno=0.0.1234"]

CONVERSATION = [
    {"execute": "query-status", "id": 0},  # before negotiation
    {"execute": "qmp_capabilities", "arguments": {"enable": ["foo"]}, "id": 1},
    {"execute": "qmp_capabilities", "id": 2},
    {"execute": "qmp_capabilities", "id": 3},
    {"execute": "query-status", "id": 4},
    {"execute": "query-name", "id": 5},
    {"execute": "query-uuid", "id": 6},
    {"execute": "nope", "id": 7},
    {"execute": "device_del", "id": 8},
    {"execute": "device_del", "arguments": {"id": 5}, "id": 9},
    {"execute": "device_del", "arguments": {"id": "x", "foo": 1}, "id": 10},
    {"execute": "device_del", "arguments": {"id": "nope"}, "id": 11},
    {"execute": "device_add", "arguments": {"driver": "nope"}, "id": 12},
    {"execute": "device_add", "arguments": {"id": "x"}, "id": 13},
    {"execute": "device_add", "arguments": {"driver": "virtio-rng-ccw", "id": "r0"}, "id": 14},
    {"execute": "device_add", "arguments": {"driver": "virtio-rng-ccw", "devno": "fe.0.0042"}, "id": 15},
    {"execute": "device_add", "arguments": {"driver": "virtio-rng-ccw", "devno": "fe.0.42"}, "id": 16},
    {"execute": "device_add", "arguments": {"driver": "virtio-rng-ccw", "foo": 1}, "id": 17},
    {"execute": "device_add", "arguments": {"driver": "virtio-rng-ccw", "id": "1x"}, "id": 18},
    {"execute": "device_add", "arguments": {"driver": "virtio-rng-ccw", "bus": "nope"}, "id": 19},
    {"execute": "device_add", "arguments": {"driver": "virtio-rng-ccw", "id": "hot"}, "id": 20},
    {"execute": "device-list-properties", "arguments": {"typename": "nope"}, "id": 21},
    {"execute": "qom-get", "arguments": {"path": "/machine/peripheral/zz", "property": "x"}, "id": 22},
    {"execute": "stop", "id": 23},
    {"execute": "query-status", "id": 24},
    # no "cont": QEMU would run its firmware, which panics without a boot device
    {"execute": "system_reset", "id": 25},
    {"execute": "query-status", "arguments": {"a": 1}, "id": 29},
]
for dev in ("n0", "r0", "g0", "m0", "k0", "hot"):
    for prop in ("dev_id", "subch_id", "devno"):
        CONVERSATION.append({"execute": "qom-get", "id": f"{dev}.{prop}",
                             "arguments": {"path": f"/machine/peripheral/{dev}", "property": prop}})
CONVERSATION.append({"execute": "device_del", "arguments": {"id": "hot"}, "id": "del"})
CONVERSATION.append({"execute": "query-chardev", "id": "chardev"})


def converse(cmd: list[str], sock_path: Path) -> list[dict]:
    proc = subprocess.Popen(cmd + COMMON + ["-qmp", f"unix:{sock_path},server=on,wait=off"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                sock = socket.socket(socket.AF_UNIX)
                sock.connect(str(sock_path))
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(proc.stderr.read().decode())
                time.sleep(0.01)
        sock.settimeout(10)
        f = sock.makefile("rb")
        messages = [json.loads(f.readline())]
        for request in CONVERSATION:
            sock.sendall(json.dumps(request).encode() + b"\n")
            while True:
                msg = json.loads(f.readline())
                messages.append(msg)
                if "event" not in msg:
                    break
        # DEVICE_DELETED trails device_del's reply (QEMU: after an RCU grace period)
        while not any(m.get("event") == "DEVICE_DELETED" and m.get("data", {}).get("device") == "hot"
                      for m in messages):
            messages.append(json.loads(f.readline()))
        sock.close()
        return messages
    finally:
        proc.kill()
        proc.wait()


def normalize(messages: list[dict]) -> tuple[dict, list, dict]:
    greeting = messages[0]
    replies, events = {}, []
    for msg in messages[1:]:
        if "event" in msg:
            events.append((msg["event"], msg.get("data")))
        else:
            replies[json.dumps(msg.get("id"))] = msg
    return greeting, sorted(events, key=json.dumps), replies


def test_same_conversation_same_answers(qemu_binary, tmp_path):
    ours = normalize(converse([sys.executable, "-m", "vmd"], tmp_path / "vmd.sock"))
    theirs = normalize(converse([qemu_binary], tmp_path / "qemu.sock"))
    g_ours, g_theirs = ours[0], theirs[0]
    assert g_ours["QMP"]["capabilities"] == g_theirs["QMP"]["capabilities"]
    assert g_ours["QMP"]["version"]["qemu"].keys() == g_theirs["QMP"]["version"]["qemu"].keys()
    assert (g_ours["QMP"]["version"]["qemu"]["major"], g_ours["QMP"]["version"]["qemu"]["minor"]) == (7, 2)
    assert ours[1] == theirs[1], "events differ"
    skip = {json.dumps("chardev")}  # QEMU lists its chardevs in hash order; compared as a set below
    for key, theirs_reply in theirs[2].items():
        if key in skip:
            continue
        assert ours[2].get(key) == theirs_reply, f"reply to id {key}"
    def as_set(reply: dict, sock: str) -> list[str]:
        return sorted(json.dumps(c, sort_keys=True).replace(sock, "SOCK") for c in reply["return"])

    key = json.dumps("chardev")
    assert as_set(ours[2][key], str(tmp_path / "vmd.sock")) == as_set(theirs[2][key], str(tmp_path / "qemu.sock"))


BAD_LINES = [
    ["-device", "foo"],
    ["-device", "virtio-rng-ccw,devno=fe.0.42"],
    ["-device", "virtio-rng-ccw,devno=fe.4.0000"],
    ["-device", "virtio-rng-ccw,devno=fe.0.0001", "-device", "virtio-rng-ccw,devno=fe.0.0001"],
    ["-device", "virtio-rng-ccw,id=a", "-device", "virtio-net-ccw,id=a"],
    ["-device", "virtio-rng-ccw,foo=1"],
    ["-device", "virtio-rng-ccw,ioeventfd=maybe"],
    ["-device", "virtio-rng-ccw,period=x"],
]


@pytest.mark.parametrize("args", BAD_LINES, ids=lambda a: " ".join(a))
def test_bad_command_lines_fail_the_same_way(qemu_binary, args, tmp_path):
    base = ["-M", "s390-ccw-virtio", "-nodefaults", "-nographic", "-S"]
    theirs = subprocess.run([qemu_binary, *base, *args], capture_output=True, text=True, timeout=30)
    ours = subprocess.run([sys.executable, "-m", "vmd", *base, *args, "--runtime-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert (ours.returncode, theirs.returncode) == (1, 1)
    assert ours.stderr.replace("vmd:", "qemu-system-s390x:", 1) == theirs.stderr


CCW_MODELS = ["virtio-net-ccw", "virtio-blk-ccw", "virtio-scsi-ccw", "virtio-rng-ccw", "virtio-gpu-ccw",
              "virtio-keyboard-ccw", "virtio-mouse-ccw", "virtio-tablet-ccw", "virtio-serial-ccw",
              "virtio-balloon-ccw", "virtio-crypto-ccw", "virtio-9p-ccw", "vhost-vsock-ccw",
              "vhost-user-fs-ccw", "vhost-scsi-ccw"]
#: the operator consoles on the SCLP's events bus (devices/models/sclp_console.py)
SCLP_EVENT_MODELS = ["sclpconsole", "sclplmconsole"]


@pytest.mark.parametrize("model", CCW_MODELS + SCLP_EVENT_MODELS)
def test_device_help_matches_qemu(qemu_binary, model):
    """Property names, types, descriptions and defaults as QEMU 7.2 lists them.

    vmd adds per-device ``loadparm`` to boot devices (QEMU gained it after 7.2); that line is
    left out of the comparison.
    """
    theirs = subprocess.run([qemu_binary, "-M", "s390-ccw-virtio", "-device", f"{model},help"],
                            capture_output=True, text=True, timeout=30).stdout
    ours = subprocess.run([sys.executable, "-m", "vmd", "-device", f"{model},help"],
                          capture_output=True, text=True, timeout=30, cwd=ROOT).stdout
    ours = "".join(line for line in ours.splitlines(keepends=True) if not line.startswith("  loadparm="))
    assert ours == theirs


def test_device_list_includes_every_ccw_model_qemu_has(qemu_binary):
    theirs = subprocess.run([qemu_binary, "-M", "s390-ccw-virtio", "-device", "help"],
                            capture_output=True, text=True, timeout=30).stdout
    ours = subprocess.run([sys.executable, "-m", "vmd", "-device", "help"],
                          capture_output=True, text=True, timeout=30, cwd=ROOT).stdout
    # the 3270 terminal and vfio-ccw arrive with their own subsystems
    later = ('name "x-terminal3270"', 'name "vfio-ccw"', 'name "vfio-ap"')
    wanted = [line for line in theirs.splitlines()
              if ", bus virtual-css-bus" in line and not line.startswith(later)]
    assert wanted and set(wanted) <= set(ours.splitlines())
