"""The SCLP operator consoles: ``sclpconsole`` (VT220) and ``sclplmconsole`` (line mode).

Without peers: the event facility on guest storage with consoles plugged (input behind the
session-data byte, line assembly, echo and EBCDIC, bounded buffers, malformed SCCBs), the
device models on a machine (one of each, the events bus without hot plug, QOM shapes), and
the -nographic defaults.  With qemu-system-s390x: help texts, command-line errors, the QMP
shapes, the ``mon:stdio`` escape keys, and the ``conin`` guest reading a line typed on each
console, whose transcripts must equal QEMU's (guests/expected/input/).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import IDLE_GUEST, ROOT, wait_for_socket
from test_guests_qemu import BIN, EXPECTED

from vmd.cmdline import CmdlineError, build_config, parse_argv, with_default_consoles
from vmd.config import ChardevNull
from vmd.devices.models.sclp_console import SclpEventInitError
from vmd.errors import GenericError
from vmd.events import EventBus
from vmd.machine.machine import Machine
from vmd.machine.memory import GuestMemory
from vmd.machine.sclp import (
    ASCII_TO_EBCDIC,
    CMD_READ_EVENT_DATA,
    CMD_WRITE_EVENT_DATA,
    CMD_WRITE_EVENT_MASK,
    EBCDIC_TO_ASCII,
    LINE_MODE_LINE_LIMIT,
    VT220_INPUT_LIMIT,
    ConsolePort,
    LineModeConsole,
    Sclp,
    SclpConfig,
    Vt220Console,
    event_mask_bit,
)
from vmd.transports.chardev import Chardev

SCCB = 0x10000
VT220 = event_mask_bit(0x1A)
OPCMD = event_mask_bit(0x01)
MSG = event_mask_bit(0x02)
PMSGCMD = event_mask_bit(0x09)
QUIESCE = event_mask_bit(0x1D)
CONIN = BIN / "conin.elf"
INPUT_GOLDEN = EXPECTED / "input"
#: every printable ASCII character, the line typed at each console
TYPED = bytes(range(0x20, 0x7F))


# ---- the event facility with consoles ----------------------------------------------------------
class FakeLink:
    """A chardev's side of a port, counting what the port asks of it."""

    def __init__(self, port: ConsolePort):
        self.port = port
        self.output = bytearray()
        self.space_calls = 0
        port.link = self

    def output_ready(self) -> None:
        self.output += self.port.take_output()

    def input_space(self) -> None:
        self.space_calls += 1


def facility(*consoles) -> Sclp:
    sclp = Sclp(GuestMemory(1 << 20), SclpConfig(memory_size=1 << 20, cpu_count=1))
    for console in consoles:
        sclp.plug(console)
    return sclp


def call(sclp: Sclp, command: int, body: bytes, length: int | None = None, function: int = 0,
         control: int = 0) -> tuple[int, int]:
    """One SERVC on an SCCB at SCCB; returns (response code, interruption parameter)."""
    length = 8 + len(body) if length is None else length
    sclp.memory.write(SCCB, bytes(4096))
    sclp.memory.write(SCCB, struct.pack(">HBBBBH", length, function, 0, 0, control, 0) + body)
    param = sclp.service_call(command, SCCB)
    return sclp.memory.u16(SCCB + 6), param


def enable(sclp: Sclp, receive: int, send: int = 0) -> tuple[int, int]:
    rc, _ = call(sclp, CMD_WRITE_EVENT_MASK, struct.pack(">HHIIII", 0, 4, receive, send, 0, 0))
    assert rc == 0x0020
    return struct.unpack(">II", sclp.memory.read(SCCB + 20, 8))


def read(sclp: Sclp, function: int = 0, selection: int | None = None) -> tuple[int, int, bytes]:
    body = bytes(4088) if selection is None else struct.pack(">I", selection) + bytes(4084)
    rc, param = call(sclp, CMD_READ_EVENT_DATA, body, function=function)
    return rc, param, sclp.memory.read(SCCB + 8, 4088)


def test_the_masks_are_those_of_the_events_on_the_bus():
    """QEMU with both consoles answers receive 40800040, send 90800048 (the conin guest's transcript)."""
    assert enable(facility(), VT220) == (VT220, 0x10000048)  # the VT220 stand-in, CPU hot plug, quiesce
    both = facility(Vt220Console(), LineModeConsole())
    assert enable(both, VT220 | OPCMD | PMSGCMD) == (0x40800040, 0x90800048)
    assert [e.name for e in both.events] == ["sclplmconsole", "sclpconsole", "sclp-cpu-hotplug", "sclpquiesce"]


