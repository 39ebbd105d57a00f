"""virtio-serial: the control protocol, flow control and the ports, against real and hostile drivers.

The device is driven through the real virtio-ccw transport by a small driver written here (split
rings in guest storage, channel commands, kicks), so every byte goes where a guest's would.  The
hostile cases are a driver's worst: control messages for ports that do not exist, enormous or
short control buffers, and a driver that never posts receive buffers while the host floods; each
must end bounded and with the device still answering.  The guest in guests/src/vserial.c checks
the same paths against QEMU (its transcript and the chardev's file), and an end-to-end test echoes
a socket client's bytes through the guest under vmd.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT, wait_for_socket
from test_guests_qemu import BIN, EXPECTED, GUESTS, MACHINE

from vmd.config import ChardevFile, ChardevNull, ChardevSocket
from vmd.errors import GenericError
from vmd.events import EventBus
from vmd.machine.channel import ChannelSubsystemIO, DataStream
from vmd.machine.css import ChannelSubsystem
from vmd.machine.machine import Machine
from vmd.machine.memory import GuestMemory
from vmd.transports.chardev import Chardev
from vmd.virtio import ccw
from vmd.virtio import serial as vs
from vmd.virtio.ring import DESC_F_NEXT, DESC_F_WRITE

MEM = 8 << 20
QSIZE = 16


class Props:
    max_revision = 2
    indirect_desc = event_idx = notify_on_empty = any_layout = queue_reset = True
    iommu_platform = packed = False


class Owner:
    io_handler = None


class Link:
    """The chardev side as the port sees it, recording what the port asked for."""

    def __init__(self, port: vs.SerialPort):
        self.port = port
        self.output = bytearray()
        self.input_space_calls = 0
        self.guest_open_calls: list[bool] = []
        port.link = self

    def output_ready(self) -> None:
        while data := self.port.take_output():
            self.output += data

    def input_space(self) -> None:
        self.input_space_calls += 1

    def guest_open(self, is_open: bool) -> None:
        self.guest_open_calls.append(is_open)


class Ring:
    """The driver's side of one split virtqueue (little-endian for modern, big-endian for legacy)."""

    def __init__(self, memory: GuestMemory, base: int, num: int, big_endian: bool):
        self.memory, self.num = memory, num
        self.order = ">" if big_endian else "<"
        self.desc = base
        self.avail = base + 16 * num
        self.used = (self.avail + 6 + 2 * num + 4095) & ~4095
        self.avail_idx = self.used_seen = 0
        self.next_desc = 0

    def post(self, buffers: list[tuple[int, int, bool]]) -> int:
        """Make one chain of (address, length, device-writable) buffers available; returns its head."""
        head = self.next_desc
        for i, (addr, length, writable) in enumerate(buffers):
            d = (head + i) % self.num
            more = i + 1 < len(buffers)
            flags = (DESC_F_WRITE if writable else 0) | (DESC_F_NEXT if more else 0)
            self.memory.write(self.desc + 16 * d,
                              struct.pack(self.order + "QIHH", addr, length, flags, (d + 1) % self.num))
        self.next_desc = (head + len(buffers)) % self.num
        self.memory.write(self.avail + 4 + 2 * (self.avail_idx % self.num), struct.pack(self.order + "H", head))
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.memory.write(self.avail + 2, struct.pack(self.order + "H", self.avail_idx))
        return head

    def used_entries(self) -> list[tuple[int, int]]:
        idx = struct.unpack(self.order + "H", self.memory.read(self.used + 2, 2))[0]
        out = []
        while self.used_seen != idx:
            slot = self.used + 4 + 8 * (self.used_seen % self.num)
            out.append(struct.unpack(self.order + "II", self.memory.read(slot, 8)))
            self.used_seen = (self.used_seen + 1) & 0xFFFF
        return out


