"""The SCLP on guest storage, without a CPU: SCCBs in, responses and console bytes out."""

from __future__ import annotations

import struct

import pytest

from vmd.machine.memory import GuestMemory
from vmd.machine.sclp import (
    CMD_READ_CPU_INFO,
    CMD_READ_EVENT_DATA,
    CMD_READ_SCP_INFO,
    CMD_WRITE_EVENT_DATA,
    CMD_WRITE_EVENT_MASK,
    PGM_ADDRESSING,
    PGM_SPECIFICATION,
    Sclp,
    SclpConfig,
    ServiceCallException,
    event_mask_bit,
)

SCCB = 0x10000


@pytest.fixture
def sclp():
    memory = GuestMemory(16 << 20)
    out: list[bytes] = []
    s = Sclp(memory, SclpConfig(memory_size=16 << 20, cpu_count=2), console_output=out.append)
    s.out = out
    return s


def put_sccb(sclp, body: bytes, length: int | None = None, function: int = 0) -> None:
    length = length if length is not None else 8 + len(body)
    sclp.memory.write(SCCB, struct.pack(">HB3sH", length, function, bytes(3), 0) + body)


def rc(sclp) -> int:
    return sclp.memory.u16(SCCB + 6)


def test_read_scp_info_reports_memory_and_cpus(sclp):
    put_sccb(sclp, bytes(4088), length=4096)
    param = sclp.service_call(CMD_READ_SCP_INFO, SCCB)
    assert param == SCCB and rc(sclp) == 0x0010
    rnmax, rnsize = struct.unpack(">HB", sclp.memory.read(SCCB + 8, 3))
    assert rnmax * rnsize == 16
    assert struct.unpack(">HH", sclp.memory.read(SCCB + 16, 4)) == (2, 128)
    assert [sclp.memory.u8(SCCB + 128 + 16 * i) for i in range(2)] == [0, 1]


def test_read_scp_info_needs_room_for_the_cpu_entries(sclp):
    put_sccb(sclp, bytes(100))
    sclp.service_call(CMD_READ_SCP_INFO, SCCB)
    assert rc(sclp) == 0x0300


def test_read_cpu_info(sclp):
    put_sccb(sclp, bytes(200))
    sclp.service_call(CMD_READ_CPU_INFO, SCCB)
    assert rc(sclp) == 0x0010 and struct.unpack(">HH", sclp.memory.read(SCCB + 8, 4)) == (2, 24)


def test_event_mask_then_vt220_output(sclp):
    vt220 = event_mask_bit(0x1A)
    put_sccb(sclp, struct.pack(">HHIIII", 0, 4, 0, vt220, 0, 0))
    sclp.service_call(CMD_WRITE_EVENT_MASK, SCCB)
    assert rc(sclp) == 0x0020 and sclp.send_mask == vt220
    sclp_receive, sclp_send = struct.unpack(">II", sclp.memory.read(SCCB + 20, 8))
    assert sclp_receive & vt220 and sclp_send & event_mask_bit(0x1D)
    text = b"hello, world\n"
    put_sccb(sclp, struct.pack(">HBBH", 6 + len(text), 0x1A, 0, 0) + text)
    sclp.service_call(CMD_WRITE_EVENT_DATA, SCCB)
    assert rc(sclp) == 0x0020 and sclp.out == [text]
    assert sclp.memory.u8(SCCB + 8 + 3) & 0x80  # buffer accepted


def test_bad_event_buffers(sclp):
    put_sccb(sclp, struct.pack(">HBBH", 60, 0x1A, 0, 0) + b"x")  # longer than the SCCB
    sclp.service_call(CMD_WRITE_EVENT_DATA, SCCB)
    assert rc(sclp) == 0x73F0 and sclp.out == []  # QEMU 7.2: event buffer syntax error
    put_sccb(sclp, struct.pack(">HBBH", 7, 0x33, 0, 0) + b"x")
    sclp.service_call(CMD_WRITE_EVENT_DATA, SCCB)
    assert rc(sclp) == 0x40F0  # no event takes the type: invalid function, as QEMU answers
    put_sccb(sclp, b"")
    sclp.service_call(0x12345678, SCCB)
    assert rc(sclp) == 0x01F0


def test_console_input_and_quiesce_are_read_as_events(sclp):
    mask = event_mask_bit(0x1A) | event_mask_bit(0x1D)
    put_sccb(sclp, struct.pack(">HHIIII", 0, 4, mask, mask, 0, 0))
    sclp.service_call(CMD_WRITE_EVENT_MASK, SCCB)
    assert sclp.console_input(b"ls\n") and sclp.request_quiesce()
    # QEMU 7.2's layout: a 4 KiB SCCB, the console (newer on the bus) before quiesce, input
    # behind a 0x00 byte, normal completion
    put_sccb(sclp, bytes(4088), length=4096)
    param = sclp.service_call(CMD_READ_EVENT_DATA, SCCB)
    assert rc(sclp) == 0x0020 and param & 1 == 0
    assert sclp.memory.read(SCCB + 8, 6) == struct.pack(">HBBH", 10, 0x1A, 0x80, 0)
    assert sclp.memory.read(SCCB + 14, 4) == b"\0ls\n"
    assert sclp.memory.read(SCCB + 18, 3) == struct.pack(">HB", 9, 0x1D)
    put_sccb(sclp, bytes(4088), length=4096)
    sclp.service_call(CMD_READ_EVENT_DATA, SCCB)
    assert rc(sclp) == 0x60F0


@pytest.mark.parametrize("address, code", [
    (0x10004, PGM_SPECIFICATION),  # not doubleword aligned
    (0x1000, PGM_SPECIFICATION),  # in the lowcore
    (0x80000000, PGM_SPECIFICATION),  # above 2 GiB
    (0x7FFFF000, PGM_ADDRESSING),  # outside storage
])
def test_bad_sccb_addresses_are_program_checks(sclp, address, code):
    with pytest.raises(ServiceCallException) as exc:
        sclp.service_call(CMD_READ_SCP_INFO, address)
    assert exc.value.code == code
