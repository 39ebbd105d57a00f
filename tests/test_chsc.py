"""CHANNEL SUBSYSTEM CALL and the channel-report machine check.

Three levels:

* ``respond()`` (vmd.cpu.chsc) against a real channel subsystem model: every
  answer the chsc guest checks under QEMU 7.2, and for any request header the
  response stays well-formed and inside the 4 KiB block (hypothesis);
* the instruction and the machine-check delivery on the CPU engine, with
  hand-encoded code (encodings checked with s390x-linux-gnu-objdump): program
  interruptions in QEMU's order for hostile lengths, misaligned blocks and
  addresses outside storage; the lowcore a machine check leaves; masking,
  priority and the floating semantics (one CPU takes it);
* the chsc guest (guests/src/chsc.c) under vmd and under qemu-system-s390x:
  the plain run against guests/expected/chsc.txt, and a run in which the test
  plugs and unplugs devices over QMP each time the guest prints a "ready:" line
  against guests/expected/hotplug/chsc.txt, the transcript QEMU gives for the
  same command line and the same QMP commands.

Regenerate the hot-plug golden file with
    VMD_UPDATE_GOLDEN=1 pytest tests/test_chsc.py -k qemu
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, require_peer
from test_guests_qemu import GUESTS as GUEST_ARGS
from vmd.cpu import arch, libunicorn
from vmd.cpu.chsc import (
    CHSC_SCPD,
    CHSC_SCSC,
    CHSC_SDA,
    CHSC_SEI,
    CHSC_SSD,
    MAX_REQUEST,
    MIN_REQUEST,
    RC_DONE,
    RC_INVALID_CSS,
    RC_INVALID_FORMAT,
    RC_INVALID_REQUEST,
    RC_NO_EVENT,
    RC_NOT_SUPPORTED,
    MachineCheckLine,
    respond,
)
from vmd.events import EventBus
from vmd.machine.machine import Machine

GUEST = ROOT / "guests" / "bin" / "chsc.elf"
EXPECTED = ROOT / "guests" / "expected" / "chsc.txt"
EXPECTED_HOTPLUG = ROOT / "guests" / "expected" / "hotplug" / "chsc.txt"
TIMEOUT = 90


def css_with_devices():
    """The chsc guest's devices: fe.0 (auto), fe.1.0042, 2.0.0007; all on virtio CHPID 00."""
    machine = Machine(EventBus())
    machine.add_device("virtio-rng-ccw", None, None, {})
    machine.add_device("virtio-rng-ccw", None, None, {"devno": "fe.1.0042"})
    machine.add_device("virtio-rng-ccw", None, None, {"devno": "2.0.0007"})
    return machine.css


def header(length: int, command: int, p0: int = 0, p1: int = 0, p2: int = 0) -> bytes:
    return struct.pack(">HHIII", length, command, p0, p1, p2)


def parse(response: bytes) -> tuple[int, int, int, bytes]:
    length, code, param = struct.unpack_from(">HHI", response)
    assert length == len(response)
    return length, code, param, response[8:]