def test_vt220_input_comes_behind_a_session_data_byte_and_sets_the_pending_bit():
    port = ConsolePort(VT220_INPUT_LIMIT)
    sclp = facility(Vt220Console(port))
    port.host_input(b"ls -l\n")
    assert not sclp.event_pending()  # the guest does not listen yet
    enable(sclp, VT220, VT220)
    assert sclp.event_pending()
    rc, param, data = read(sclp)
    assert (rc, param) == (0x0020, SCCB)  # nothing left: the parameter's low bit is clear
    assert data[:13] == struct.pack(">HBBH", 13, 0x1A, 0x80, 0) + b"\0ls -l\n"
    assert sclp.memory.u16(SCCB) == 4096  # the SCCB keeps its length
    assert read(sclp)[0] == 0x60F0


def test_a_flood_is_held_at_the_console_buffer_and_read_in_sccb_sized_pieces():
    port = ConsolePort(VT220_INPUT_LIMIT)
    link = FakeLink(port)
    sclp = facility(Vt220Console(port))
    enable(sclp, VT220)
    typed = bytes(3000) + bytes(range(256)) * 40
    assert port.host_input(typed[:3000]) is True
    assert port.host_input(typed[3000:]) is False  # past the console's buffer: the chardev stops reading
    received, lengths = bytearray(), []
    while True:
        rc, param, data = read(sclp)
        if rc == 0x60F0:
            break
        length = struct.unpack(">H", data[:2])[0]
        lengths.append(length)
        received += data[7:length]
        assert bool(param & 1) == (len(received) < len(typed))  # more waiting: the pending bit
    assert bytes(received) == typed
    assert lengths[:3] == [4088] * 3  # the whole data area of a 4 KiB SCCB, 4081 bytes of input
    assert link.space_calls == 1  # once below half full, the chardev may read again


def test_line_mode_input_is_a_line_at_a_time_echoed_and_in_ebcdic():
    port = ConsolePort(4096)
    link = FakeLink(port)
    console = LineModeConsole(port)
    sclp = facility(console)
    calls = []
    port.to_loop = lambda fn, *args: calls.append(fn)
    port.host_input(b"Echo 1!\r\nnext")
    console.absorb()
    assert link.output == b""  # to_loop holds the echo call
    for fn in calls:
        fn()
    assert link.output == b"Echo 1!"  # echoed as taken, the line end is not
    enable(sclp, OPCMD)
    rc, param, data = read(sclp)
    text = b"Echo 1!".translate(ASCII_TO_EBCDIC)
    assert rc == 0x0020 and param == SCCB
    # QEMU's operator command: the MDS-MU and text command ids in little-endian order, subvector
    # lengths 0 (the guest transcript pins the same bytes)
    assert data[:22 + len(text)] == (struct.pack(">HBBH", 22 + len(text), 0x01, 0, 0)
                                     + bytes.fromhex("00101013 000c1212 00082013 0031 0030") + text)
    assert text == bytes.fromhex("c583889640f15a")
    # the read asks the loop to take the next line: CR LF is two line ends, so an empty line
    console.absorb()
    rc, _, data = read(sclp)
    assert struct.unpack(">HB", data[:3]) == (22, 0x01)
    console.absorb()
    assert not console.pending()  # "next" has no end yet
    port.host_input(b"\n")
    console.absorb()
    assert console.pending()


def test_a_line_mode_line_stops_at_what_an_sccb_holds():
    port = ConsolePort(4096)
    console = LineModeConsole(port, echo=False)
    port.host_input(b"x" * 5000 + b"\n")
    console.absorb()
    assert not console.pending() and port.pending()[0] == 5001 - LINE_MODE_LINE_LIMIT
    console.absorb()  # QEMU takes nothing more, for ever
    assert port.pending()[0] == 5001 - LINE_MODE_LINE_LIMIT


def line_mode_message(*texts: bytes, mdb_length: int | None = None, event_type: int = 0x02) -> bytes:
    objects = b"".join(struct.pack(">HHHB3x", 10 + len(t), 4, 0x1000, 0) + t for t in texts)
    objects += struct.pack(">HH", 8, 1) + bytes(4)  # a general object: not text, skipped
    mdb = struct.pack(">HHII", mdb_length or 12 + len(objects), 1, 0xD4C4C240, 1) + objects
    return struct.pack(">HBBH", 6 + len(mdb), event_type, 0, 0) + mdb


def test_line_mode_output_is_each_text_object_on_a_new_line():
    port = ConsolePort(4096)
    link = FakeLink(port)
    sclp = facility(LineModeConsole(port))
    rc, _ = call(sclp, CMD_WRITE_EVENT_DATA, line_mode_message("Hello".encode("cp500"), b"\xe6\xd6\xd9\xd3\xc4"))
    assert rc == 0x0020 and sclp.memory.u8(SCCB + 11) == 0x80
    assert link.output == b"\nHello\nWORLD"
    rc, _ = call(sclp, CMD_WRITE_EVENT_DATA, line_mode_message(b"\xc1", event_type=0x09))  # priority message
    assert rc == 0x0020 and link.output.endswith(b"\nA")
    for bad in (line_mode_message(b"x", mdb_length=400), line_mode_message(b"x", mdb_length=11)):
        before = bytes(link.output)
        rc, _ = call(sclp, CMD_WRITE_EVENT_DATA, bad)
        assert rc == 0x72F0 and bytes(link.output) == before