class Driver:
    """A virtio-console driver on the real transport, with the device's kicks and notifications."""

    def __init__(self, ports: list[vs.SerialPort], max_ports: int = 31, emergency_write: bool = True,
                 modern: bool = True, multiport: bool = True, queues: int = 8):
        self.memory = GuestMemory(MEM)
        css = ChannelSubsystem()
        owner = Owner()
        sch = css.assign(owner, None, 0x32, hotplugged=False)
        io = ChannelSubsystemIO(css, self.memory)
        io.io(sch).flags |= 0x0080
        self.backend = vs.VirtioSerial(max_ports, emergency_write, "vs0.0")
        for port in ports:
            self.backend.plug(port)
        self.transport = ccw.VirtioCcwTransport(self.backend, self.memory, io, sch, Props())
        owner.io_handler = self.transport
        self.backend.attach_queues(self.transport.queues)
        self.notified: list[int] = []
        notify = self.transport.notify
        self.backend.notify = lambda index: (self.notified.append(index), notify(index))
        self.config_changes = 0
        self.backend.config_changed = lambda: setattr(self, "config_changes", self.config_changes + 1)
        self.modern = modern
        self.heap = 0x200000
        self.rings: dict[int, Ring] = {}
        if modern:
            self.command(ccw.CMD_SET_VIRTIO_REV, struct.pack(">HH", 1, 0))
        self.command(ccw.CMD_WRITE_STATUS, bytes([3]))
        features = (1 << vs.F_MULTIPORT if multiport else 0) | (1 << vs.F_EMERG_WRITE)
        self.command(ccw.CMD_WRITE_FEAT, struct.pack("<IB", features, 0))
        if modern:
            self.command(ccw.CMD_WRITE_FEAT, struct.pack("<IB", 1, 1))
        for index in range(min(queues, len(self.backend.queue_sizes))):
            self.set_queue(index)
        self.command(ccw.CMD_WRITE_STATUS, bytes([0x0F if modern else 0x07]))

    # -- plumbing ------------------------------------------------------------------------------
    def command(self, cmd: int, payload: bytes = b"", count: int | None = None) -> DataStream:
        self.memory.write(0x1000, payload)
        stream = DataStream(self.memory, 0x1000, len(payload) if count is None else count, False, False, flags=0)
        self.transport.execute_ccw(cmd, stream)
        return stream

    def set_queue(self, index: int) -> None:
        base = 0x10000 + index * 0x4000
        if self.modern:
            ring = Ring(self.memory, base, QSIZE, big_endian=False)
            self.command(ccw.CMD_SET_VQ, struct.pack(">QIHHQQ", ring.desc, 0, index, QSIZE, ring.avail, ring.used))
        else:
            size = self.backend.queue_sizes[index]
            ring = Ring(self.memory, base, size, big_endian=True)
            self.command(ccw.CMD_SET_VQ, struct.pack(">QIHH", base, 4096, index, size))
        self.rings[index] = ring

    def alloc(self, size: int, data: bytes = b"") -> int:
        addr = self.heap
        self.heap += (size + 15) & ~15
        if data:
            self.memory.write(addr, data)
        return addr

    def kick(self, index: int) -> None:
        assert self.transport.kick(index)

    @property
    def order(self) -> str:
        return "<" if self.modern else ">"

    # -- control -------------------------------------------------------------------------------
    def post_control_buffers(self, count: int = 8, size: int = 64) -> None:
        for _ in range(count):
            self.rings[vs.CONTROL_RX].post([(self.alloc(size), size, True)])
        self.kick(vs.CONTROL_RX)

    def send_control(self, port_id: int, event: int, value: int = 1, raw: bytes | None = None) -> None:
        message = raw if raw is not None else struct.pack(self.order + "IHH", port_id, event, value)
        self.rings[vs.CONTROL_TX].post([(self.alloc(len(message), message), len(message), False)])
        self.kick(vs.CONTROL_TX)
        assert self.rings[vs.CONTROL_TX].used_entries()[-1][1] == 0

    def control_messages(self) -> list[tuple]:
        """What the device sent: (port, event name, value[, name]), with fresh buffers in their place."""
        ring = self.rings[vs.CONTROL_RX]
        out = []
        for head, length in ring.used_entries():
            addr = struct.unpack(ring.order + "Q", self.memory.read(ring.desc + 16 * head, 8))[0]
            data = self.memory.read(addr, length)
            port_id, event, value = struct.unpack_from(self.order + "IHH", data)
            entry = (port_id, vs.EVENT_NAMES[event], value)
            if event == vs.PORT_NAME:
                entry += (data[8:],)
            out.append(entry)
            ring.post([(self.alloc(64), 64, True)])
        return out

    def bring_up(self) -> list[tuple]:
        """DEVICE_READY, PORT_READY for every port added and PORT_OPEN for consoles, as Linux does."""
        self.post_control_buffers()
        self.send_control(0, vs.DEVICE_READY)
        seen = []
        pending = self.control_messages()
        while pending:
            message = pending.pop(0)
            seen.append(message)
            port_id, event, _value = message[:3]
            if event == "PORT_ADD":
                self.send_control(port_id, vs.PORT_READY)
            elif event == "CONSOLE_PORT":
                self.send_control(port_id, vs.PORT_OPEN)
            pending += self.control_messages()
        return seen

    # -- data ----------------------------------------------------------------------------------
    def write(self, port_id: int, data: bytes, pieces: int = 1) -> None:
        step = max(1, -(-len(data) // pieces))
        chunks = [data[i:i + step] for i in range(0, len(data), step)] or [b""]
        self.rings[vs.tx_queue(port_id)].post([(self.alloc(len(c), c), len(c), False) for c in chunks])
        self.kick(vs.tx_queue(port_id))

    def post_receive(self, port_id: int, count: int, size: int) -> list[int]:
        ring = self.rings[vs.rx_queue(port_id)]
        addrs = []
        for _ in range(count):
            addr = self.alloc(size)
            addrs.append(addr)
            ring.post([(addr, size, True)])
        self.kick(vs.rx_queue(port_id))
        return addrs

    def received(self, port_id: int) -> bytes:
        ring = self.rings[vs.rx_queue(port_id)]
        out = bytearray()
        for head, length in ring.used_entries():
            addr = struct.unpack(ring.order + "Q", self.memory.read(ring.desc + 16 * head, 8))[0]
            out += self.memory.read(addr, length)
        return bytes(out)


def console(port_id=0, chardev=True) -> vs.SerialPort:
    return vs.SerialPort(port_id, None, is_console=True, has_chardev=chardev)


def serial_port(port_id, name=None) -> vs.SerialPort:
    return vs.SerialPort(port_id, name, is_console=False, has_chardev=True)


# ---- negotiation and configuration ------------------------------------------------------------
def test_features_and_configuration_follow_qemu():
    assert vs.VirtioSerial(31, True).features() == (1 << vs.F_MULTIPORT) | (1 << vs.F_EMERG_WRITE)
    assert vs.VirtioSerial(1, False).features() == 0  # one port: no MULTIPORT
    device = vs.VirtioSerial(31, True)
    assert device.config() == struct.pack(">HHI", 0, 0, 31) + bytes(4)  # legacy: the guest's byte order
    device.guest_features = 1 << 32
    assert device.config() == struct.pack("<HHI", 0, 0, 31) + bytes(4)
    assert len(vs.VirtioSerial(31, False).config()) == 8  # no emerg_wr without the feature
    assert vs.VirtioSerial(31).queue_sizes[:6] == (128, 128, 32, 32, 128, 128)
    assert len(vs.VirtioSerial(511).queue_sizes) == 1024
    with pytest.raises(ValueError):
        vs.VirtioSerial(512)


def test_queue_numbering():
    assert [vs.rx_queue(p) for p in range(4)] == [0, 4, 6, 8]
    assert [vs.tx_queue(p) for p in range(4)] == [1, 5, 7, 9]
    assert [vs.port_of_queue(q) for q in range(8)] == [0, 0, None, None, 1, 1, 2, 2]


# ---- the control protocol --------------------------------------------------------------------
def test_bring_up_announces_every_port_in_plug_order():
    ports = [console(0), serial_port(3, "org.example.three"), serial_port(1)]
    ports[1].set_host_open(True)  # a client is connected
    driver = Driver(ports)
    driver.backend.service()
    messages = driver.bring_up()
    assert messages == [
        (0, "PORT_ADD", 1), (3, "PORT_ADD", 1), (1, "PORT_ADD", 1),
        (0, "CONSOLE_PORT", 1), (0, "PORT_OPEN", 1),
        (3, "PORT_NAME", 1, b"org.example.three\0"), (3, "PORT_OPEN", 1),
    ]
    assert ports[0].guest_connected and not ports[1].guest_connected


def test_a_legacy_driver_without_multiport_has_port_0_open_from_driver_ok():
    port = console(0)
    link = Link(port)
    driver = Driver([port], modern=False, multiport=False, queues=2)
    assert not driver.backend.multiport and port.guest_connected
    assert link.guest_open_calls == [True]
    driver.write(0, b"big-endian rings\n")
    assert link.output == b"big-endian rings\n"
    port.host_input(b"typed")
    driver.post_receive(0, 1, 16)
    assert driver.received(0) == b"typed"


def test_control_messages_for_ports_that_do_not_exist_get_no_answer(caplog):
    driver = Driver([console(0)])
    driver.bring_up()
    caplog.set_level(logging.DEBUG, logger="vmd.virtio")
    for port_id in (1, 31, 77, 0xFFFFFFFF):
        driver.send_control(port_id, vs.PORT_READY)
        driver.send_control(port_id, vs.PORT_OPEN)
    driver.send_control(0, 99)               # an event the device does not know
    driver.send_control(0, vs.PORT_READY, 0)  # "failed to add port 0"
    driver.send_control(0, vs.DEVICE_READY, 0)
    driver.send_control(0, 0, raw=b"\0\0\0\0")  # shorter than a message
    assert driver.control_messages() == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "virtio-serial-bus: Unexpected port id 1 for device vs0.0" in warnings
    assert "virtio-serial-bus: Guest failure in adding port 0 for device vs0.0" in warnings
    assert "virtio-serial-bus: Guest failure in adding device vs0.0" in warnings
    # a repeated mistake is logged once at warning level, then quietly
    assert sum("Unexpected port id" in w for w in warnings) <= 2
    driver.send_control(0, vs.PORT_READY)  # the device still answers a good one
    assert driver.control_messages() == [(0, "CONSOLE_PORT", 1), (0, "PORT_OPEN", 1)]


def test_a_huge_control_message_is_read_no_further_than_its_header():
    driver = Driver([console(0)])
    driver.bring_up()
    reads = []
    real_read = driver.memory.read
    driver.memory.read = lambda addr, n: (reads.append(n), real_read(addr, n))[1]
    header = struct.pack("<IHH", 0, vs.PORT_READY, 1)
    big = driver.alloc(1 << 20, header)
    ring = driver.rings[vs.CONTROL_TX]
    ring.post([(big, 1 << 20, False), (driver.alloc(1 << 20), 1 << 20, False)])
    driver.kick(vs.CONTROL_TX)
    assert max(reads) <= 16  # the 2 MiB chain's data was never read in
    driver.memory.read = real_read
    assert driver.control_messages() == [(0, "CONSOLE_PORT", 1), (0, "PORT_OPEN", 1)]


def test_control_answers_wait_for_buffers_but_not_without_bound():
    ports = [serial_port(i) for i in range(1, 31)]
    driver = Driver(ports)
    # DEVICE_READY again and again with no receive buffers: the answers pile up only so far
    for _ in range(50):
        driver.send_control(0, vs.DEVICE_READY)
    assert len(driver.backend._control_backlog) == vs.CONTROL_BACKLOG
    driver.post_control_buffers(count=QSIZE)
    assert [m[1] for m in driver.control_messages()] == ["PORT_ADD"] * QSIZE


def test_a_short_control_receive_buffer_gets_what_fits():
    driver = Driver([serial_port(1, "a-rather-long-port-name")])
    driver.rings[vs.CONTROL_RX].post([(driver.alloc(12), 12, True)])
    driver.kick(vs.CONTROL_RX)
    driver.send_control(1, vs.PORT_READY)
    head, length = driver.rings[vs.CONTROL_RX].used_entries()[0]
    assert length == 12


def test_hot_plug_and_unplug_tell_the_driver():
    port0 = console(0)
    driver = Driver([port0])
    driver.bring_up()
    new = serial_port(5, "late")
    driver.backend.plug(new)
    assert driver.control_messages() == [(5, "PORT_ADD", 1)]
    assert driver.config_changes == 1
    driver.set_queue(vs.tx_queue(5))
    driver.rings[vs.tx_queue(5)].post([(driver.alloc(8), 8, False)])  # output not yet kicked
    driver.backend.unplug(new)
    assert driver.control_messages() == [(5, "PORT_REMOVE", 1)]
    assert driver.rings[vs.tx_queue(5)].used_entries() == [(0, 0)]  # returned unread on unplug
    driver.rings[vs.tx_queue(5)].post([(driver.alloc(8), 8, False)])
    driver.kick(vs.tx_queue(5))  # output for a port that is gone: returned unread too
    assert driver.rings[vs.tx_queue(5)].used_entries() == [(1, 0)]


def test_reset_closes_the_guest_side_and_forgets_pending_answers():
    port = console(0)
    link = Link(port)
    driver = Driver([port])
    driver.bring_up()
    assert port.guest_connected
    driver.command(ccw.CMD_VDEV_RESET)
    assert not port.guest_connected and link.guest_open_calls == [True, False]
    assert not driver.backend._control_backlog


# ---- guest output ------------------------------------------------------------------------------
def test_guest_output_reaches_the_host_in_order_across_descriptors():
    port = console(0)
    link = Link(port)
    driver = Driver([port])
    driver.bring_up()
    driver.write(0, b"hello, ", pieces=3)
    driver.write(0, b"world\n")
    assert link.output == b"hello, world\n"
    assert driver.rings[1].used_entries() == [(0, 0), (3, 0)]  # tx buffers come back with length 0


def test_a_congested_host_throttles_a_serial_port_and_releases_it():
    port = serial_port(1)
    requests = []
    port.request_service = lambda: requests.append(1)
    port.link = None  # nobody takes the output yet
    port.set_host_open(True)
    driver = Driver([port])
    driver.backend.service()
    driver.bring_up()
    requests.clear()
    block = bytes(range(256)) * 1024  # 256 KiB in one buffer
    driver.write(1, block)
    assert port.throttled
    assert port.pending()[1] == vs.OUTBOX_LIMIT
    assert driver.rings[vs.tx_queue(1)].used_entries() == []  # the guest's buffer is held
    driver.write(1, b"after")
    assert port.pending()[1] == vs.OUTBOX_LIMIT  # nothing more is taken while throttled
    received = bytearray()
    while len(received) < len(block) + 5:
        chunk = port.take_output()
        assert chunk or requests
        received += chunk
        if requests:  # the host took half: the device goes on (the owner runs service())
            requests.clear()
            driver.backend.service()
        assert port.pending()[1] <= vs.OUTBOX_LIMIT
    assert bytes(received) == block + b"after"
    assert not port.throttled
    assert len(driver.rings[vs.tx_queue(1)].used_entries()) == 2


def test_a_console_drops_what_a_congested_host_cannot_take():
    port = console(0)
    driver = Driver([port])
    driver.bring_up()
    driver.write(0, bytes(3 * vs.OUTBOX_LIMIT))
    assert not port.throttled
    assert port.pending()[1] == vs.OUTBOX_LIMIT
    assert len(driver.rings[1].used_entries()) == 1  # the guest's console never hangs


def test_output_to_a_closed_port_is_returned_unread_and_closing_discards_held_output():
    port = serial_port(1)
    link = Link(port)
    driver = Driver([port])
    driver.bring_up()
    driver.write(1, b"nobody listens")
    assert link.output == b"" and driver.rings[vs.tx_queue(1)].used_entries() == [(0, 0)]
    port.set_host_open(True)
    driver.backend.service()
    port.link = None
    driver.write(1, bytes(vs.OUTBOX_LIMIT + 10))
    assert port.throttled
    port.set_host_open(False)
    driver.backend.service()
    assert not port.throttled and port.pending()[1] == 0
    assert driver.rings[vs.tx_queue(1)].used_entries() == [(1, 0)]
    assert (1, "PORT_OPEN", 0) in driver.control_messages()


def test_emergency_write_goes_to_the_first_open_console():
    closed, port = console(0, chardev=False), console(2)
    link = Link(port)
    driver = Driver([closed, port])
    driver.command(ccw.CMD_WRITE_CONF, struct.pack("<HHII", 0, 0, 0, ord("!")))
    driver.command(ccw.CMD_WRITE_CONF, struct.pack("<HHII", 0, 0, 0, 0))  # zero: nothing
    driver.command(ccw.CMD_WRITE_CONF, struct.pack("<HHI", 0, 0, 0))  # a short write: nothing
    assert link.output == b"!"
    quiet = Driver([console(0)], emergency_write=False)
    quiet.command(ccw.CMD_WRITE_CONF, struct.pack("<HHI", 0, 0, 0))
    assert quiet.backend.config() == struct.pack("<HHI", 0, 0, 31)


# ---- host input -------------------------------------------------------------------------------
def test_host_input_waits_for_the_guest_to_open_the_port():
    port = serial_port(1)
    port.set_host_open(True)
    driver = Driver([port])
    driver.backend.service()
    driver.bring_up()
    assert port.host_input(b"early")
    driver.post_receive(1, 2, 8)
    driver.backend.service()
    assert driver.received(1) == b""  # not open on the guest side yet
    driver.send_control(1, vs.PORT_OPEN, 1)
    assert driver.received(1) == b"early"


def test_a_flooding_host_is_bounded_when_the_guest_posts_no_buffers():
    port = serial_port(1)
    link = Link(port)
    port.set_host_open(True)
    driver = Driver([port])
    driver.backend.service()
    driver.bring_up()
    driver.send_control(1, vs.PORT_OPEN, 1)
    chunk = bytes(range(256)) * 16
    offered = 0
    while port.host_input(chunk):  # the chardev reads until told to stop
        offered += len(chunk)
        driver.backend.service()
        assert offered < 10 * vs.INBOX_LIMIT, "the port never pushed back"
    offered += len(chunk)
    assert port.pending()[0] == offered <= vs.INBOX_LIMIT + len(chunk)
    assert link.input_space_calls == 0
    # the guest starts reading: everything arrives in order, and the host may read again
    received = bytearray()
    while len(received) < offered:
        driver.post_receive(1, 8, 1000)
        received += driver.received(1)
    assert bytes(received) == (chunk * (offered // len(chunk)))
    assert link.input_space_calls == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("host"), st.binary(min_size=1, max_size=5000)),
                          st.tuples(st.just("guest"), st.integers(0, 6), st.integers(0, 3000))),
                max_size=40))
