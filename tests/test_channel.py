"""Channel programs against devices, without a CPU: SCHIB, ORB, CCWs, status, interruptions."""

from __future__ import annotations

import struct

import pytest

from vmd.events import EventBus
from vmd.machine.channel import (
    CCW_CC,
    CCW_CD,
    CCW_IDA,
    CCW_SKIP,
    CCW_SLI,
    DEV_CHANNEL_END,
    DEV_DEVICE_END,
    DEV_UNIT_CHECK,
    PMCW_ENABLED,
    SCH_INCORRECT_LENGTH,
    SCH_PROGRAM_CHECK,
    ChannelSubsystemIO,
)
from vmd.machine.machine import Machine
from vmd.machine.memory import GuestMemory

PROG = 0x8000
DATA = 0x9000


@pytest.fixture
def setup():
    machine = Machine(EventBus())
    rng = machine.add_device("virtio-rng-ccw", "rng", None, {"devno": "fe.0.0042"})
    memory = GuestMemory(1 << 20)
    io = ChannelSubsystemIO(machine.css, memory)
    sch = rng.subchannel
    return io, sch, memory


def enable(io, sch, isc=3, intparm=0x12345678):
    schib = bytearray(io.store_schib(sch))
    struct.pack_into(">IH", schib, 0, intparm, PMCW_ENABLED | (isc << 11))
    assert io.modify(sch, bytes(schib)) == 0


def ccw1(cmd, flags, count, addr):
    return struct.pack(">BBHI", cmd, flags, count, addr)


def orb(cpa, intparm=0xCAFE, fmt1=True, idaw2=False):
    """ORB word 1: bit 8 format-1 CCWs, bit 14 format-2 IDAWs, LPM 0x80."""
    word1 = (0x00800000 if fmt1 else 0) | (0x00020000 if idaw2 else 0) | 0x8000
    return struct.pack(">III", intparm, word1, cpa) + bytes(20)


def scsw(irb):
    flags, ctrl, cpa, dstat, cstat, count = struct.unpack_from(">HHIBBH", irb, 0)
    return ctrl, cpa, dstat, cstat, count


def test_schib_identity_and_enable(setup):
    io, sch, _ = setup
    schib = io.store_schib(sch)
    assert len(schib) == 52
    devno = struct.unpack_from(">H", schib, 6)[0]
    assert devno == 0x0042 and schib[8 + 8] == 0x00  # CHPID 00
    assert io.start(sch, orb(PROG)) == 3  # not enabled
    enable(io, sch)
    flags = struct.unpack_from(">H", io.store_schib(sch), 4)[0]
    assert flags & PMCW_ENABLED and (flags >> 11) & 7 == 3


def test_sense_id_reports_the_virtio_identity(setup):
    io, sch, memory = setup
    enable(io, sch)
    memory.write(PROG, ccw1(0xE4, CCW_SLI, 7, DATA))
    assert io.start(sch, orb(PROG)) == 0
    item = io.take(0x10000000)  # CR6 enables ISC 3
    assert item.intparm == 0xCAFE and item.sid == 0x00010000
    assert io.start(sch, orb(PROG)) == 1  # status pending
    cc, irb = io.test(sch)
    ctrl, cpa, dstat, cstat, count = scsw(irb)
    assert cc == 0 and dstat == DEV_CHANNEL_END | DEV_DEVICE_END and cstat == 0 and count == 0
    assert cpa == PROG + 8 and ctrl & 0x0001
    assert memory.read(DATA, 7) == bytes([0xFF, 0x38, 0x32, 0x04, 0, 0, 0])
    assert io.test(sch)[0] == 1  # nothing pending any more


def test_incorrect_length_without_sli(setup):
    io, sch, memory = setup
    enable(io, sch)
    memory.write(PROG, ccw1(0xE4, 0, 300, DATA))
    io.start(sch, orb(PROG))
    _, irb = io.test(sch)
    _, _, _, cstat, count = scsw(irb)
    assert cstat & SCH_INCORRECT_LENGTH and count == 300 - 256