def test_selective_reads_and_variable_length_responses_follow_qemu():
    port = ConsolePort(VT220_INPUT_LIMIT)
    sclp = facility(Vt220Console(port))
    enable(sclp, VT220)
    assert read(sclp, function=1, selection=VT220 | QUIESCE)[0] == 0x70F0
    assert read(sclp, function=2)[0] == 0x40F0
    port.host_input(b"abc")
    assert read(sclp, function=1, selection=0)[0] == 0x60F0  # selects nothing
    rc, _ = call(sclp, CMD_READ_EVENT_DATA, bytes(4088), control=0x80)
    assert rc == 0x0020 and sclp.memory.u16(SCCB) == 8 + 10 and sclp.memory.u8(SCCB + 5) == 0
    assert call(sclp, CMD_READ_EVENT_DATA, bytes(2040))[0] == 0x0300


def test_reset_forgets_the_masks_and_what_the_consoles_held():
    port = ConsolePort(VT220_INPUT_LIMIT)
    lm_port = ConsolePort(4096)
    lm = LineModeConsole(lm_port)
    sclp = facility(Vt220Console(port), lm)
    enable(sclp, VT220 | OPCMD)
    port.host_input(b"typed")
    lm_port.host_input(b"line\n")
    lm.absorb()
    sclp.reset()
    assert sclp.receive_mask == 0 and port.pending()[0] == 0 and not lm.pending()


@settings(max_examples=300, deadline=None)
@given(command=st.sampled_from([CMD_WRITE_EVENT_DATA, CMD_READ_EVENT_DATA, CMD_WRITE_EVENT_MASK]),
       body=st.binary(max_size=600), length=st.integers(8, 4096), function=st.integers(0, 255),
       typed=st.binary(max_size=300))
def test_hostile_sccbs_get_a_response_code_and_never_an_exception(command, body, length, function, typed):
    vt_port, lm_port = ConsolePort(VT220_INPUT_LIMIT), ConsolePort(4096)
    lm = LineModeConsole(lm_port)
    sclp = facility(Vt220Console(vt_port), lm)
    enable(sclp, VT220 | OPCMD | PMSGCMD, VT220 | MSG)
    vt_port.host_input(typed)
    lm_port.host_input(typed)
    lm.absorb()
    rc, _ = call(sclp, command, body, length=length, function=function)
    assert rc in {0x0020, 0x0300, 0x40F0, 0x60F0, 0x70F0, 0x72F0, 0x73F0, 0x74F0}
    assert vt_port.pending()[1] <= len(body) and lm_port.pending()[1] <= 2 * len(body) + len(typed)


def test_ebcdic_tables_are_qemus():
    """Digests of QEMU 7.2's ascii2ebcdic and ebcdic2ascii (include/hw/s390x/ebcdic.h); the guest
    transcripts check every printable character both ways against QEMU itself."""
    assert hashlib.sha256(ASCII_TO_EBCDIC).hexdigest() == \
        "bec274be854936419d622d5c06bb87ade6e80959de711ce067eda487ca995063"
    assert hashlib.sha256(EBCDIC_TO_ASCII).hexdigest() == \
        "e44b49f387c7102beeece1b2f67b67fcc6debd58b783b113d79e156bf62f5f54"
    letters = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 "
    assert letters.translate(ASCII_TO_EBCDIC).translate(EBCDIC_TO_ASCII) == letters


# ---- the device models on a machine ----------------------------------------------------------------
def machine_with(*specs) -> Machine:
    machine = Machine(EventBus(), defer=lambda fn: fn())
    machine.chardevs = {spec.id: Chardev(spec) for spec in specs}
    return machine


def test_one_console_of_each_kind_and_the_second_is_refused_as_qemu_words_it():
    machine = machine_with(ChardevNull(id="a"), ChardevNull(id="b"))
    vt = machine.add_device("sclpconsole", "vt", None, {"chardev": "a"})
    lm = machine.add_device("sclplmconsole", None, "s390-sclp-events-bus.0", {})  # no chardev: fine
    assert machine.chardevs["a"].frontend == "sclpconsole" and lm.port is not None
    with pytest.raises(SclpEventInitError) as exc:
        machine.add_device("sclpconsole", None, None, {"chardev": "b"})
    assert exc.value.desc == "SCLP event initialization failed."
    assert exc.value.reported == ["Multiple VT220 operator consoles are not supported"]
    assert machine.chardevs["b"].frontend is None  # nothing left behind
    with pytest.raises(GenericError, match="^Property 'sclplmconsole.chardev' can't take value 'a': "
                                           "Device 'a' is in use$"):
        machine.add_device("sclplmconsole", None, None, {"chardev": "a"})
    assert list(machine.devices) == [vt.qom_path, lm.qom_path]