# -- respond(): the answers QEMU 7.2 gives (guests/expected/chsc.txt) ----------------------------
@pytest.mark.parametrize("length, command, p0, p1, p2, code, param", [
    (0x18, CHSC_SCSC, 0, 0, 0, RC_INVALID_REQUEST, 0),
    (16, CHSC_SCSC, 0x00010000, 0, 0, RC_INVALID_FORMAT, 0),
    (16, CHSC_SCSC, 0x00000001, 0, 0, RC_INVALID_REQUEST, 0),
    (16, CHSC_SCSC, 0, 1, 0, RC_INVALID_REQUEST, 0),
    (16, CHSC_SCSC, 0x00000200, 0, 0, RC_INVALID_CSS, 0),
    (16, CHSC_SCSC, 0x20000500, 0, 0, RC_INVALID_CSS, 0),
    (4088, CHSC_SCSC, 0, 0, 0, RC_INVALID_REQUEST, 0),
    (0x18, CHSC_SCPD, 0, 0xFF, 0, RC_INVALID_REQUEST, 0),
    (16, CHSC_SCPD, 0x80000000, 0xFF, 0, RC_INVALID_REQUEST, 0),
    (16, CHSC_SCPD, 0, 0x1FF, 0, RC_INVALID_REQUEST, 0),
    (16, CHSC_SCPD, 0, 0xFF, 4, RC_INVALID_REQUEST, 0),
    (16, CHSC_SCPD, 0x02000000, 0xFF, 0, RC_INVALID_FORMAT, 0),
    (16, CHSC_SCPD, 0x00000005, 0x04, 0, RC_INVALID_REQUEST, 0),
    (16, CHSC_SCPD, 0x00020000, 0xFF, 0, RC_INVALID_CSS, 0),
    (16, CHSC_SCPD, 0x20070000, 0xFF, 0, RC_INVALID_CSS, 0),
    (16, CHSC_SCPD, 0x10020000, 0xFF, 0, RC_INVALID_CSS, 1),  # the response format even in an error
    (16, CHSC_SDA, 0x00000002, 0, 0, RC_INVALID_REQUEST, 0),
    (0x400, CHSC_SDA, 0x01000002, 0, 0, RC_INVALID_FORMAT, 0),
    (0x400, CHSC_SDA, 0x00010002, 0, 0, RC_INVALID_REQUEST, 0),
    (0x400, CHSC_SDA, 0x00000001, 0, 0, RC_INVALID_REQUEST, 0),
    (0x400, CHSC_SDA, 0x00000003, 0, 0, RC_INVALID_REQUEST, 0),
    (16, CHSC_SSD, 0, 0, 0, RC_NOT_SUPPORTED, 0),
    (16, CHSC_SEI, 0, 0xFFFFFFFF, 0xFFFFFFFF, RC_NO_EVENT, 0),
    (4088, CHSC_SEI, 0, 0, 0, RC_NO_EVENT, 0),
    (16, 0x0000, 0, 0, 0, RC_NOT_SUPPORTED, 0),
    (16, 0xFFFF, 0, 0, 0, RC_NOT_SUPPORTED, 0),
])
def test_answers_without_data(length, command, p0, p1, p2, code, param):
    css = css_with_devices()
    assert parse(respond(css, header(length, command, p0, p1, p2))) == (8, code, param, b"")
    assert not css.mcsse_enabled and not css.mss_enabled


def test_store_characteristics_is_qemus_fixed_answer():
    css = css_with_devices()
    length, code, param, data = parse(respond(css, header(16, CHSC_SCSC)))
    assert (length, code, param) == (4080, RC_DONE, 0)
    words = struct.unpack(">1018I", data)
    assert {i: w for i, w in enumerate(words) if w} == {
        0: 0x03000000, 1: 0x00079000, 3: 0x00080000,  # general characteristics
        510: 0x40000000, 513: 0x00040000}              # CHSC characteristics
    # another image needs the M bit and must exist
    assert parse(respond(css, header(16, CHSC_SCSC, 0x20000200)))[1] == RC_DONE
    assert parse(respond(css, header(16, CHSC_SCSC, 0x2000FE00)))[1] == RC_DONE


@pytest.mark.parametrize("p0, first, last, rfmt, descriptors", [
    (0x00000000, 0x00, 0xFF, 0, [0x80003200]),
    (0x10000000, 0x00, 0xFF, 1, [0x80003200]),   # the C bit: format 1
    (0x00000100, 0x00, 0xFF, 0, [0x80003200]),   # rfmt 1 without C: format 0 (QEMU)
    (0x00000200, 0x00, 0xFF, 2, []),             # another format: no descriptors, still done
    (0x00000000, 0x01, 0xFF, 0, []),
    (0x00000000, 0x00, 0x00, 0, [0x80003200]),
    (0x20020000, 0x00, 0xFF, 0, [0x80003200]),   # image 2 with M
    (0x20FE0000, 0x00, 0xFF, 0, [0x80003200]),
    (0x20000000, 0x00, 0xFF, 0, []),             # M and image 0: there is none, no check
])
def test_channel_path_descriptions(p0, first, last, rfmt, descriptors):
    css = css_with_devices()
    length, code, param, data = parse(respond(css, header(16, CHSC_SCPD, p0 | first, last)))
    assert (code, param) == (RC_DONE, rfmt)
    size = 32 if rfmt == 1 else 8
    found = [struct.unpack_from(">I", data, i)[0] for i in range(0, len(data), size)]
    assert found == descriptors
    assert data.replace(b"\x80\x00\x32\x00", b"", len(descriptors)) == bytes(len(data) - 4 * len(descriptors))


