"""The start-up fast path: a configuration certified without pydantic, and the guest started early.

``vmd.cli.quick_guest_settings`` may only accept input that Config accepts too (with the same
values), so that no error text can change; the guest then runs before pydantic is imported.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmd.cli import GuestSettings, quick_guest_settings
from vmd.cmdline import effective_raw, parse_argv
from vmd.config import Config

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "guests" / "bin" / "hello.elf"
IDLE = ROOT / "guests" / "bin" / "idle.elf"


def raw_of(*args: str) -> dict:
    return effective_raw(parse_argv(list(args)))


# -- which command lines start the guest early ------------------------------------------------
@pytest.mark.parametrize("args", [
    ("-M", "s390-ccw-virtio", "-nographic", "-kernel", "x.elf"),
    ("-nographic", "-kernel", "x.elf", "-smp", "1,maxcpus=4", "-m", "256M", "-cpu", "z14,vx=off"),
    ("-kernel", "x.elf", "-name", "vm1", "-uuid", "0123abcd-0000-1111-2222-333344445555", "-append", "a b"),
    ("-kernel", "x.elf", "-qmp", "unix:/tmp/q.sock,server=on,wait=off", "--api-listen", "127.0.0.1:0"),
    ("-nographic", "-nic", "none"),  # the firmware, without a boot device
])
def test_plain_machines_start_early(args):
    raw = raw_of(*args)
    quick = quick_guest_settings(raw)
    assert quick is not None
    assert quick == GuestSettings.from_config(Config.model_validate(raw))


@pytest.mark.parametrize("args", [
    ("-kernel", "x.elf", "-S"),  # paused: nothing to gain
    ("-kernel", "x.elf", "-smp", "2"),  # several CPUs: see quick_guest_settings
    ("-kernel", "x.elf", "-device", "virtio-rng-ccw"),  # devices need their pydantic models
    ("-kernel", "x.elf", "-drive", "file=x.img,if=none,id=d0"),  # an image may fail to open
    ("-kernel", "x.elf", "-qmp", "unix:/tmp/q.sock,server=on"),  # wait=on holds the start
    ("-kernel", "x.elf", "-monitor", "unix:/tmp/h.sock,server=on,wait=off"),  # HMP: bound later
    ("-kernel", "x.elf", "-chardev", "file,id=f,path=/tmp/x"),  # opened later, may fail
    ("-kernel", "x.elf", "-serial", "stdio"),  # another writer on stdout
    ("-kernel", "x.elf", "-M", "s390-ccw-virtio-7.1"),  # versioned types: pydantic decides
    (),  # the embedded demo VM has devices
])
def test_machines_that_wait_for_the_daemon(args):
    assert quick_guest_settings(raw_of(*args)) is None


# -- property: accepted input validates, with the same settings ------------------------------------
_ANY = st.one_of(
    st.none(), st.booleans(), st.sampled_from([0, 1, -1, 249, 65536, 1.0, 1.5]),
    st.sampled_from(["", "x", "on", "1", "s390-ccw-virtio-7.2", "readline", "127.0.0.1:x", ":65536",
                     "0123ABCD-0000-1111-2222-33334444555G", "{0123abcd-0000-1111-2222-333344445555}",
                     "0123abcd00001111222233334444555"]),
    st.just([]), st.just({}), st.just(["x"]), st.just({"vx": "on"}), st.just({"a": "b"}),
)
_STR = st.sampled_from(["", "x", "qemu", "z14", "a b"])
_OPT_STR = st.one_of(st.none(), _STR)
_BOOL = st.booleans()
# plausible values per key (bounds included); any key may also get anything at all (_ANY)
_PLAUSIBLE = {
    "machine": {"type": st.just("s390-ccw-virtio"), "accel": _STR, "loadparm": _OPT_STR, "dump-guest-core": _BOOL,
                "dump_guest_core": _BOOL, "mem-merge": _BOOL, "graphics": _BOOL, "usb": _BOOL,
                "zpcii-disable": _BOOL, "memory-backend": _OPT_STR, "origin": _OPT_STR, "bogus": _STR},
    "cpu": {"model": st.sampled_from(["qemu", "z14", "max"]), "origin": _OPT_STR, "bogus": _STR,
            "features": st.dictionaries(st.sampled_from(["vx", "msa9", "zpci"]), _BOOL, max_size=2)},
    "memory": {"size": st.sampled_from([1, 1 << 20, 256 << 20]), "slots": st.one_of(st.none(), st.integers(0, 4)),
               "maxmem": st.one_of(st.none(), st.integers(0, 1 << 30)), "origin": _OPT_STR, "bogus": _STR},
    "smp": {**{k: st.one_of(st.none(), st.integers(0, 250)) for k in
               ("maxcpus", "sockets", "cores", "threads", "books", "drawers", "dies")},
            "cpus": st.integers(0, 3), "origin": _OPT_STR},
    "api": {"listen": st.sampled_from([None, "127.0.0.1:80", "[::1]:0", ":65535", "x:65536", "nohost"]),
            "token_file": _OPT_STR, "origin": _OPT_STR},
}
_TOP = {
    "name": _OPT_STR, "kernel": _OPT_STR, "initrd": _OPT_STR, "append": _OPT_STR, "bios": _OPT_STR,
    "uuid": st.sampled_from([None, "0123abcd-0000-1111-2222-333344445555", "0123ABCD-0000-1111-2222-3333444455FF"]),
    "boot": st.dictionaries(st.sampled_from(["order", "once"]), st.sampled_from(["c", "d"]), max_size=2),
    "log-file": _OPT_STR, "log-items": st.lists(_STR, max_size=2), "log_items": st.lists(_STR, max_size=2),
    "start-paused": _BOOL, "start_paused": _BOOL, "no-shutdown": _BOOL, "nodefaults": _BOOL,
    "display": _STR, "nographic": _BOOL, "runtime-dir": _OPT_STR, "device": st.just([]), "drive": st.just([]),
    "serial": st.just([]), "global": st.just([]), "bogus": _STR,
}
_SOCKET = {"backend": st.sampled_from(["socket", "stdio"]), "id": st.sampled_from(["compat_monitor0", "c1"]),
           "path": _OPT_STR, "host": _OPT_STR, "port": st.one_of(st.none(), st.sampled_from([0, 4444, 65535])),
           "server": _BOOL, "wait": _BOOL, "telnet": _BOOL, "ipv4": st.one_of(st.none(), _BOOL),
           "reconnect": st.integers(0, 2), "tls-creds": _OPT_STR, "tls_creds": _OPT_STR, "mux": _BOOL,
           "origin": _OPT_STR, "bogus": _STR}
_MONITOR = {"chardev": st.sampled_from(["compat_monitor0", "c1"]), "mode": st.sampled_from(["control", "readline"]),
            "pretty": _BOOL, "bogus": _STR}


def _changed(draw, entry: dict, table: dict, most: int) -> dict:
    entry = dict(entry)
    for key in draw(st.lists(st.sampled_from(sorted(table)), max_size=most)):
        entry[key] = draw(st.one_of(table[key], table[key], table[key], _ANY))
    return entry


@st.composite
def raw_configs(draw) -> dict:
    """Command-line shaped input with random changes: wrong types, bad ranges, unknown keys, aliases."""
    raw = raw_of("-M", "s390-ccw-virtio", "-nographic", "-kernel", "x.elf", "-smp", "1,maxcpus=2",
                 "-qmp", "unix:/tmp/q.sock,server=on,wait=off")
    raw = _changed(draw, raw, _TOP, 2)
    for section, table in _PLAUSIBLE.items():
        if draw(st.booleans()):
            value = raw.get(section)
            raw[section] = _changed(draw, value if isinstance(value, dict) else {}, table, 2)
    if draw(st.booleans()):
        raw["chardev"] = [_changed(draw, raw["chardev"][0], _SOCKET, 2) for _ in range(draw(st.integers(1, 2)))]
    if draw(st.booleans()):
        raw["monitor"] = [_changed(draw, raw["monitor"][0], _MONITOR, 2)]
    return raw


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_configs())
def test_accepted_input_validates_with_the_same_settings(raw):
    quick = quick_guest_settings(raw)
    if quick is None:
        return
    config = Config.model_validate(raw)  # must not raise: the fast path never prints an error
    assert GuestSettings.from_config(config) == quick


def test_the_unchanged_input_is_accepted():
    assert quick_guest_settings(raw_of("-M", "s390-ccw-virtio", "-nographic", "-kernel", "x.elf", "-smp", "1,maxcpus=2",
                                       "-qmp", "unix:/tmp/q.sock,server=on,wait=off")) is not None


# -- the process -------------------------------------------------------------------------------------
_PROBE = """
import sys
import vmd.cli as cli
start = cli.EarlyGuest.start
def started(self):
    start(self)
    heavy = sorted(m for m in ("pydantic", "vmd.daemon", "vmd.config", "aiohttp", "jsonschema", "asyncio")
                   if m in sys.modules)
    print("loaded when the guest runs:", heavy, file=sys.stderr)
