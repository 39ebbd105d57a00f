"""virtio-console (virtio 1.2, section 5.3) with MULTIPORT, as QEMU 7.2's virtio-serial offers it.

Queues: port 0 receive/transmit are 0 and 1, the control queues 2 (device ->
driver) and 3 (driver -> device), port N >= 1 has 2 + 2N and 3 + 2N.  Port
queues hold 128 entries, control queues 32.  MULTIPORT is offered when the
device has more than one port, EMERG_WRITE with ``emergency-write``; the
configuration space is cols, rows (always 0), max_nr_ports and, with
EMERG_WRITE, emerg_wr.

Threads.  A port's bytes come from and go to a chardev on the event loop; the
device runs on the vCPU thread, inside the driver's kicks.  :class:`SerialPort`
is where the two meet: its inbox (host -> guest) and outbox (guest -> host)
are bounded byte buffers behind a lock.  The loop side never touches guest
storage: when host input or a host state change arrives it asks for
:meth:`VirtioSerial.service`, which its owner runs with the vCPU thread out of
guest code.  What the device wants the loop to do goes through
``SerialPort.to_loop`` (``call_soon_threadsafe``).

Flow control.  Host input waits in the inbox until the guest posts receive
buffers; a full inbox tells the chardev to stop reading (the socket's own
buffers then push back on the client).  Guest output leaves the transmit
queue only as fast as the outbox drains: a virtserialport with a congested
host keeps the guest's buffers (QEMU's "throttle"), a virtconsole drops what
does not fit, as QEMU's console does, so a stuck client never hangs a guest's
console.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Callable, Protocol, Sequence

from vmd.virtio.device import VirtioBackend
from vmd.virtio.ring import Chain, Virtqueue, VirtqueueError

log = logging.getLogger("vmd.virtio")

VIRTIO_ID_CONSOLE = 3
# device feature bits
F_SIZE = 0
F_MULTIPORT = 1
F_EMERG_WRITE = 2
# control events (struct virtio_console_control: le32 id, le16 event, le16 value)
DEVICE_READY = 0
PORT_ADD = 1
PORT_REMOVE = 2
PORT_READY = 3
CONSOLE_PORT = 4
RESIZE = 5
PORT_OPEN = 6
PORT_NAME = 7
EVENT_NAMES = {DEVICE_READY: "DEVICE_READY", PORT_ADD: "PORT_ADD", PORT_REMOVE: "PORT_REMOVE",
               PORT_READY: "PORT_READY", CONSOLE_PORT: "CONSOLE_PORT", RESIZE: "RESIZE",
               PORT_OPEN: "PORT_OPEN", PORT_NAME: "PORT_NAME"}
CONTROL_SIZE = 8

PORT_QUEUE_SIZE = 128
CONTROL_QUEUE_SIZE = 32
CONTROL_RX = 2
CONTROL_TX = 3
#: QEMU's limit: two queues per port plus the control pair within 1024 queues
MAX_PORTS = 511
#: "nr" not given
BAD_ID = 0xFFFFFFFF

#: host bytes a port holds for the guest before the chardev stops reading
INBOX_LIMIT = 64 * 1024
#: guest bytes a port holds for the host before the device stops taking them
OUTBOX_LIMIT = 64 * 1024
#: the most one transmit step reads from guest storage at a time
TX_CHUNK = 16 * 1024
#: control messages waiting for the driver's buffers (DEVICE_READY answers one per port)
CONTROL_BACKLOG = 2 * MAX_PORTS + 64


def rx_queue(port_id: int) -> int:
    return 0 if port_id == 0 else 2 + 2 * port_id


def tx_queue(port_id: int) -> int:
    return rx_queue(port_id) + 1


def port_of_queue(index: int) -> int | None:
    """The port a queue belongs to, or None for the control queues."""
    if index < 2:
        return 0
    if index < 4:
        return None
    return (index - 2) // 2


def queue_count(max_ports: int) -> int:
    return 2 * max_ports + 2


class PortLink(Protocol):
    """The host side of a port (a chardev); the port calls these on the event loop."""

    def output_ready(self) -> None:
        """Guest output is waiting: take it with :meth:`SerialPort.take_output`."""

    def input_space(self) -> None:
        """The inbox has room again: read from the host once more."""

    def guest_open(self, is_open: bool) -> None:
        """The guest opened or closed the port."""


class SerialPort:
    """One port: its identity and the buffers between the host (loop) and the device (vCPU thread).

    Methods marked *loop* run on the event loop; *device* ones on the vCPU thread or
    with it held out of guest code.
    """

    def __init__(self, port_id: int, name: str | None, is_console: bool, has_chardev: bool):
        self.id = port_id
        self.name = name
        self.is_console = is_console
        self._lock = threading.Lock()
        self._inbox = bytearray()
        self._outbox = bytearray()
        self._reader_paused = False
        self._output_blocked = False
        # a console with a chardev is always open on the host side (QEMU opens it at realize)
        self._host_wanted = is_console and has_chardev
        #: the host side as the guest was told (device)
        self.host_connected = self._host_wanted
        self.guest_connected = False
        #: a transmit chain taken part way, and how far (device)
        self.tx_chain: Chain | None = None
        self.tx_offset = 0
        #: the chardev side; None without a chardev (output is dropped)
        self.link: PortLink | None = None
        #: run a function on the event loop from any thread (call_soon_threadsafe)
        self.to_loop: Callable[..., None] = lambda fn, *args: fn(*args)
        #: (loop) ask the device to look at this port soon, with the guest held
        self.request_service: Callable[[], None] = lambda: None

    # -- loop side -------------------------------------------------------------------------
    def host_input(self, data: bytes) -> bool:
        """(loop) Bytes from the host for the guest; False when the host should stop reading."""
        if data:
            with self._lock:
                self._inbox += data
                full = len(self._inbox) >= INBOX_LIMIT
                if full:
                    self._reader_paused = True
            self.request_service()
            return not full
        return True

    def set_host_open(self, is_open: bool) -> None:
        """(loop) A chardev client came or went.  Consoles stay open, as QEMU's do."""
        if self.is_console:
            return
        with self._lock:
            if self._host_wanted == is_open:
                return
            self._host_wanted = is_open
        self.request_service()

    def take_output(self, limit: int = OUTBOX_LIMIT) -> bytes:
        """(loop) Guest output for the host, at most ``limit`` bytes."""
        with self._lock:
            data = bytes(self._outbox[:limit])
            del self._outbox[:limit]
            resume = self._output_blocked and len(self._outbox) <= OUTBOX_LIMIT // 2
            if resume:
                self._output_blocked = False
        if resume:
            self.request_service()
        return data

    @property
    def throttled(self) -> bool:
        return self._output_blocked

    # -- device side -----------------------------------------------------------------------
    def host_wanted(self) -> bool:
        with self._lock:
            return self._host_wanted

    def has_input(self) -> bool:
        with self._lock:
            return bool(self._inbox)

    def take_input(self, limit: int) -> bytes:
        """(device) Up to ``limit`` bytes of host input; tells the host to read again once there is room."""
        with self._lock:
            data = bytes(self._inbox[:limit])
            del self._inbox[:limit]
            resume = self._reader_paused and len(self._inbox) <= INBOX_LIMIT // 2
            if resume:
                self._reader_paused = False
        if resume and self.link is not None:
            self.to_loop(self.link.input_space)
        return data

    def put_output(self, data: bytes) -> int:
        """(device) Queue guest output for the host; returns how much fit.  When not all of it
        did, a virtserialport stays blocked until the host has taken half of what waits (a
        console just loses the rest)."""
        with self._lock:
            was_empty = not self._outbox
            room = max(0, OUTBOX_LIMIT - len(self._outbox))
            taken = min(room, len(data))
            self._outbox += data[:taken]
            if taken < len(data) and not self.is_console:
                self._output_blocked = True
        if taken and was_empty and self.link is not None:
            self.to_loop(self.link.output_ready)
        return taken

    def output_room(self) -> int:
        with self._lock:
            return max(0, OUTBOX_LIMIT - len(self._outbox))

    def output_blocked(self) -> bool:
        with self._lock:
            return self._output_blocked

    def drop_output(self) -> None:
        """(device) The host side closed: what it did not take is gone, and nothing blocks."""
        with self._lock:
            self._outbox.clear()
            self._output_blocked = False

    def set_guest_connected(self, connected: bool) -> None:
        """(device) The guest opened or closed the port (PORT_OPEN, or a reset)."""
        if self.guest_connected == connected:
            return
        self.guest_connected = connected
        if self.link is not None:
            self.to_loop(self.link.guest_open, connected)

    def pending(self) -> tuple[int, int]:
        """Bytes waiting (host -> guest, guest -> host); for tests and the monitor."""
        with self._lock:
            return len(self._inbox), len(self._outbox)