@pytest.mark.parametrize("driver, bus, text", [
    ("sclpconsole", "virtual-css", "Device 'sclpconsole' can't go on virtual-css-bus bus"),
    ("virtio-rng-ccw", "s390-sclp-events-bus.0", "Device 'virtio-rng-ccw' can't go on s390-sclp-events-bus bus"),
    ("sclpconsole", "s390-sclp-events-bus", "Bus 's390-sclp-events-bus' not found"),
])
def test_the_events_bus_by_name(driver, bus, text):
    with pytest.raises(GenericError, match=f"^{text}$"):
        machine_with().add_device(driver, None, bus, {})


def test_the_events_bus_takes_no_hot_plug_whatever_the_device_says():
    machine = machine_with(ChardevNull(id="a"))
    vt = machine.add_device("sclpconsole", "vt", None, {"chardev": "a"})
    machine.boot()
    refusal = "^Bus 's390-sclp-events-bus.0' does not support hotplugging$"
    with pytest.raises(GenericError, match=refusal):
        machine.add_device("sclplmconsole", None, None, {"nope": 1})  # the bus is refused before the props
    for ident in ("vt", vt.qom_path):
        with pytest.raises(GenericError, match=refusal):
            machine.delete_device(ident)
    assert vt.qom_properties()["hotpluggable"][1]() is False


def test_qom_shapes_follow_qemu():
    machine = machine_with(ChardevNull(id="a"))
    lm = machine.add_onboard_device("sclplmconsole", "/machine/unattached/device[2]",
                                    {"chardev": "a", "echo": "off", "write_errors": "3"})
    props = lm.qom_properties()
    assert list(props) == ["type", "parent_bus", "realized", "hotplugged", "hotpluggable", "echo", "chardev",
                           "write_errors"]
    # write_errors counts since the last reset: QEMU's reset clears what the property said
    assert [props[k][1]() for k in ("parent_bus", "echo", "chardev", "write_errors")] == [
        "/machine/sclp/s390-sclp-event-facility/s390-sclp-events-bus.0", False, "a", 0]
    assert lm.qtree_props() == [("chardev", '"a"'), ("write_errors", "0 (0x0)"), ("echo", "false")]
    assert machine.find("/machine/unattached/device[2]") is lm


# ---- -nographic's consoles -----------------------------------------------------------------------------
def consoles_of(*argv: str):
    config = with_default_consoles(build_config(parse_argv(["-M", "s390-ccw-virtio", *argv])))
    return ([(c.id, c.backend, getattr(c, "mux", False)) for c in config.chardevs],
            [(m.chardev, m.mode) for m in config.monitors], config.serials)


@pytest.mark.parametrize("argv, chardevs, monitors, serials", [
    (["-nographic"], [("serial0", "stdio", True)], [("serial0", "readline")], ["serial0"]),
    (["-nographic", "-qmp", "unix:/tmp/x.sock,server=on,wait=off"],
     [("compat_monitor0", "socket", False), ("serial0", "stdio", False)], [("compat_monitor0", "control")],
     ["serial0"]),
    (["-nographic", "-monitor", "none"], [("serial0", "stdio", False)], [], ["serial0"]),
    (["-nographic", "-serial", "null"], [("serial0", "null", False), ("compat_monitor0", "stdio", False)],
     [("compat_monitor0", "readline")], ["serial0"]),
    (["-nographic", "-serial", "none", "-monitor", "none"], [], [], []),
    (["-nographic", "-serial", "mon:stdio"], [("serial0", "stdio", True)], [("serial0", "readline")], ["serial0"]),
    (["-nographic", "-nodefaults"], [], [], []),
    ([], [], [], []),  # no display in vmd: QEMU's "vc" consoles have nowhere to go
])
def test_nographic_adds_qemus_default_serial_and_monitor(argv, chardevs, monitors, serials):
    assert consoles_of(*argv) == (chardevs, monitors, serials)


def test_the_defaults_stay_out_of_the_command_lines_configuration():
    """Decided when the machine is built: a plain -nographic line keeps the start-up fast path."""
    from vmd.cli import quick_guest_settings
    from vmd.cmdline import effective_raw

    parsed = parse_argv(["-M", "s390-ccw-virtio", "-nographic", "-kernel", str(CONIN)])
    assert "serial" not in effective_raw(parsed) and quick_guest_settings(effective_raw(parsed)) is not None
    parsed = parse_argv(["-M", "s390-ccw-virtio", "-nographic", "-serial", "none"])
    assert effective_raw(parsed)["serial"] == []  # given, although it adds nothing