def test_host_to_guest_bytes_arrive_exactly_once_and_in_order(steps):
    """Whatever the order of host writes and guest buffers, a chardev that stops reading when told
    (and reads again when told) sees every byte reach the guest once, in order, and the port bounded."""
    port = serial_port(1)
    link = Link(port)
    port.set_host_open(True)
    driver = Driver([port])
    driver.backend.service()
    driver.bring_up()
    driver.send_control(1, vs.PORT_OPEN, 1)
    sent = bytearray()
    received = bytearray()
    outstanding = 0
    reading, resumed = True, 0
    for step in steps:
        if link.input_space_calls != resumed:
            reading, resumed = True, link.input_space_calls
        if step[0] == "host" and reading:
            reading = port.host_input(step[1])
            sent += step[1]
            driver.backend.service()
        elif outstanding + step[1] <= QSIZE:
            driver.post_receive(1, step[1], step[2])
            outstanding += step[1]
        got = driver.rings[vs.rx_queue(1)]
        before = got.used_seen
        received += driver.received(1)
        outstanding -= (got.used_seen - before) & 0xFFFF
        assert port.pending()[0] <= vs.INBOX_LIMIT + 5000
    assert bytes(received) == bytes(sent[:len(received)])
    assert len(received) + port.pending()[0] == len(sent)