cli.EarlyGuest.start = started
sys.exit(cli.main(sys.argv[1:]))
"""


def test_the_guest_runs_before_the_daemon_is_imported(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _PROBE, "-M", "s390-ccw-virtio", "-nographic",
                           "-kernel", str(HELLO), "--runtime-dir", str(tmp_path)],
                          capture_output=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"vmd test guest: hello" in proc.stdout
    assert "loaded when the guest runs: []" in proc.stderr.decode()


def _qmp(path: Path, deadline: float):
    while True:
        try:
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(str(path))
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.001)


def test_an_early_client_hears_the_shutdown_of_a_quick_guest(tmp_path):
    """The guest may power off before the daemon exists; its SHUTDOWN still reaches QMP clients."""
    path = tmp_path / "qmp.sock"
    proc = subprocess.Popen([sys.executable, "-m", "vmd", "-M", "s390-ccw-virtio", "-nographic",
                             "-kernel", str(HELLO), "-qmp", f"unix:{path},server=on,wait=off",
                             "--runtime-dir", str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        sock = _qmp(path, time.monotonic() + 30)
        sock.settimeout(30)
        f = sock.makefile("rb")
        assert "QMP" in json.loads(f.readline())
        sock.sendall(b'{"execute": "qmp_capabilities"}\n')
        messages = [json.loads(line) for line in f]
    finally:
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert messages[0] == {"return": {}}
    events = [m for m in messages if "event" in m]
    assert [e["event"] for e in events] == ["SHUTDOWN"]
    assert events[0]["data"] == {"guest": True, "reason": "guest-shutdown"}
    assert b"hello: done, powering off" in out


def test_an_early_guest_is_the_machine_the_monitor_controls(tmp_path):
    path = tmp_path / "qmp.sock"
    proc = subprocess.Popen([sys.executable, "-m", "vmd", "-M", "s390-ccw-virtio", "-nographic", "-smp", "1,maxcpus=2",
                             "-kernel", str(IDLE), "-qmp", f"unix:{path},server=on,wait=off",
                             "--runtime-dir", str(tmp_path / "run")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
                            env=dict(os.environ))
    try:
        sock = _qmp(path, time.monotonic() + 30)
        sock.settimeout(30)
        f = sock.makefile("rb")
        f.readline()

        def call(name: str, args: dict | None = None) -> dict:
            sock.sendall(json.dumps({"execute": name, **({"arguments": args} if args else {})}).encode())
            while True:
                msg = json.loads(f.readline())
                if "event" not in msg:
                    return msg

        assert call("qmp_capabilities") == {"return": {}}
        assert call("query-status")["return"]["status"] == "running"
        assert len(call("query-cpus-fast")["return"]) == 1
        assert call("stop") == {"return": {}}
        assert call("query-status")["return"]["status"] == "paused"
        assert call("cont") == {"return": {}}
        assert call("device_add", {"driver": "virtio-rng-ccw", "id": "rng0"}) == {"return": {}}
        assert call("system_reset") == {"return": {}}
        assert call("query-status")["return"]["status"] == "running"
        assert call("quit") == {"return": {}}
    finally:
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