class VirtioSerial(VirtioBackend):
    """The virtio-serial device: ports plugged by the device models on its bus."""

    device_id = VIRTIO_ID_CONSOLE

    def __init__(self, max_ports: int = 31, emergency_write: bool = True, bus_name: str = "virtio-serial-bus.0"):
        super().__init__()
        if not 1 <= max_ports <= MAX_PORTS:
            raise ValueError(f"max_ports must be 1..{MAX_PORTS}")
        self.max_ports = max_ports
        self.emergency_write = emergency_write
        self.bus_name = bus_name
        self.queue_sizes = tuple(CONTROL_QUEUE_SIZE if i in (CONTROL_RX, CONTROL_TX) else PORT_QUEUE_SIZE
                                 for i in range(queue_count(max_ports)))
        #: plugged ports by id, in plug order (DEVICE_READY announces them in this order)
        self.ports: dict[int, SerialPort] = {}
        #: the transport's queues (set when a transport is attached)
        self.queues: Sequence[Virtqueue] = ()
        self._driver_ok = False
        self._control_backlog: collections.deque[bytes] = collections.deque()
        self._complained: set[str] = set()

    # -- wiring ----------------------------------------------------------------------------
    def attach_queues(self, queues: Sequence[Virtqueue] | None) -> None:
        self.queues = queues or ()

    def _queue(self, index: int) -> Virtqueue | None:
        if index < len(self.queues):
            queue = self.queues[index]
            if queue.ready:
                return queue
        return None

    @property
    def multiport(self) -> bool:
        return self.has(F_MULTIPORT)

    # -- negotiation and configuration -----------------------------------------------------
    def features(self) -> int:
        bits = 0
        if self.max_ports > 1:
            bits |= 1 << F_MULTIPORT
        if self.emergency_write:
            bits |= 1 << F_EMERG_WRITE
        return bits

    def config(self) -> bytes:
        data = self.pack("HHI", 0, 0, self.max_ports)
        return data + bytes(4) if self.emergency_write else data

    def write_config(self, offset: int, data: bytes) -> None:
        """Only emerg_wr is writable: a nonzero value sends its low byte to the first open console."""
        if not self.emergency_write or offset != 0 or len(data) < 12 or not any(data[8:12]):
            return
        char = bytes(data[8:9])  # QEMU reads the field little-endian and keeps the low byte
        for port in self.ports.values():
            if port.is_console and port.host_connected:
                port.put_output(char)
                return

    # -- life cycle ----------------------------------------------------------------------------
    def driver_ok(self) -> None:
        self._driver_ok = True
        port0 = self.ports.get(0)
        if port0 is not None and not self.multiport:
            # a driver without MULTIPORT cannot say it opened port 0: it is open once the driver is up
            port0.set_guest_connected(True)
        self.service()

    def reset(self) -> None:
        super().reset()
        self._driver_ok = False
        self._control_backlog.clear()
        for port in self.ports.values():
            port.tx_chain = None
            port.set_guest_connected(False)

    def close(self) -> None:
        self.queues = ()

    # -- ports ----------------------------------------------------------------------------------
    def plug(self, port: SerialPort) -> None:
        """A port appears on the bus (device held): the driver hears PORT_ADD and a config change."""
        self.ports[port.id] = port
        port.host_connected = port.host_wanted()
        self._send_control(port.id, PORT_ADD, 1)
        self._flush_control()
        self.config_changed()

    def unplug(self, port: SerialPort) -> None:
        """A port goes (device held): its pending output is returned, the driver hears PORT_REMOVE."""
        if self.ports.get(port.id) is not port:
            return
        self._discard_output(port)
        del self.ports[port.id]
        port.set_guest_connected(False)
        self._send_control(port.id, PORT_REMOVE, 1)
        self._flush_control()

    # -- the driver's kicks (vCPU thread) ------------------------------------------------------
    def queue_notify(self, queue: Virtqueue) -> None:
        if queue.index == CONTROL_TX:
            self._control_out(queue)
            self._flush_control()
            return
        if queue.index == CONTROL_RX:
            self._flush_control()
            return
        port = self.ports.get(port_of_queue(queue.index))
        if queue.index % 2:  # transmit queues are the odd ones
            if port is None:
                self._discard_queue(queue)  # output for a port that does not exist goes nowhere
            else:
                self._flush_output(port)
        elif port is not None:
            self._deliver_input(port)

    # -- host events (loop, with the vCPU thread held) --------------------------------------------
    def service(self) -> None:
        """Catch up with the host side: open/close, pending input, output the host can take again."""
        try:
            for port in list(self.ports.values()):
                self._sync_host(port)
                self._flush_output(port)
                self._deliver_input(port)
            self._flush_control()
        except VirtqueueError as err:
            self._complain("broken", f"{self.bus_name}: {err}")

    def _sync_host(self, port: SerialPort) -> None:
        wanted = port.host_wanted()
        if wanted == port.host_connected:
            return
        port.host_connected = wanted
        if not wanted:
            # as QEMU's close: unconsumed guest output is returned, nothing stays throttled
            self._discard_output(port)
            port.drop_output()
        self._send_control(port.id, PORT_OPEN, int(wanted))

    # -- control queue -----------------------------------------------------------------------------
    def _control_out(self, queue: Virtqueue) -> None:
        old = queue.used_idx
        while True:
            chain = queue.pop()
            if chain is None:
                break
            # every message the driver sends is 8 bytes; whatever follows is not read
            message = queue.gather(chain.readable, CONTROL_SIZE)
            queue.push(chain, 0)
            self._handle_control(message)
        self._notify_used(queue, old)

    def _handle_control(self, message: bytes) -> None:
        if len(message) < CONTROL_SIZE:
            self._complain("short", f"{self.bus_name}: control message of {len(message)} bytes ignored")
            return
        port_id, event, value = self.unpack_from("IHH", message)
        if event == DEVICE_READY:
            if not value:
                self._complain("device-failed", f"virtio-serial-bus: Guest failure in adding device {self.bus_name}")
                return
            for port in self.ports.values():
                self._send_control(port.id, PORT_ADD, 1)
            return
        port = self.ports.get(port_id)
        if port is None:
            self._complain(f"id-{event}",
                           f"virtio-serial-bus: Unexpected port id {port_id} for device {self.bus_name}")
            return
        if event == PORT_READY:
            if not value:
                self._complain("port-failed", f"virtio-serial-bus: Guest failure in adding port {port_id} "
                                              f"for device {self.bus_name}")
                return
            if port.is_console:
                self._send_control(port.id, CONSOLE_PORT, 1)
            if port.name is not None:
                self._send_control(port.id, PORT_NAME, 1, port.name.encode() + b"\0")
            if port.host_connected:
                self._send_control(port.id, PORT_OPEN, 1)
        elif event == PORT_OPEN:
            port.set_guest_connected(bool(value))
            if value:
                self._deliver_input(port)

    def _send_control(self, port_id: int, event: int, value: int, extra: bytes = b"") -> None:
        """Queue a message for the driver; without a control queue it is lost, as in QEMU (the
        driver learns the state again when it reports PORT_READY)."""
        if self._queue(CONTROL_RX) is None:
            return
        if len(self._control_backlog) >= CONTROL_BACKLOG:
            self._complain("backlog", f"{self.bus_name}: the driver takes no control messages; "
                                      f"{EVENT_NAMES.get(event, event)} for port {port_id} dropped")
            return
        self._control_backlog.append(self.pack("IHH", port_id, event, value) + extra)

    def _flush_control(self) -> None:
        queue = self._queue(CONTROL_RX)
        if queue is None:
            self._control_backlog.clear()
            return
        old = queue.used_idx
        while self._control_backlog:
            chain = queue.pop()
            if chain is None:
                break
            message = self._control_backlog.popleft()
            queue.push(chain, queue.scatter(chain.writable, message))
        self._notify_used(queue, old)

    # -- data queues -------------------------------------------------------------------------------
    def _guest_ready(self, port: SerialPort) -> bool:
        return self._driver_ok and port.guest_connected

    def _deliver_input(self, port: SerialPort) -> None:
        queue = self._queue(rx_queue(port.id))
        if queue is None or not self._guest_ready(port) or not port.has_input():
            return
        old = queue.used_idx
        while port.has_input():
            chain = queue.pop()
            if chain is None:
                break
            data = port.take_input(chain.writable_len)
            queue.push(chain, queue.scatter(chain.writable, data))
        self._notify_used(queue, old)

    def _flush_output(self, port: SerialPort) -> None:
        queue = self._queue(tx_queue(port.id))
        if queue is None:
            return
        if not port.host_connected:
            self._discard_output(port)
            return
        old = queue.used_idx
        while not port.output_blocked():
            chain = port.tx_chain
            if chain is None:
                chain = queue.pop()
                if chain is None:
                    break
                port.tx_chain, port.tx_offset = chain, 0
            if not self._transmit(queue, port, chain):
                break
            queue.push(chain, 0)
            port.tx_chain = None
        self._notify_used(queue, old)

    def _transmit(self, queue: Virtqueue, port: SerialPort, chain: Chain) -> bool:
        """Hand the rest of ``chain`` to the host; False when the host is congested part way."""
        total = chain.readable_len
        while port.tx_offset < total:
            if port.is_console and port.output_room() == 0:
                port.tx_offset = total  # dropped unread: a huge buffer costs no copying
                break
            size = min(TX_CHUNK, total - port.tx_offset)
            data = _read_span(queue, chain.readable, port.tx_offset, size)
            taken = port.put_output(data)
            if port.is_console:
                taken = size  # a console drops what the host cannot take
            port.tx_offset += taken
            if taken < size:
                return False
        return True

    def _discard_output(self, port: SerialPort) -> None:
        queue = self._queue(tx_queue(port.id))
        if queue is None:
            port.tx_chain = None
            return
        old = queue.used_idx
        if port.tx_chain is not None:
            queue.push(port.tx_chain, 0)
            port.tx_chain = None
        self._drain(queue)
        self._notify_used(queue, old)

    def _discard_queue(self, queue: Virtqueue) -> None:
        old = queue.used_idx
        self._drain(queue)
        self._notify_used(queue, old)

    @staticmethod
    def _drain(queue: Virtqueue) -> None:
        while True:
            chain = queue.pop()
            if chain is None:
                return
            queue.push(chain, 0)

    def _notify_used(self, queue: Virtqueue, old_used: int) -> None:
        if queue.used_idx != old_used and queue.needs_interrupt(old_used):
            self.notify(queue.index)

    def _complain(self, key: str, message: str) -> None:
        """A driver's mistake: a warning the first time, then quietly (a guest can repeat it at will)."""
        if key in self._complained:
            log.debug("%s", message)
            return
        self._complained.add(key)
        log.warning("%s", message)


def _read_span(queue: Virtqueue, areas: list[tuple[int, int]], offset: int, size: int) -> bytes:
    """``size`` bytes of a chain's readable areas starting ``offset`` bytes in."""
    out = bytearray()
    for address, length in areas:
        if offset >= length:
            offset -= length
            continue
        take = min(length - offset, size - len(out))
        out += queue.memory.read(address + offset, take)
        offset = 0
        if len(out) >= size:
            break
    return bytes(out)