@pytest.mark.parametrize("argv, lines", [
    (["-chardev", "stdio,id=x"], ["vmd: cannot use stdio by multiple character devices",
                                  "vmd: could not connect serial device to character backend 'mon:stdio'"]),
    (["-monitor", "stdio"], ["vmd: cannot use stdio by multiple character devices",
                             "vmd: could not connect serial device to character backend 'stdio'"]),
    (["-serial", "stdio"], ["vmd: -serial stdio: cannot use stdio by multiple character devices",
                            "vmd: -serial stdio: could not connect serial device to character backend 'stdio'"]),
    (["-chardev", "null,id=serial0"], ["vmd: Duplicate ID 'serial0' for chardev",
                                       "vmd: could not connect serial device to character backend 'mon:stdio'"]),
    (["-serial", "null", "-chardev", "null,id=compat_monitor0"],
     ["vmd: Duplicate ID 'compat_monitor0' for chardev", "vmd: parse error: stdio"]),
])
def test_default_consoles_that_cannot_be_made_fail_with_qemus_texts(argv, lines):
    with pytest.raises(CmdlineError) as exc:
        consoles_of("-nographic", *argv)
    assert exc.value.render().splitlines() == lines


# ---- against qemu-system-s390x -------------------------------------------------------------------------
VMD = [sys.executable, "-m", "vmd"]
MACHINE = ["-M", "s390-ccw-virtio"]


def run_both(qemu: str, args: list[str], tmp_path: Path, **kw) -> tuple[subprocess.CompletedProcess, ...]:
    theirs = subprocess.run([qemu, *MACHINE, *args], capture_output=True, timeout=60, cwd=tmp_path, **kw)
    ours = subprocess.run([*VMD, *MACHINE, *args, "--runtime-dir", str(tmp_path / "run")],
                          capture_output=True, timeout=60, cwd=tmp_path, **kw)
    return ours, theirs


BAD_LINES = [
    ["-chardev", "null,id=a", "-chardev", "null,id=b", "-device", "sclpconsole,chardev=a",
     "-device", "sclpconsole,chardev=b"],
    ["-device", "sclplmconsole", "-device", "sclplmconsole"],
    ["-serial", "null", "-device", "sclpconsole"],  # -serial's console comes first
    ["-device", "sclpconsole,chardev=zz"],
    ["-chardev", "null,id=a", "-device", "sclpconsole,chardev=a", "-device", "sclplmconsole,chardev=a"],
    ["-serial", "null", "-device", "sclplmconsole,chardev=serial0"],
    ["-device", "sclpconsole,bus=virtual-css"],
    ["-device", "sclpconsole,bus=s390-sclp-events-bus"],
    ["-device", "virtio-rng-ccw,bus=s390-sclp-events-bus.0"],
    ["-device", "sclplmconsole,echo=maybe"],
    ["-device", "sclplmconsole,write_errors=-1"],
    ["-device", "sclpconsole,foo=1"],
]


@pytest.mark.qemu
@pytest.mark.parametrize("args", BAD_LINES, ids=lambda a: " ".join(a))
def test_bad_console_lines_fail_as_in_qemu(qemu_binary, args, tmp_path):
    ours, theirs = run_both(qemu_binary, ["-nodefaults", "-display", "none", "-S", *args], tmp_path,
                            stdin=subprocess.DEVNULL)
    assert (ours.returncode, theirs.returncode) == (1, 1)
    assert ours.stderr.decode().replace("vmd:", "qemu-system-s390x:") == theirs.stderr.decode()


@pytest.mark.qemu
@pytest.mark.parametrize("args", [
    ["-chardev", "stdio,id=x"], ["-chardev", "stdio,id=x", "-qmp", "unix:q.sock,server=on,wait=off"],
    ["-monitor", "stdio"], ["-serial", "stdio"], ["-serial", "null", "-chardev", "stdio,id=x"],
    ["-chardev", "null,id=serial0"], ["-serial", "null", "-chardev", "null,id=compat_monitor0"],
], ids=lambda a: " ".join(a))
def test_nographic_consoles_that_cannot_be_made_fail_as_in_qemu(qemu_binary, args, tmp_path):
    """QEMU's default serial (mon:stdio, or stdio beside another monitor) and monitor under -nographic."""
    ours, theirs = run_both(qemu_binary, ["-nographic", "-S", *args], tmp_path, stdin=subprocess.DEVNULL)
    assert (ours.returncode, theirs.returncode) == (1, 1)
    assert ours.stderr.decode().replace("vmd:", "qemu-system-s390x:") == theirs.stderr.decode()