def test_descriptions_follow_the_defined_chpids():
    """A 3270-type CHPID of another image; CHPIDs stay defined when the device goes (QEMU)."""
    machine = Machine(EventBus())
    css = machine.css
    owner = object()
    sch = css.assign(owner, None, 0x1A, hotplugged=False)
    assert (sch.cssid, sch.chpid) == (0xFE, 0x01)
    data = parse(respond(css, header(16, CHSC_SCPD, 0, 0xFF)))[3]
    assert data == struct.pack(">II", 0x80001A01, 0)
    css.release(sch, notify=False)
    assert parse(respond(css, header(16, CHSC_SCPD, 0, 0xFF)))[3] == data


def test_set_domain_attributes_enables_mcsse_and_mss():
    css = css_with_devices()
    assert parse(respond(css, header(0x400, CHSC_SDA, 0)))[:3] == (8, RC_DONE, 0)
    assert css.mcsse_enabled and not css.mss_enabled
    assert parse(respond(css, header(0x400, CHSC_SDA, 2)))[:3] == (8, RC_DONE, 0)
    assert css.mss_enabled
    assert parse(respond(css, header(0x400, CHSC_SDA, 2)))[1] == RC_DONE  # again: still done


request_headers = st.builds(
    header,
    st.integers(MIN_REQUEST // 8, MAX_REQUEST // 8).map(lambda n: n * 8),
    st.one_of(st.sampled_from([CHSC_SCPD, CHSC_SSD, CHSC_SEI, CHSC_SCSC, CHSC_SDA]), st.integers(0, 0xFFFF)),
    st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=request_headers)
def test_any_request_gets_a_well_formed_answer_inside_the_block(request):
    css = css_with_devices()
    response = respond(css, request)
    length, code, param, data = parse(response)
    assert code in {RC_DONE, RC_INVALID_REQUEST, RC_NOT_SUPPORTED, RC_NO_EVENT, RC_INVALID_FORMAT,
                    RC_INVALID_CSS}
    assert struct.unpack_from(">H", request)[0] + length <= 4096
    assert length == 8 or code == RC_DONE


# -- the instruction and machine checks on the engine --------------------------------------------
engine_required = pytest.mark.skipif(not libunicorn.is_patched(),
                                     reason="the patched libunicorn is not built (scripts/build-libunicorn)")

MEMORY = 4 << 20
CODE = 0x10000
BLOCK = 0x30000
WAIT_PSW_AT = 0x9000
PSW_64 = arch.PSW_64BIT
ENABLED_WAIT = PSW_64 | arch.PSW_WAIT | arch.PSW_EXT
CHSC_R2 = "b25f0020"    # chsc %r2,%r0
IPM_R5 = "b2220050"     # ipm %r5
LPSWE_R6 = "b2b26000"   # lpswe 0(%r6)
NO_CC = 0xFF


class Cpus:
    """One or two Vcpus on one engine, with the channel subsystem of the chsc guest."""

    def __init__(self, n: int = 1):
        import vmd.cpu.channel_io  # noqa: F401  (STCRW, for completeness of the I/O instructions)
        import vmd.cpu.chsc  # noqa: F401  (registers CHSC)
        from vmd.cpu.unicorn_engine import UnicornEngine
        from vmd.cpu.vcpu import MachineHooks, Vcpu
        from vmd.machine.channel import ChannelSubsystemIO
        from vmd.machine.execution import DEFAULT_FACILITIES
        from vmd.machine.memory import GuestMemory

        self.memory = GuestMemory(MEMORY)
        self.engine = UnicornEngine(self.memory)
        self.engine.set_facilities(DEFAULT_FACILITIES)
        self.css = css_with_devices()
        self.io = ChannelSubsystemIO(self.css, self.memory)
        self.line = MachineCheckLine()
        self.cpus = []
        hooks = MachineHooks(service_call=lambda cpu, command, sccb: 0,
                             disabled_wait=lambda cpu, mask, addr: None,
                             stop_all=lambda cpu: None, cpus=self.cpus)
        for address in range(n):
            regs = self.engine.add_cpu()
            cpu = Vcpu(address, regs, self.memory, hooks, facilities=DEFAULT_FACILITIES)
            regs.on_trap = cpu.on_trap
            cpu.reset()
            cpu.io = self.io
            cpu.machine_checks = self.line
            self.cpus.append(cpu)
        self.memory.write(WAIT_PSW_AT, struct.pack(">QQ", ENABLED_WAIT, 0))
        # a program interruption ends the run in an enabled wait
        self.memory.write(arch.LC_PGM_NEW_PSW, struct.pack(">QQ", ENABLED_WAIT, 0))

    def chsc(self, address: int, problem_state: bool = False) -> tuple[int, int | None]:
        """CHSC on the block at ``address``: (cc, None) or (NO_CC, program interruption code)."""
        cpu = self.cpus[0]
        self.memory.write(CODE, bytes.fromhex(CHSC_R2 + IPM_R5 + LPSWE_R6))
        self.memory.write(arch.LC_PGM_CODE, b"\0\0")
        cpu.engine.set_gpr(2, address)
        cpu.engine.set_gpr(5, 0xFFFFFFFF)
        cpu.engine.set_gpr(6, WAIT_PSW_AT)
        cpu.operating = True
        cpu.load_psw(PSW_64 | (arch.PSW_PROBLEM if problem_state else 0), CODE)
        cpu.engine.run(2_000_000)
        assert cpu.waiting
        code = self.memory.u16(arch.LC_PGM_CODE)
        if code:
            old_addr = self.memory.u64(arch.LC_PGM_OLD_PSW + 8)
            assert old_addr == CODE + 4  # suppressed or completed: past the instruction
            return NO_CC, code
        return (cpu.engine.gpr(5) >> 28) & 3, None

    def write_request(self, address: int, length: int, command: int, p0: int = 0) -> None:
        self.memory.write(address, header(length, command, p0).ljust(4096, b"\0"))

    def close(self) -> None:
        self.engine.close()


@pytest.fixture
def cpus():
    machine = Cpus(1)
    yield machine
    machine.close()


@engine_required
def test_chsc_stores_the_response_after_the_request(cpus):
    cpus.write_request(BLOCK, 16, CHSC_SCPD, 0x10000000)
    cpus.memory.write(BLOCK + 8, struct.pack(">I", 0xFF))
    assert cpus.chsc(BLOCK) == (0, None)
    length, code, param = struct.unpack(">HHI", cpus.memory.read(BLOCK + 16, 8))
    assert (length, code, param) == (40, RC_DONE, 1)
    assert cpus.memory.u32(BLOCK + 24) == 0x80003200
    # set domain attributes reaches the channel subsystem the CPU's I/O side serves
    cpus.write_request(BLOCK, 0x400, CHSC_SDA, 2)
    assert cpus.chsc(BLOCK) == (0, None) and cpus.css.mss_enabled


@engine_required
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(length=st.one_of(st.integers(0, 0xFFFF),
                        st.sampled_from([0, 8, 15, 16, 20, 4088, 4090, 4096, 0xFFF8])))
def test_hostile_lengths_are_operand_exceptions(cpus, length):
    cpus.write_request(BLOCK, length, CHSC_SEI)
    cc, code = cpus.chsc(BLOCK)
    if MIN_REQUEST <= length <= MAX_REQUEST and length % 8 == 0:
        assert (cc, code) == (0, None)
        assert cpus.memory.read(BLOCK + length, 4) == struct.pack(">HH", 8, RC_NO_EVENT)
    else:
        assert (cc, code) == (NO_CC, arch.PGM_OPERAND)


@engine_required
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(address=st.one_of(st.integers(MEMORY >> 12, (1 << 52) - 1).map(lambda page: page << 12),
                         st.integers(0, (1 << 64) - 1)))
def test_blocks_outside_storage_or_off_a_page_boundary_are_program_checks(cpus, address):
    cc, code = cpus.chsc(address)
    if address % 4096:
        assert code == arch.PGM_SPECIFICATION
    elif address >= MEMORY:
        assert code == arch.PGM_ADDRESSING
    else:
        assert cc == 0 or code == arch.PGM_OPERAND  # whatever storage holds there


@engine_required
def test_privileged_and_low_address_protection(cpus):
    cpus.write_request(BLOCK, 16, CHSC_SCSC)
    assert cpus.chsc(BLOCK, problem_state=True) == (NO_CC, arch.PGM_PRIVILEGED)
    assert cpus.memory.u32(BLOCK + 16) == 0  # nothing was answered
    # the response would start inside the protected 512 bytes of page 1
    cpus.write_request(0x1000, 16, CHSC_SCSC)
    cpu = cpus.cpus[0]
    cpu.engine.set_cr(0, cpu.engine.cr(0) | arch.bit64(35))
    assert cpus.chsc(0x1000) == (NO_CC, arch.PGM_PROTECTION)
    assert cpus.memory.u32(0x1010) == 0
    # a 0x200-byte request puts the response at 0x1200, outside the protected range
    cpus.write_request(0x1000, 0x200, CHSC_SEI)
    assert cpus.chsc(0x1000) == (0, None)


def setup_machine_check(cpus, cpu, enabled: bool = True, cr14: bool = True):
    cpu.operating = True
    cpu.load_psw(PSW_64 | (arch.PSW_MCHK if enabled else 0), 0x12340)
    cr14_value = cpu.engine.cr(14)
    cpu.engine.set_cr(14, (cr14_value | arch.CR14_CHANNEL_REPORT) if cr14 else
                      (cr14_value & ~arch.CR14_CHANNEL_REPORT))
    cpus.memory.write(cpu.prefix + arch.LC_MCCK_NEW_PSW, struct.pack(">QQ", PSW_64, 0x20000))


@engine_required
def test_machine_check_lowcore(cpus):
    cpu = cpus.cpus[0]
    setup_machine_check(cpus, cpu)
    engine = cpu.engine
    for n in range(16):
        engine.set_gpr(n, 0x1111_0000_0000_0000 + n)
        engine.set_fpr(n, 0x2222_0000_0000_0000 + n)
        engine.set_ar(n, 0x3333_0000 + n)
    for n in range(32):
        engine.set_vr(n, (0x4444 << 112) | n)
    cpu.clock_comparator = 0x0123_4567_89AB_CDEF
    extended = 0x40000
    cpus.memory.write(extended, b"\xee" * 1024)
    cpus.memory.put_u64(0x11B0, extended | 0x5)  # the low bits are not part of the address
    cpus.memory.write(0x1300, b"\xaa" * 16)       # the PSW save area is not stored
    cpus.line.raise_channel_report()
    assert cpu.deliver_pending()
    mem = cpus.memory
    assert mem.u64(arch.LC_MCCK_CODE) == 0x00400F5D40330000
    assert struct.unpack(">QQ", mem.read(arch.LC_MCCK_OLD_PSW, 16)) == (PSW_64 | arch.PSW_MCHK, 0x12340)
    assert cpu.psw() == (PSW_64, 0x20000)
    assert mem.u8(arch.LC_AR_MODE_ID) == 1
    assert struct.unpack(">16Q", mem.read(arch.LC_GPR_SAVE, 128)) == tuple(0x1111_0000_0000_0000 + n
                                                                           for n in range(16))
    # the floating-point registers are the vector registers' left halves
    assert struct.unpack(">16Q", mem.read(arch.LC_FLOAT_SAVE, 128)) == (0x4444 << 48,) * 16
    assert struct.unpack(">16I", mem.read(arch.LC_ACCESS_SAVE, 64)) == tuple(0x3333_0000 + n for n in range(16))
    assert struct.unpack(">16Q", mem.read(arch.LC_CREGS_SAVE, 128)) == tuple(engine.cr(n) for n in range(16))
    assert mem.u64(arch.LC_CLOCK_COMP_SAVE) == 0x0123_4567_89AB_CDEF >> 8
    assert struct.unpack(">II", mem.read(arch.LC_PREFIX_SAVE, 8)) == (0, engine.fpc())
    assert mem.read(0x1300, 16) == b"\xaa" * 16
    assert mem.read(extended, 512) == b"".join(((0x4444 << 112) | n).to_bytes(16, "big") for n in range(32))
    assert mem.read(extended + 512, 512) == b"\xee" * 512
    assert not cpus.line.pending


@engine_required
def test_machine_check_extended_save_area_designation(cpus):
    """No MCESAD: no vector validity; one outside storage: valid (QEMU), nothing stored."""
    cpu = cpus.cpus[0]
    for mcesad, mcic in ((0, 0x00400F1D40330000), (1 << 40, 0x00400F5D40330000), (0x3FF, 0x00400F1D40330000)):
        setup_machine_check(cpus, cpu)
        cpus.memory.put_u64(0x11B0, mcesad)
        cpus.line.raise_channel_report()
        assert cpu.deliver_pending()
        assert cpus.memory.u64(arch.LC_MCCK_CODE) == mcic


@engine_required
@pytest.mark.parametrize("enabled, cr14", [(False, True), (True, False)])
def test_machine_check_stays_pending_while_masked(cpus, enabled, cr14):
    cpu = cpus.cpus[0]
    setup_machine_check(cpus, cpu, enabled=enabled, cr14=cr14)
    cpus.line.raise_channel_report()
    assert not cpu.deliver_pending()
    assert cpus.line.pending and cpu.psw()[1] == 0x12340
    setup_machine_check(cpus, cpu)
    assert cpu.deliver_pending() and cpu.psw()[1] == 0x20000


@engine_required
def test_machine_check_comes_before_external_and_io():
    from vmd.cpu.vcpu import PendingExternal

    machine = Cpus(1)
    try:
        cpu = machine.cpus[0]
        setup_machine_check(machine, cpu)
        cpu.load_psw(PSW_64 | arch.PSW_MCHK | arch.PSW_EXT, 0x12340)
        cpu.engine.set_cr(0, cpu.engine.cr(0) | arch.CR0_SERVICE_SIGNAL)
        cpu.external.append(PendingExternal(arch.EXT_SERVICE_SIGNAL, 0x1234))
        machine.memory.write(arch.LC_EXT_NEW_PSW, struct.pack(">QQ", PSW_64, 0x30000))
        machine.line.raise_channel_report()
        # the machine-check new PSW disables everything: the external interruption waits
        assert cpu.deliver_pending()
        assert cpu.psw() == (PSW_64, 0x20000) and len(cpu.external) == 1
    finally:
        machine.close()


@engine_required
def test_one_cpu_takes_the_floating_machine_check():
    machine = Cpus(2)
    try:
        first, second = machine.cpus
        setup_machine_check(machine, second)
        setup_machine_check(machine, first, enabled=False)
        machine.line.raise_channel_report()
        assert not first.deliver_pending()   # masked: the other CPU may take it
        assert second.deliver_pending()
        setup_machine_check(machine, first)
        assert not first.deliver_pending()   # taken already
    finally:
        machine.close()


@engine_required
def test_a_pending_machine_check_ends_the_slice_when_enabled(cpus):
    """LPSWE enabling the machine-check mask leaves the engine so that the runner delivers it."""
    cpu = cpus.cpus[0]
    setup_machine_check(cpus, cpu, enabled=False)
    cpus.memory.write(0x9100, struct.pack(">QQ", PSW_64 | arch.PSW_MCHK, CODE + 4))
    # lpswe 0(%r7) to the next instruction with M on, then a loop that never ends by itself
    cpus.memory.write(CODE, bytes.fromhex("b2b27000" "a7f40000"))
    cpu.engine.set_gpr(7, 0x9100)
    cpus.line.raise_channel_report()
    cpu.load_psw(PSW_64, CODE)
    started = time.monotonic()
    cpu.engine.run(2_000_000)
    assert time.monotonic() - started < 1.0
    assert cpu.deliver_pending() and cpu.psw() == (PSW_64, 0x20000)


# -- the chsc guest under vmd and QEMU ------------------------------------------------------------
#: the QMP commands the test sends when the guest prints each "ready:" line
HOTPLUG: dict[str, list[tuple[str, dict]]] = {
    # a device in subchannel set 2 is invisible without MSS: no CRW; the other one gives one CRW
    "ready: plug 1": [("device_add", {"driver": "virtio-rng-ccw", "id": "hidden", "devno": "fe.2.0200"}),
                      ("device_add", {"driver": "virtio-rng-ccw", "id": "hp1", "devno": "fe.0.0100"})],
    "ready: unplug 1": [("device_del", {"id": "hidden"}), ("device_del", {"id": "hp1"})],
    "ready: plug 2": [("device_add", {"driver": "virtio-rng-ccw", "id": "hp2", "devno": "fe.1.0100"})],
    "ready: unplug 2": [("device_del", {"id": "hp2"})],
    "ready: plug 3": [("device_add", {"driver": "virtio-rng-ccw", "id": "hp3", "devno": "2.0.0100"})],
    "ready: unplug 3": [("device_del", {"id": "hp3"})],
}


def vmd_command(tmp_path: Path) -> list[str]:
    return [sys.executable, "-m", "vmd", "-M", "s390-ccw-virtio", "-nographic", "-nodefaults",
            *GUEST_ARGS["chsc"], "-kernel", str(GUEST), "--runtime-dir", str(tmp_path / "run")]


def qemu_command(qemu: str) -> list[str]:
    return [qemu, "-M", "s390-ccw-virtio", "-nographic", "-action", "panic=exit-failure",
            *GUEST_ARGS["chsc"], "-kernel", str(GUEST)]


def run_with_hotplug(command: list[str], tmp_path: Path) -> tuple[bytes, int, list[str]]:
    """Run the guest; on each "ready:" line send that step's QMP commands.  Returns the console
    transcript, the exit status and the steps carried out."""
    sock_path = tmp_path / "qmp.sock"
    proc = subprocess.Popen([*command, "-qmp", f"unix:{sock_path},server=on,wait=off"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=tmp_path)
    watchdog = threading.Timer(TIMEOUT, proc.kill)
    watchdog.start()
    try:
        deadline = time.monotonic() + 30
        sock = socket.socket(socket.AF_UNIX)
        while True:
            try:
                sock.connect(str(sock_path))
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"no QMP socket: {proc.stderr.read().decode(errors='replace')}")
                time.sleep(0.02)
        sock.settimeout(TIMEOUT)
        replies = sock.makefile("rb")
        replies.readline()  # greeting

        def call(name: str, arguments: dict | None = None) -> dict:
            message = {"execute": name, **({"arguments": arguments} if arguments else {})}
            sock.sendall(json.dumps(message).encode() + b"\n")
            while True:
                reply = json.loads(replies.readline())
                if "event" not in reply:
                    return reply

        assert call("qmp_capabilities") == {"return": {}}
        transcript = b""
        steps = []
        for line in proc.stdout:
            transcript += line
            step = line.decode(errors="replace").rstrip("\n")
            if step in HOTPLUG:
                steps.append(step)
                for name, arguments in HOTPLUG[step]:
                    assert call(name, arguments) == {"return": {}}, (step, name, arguments)
        sock.close()
        return transcript, proc.wait(TIMEOUT), steps
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_guest_plain_run_matches_qemu(tmp_path):
    """Nobody plugs anything: the guest's first wait ends after 5 s, the rest is skipped."""
    proc = subprocess.run(vmd_command(tmp_path), stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=TIMEOUT, cwd=ROOT)
    assert proc.stdout.decode(errors="replace") == EXPECTED.read_text()
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")


def test_guest_hotplug_run_matches_qemu(tmp_path):
    transcript, returncode, steps = run_with_hotplug(vmd_command(tmp_path), tmp_path)
    assert transcript.decode(errors="replace") == EXPECTED_HOTPLUG.read_text()
    assert steps == list(HOTPLUG)
    assert returncode == 0


@pytest.mark.qemu
def test_qemu_hotplug_run_matches_golden(tmp_path):
    qemu = require_peer("qemu-system-s390x")
    transcript, returncode, steps = run_with_hotplug(qemu_command(qemu), tmp_path)
    if os.environ.get("VMD_UPDATE_GOLDEN") == "1" and returncode == 0:
        EXPECTED_HOTPLUG.parent.mkdir(exist_ok=True)
        EXPECTED_HOTPLUG.write_bytes(transcript)
    assert returncode == 0
    assert steps == list(HOTPLUG)
    assert transcript == EXPECTED_HOTPLUG.read_bytes()
    assert b"FAIL" not in transcript
