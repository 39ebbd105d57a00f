"""virtio-ccw transport and split virtqueues, against hostile drivers.

The guest transcript test (guests/src/virtio.c, in test_cpu_guests.py and test_guests_qemu.py) shows
the well-behaved paths agree with QEMU; these tests drive the transport and the rings directly with
what a broken or hostile driver could write: loops, nested indirect tables, addresses outside
storage, sizes beyond the queue.  Each must end as a broken queue or an architected channel
status, never as an exception out of the device.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmd.machine.channel import (
    SCH_PROGRAM_CHECK,
    ChannelProgramCheck,
    ChannelSubsystemIO,
    DataStream,
    UnitCheck,
)
from vmd.machine.css import ChannelSubsystem
from vmd.machine.memory import GuestMemory
from vmd.virtio import ccw
from vmd.virtio.device import F_RING_EVENT_IDX, F_VERSION_1
from vmd.virtio.ring import DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, Virtqueue, VirtqueueError
from vmd.virtio.rng import VirtioRng

MEM = 1 << 20
DESC, AVAIL, USED = 0x10000, 0x11000, 0x12000


class Props:
    max_revision = 2
    indirect_desc = event_idx = notify_on_empty = any_layout = queue_reset = True
    iommu_platform = packed = False


class Owner:
    """The device model side of a subchannel (what channel programs dispatch to)."""

    def __init__(self):
        self.io_handler = None


def make_transport():
    memory = GuestMemory(MEM)
    css = ChannelSubsystem()
    owner = Owner()
    sch = css.assign(owner, None, 0x32, hotplugged=False)
    io = ChannelSubsystemIO(css, memory)
    backend = VirtioRng(entropy=lambda n: bytes([0xA5]) * n)
    transport = ccw.VirtioCcwTransport(backend, memory, io, sch, Props())
    owner.io_handler = transport
    io.io(sch).flags |= 0x0080  # enabled
    return memory, io, sch, transport


def command(memory, transport, cmd, payload=b"", count=None, flags=0, address=0x20000):
    memory.write(address, payload)
    stream = DataStream(memory, address if count != 0 else 0, len(payload) if count is None else count,
                        False, False, flags=flags)
    transport.execute_ccw(cmd, stream)
    return stream


def modern_rng():
    memory, io, sch, transport = make_transport()
    command(memory, transport, ccw.CMD_SET_VIRTIO_REV, struct.pack(">HH", 1, 0))
    command(memory, transport, ccw.CMD_WRITE_FEAT, struct.pack("<IB", 1 << (F_RING_EVENT_IDX), 0))
    command(memory, transport, ccw.CMD_WRITE_FEAT, struct.pack("<IB", 1, 1))
    command(memory, transport, ccw.CMD_SET_VQ, struct.pack(">QIHHQQ", DESC, 0, 0, 8, AVAIL, USED))
    command(memory, transport, ccw.CMD_WRITE_STATUS, bytes([0x0F]))
    return memory, io, sch, transport


def put_desc(memory, table, i, addr, length, flags, nxt=0):
    memory.write(table + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))


def make_available(memory, head, idx=1):
    memory.write(AVAIL + 4 + 2 * ((idx - 1) % 8), struct.pack("<H", head))
    memory.write(AVAIL + 2, struct.pack("<H", idx))


def test_a_modern_buffer_is_filled_and_returned():
    memory, io, _sch, transport = modern_rng()
    assert transport.backend.has(F_VERSION_1) and transport.queues[0].event_idx
    put_desc(memory, DESC, 0, 0x30000, 64, DESC_F_WRITE)
    make_available(memory, 0)
    assert transport.kick(0)
    assert memory.read(0x30000, 64) == bytes([0xA5]) * 64
    used_idx, (head, length) = struct.unpack("<H", memory.read(USED + 2, 2))[0], struct.unpack(
        "<II", memory.read(USED + 4, 8))
    assert (used_idx, head, length) == (1, 0, 64)
    # event_idx: the device asks to hear of the next buffer
    assert struct.unpack("<H", memory.read(USED + 4 + 8 * 8, 2))[0] == 1


def test_a_descriptor_loop_breaks_the_queue_not_the_device():
    memory, _io, _sch, transport = modern_rng()
    put_desc(memory, DESC, 0, 0x30000, 16, DESC_F_WRITE | DESC_F_NEXT, 1)
    put_desc(memory, DESC, 1, 0x30010, 16, DESC_F_WRITE | DESC_F_NEXT, 0)
    make_available(memory, 0)
    transport.kick(0)
    assert transport.queues[0].broken
    assert transport.status & 0x40  # DEVICE_NEEDS_RESET for a modern driver
    command(memory, transport, ccw.CMD_VDEV_RESET)
    assert not transport.queues[0].broken and transport.status == 0


def test_nested_indirect_tables_and_indirect_with_next_are_refused():
    for flags in (DESC_F_INDIRECT | DESC_F_NEXT, DESC_F_INDIRECT):
        memory, _io, _sch, transport = modern_rng()
        put_desc(memory, DESC, 0, 0x40000, 32, flags)
        put_desc(memory, 0x40000, 0, 0x40100, 16, DESC_F_INDIRECT)  # an indirect inside the table
        put_desc(memory, 0x40000, 1, 0x30000, 16, DESC_F_WRITE)
        make_available(memory, 0)
        transport.kick(0)
        assert transport.queues[0].broken


def test_addresses_outside_storage_and_absurd_indices_break_the_queue():
    cases = [
        lambda m: put_desc(m, DESC, 0, MEM - 8, 64, DESC_F_WRITE),       # buffer beyond storage
        lambda m: put_desc(m, DESC, 0, 0x30000, 16, DESC_F_WRITE | DESC_F_NEXT, 200),  # next outside
    ]
    for setup in cases:
        memory, _io, _sch, transport = modern_rng()
        setup(memory)
        make_available(memory, 0)
        transport.kick(0)
        assert transport.queues[0].broken
    memory, _io, _sch, transport = modern_rng()
    put_desc(memory, DESC, 0, 0x30000, 16, DESC_F_WRITE)
    make_available(memory, 0, idx=500)  # 500 buffers "available" in a queue of 8
    transport.kick(0)
    assert transport.queues[0].broken


def test_rings_placed_outside_storage_do_not_raise():
    memory, _io, _sch, transport = make_transport()
    command(memory, transport, ccw.CMD_SET_VIRTIO_REV, struct.pack(">HH", 1, 0))
    command(memory, transport, ccw.CMD_SET_VQ, struct.pack(">QIHHQQ", MEM - 16, 0, 0, 8, MEM + 4096, MEM * 2))
    command(memory, transport, ccw.CMD_WRITE_STATUS, bytes([0x0F]))
    assert transport.kick(0)
    assert transport.queues[0].broken


def test_classic_notification_sets_the_indicator_and_makes_status_pending():
    memory, io, sch, transport = modern_rng()
    command(memory, transport, ccw.CMD_SET_IND, struct.pack(">Q", 0x50000))
    put_desc(memory, DESC, 0, 0x30000, 8, DESC_F_WRITE)
    make_available(memory, 0)
    transport.kick(0)
    assert memory.u64(0x50000) == 1
    assert io.io(sch).status_pending
    assert io.take(0xFF000000) is not None


def test_adapter_notification_sets_bits_and_coalesces_per_isc():
    memory, io, _sch, transport = make_transport()
    command(memory, transport, ccw.CMD_SET_VIRTIO_REV, struct.pack(">HH", 1, 0))
    command(memory, transport, ccw.CMD_WRITE_FEAT, struct.pack("<IB", 1, 1))  # VERSION_1: little-endian rings
    command(memory, transport, ccw.CMD_SET_VQ, struct.pack(">QIHHQQ", DESC, 0, 0, 8, AVAIL, USED))
    command(memory, transport, ccw.CMD_SET_IND_ADAPTER, struct.pack(">QQQB", 0x50000, 0x50010, 9, 6))
    command(memory, transport, ccw.CMD_WRITE_STATUS, bytes([0x0F]))
    for i in range(3):
        put_desc(memory, DESC, i, 0x30000 + 16 * i, 8, DESC_F_WRITE)
        make_available(memory, i, idx=i + 1)
        transport.kick(0)
    assert memory.u8(0x50000) == 1                  # summary indicator
    assert memory.u8(0x50011) == 0x40               # bit 9 (+ queue 0), counted from the left
    interruption = io.take(0x80000000 >> 6)
    assert interruption is not None and interruption.adapter and interruption.word == 0x80000000 | (6 << 27)
    assert io.take(0x80000000 >> 6) is None          # the summary byte was already set: one interruption


def test_length_checks_follow_qemu():
    memory, _io, _sch, transport = make_transport()
    with pytest.raises(ChannelProgramCheck) as check:
        command(memory, transport, ccw.CMD_READ_FEAT, bytes(8))           # exact length without SLI
    assert check.value.cstat == SCH_PROGRAM_CHECK
    stream = command(memory, transport, ccw.CMD_READ_FEAT, bytes(8), flags=0x20)  # with SLI: residual 3
    assert stream.residual == 3
    with pytest.raises(ChannelProgramCheck) as check:
        command(memory, transport, ccw.CMD_READ_FEAT, bytes(5), count=0)  # no data address
    with pytest.raises(ChannelProgramCheck) as check:
        command(memory, transport, ccw.CMD_READ_FEAT, b"", count=5, address=0)
    assert check.value.cstat == SCH_PROGRAM_CHECK  # QEMU 7.2: no channel data check
    with pytest.raises(UnitCheck):
        command(memory, transport, 0x99, bytes(4))
    # any command before SET_VIRTIO_REV made this a legacy device: the revision is fixed now
    with pytest.raises(UnitCheck):
        command(memory, transport, ccw.CMD_SET_VIRTIO_REV, struct.pack(">HH", 1, 0))
    assert transport.revision == 0
    _memory, _io, _sch, fresh = make_transport()
    command(_memory, fresh, ccw.CMD_SET_VIRTIO_REV, struct.pack(">HH", 2, 0))
    with pytest.raises(UnitCheck):
        command(_memory, fresh, ccw.CMD_SET_VIRTIO_REV, struct.pack(">HH", 1, 0))  # only once


@settings(max_examples=300, deadline=None)
@given(cmd=st.sampled_from(sorted(ccw.VirtioCcwTransport._COMMANDS) + [0x00, 0x99]),
       payload=st.binary(max_size=64), flags=st.sampled_from([0, 0x20, 0xA0]))
def test_any_command_payload_ends_in_an_architected_outcome(cmd, payload, flags):
    memory, _io, _sch, transport = make_transport()
    try:
        command(memory, transport, cmd, payload, flags=flags)
    except (ChannelProgramCheck, UnitCheck):
        pass
    put_desc(memory, DESC, 0, 0x30000, 8, DESC_F_WRITE)
    make_available(memory, 0)
    transport.kick(0)  # whatever the queue state, a kick never raises


@settings(max_examples=200, deadline=None)
@given(table=st.binary(min_size=16 * 8, max_size=16 * 8), avail_idx=st.integers(0, 0xFFFF),
       heads=st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8))
def test_random_rings_never_raise_from_the_device(table, avail_idx, heads):
    memory, _io, _sch, transport = modern_rng()
    memory.write(DESC, table)
    memory.write(AVAIL + 4, struct.pack("<8H", *heads))
    memory.write(AVAIL + 2, struct.pack("<H", avail_idx))
    transport.kick(0)


def test_a_virtqueue_pop_on_a_broken_chain_raises_virtqueue_error_only():
    memory = GuestMemory(MEM)
    queue = Virtqueue(memory, 0, 8)
    queue.big_endian = False
    queue.set_rings(DESC, AVAIL, USED, 8)
    put_desc(memory, DESC, 0, 0, 16, DESC_F_NEXT, 0)
    make_available(memory, 0)
    with pytest.raises(VirtqueueError):
        queue.pop()
    assert queue.broken and queue.pop() is None