def test_a_serial_chardev_in_use_is_a_clean_error(tmp_path):
    """QEMU aborts here ("Unexpected error in qemu_chr_fe_init()"); vmd says the same and exits 1."""
    proc = subprocess.run([*VMD, *MACHINE, "-nodefaults", "-S", "-chardev", "null,id=x", "-serial", "chardev:x",
                           "-serial", "chardev:x", "--runtime-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert (proc.returncode, proc.stderr) == (1, "vmd: Device 'x' is in use\n")


def qmp_conversation(cmd: list[str], sock: Path, requests: list[dict], cwd: Path) -> dict[str, dict]:
    """Replies by request id, from a machine started with -S and a QMP socket."""
    proc = subprocess.Popen([*cmd, "-qmp", f"unix:{sock},server=on,wait=off"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd)
    try:
        wait_for_socket(sock, proc)
        client = socket.socket(socket.AF_UNIX)
        client.settimeout(20)
        client.connect(str(sock))
        stream = client.makefile("rb")
        stream.readline()
        replies = {}
        for request in [{"execute": "qmp_capabilities", "id": "caps"}, *requests]:
            client.sendall(json.dumps(request).encode() + b"\n")
            while True:
                message = json.loads(stream.readline())
                if "event" not in message:
                    replies[message["id"]] = message
                    break
        client.close()
        return replies
    finally:
        proc.kill()
        proc.communicate()


def qom_requests(path: str, props: list[str], tag: str) -> list[dict]:
    out = [{"execute": "qom-list", "arguments": {"path": path}, "id": f"{tag}.list"}]
    out += [{"execute": "qom-get", "arguments": {"path": path, "property": p}, "id": f"{tag}.{p}"} for p in props]
    return out


COMMON_PROPS = ["type", "parent_bus", "realized", "hotplugged", "hotpluggable", "chardev"]
LM_PROPS = [*COMMON_PROPS, "echo", "write_errors"]
NO_DEFAULTS = ["-nodefaults", "-display", "none", "-S"]
CONVERSATIONS = {
    # three serials with two CPUs: the consoles follow the CPUs under /machine/unattached; the third
    # serial has no console
    "serials": ([*NO_DEFAULTS, "-smp", "2", "-serial", "null", "-serial", "null", "-serial", "null"], [
        *qom_requests("/machine/unattached/device[2]", COMMON_PROPS, "vt"),
        *qom_requests("/machine/unattached/device[3]", LM_PROPS, "lm"),
        {"execute": "device_add", "arguments": {"driver": "sclplmconsole", "chardev": "nope"}, "id": "add"},
        {"execute": "device_add", "arguments": {"driver": "sclpconsole", "bus": "s390-sclp-events-bus.0"},
         "id": "add-bus"},
        {"execute": "device_del", "arguments": {"id": "/machine/unattached/device[2]"}, "id": "del"},
        {"execute": "device-list-properties", "arguments": {"typename": "sclplmconsole"}, "id": "props-lm"},
        {"execute": "device-list-properties", "arguments": {"typename": "sclpconsole"}, "id": "props-vt"},
        {"execute": "query-chardev", "id": "chardevs"},
    ]),
    "devices": ([*NO_DEFAULTS, "-chardev", "null,id=c1",
                 "-device", "sclplmconsole,id=lm,chardev=c1,echo=off,write_errors=3", "-device", "sclpconsole,id=vt"], [
        *qom_requests("/machine/peripheral/lm", LM_PROPS, "lm"),
        *qom_requests("/machine/peripheral/vt", COMMON_PROPS, "vt"),
        {"execute": "device_del", "arguments": {"id": "vt"}, "id": "del"},
        {"execute": "query-chardev", "id": "chardevs"},
    ]),
    # a multiplexed chardev is two in QEMU's list: the mux and its backend
    "mux": (["-nographic", "-S", "-nic", "none", "-serial", "mon:stdio"], [
        *qom_requests("/machine/unattached/device[1]", COMMON_PROPS, "vt"),
        {"execute": "query-chardev", "id": "chardevs"},
        {"execute": "human-monitor-command", "arguments": {"command-line": "info chardev"}, "id": "hmp"},
    ]),
}


@pytest.mark.qemu
@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_qmp_shows_the_consoles_as_qemu_does(qemu_binary, name, tmp_path):
    args, requests = CONVERSATIONS[name]
    line = [*MACHINE, *args]
    theirs = qmp_conversation([qemu_binary, *line], tmp_path / "q.sock", requests, tmp_path)
    ours = qmp_conversation([*VMD, *line, "--runtime-dir", str(tmp_path / "run")], tmp_path / "v.sock",
                            requests, tmp_path)

    def unordered(replies: dict, key: str, sock: Path) -> list[str]:
        # QEMU lists chardevs and properties in hash order
        return sorted(json.dumps(c, sort_keys=True).replace(str(sock), "SOCK") for c in replies.pop(key)["return"])

    for key in [k for k in theirs if k == "chardevs" or k.startswith("props-")]:
        assert unordered(ours, key, tmp_path / "v.sock") == unordered(theirs, key, tmp_path / "q.sock"), key
    if "hmp" in theirs:
        lines = [sorted(r.pop("hmp")["return"].replace(str(sock), "SOCK").splitlines())
                 for r, sock in ((ours, tmp_path / "v.sock"), (theirs, tmp_path / "q.sock"))]
        assert lines[0] == lines[1]
    assert ours == theirs


@pytest.mark.qemu
def test_the_mux_escape_keys_print_and_quit_as_in_qemu(qemu_binary, tmp_path):
    """-nographic's mon:stdio: C-a h lists the keys, C-a x quits (exit 0); the monitor stays silent
    while the console has the focus."""
    ours, theirs = run_both(qemu_binary, ["-nographic", "-S"], tmp_path, input=b"\x01h\x01x")
    assert (ours.returncode, theirs.returncode) == (0, 0)
    assert ours.stdout == theirs.stdout
    assert ours.stdout.startswith(b"\n\rC-a h    print this help\n\r") and ours.stdout.endswith(
        b"C-a C-a  sends C-a\n\rQEMU: Terminated\n\r")


def test_c_a_c_gives_the_monitor_the_input_and_back(tmp_path):
    proc = subprocess.run([*VMD, *MACHINE, "-nographic", "-S", "--runtime-dir", str(tmp_path)],
                          input=b"\x01cinfo status\n\x01c\x01x", capture_output=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0
    assert proc.stdout == (b"QEMU 7.2.0 monitor - type 'help' for more information\r\n(qemu) "
                           b"VM status: paused (prelaunch)\r\n(qemu) \r\nQEMU: Terminated\n\r")


def conin_vmd(args: list[str], cwd: Path, **popen) -> subprocess.Popen:
    return subprocess.Popen([*VMD, *MACHINE, *args, "-kernel", str(CONIN), "--runtime-dir", str(cwd / "run")],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.PIPE, **popen)


def conin_qemu(qemu: str, args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([qemu, *MACHINE, "-action", "panic=exit-failure", *args, "-kernel", str(CONIN)],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.PIPE)


def golden(name: str, transcript: bytes, from_qemu: bool) -> bytes:
    """guests/expected/input/<name>: QEMU's transcript (VMD_UPDATE_GOLDEN=1 rewrites it from QEMU)."""
    path = INPUT_GOLDEN / name
    if from_qemu and os.environ.get("VMD_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(transcript)
    return path.read_bytes()


VT220_ARGS = ["-nographic", "-machine", "loadparm=VT220"]


def vt220_transcript(proc: subprocess.Popen) -> bytes:
    out, err = proc.communicate(TYPED + b"\n", timeout=60)
    assert proc.returncode == 0, err.decode(errors="replace")
    return out


def test_a_line_typed_on_the_vt220_console_reaches_the_guest(tmp_path):
    """-nographic: the console on mon:stdio, the line on stdin, read as an attention says."""
    out = vt220_transcript(conin_vmd(VT220_ARGS, tmp_path))
    assert out == golden("conin-vt220.txt", out, from_qemu=False)
    assert b"vt220 line: '" + TYPED.upper() + b"' (95 bytes)\n" in out


@pytest.mark.qemu
def test_the_vt220_transcript_is_qemus(qemu_binary, tmp_path):
    theirs = vt220_transcript(conin_qemu(qemu_binary, VT220_ARGS, tmp_path))
    assert theirs == golden("conin-vt220.txt", theirs, from_qemu=True)


def first_client(path: Path, proc: subprocess.Popen) -> socket.socket:
    """Connect to a listening socket as its first client: wait_for_socket's probe would be the first
    client of a wait=on chardev, and take what the guest writes before it hangs up."""
    deadline = time.monotonic() + 30
    while True:
        client = socket.socket(socket.AF_UNIX)
        client.settimeout(60)
        try:
            client.connect(str(path))
            return client
        except (FileNotFoundError, ConnectionRefusedError):
            client.close()
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
            time.sleep(0.02)


def both_consoles(proc: subprocess.Popen, sock: Path) -> tuple[bytes, bytes]:
    """The VT220 line on stdin; the line-mode one on serial 1's socket once the guest asks for it.
    Returns (console transcript, what the line-mode console's client received)."""
    try:
        client = first_client(sock, proc)
        received = b""
        while b"TYPE A LINE" not in received:  # then the echo cannot mix with the guest's lines
            chunk = client.recv(4096)
            assert chunk, received
            received += chunk
        client.sendall(TYPED + b"\n")
        out, err = proc.communicate(b"vt220 too\n", timeout=60)
        while chunk := client.recv(4096):
            received += chunk
        client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err.decode(errors="replace")
    return out, received


def both_args(sock: Path) -> list[str]:
    return ["-nographic", "-machine", "loadparm=BOTH", "-serial", "mon:stdio",
            "-serial", f"unix:{sock},server=on,wait=on"]


def test_a_line_typed_on_the_line_mode_console_is_echoed_and_converted(tmp_path):
    sock = tmp_path / "lm.sock"
    out, received = both_consoles(conin_vmd(both_args(sock), tmp_path), sock)
    assert out == golden("conin-both.txt", out, from_qemu=False)
    assert received == golden("conin-both-lm.txt", received, from_qemu=False)
    # the echo as typed, then the guest's upper-cased line back through EBCDIC (QEMU's tables
    # make '!' a ']' on the way back, and so on)
    assert received.startswith(b"\nCONIN LINE MODE\nTYPE A LINE" + TYPED + b"\n")


@pytest.mark.qemu
def test_the_line_mode_transcripts_are_qemus(qemu_binary, tmp_path):
    sock = tmp_path / "lm.sock"
    out, received = both_consoles(conin_qemu(qemu_binary, both_args(sock), tmp_path), sock)
    assert out == golden("conin-both.txt", out, from_qemu=True)
    assert received == golden("conin-both-lm.txt", received, from_qemu=True)


# ---- a host that floods a console the guest does not read ---------------------------------------------
@pytest.mark.parametrize("serials", [["unix:{sock},server=on,wait=on"],
                                     ["null", "unix:{sock},server=on,wait=on"]], ids=["vt220", "line-mode"])
def test_a_flooding_client_is_held_back_and_the_monitor_still_answers(tmp_path, serials):
    """The idle guest never reads its consoles: vmd keeps a console's buffer and stops reading."""
    sock, qmp_path = tmp_path / "con.sock", tmp_path / "qmp.sock"
    args = ["-nodefaults", "-display", "none", "-qmp", f"unix:{qmp_path},server=on,wait=off"]
    for serial in serials:
        args += ["-serial", serial.format(sock=sock)]
    proc = subprocess.Popen([*VMD, *MACHINE, *args, "-kernel", str(IDLE_GUEST), "--runtime-dir", str(tmp_path)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        client = first_client(sock, proc)
        client.setblocking(False)
        sent, stalled_since = 0, None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                sent += client.send(b"x" * (1 << 16))
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 2:
                    break
                time.sleep(0.05)
        assert stalled_since is not None, "vmd kept reading a console nobody reads"
        assert sent < 16 << 20  # the socket buffers and the console's, nothing more
        wait_for_socket(qmp_path, proc)
        qmp = socket.socket(socket.AF_UNIX)
        qmp.settimeout(10)
        qmp.connect(str(qmp_path))
        stream = qmp.makefile("rwb")
        stream.readline()
        for command in ({"execute": "qmp_capabilities"}, {"execute": "query-status"}):
            stream.write(json.dumps(command).encode() + b"\n")
            stream.flush()
            reply = json.loads(stream.readline())
        assert reply["return"]["status"] == "running"
        qmp.close()
        client.close()
    finally:
        proc.kill()
        proc.communicate()


def test_stdin_may_be_a_file_or_dev_null(tmp_path):
    """The poller refuses regular files and /dev/null: they are read as QEMU reads them."""
    typed = tmp_path / "typed.txt"
    typed.write_bytes(TYPED + b"\n")
    with typed.open("rb") as stdin:
        proc = subprocess.run([*VMD, *MACHINE, *VT220_ARGS, "-kernel", str(CONIN), "--runtime-dir",
                               str(tmp_path / "run")], stdin=stdin, capture_output=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout == (INPUT_GOLDEN / "conin-vt220.txt").read_bytes()
    proc = subprocess.run([*VMD, *MACHINE, "-nographic", "-kernel", str(CONIN), "--runtime-dir",
                           str(tmp_path / "run")], stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout == (EXPECTED / "conin.txt").read_bytes()


def test_after_a_reset_the_line_mode_console_goes_on_taking_what_was_typed():
    port = ConsolePort(4096)
    console = LineModeConsole(port, echo=False)
    taken = []
    port.on_input = lambda: taken.append(console.absorb())
    port.host_input(b"lost\nkept\n")
    console.reset()  # "lost" was the pending line; "kept" still waits in the port
    assert taken and console.pending()
    sclp = facility(console)
    enable(sclp, OPCMD)
    assert read(sclp)[2][22:26] == "kept".encode("cp500")