def test_command_chaining_tic_and_data_chaining(setup):
    io, sch, memory = setup
    enable(io, sch)
    memory.write(PROG, ccw1(0x03, CCW_CC, 1, 0) + ccw1(0x08, 0, 0, PROG + 0x40))
    memory.write(PROG + 0x40, ccw1(0xE4, CCW_CD, 2, DATA) + ccw1(0xE4, CCW_SLI, 5, DATA + 0x100))
    io.start(sch, orb(PROG))
    _, irb = io.test(sch)
    _, cpa, dstat, cstat, count = scsw(irb)
    assert cstat == 0 and dstat == 0x0C and cpa == PROG + 0x50
    assert memory.read(DATA, 2) == b"\xff\x38" and memory.read(DATA + 0x100, 5) == bytes([0x32, 0x04, 0, 0, 0])


def test_idaws_scatter_the_data(setup):
    io, sch, memory = setup
    enable(io, sch)
    idaws = struct.pack(">II", 0xA7FE, 0xB000)  # 2 bytes before a 2 KiB boundary, then the next block
    memory.write(DATA, idaws)
    memory.write(PROG, ccw1(0xE4, CCW_IDA | CCW_SLI, 4, DATA))
    io.start(sch, orb(PROG))
    _, irb = io.test(sch)
    assert scsw(irb)[3] == 0
    assert memory.read(0xA7FE, 2) == b"\xff\x38" and memory.read(0xB000, 2) == b"\x32\x04"


def test_format0_ccws(setup):
    io, sch, memory = setup
    enable(io, sch)
    memory.write(PROG, bytes([0xE4]) + DATA.to_bytes(3, "big") + bytes([CCW_SLI, 0]) + (7).to_bytes(2, "big"))
    io.start(sch, orb(PROG, fmt1=False))
    assert scsw(io.test(sch)[1])[3] == 0 and memory.read(DATA, 4) == bytes([0xFF, 0x38, 0x32, 0x04])


def test_skip_transfers_nothing(setup):
    io, sch, memory = setup
    enable(io, sch)
    memory.write(DATA, b"\xaa" * 8)
    memory.write(PROG, ccw1(0xE4, CCW_SKIP | CCW_SLI, 8, DATA))
    io.start(sch, orb(PROG))
    assert scsw(io.test(sch)[1])[3] == 0 and memory.read(DATA, 8) == b"\xaa" * 8


@pytest.mark.parametrize("program", [
    ccw1(0xE4, CCW_SLI, 8, 0x7FFF0000),  # data outside storage
    ccw1(0x08, 0, 0, PROG + 4),  # TIC to an unaligned address
    ccw1(0x08, 0, 0, PROG + 8) + ccw1(0x08, 0, 0, PROG),  # TIC to TIC
    ccw1(0x00, CCW_SLI, 8, DATA),  # a command code ending in 0 is invalid
    ccw1(0x10, CCW_SLI, 8, DATA),
])
def test_bad_ccws_are_channel_program_checks(setup, program):
    io, sch, memory = setup
    enable(io, sch)
    memory.write(PROG, program)
    assert io.start(sch, orb(PROG)) == 0
    ctrl, _, _, cstat, _ = scsw(io.test(sch)[1])
    assert cstat & SCH_PROGRAM_CHECK and ctrl & 0x0010  # alert status


def test_unknown_command_is_a_unit_check_with_command_reject_in_the_sense_bytes(setup):
    io, sch, memory = setup
    enable(io, sch)
    memory.write(PROG, ccw1(0x77, CCW_SLI, 4, DATA) + ccw1(0x04, CCW_SLI, 32, DATA))
    io.start(sch, orb(PROG))
    _, irb = io.test(sch)
    # no concurrent sense on virtual subchannels: the ECW stays zero, the SENSE command has the byte
    assert scsw(irb)[2] & DEV_UNIT_CHECK and irb[32] == 0
    memory.write(PROG, ccw1(0x04, CCW_SLI, 32, DATA))
    io.start(sch, orb(PROG))
    io.test(sch)
    assert memory.u8(DATA) == 0x80


def test_isc_masking_and_clear(setup):
    io, sch, memory = setup
    enable(io, sch, isc=5)
    memory.write(PROG, ccw1(0x03, 0, 1, 0))
    io.start(sch, orb(PROG))
    assert io.take(0x80000000) is None  # only ISC 0 enabled
    assert io.take(0x80000000 >> 5) is not None
    io.test(sch)
    assert io.clear(sch) == 0
    ctrl = scsw(io.test(sch)[1])[0]
    assert ctrl & 0x1000  # clear function