def test_kicks_for_queues_without_ports_are_harmless():
    driver = Driver([console(0)], queues=10)
    driver.rings[vs.tx_queue(3)].post([(driver.alloc(8), 8, False)])
    driver.kick(vs.tx_queue(3))
    assert driver.rings[vs.tx_queue(3)].used_entries() == [(0, 0)]
    driver.rings[vs.rx_queue(3)].post([(driver.alloc(8), 8, True)])
    driver.kick(vs.rx_queue(3))
    assert driver.rings[vs.rx_queue(3)].used_entries() == []
    assert driver.transport.kick(63) and not driver.transport.kick(1024)


# ---- device models on the machine ------------------------------------------------------------
def machine_with_chardevs(*specs) -> tuple[Machine, EventBus]:
    events = EventBus()
    machine = Machine(events)
    machine.chardevs = {spec.id: Chardev(spec) for spec in specs}
    return machine, events


def test_ports_find_their_bus_and_get_numbers_as_in_qemu():
    machine, _ = machine_with_chardevs(ChardevNull(id="n0"), ChardevNull(id="n1"), ChardevNull(id="n2"))
    first = machine.add_device("virtio-serial-ccw", None, None, {})
    named = machine.add_device("virtio-serial-ccw", "vs1", None, {})
    second = machine.add_device("virtio-serial", None, None, {})
    assert (first.child_bus_name, named.child_bus_name, second.child_bus_name) == (
        "virtio-serial-bus.0", "vs1.0", "virtio-serial-bus.1")
    # without bus=, the newest bus (QEMU's search order)
    a = machine.add_device("virtconsole", "a", None, {"chardev": "n0"})
    b = machine.add_device("virtserialport", "b", "vs1.0", {"chardev": "n1", "name": "org.example.b"})
    c = machine.add_device("virtconsole", "c", "vs1.0", {"chardev": "n2"})
    assert (a.bus_owner, b.bus_owner, c.bus_owner) == (second, named, named)
    assert (a.port.id, b.port.id, c.port.id) == (0, 1, 0)
    assert b.parent_bus_path() == "/machine/peripheral/vs1/virtio-backend/vs1.0"
    props = {name: getter() for name, (_t, getter) in b.qom_properties().items()}
    assert props["nr"] == 1 and props["name"] == "org.example.b" and props["chardev"] == "n1"
    assert props["parent_bus"] == "/machine/peripheral/vs1/virtio-backend/vs1.0"
    assert {name: getter() for name, (_t, getter) in c.qom_properties().items()}["name"] == ""
    with pytest.raises(GenericError, match="virtio-serial-bus: A port already exists by name org.example.b"):
        machine.add_device("virtserialport", None, None, {"name": "org.example.b"})
    assert b.chardev.frontend == "virtserialport"


def test_unplugging_the_bus_takes_its_ports_in_qemus_order():
    machine, events = machine_with_chardevs(ChardevNull(id="n0"))
    listener = events.listen()
    machine.add_device("virtio-serial-ccw", "vs0", None, {})
    machine.add_device("virtserialport", "p1", None, {"chardev": "n0"})
    machine.add_device("virtconsole", "c0", None, {})
    machine.add_device("virtserialport", None, None, {})
    machine.delete_device("vs0")
    deleted = [e.data for e in listener.drain() if e.name == "DEVICE_DELETED"]
    assert deleted == [
        {"path": "/machine/peripheral-anon/device[0]"},
        {"device": "c0", "path": "/machine/peripheral/c0"},
        {"device": "p1", "path": "/machine/peripheral/p1"},
        {"path": "/machine/peripheral/vs0/virtio-backend"},
        {"device": "vs0", "path": "/machine/peripheral/vs0"},
    ]
    assert not machine.devices and machine.chardevs["n0"].frontend is None  # the chardev is free again
    machine.add_device("virtio-serial-ccw", None, None, {})
    machine.add_device("virtserialport", None, None, {"chardev": "n0"})


def test_port_0_stays_reserved_after_its_console_goes():
    machine, _ = machine_with_chardevs()
    machine.add_device("virtio-serial-ccw", None, None, {"max_ports": "2"})
    machine.add_device("virtconsole", "con", None, {})
    machine.delete_device("con")
    with pytest.raises(GenericError, match="Out-of-range port id specified, max. allowed: 1"):
        for _ in range(2):
            machine.add_device("virtserialport", None, None, {})
    machine.add_device("virtconsole", None, None, {})  # a console may take port 0 again


def test_a_port_plugged_while_the_device_runs_reaches_the_back_end():
    machine, _ = machine_with_chardevs(ChardevNull(id="n0"))
    bus = machine.add_device("virtio-serial-ccw", "vs0", None, {"max_ports": "4"})
    backend = bus.make_backend()
    port = machine.add_device("virtserialport", "p", None, {"chardev": "n0", "nr": "3"})
    assert backend.ports[3] is port.port
    machine.delete_device("p")
    assert 3 not in backend.ports
    # the machine runs the back end's service with the guest held, once per burst of host events
    calls = []
    backend.service = lambda: calls.append(1)
    bus.io_handler = type("Transport", (), {"queues": ()})()
    console_port = machine.add_device("virtconsole", None, None, {}).port
    console_port.host_input(b"a")
    console_port.host_input(b"b")
    assert calls == [1, 1]  # this machine's defer runs at once; under the daemon they coalesce


# ---- the chardev side ---------------------------------------------------------------------------
def test_socket_chardev_feeds_one_client_at_a_time_and_pushes_back(tmp_path):
    async def scenario():
        port = serial_port(1)
        services = []
        port.request_service = lambda: services.append(1)
        chardev = Chardev(ChardevSocket(id="s", path=str(tmp_path / "s.sock"), server=True, wait=False))
        chardev.attach_device("virtserialport", port)
        await chardev.open(None)
        assert not port.host_wanted()
        first_r, first_w = await asyncio.open_unix_connection(str(tmp_path / "s.sock"))
        second_r, second_w = await asyncio.open_unix_connection(str(tmp_path / "s.sock"))
        await asyncio.sleep(0.05)
        assert port.host_wanted() and len(chardev.waiting_clients) == 1
        flood = bytes(range(256)) * 1024
        for _ in range(4):
            first_w.write(flood)
        second_w.write(b"second client")
        await asyncio.sleep(0.2)
        inbox, _ = port.pending()
        assert vs.INBOX_LIMIT <= inbox < vs.INBOX_LIMIT + len(flood)  # it stopped reading
        assert chardev.active_client.paused
        # the guest takes what waits, and reading goes on until all of the first client's bytes are in
        received = bytearray()
        for _ in range(200):
            received += port.take_input(1 << 20)
            if len(received) == 4 * len(flood):
                break
            await asyncio.sleep(0.02)
        assert bytes(received) == flood * 4
        # output reaches the active client only
        port.put_output(b"to the first")
        assert await asyncio.wait_for(first_r.readexactly(12), 5) == b"to the first"
        first_w.close()
        await asyncio.sleep(0.2)
        # the waiting client takes over: its bytes were not read before its turn
        assert port.host_wanted() and chardev.active_client is not None
        assert port.take_input(100) == b"second client"
        second_w.close()
        await asyncio.sleep(0.1)
        assert not port.host_wanted()
        chardev.close()

    asyncio.run(scenario())


def test_file_chardev_is_created_at_open_and_takes_a_ports_output(tmp_path):
    async def scenario():
        path = tmp_path / "out.txt"
        path.write_bytes(b"old content")
        port = console(0)
        chardev = Chardev(ChardevFile(id="f", path=str(path)))
        chardev.attach_device("virtconsole", port)
        await chardev.open(None)
        assert path.read_bytes() == b""  # truncated, as QEMU does
        port.put_output(b"line one\n")
        await asyncio.sleep(0)
        port.put_output(b"line two\n")
        await asyncio.sleep(0)
        chardev.close()
        assert path.read_bytes() == b"line one\nline two\n"
        assert chardev.info()["frontend-open"] is False

    asyncio.run(scenario())


# ---- command-line errors, as QEMU words them ----------------------------------------------------
BAD_LINES = [
    ["-device", "virtconsole"],
    ["-device", "virtio-serial-ccw", "-device", "virtconsole,chardev=nope"],
    ["-chardev", "null,id=c0", "-device", "virtio-serial-ccw", "-device", "virtconsole,chardev=c0,bus=nope.0"],
    ["-chardev", "null,id=c0", "-device", "virtio-serial-ccw,id=vs0", "-device", "virtconsole,chardev=c0,bus=vs0"],
    ["-chardev", "null,id=c0", "-device", "virtio-serial-ccw", "-device", "virtserialport,chardev=c0,nr=0"],
    ["-device", "virtio-serial-ccw", "-device", "virtserialport,nr=3", "-device", "virtserialport,nr=3"],
    ["-chardev", "null,id=c0", "-device", "virtio-serial-ccw", "-device", "virtconsole,chardev=c0",
     "-device", "virtserialport,chardev=c0"],
    ["-device", "virtio-serial-ccw", "-device", "virtserialport,name=x", "-device", "virtio-serial-ccw",
     "-device", "virtserialport,name=x"],
    ["-device", "virtio-serial-ccw,max_ports=2", "-device", "virtserialport,nr=2"],
    ["-device", "virtio-serial-ccw,max_ports=1", "-device", "virtserialport"],
    ["-device", "virtio-serial-ccw,max_ports=32", *["-device", "virtserialport"] * 32],
    ["-device", "virtio-serial-ccw,max_ports=0"],
    ["-device", "virtio-serial-ccw,max_ports=512"],
    ["-device", "virtio-serial-ccw", "-device", "virtserialport,bus=virtual-css"],
    ["-device", "virtio-serial-ccw,id=vs0", "-device", "virtio-rng-ccw,bus=vs0.0"],
    ["-device", "virtio-serial-ccw", "-device", "virtserialport,nr=-1"],
    ["-chardev", "null,id=m", "-mon", "m", "-device", "virtio-serial-ccw", "-device", "virtserialport,chardev=m"],
    ["-chardev", "file,id=f,path=/nonexistent/dir/out.txt"],
]


@pytest.mark.parametrize("args", BAD_LINES, ids=lambda a: " ".join(a)[-60:])
def test_bad_command_lines_fail_as_in_qemu(qemu_binary, args, tmp_path):
    base = ["-M", "s390-ccw-virtio", "-nodefaults", "-nographic", "-S"]
    theirs = subprocess.run([qemu_binary, *base, *args], capture_output=True, text=True, timeout=30,
                            stdin=subprocess.DEVNULL)
    ours = subprocess.run([sys.executable, "-m", "vmd", *base, *args, "--runtime-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=30, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert (ours.returncode, theirs.returncode) == (1, 1)
    assert ours.stderr.replace("vmd:", "qemu-system-s390x:", 1) == theirs.stderr


@pytest.mark.parametrize("model", ["virtconsole", "virtserialport"])
def test_port_help_matches_qemu(qemu_binary, model):
    theirs = subprocess.run([qemu_binary, "-M", "s390-ccw-virtio", "-device", f"{model},help"],
                            capture_output=True, text=True, timeout=30).stdout
    ours = subprocess.run([sys.executable, "-m", "vmd", "-device", f"{model},help"],
                          capture_output=True, text=True, timeout=30, cwd=ROOT).stdout
    assert ours == theirs


# ---- the guest: QEMU and vmd agree, and a socket client's bytes come back ----------------------------
OUT_FILE = "vserial-out.txt"
EXPECTED_FILE = (b"vserial: hello through the virtio console\n!\n"
                 b"vserial: a legacy driver on port 0\n")


def run_vmd_guest(cwd: Path, *extra: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vmd", *MACHINE, "-nodefaults", *GUESTS["vserial"], *extra,
         "-kernel", str(BIN / "vserial.elf"), "--runtime-dir", str(cwd / "run")],
        cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def test_the_guests_console_file_is_the_same_under_qemu_and_vmd(qemu_binary, tmp_path):
    (tmp_path / "qemu").mkdir()
    (tmp_path / "vmd").mkdir()
    theirs = subprocess.run([qemu_binary, *MACHINE, "-action", "panic=exit-failure", *GUESTS["vserial"],
                             "-kernel", str(BIN / "vserial.elf")], cwd=tmp_path / "qemu",
                            stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    proc = run_vmd_guest(tmp_path / "vmd")
    out, err = proc.communicate(timeout=60)
    assert theirs.returncode == 0 and proc.returncode == 0, err.decode()
    assert out == theirs.stdout == (EXPECTED / "vserial.txt").read_bytes()
    assert (tmp_path / "vmd" / OUT_FILE).read_bytes() == (tmp_path / "qemu" / OUT_FILE).read_bytes() \
        == EXPECTED_FILE


def test_a_socket_clients_bytes_come_back_through_the_guest(tmp_path):
    """host -> guest -> host: 1 MiB, far more than the port buffers, with the client reading as it writes."""
    sock_path = tmp_path / "echo.sock"
    proc = run_vmd_guest(tmp_path, "-chardev", f"socket,id=echo,path={sock_path},server=on,wait=on",
                         "-device", "virtserialport,chardev=echo,name=org.vmd.echo")
    try:
        wait_for_socket(sock_path, proc)
        client = socket.socket(socket.AF_UNIX)
        client.connect(str(sock_path))
        client.settimeout(60)
        payload = bytes((i * 7 + i // 4093) & 0xFF for i in range(1 << 20)).replace(b"quit\n", b"quiT\n")
        payload += b"quit\n"
        received = bytearray()

        def read_all():
            while len(received) < len(payload):
                data = client.recv(1 << 16)
                if not data:
                    return
                received.extend(data)

        reader = threading.Thread(target=read_all)
        reader.start()
        client.sendall(payload)
        reader.join(120)
        assert bytes(received) == payload
        out, err = proc.communicate(timeout=60)
        client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert 'port 2: serial port, name "org.vmd.echo", host open' in text
    assert f"echoed {len(payload)} bytes" in text
    assert text.endswith("vserial: done\n")
    assert (tmp_path / OUT_FILE).read_bytes() == EXPECTED_FILE


def test_a_client_that_floods_without_reading_is_held_back(tmp_path):
    """The guest echoes, the client never reads: vmd's memory stays bounded and the client blocks."""
    sock_path = tmp_path / "echo.sock"
    proc = run_vmd_guest(tmp_path, "-chardev", f"socket,id=echo,path={sock_path},server=on,wait=on",
                         "-device", "virtserialport,chardev=echo,name=org.vmd.echo",
                         "-qmp", f"unix:{tmp_path / 'qmp.sock'},server=on,wait=off")
    try:
        wait_for_socket(sock_path, proc)
        client = socket.socket(socket.AF_UNIX)
        client.connect(str(sock_path))
        client.setblocking(False)
        sent = 0
        stalled_since = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                sent += client.send(bytes(1 << 16))
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 2:
                    break
                time.sleep(0.05)
        assert stalled_since is not None, "vmd kept reading a client that never reads"
        assert sent < 16 << 20  # socket buffers and the port's bounded buffers, nothing more
        # the machine still answers its monitor
        qmp = socket.socket(socket.AF_UNIX)
        qmp.connect(str(tmp_path / "qmp.sock"))
        qmp.settimeout(10)
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
