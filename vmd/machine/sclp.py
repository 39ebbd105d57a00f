"""The Service-Call Logical Processor (SCLP): the SERVICE CALL instruction's far side.

A guest puts a command word in one register and the address of a Service
Call Control Block (SCCB) in another and executes SERVC.  The SCLP validates
the SCCB, carries out the command, stores a response code in the SCCB header
and signals completion with a service-signal external interruption (code
0x2401) whose parameter is the SCCB address, with the low bit set when event
data is waiting to be read.  Host input that makes an event pending raises
the same interruption with no address, only that bit: an attention.

Commands: Read SCP Info (and its forced form), Read CPU Info, and the event
facility: Write Event Mask, Write Event Data, Read Event Data.  The event
facility has QEMU's events bus: signal quiesce (type 0x1D, sent on
``system_powerdown``), CPU hot plug (configuration management data, 0x04,
never pending here) and the operator consoles plugged on it, newest first,
which is the order reads and writes visit them:

* :class:`Vt220Console` (QEMU's ``sclpconsole``): ASCII console data, type
  0x1A, both ways.  Input reaches the guest as it came, behind a 0x00
  (session data) byte.  A machine without one keeps a stand-in that writes to
  ``console_output`` (stdout under ``-nographic``), so guests of machines
  made without a console device (``-nodefaults``) still print.
* :class:`LineModeConsole` (``sclplmconsole``): messages (0x02) and priority
  message commands (0x09) out, operator commands (0x01) in.  Output is EBCDIC
  text objects, each written as a new line; input is taken one line at a time
  (CR or LF ends it, and is not echoed), echoed as it is typed, and handed to
  the guest in EBCDIC.

The layouts and response codes follow QEMU 7.2 (``hw/s390x/event-facility.c``,
``hw/char/sclpconsole*.c``), checked against its answers by the ``conin`` test
guest.  Storage access goes through :class:`~vmd.machine.memory.GuestMemory`:
the SCCB is copied in, worked on privately in a zero-filled page (the guest
cannot change lengths under our feet, and fields past its length read as 0,
as in QEMU), and written back up to the length in its header.

Threads: the SCLP runs on the vCPU thread; host input arrives on the event
loop.  A console's :class:`ConsolePort` is where they meet (bounded buffers
behind a lock), and the loop learns of input through ``ConsolePort.on_input``.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass, field
from typing import Callable

from vmd.machine.memory import AddressingError, GuestMemory

SCCB_SIZE = 4096
HEADER = struct.Struct(">HB3sH")  # length, function code, control mask, response code
EVENT_HEADER = struct.Struct(">HBBH")  # length, type, flags, reserved

CMD_READ_SCP_INFO = 0x00020001
CMD_READ_SCP_INFO_FORCED = 0x00120001
CMD_READ_CPU_INFO = 0x00010001
CMD_READ_EVENT_DATA = 0x00770005
CMD_WRITE_EVENT_DATA = 0x00760005
CMD_WRITE_EVENT_MASK = 0x00780005
CMD_CODE_MASK = 0xFFFF00FF

RC_NORMAL_READ_COMPLETION = 0x0010
RC_NORMAL_COMPLETION = 0x0020
RC_SCCB_BOUNDARY_VIOLATION = 0x0100
RC_INVALID_SCLP_COMMAND = 0x01F0
RC_INSUFFICIENT_SCCB_LENGTH = 0x0300
RC_INVALID_FUNCTION = 0x40F0
RC_NO_EVENT_BUFFERS_STORED = 0x60F0
RC_INVALID_SELECTION_MASK = 0x70F0
RC_INCONSISTENT_LENGTHS = 0x72F0
RC_EVENT_BUFFER_SYNTAX_ERROR = 0x73F0
RC_INVALID_MASK_LENGTH = 0x74F0

EVENT_OPERATOR_COMMAND = 0x01
EVENT_MESSAGE = 0x02
EVENT_CONFIG_MGT_DATA = 0x04  # CPU hot plug notifications
EVENT_PRIORITY_MESSAGE_COMMAND = 0x09
EVENT_ASCII_CONSOLE = 0x1A
EVENT_SIGNAL_QUIESCE = 0x1D
EVENT_BUFFER_ACCEPTED = 0x80
VARIABLE_LENGTH_RESPONSE = 0x80  # in the third control-mask byte
FUNCTION_UNCONDITIONAL_READ = 0
FUNCTION_SELECTIVE_READ = 1
FUNCTION_NORMAL_WRITE = 0
#: the longest event mask a guest may give (QEMU's SCLP_EVENT_MASK_LEN_MAX)
MAX_MASK_LENGTH = 1021

#: program interruption codes SERVC can raise
PGM_ADDRESSING = 0x05
PGM_SPECIFICATION = 0x06

STORAGE_INCREMENT_MIB = 1  # rnsize: storage reported in 1 MiB increments
SCLP_HAS_CPU_INFO = 0x0C00000000000000

#: what a VT220 console holds for the guest before the host must wait (QEMU's buffer)
VT220_INPUT_LIMIT = 4080
#: the longest line-mode input line: what fits a 4 KiB SCCB behind the command headers
LINE_MODE_LINE_LIMIT = SCCB_SIZE - HEADER.size - 22
#: guest output a console holds for a slow host before it drops the rest
CONSOLE_OUTBOX_LIMIT = 1 << 20


def event_mask_bit(event_type: int) -> int:
    """The 32-bit mask bit of an event type: type t is the (t-1)th bit from the left."""
    return 0x80000000 >> (event_type - 1)


# -- EBCDIC, as QEMU's line-mode console converts -------------------------------------------
def _ascii_to_ebcdic() -> bytes:
    """Code page 037 for 7-bit ASCII with LF as NL (0x15); bytes above 0x7F are '?' (0x3F) but
    for the four QEMU maps."""
    table = bytearray(b"\x3f" * 256)
    table[:128] = bytes(range(128)).decode("latin-1").encode("cp037")
    for ascii_code, ebcdic in {0x0A: 0x15, 0x1C: 0x22, 0xE1: 0x59, 0xF8: 0x90, 0xFD: 0xEA, 0xFF: 0xFF}.items():
        table[ascii_code] = ebcdic
    return bytes(table)


def _ebcdic_to_ascii() -> bytes:
    """Code page 500 read into the PC character set (code page 437); BEL for what has no place
    there, and QEMU's exceptions."""
    table = bytearray()
    for code in range(256):
        try:
            table += bytes([code]).decode("cp500").encode("cp437")
        except UnicodeEncodeError:
            table.append(0x07)
    for ebcdic, ascii_code in {0x15: 0x0A, 0x1C: 0x07, 0x1D: 0x07, 0x1E: 0x07, 0x1F: 0x07, 0x22: 0x1C,
                               0x57: 0x07, 0x78: 0x70, 0xAB: 0xAB}.items():
        table[ebcdic] = ascii_code
    return bytes(table)


ASCII_TO_EBCDIC = _ascii_to_ebcdic()
EBCDIC_TO_ASCII = _ebcdic_to_ascii()


class ServiceCallException(Exception):
    """SERVC must end in a program interruption (code: PGM_SPECIFICATION or PGM_ADDRESSING)."""

    def __init__(self, code: int):
        super().__init__(f"program interruption 0x{code:02x}")
        self.code = code


@dataclass
class SclpConfig:
    memory_size: int
    cpu_count: int
    loadparm: bytes = b"        "
    cpu_type: int = 0  # CP


# -- where a console meets its chardev --------------------------------------------------------
class ConsolePort:
    """A console's host side: bounded inbox (host -> guest) and outbox (guest -> host) behind a lock.

    The chardev attaches here as it attaches to a virtio-serial port (``link``, ``to_loop``):
    *loop* methods run on the event loop, *device* methods on the vCPU thread.
    """

    #: the chardev's frontend is a console: never opened or closed by the guest
    is_console = True
    #: QEMU opens an SCLP console's chardev when the console is created
    frontend_open = True

    def __init__(self, inbox_limit: int, outbox_limit: int = CONSOLE_OUTBOX_LIMIT):
        self.inbox_limit = inbox_limit
        self.outbox_limit = outbox_limit
        self._lock = threading.Lock()
        self._inbox = bytearray()
        self._outbox = bytearray()
        self._reader_paused = False
        #: the chardev side; None without a chardev (output is dropped)
        self.link = None
        #: run a function on the event loop from any thread (call_soon_threadsafe)
        self.to_loop: Callable[..., None] = lambda fn, *args: fn(*args)
        #: (loop) host input arrived, or the console can take more: the SCLP may owe an attention
        self.on_input: Callable[[], None] = lambda: None

    # -- loop side -----------------------------------------------------------------------
    def host_input(self, data: bytes) -> bool:
        """(loop) Bytes from the host; False when the host should stop reading for now."""
        if not data:
            return True
        with self._lock:
            self._inbox += data
            full = len(self._inbox) >= self.inbox_limit
            if full:
                self._reader_paused = True
        self.on_input()
        return not full

    def set_host_open(self, is_open: bool) -> None:
        """(loop) A chardev client came or went: a console does not care."""

    def take_output(self, limit: int = 64 * 1024) -> bytes:
        """(loop) Guest output for the host, at most ``limit`` bytes."""
        with self._lock:
            data = bytes(self._outbox[:limit])
            del self._outbox[:limit]
        return data

    # -- device side -----------------------------------------------------------------------
    def has_input(self) -> bool:
        with self._lock:
            return bool(self._inbox)

    def take_input(self, limit: int, stop_at: bytes = b"") -> bytes:
        """(device) Up to ``limit`` bytes of host input, ending after the first byte of
        ``stop_at`` if one comes; the host may read again once half the inbox is free."""
        with self._lock:
            end = min(limit, len(self._inbox))
            for stop in stop_at:
                found = self._inbox.find(stop, 0, end)
                if found >= 0:
                    end = found + 1
            data = bytes(self._inbox[:end])
            del self._inbox[:end]
            resume = self._reader_paused and len(self._inbox) <= self.inbox_limit // 2
            if resume:
                self._reader_paused = False
        if resume and self.link is not None:
            self.to_loop(self.link.input_space)
        return data

    def put_output(self, data: bytes) -> int:
        """(device) Queue guest output; returns how much fit (a console drops the rest, so a
        stuck host never stops a guest)."""
        with self._lock:
            was_empty = not self._outbox
            taken = min(max(0, self.outbox_limit - len(self._outbox)), len(data))
            self._outbox += data[:taken]
        if taken and was_empty and self.link is not None:
            self.to_loop(self.link.output_ready)
        return taken

    def clear_input(self) -> None:
        with self._lock:
            self._inbox.clear()
            resume, self._reader_paused = self._reader_paused, False
        if resume and self.link is not None:
            self.to_loop(self.link.input_space)

    def pending(self) -> tuple[int, int]:
        """Bytes waiting (host -> guest, guest -> host); for tests and the monitor."""
        with self._lock:
            return len(self._inbox), len(self._outbox)


# -- events on the events bus ---------------------------------------------------------------
class SclpEvent:
    """One member of the events bus (QEMU's SCLPEvent): the events it sends to the guest
    (``send_mask``), those it takes (``receive_mask``), and its pending data."""

    name = "event"
    send_mask = 0
    receive_mask = 0

    def handles(self, event_type: int) -> bool:
        """Whether a buffer of this type written by the guest is this event's."""
        return False

    def pending(self) -> bool:
        return False

    def write(self, work: bytearray, pos: int) -> int:
        """Take the event buffer the guest wrote at ``work[pos:]``; returns a response code."""
        return RC_INVALID_FUNCTION

    def read(self, work: bytearray, pos: int, space: int) -> int:
        """Store a pending event buffer at ``work[pos:]`` in at most ``space`` bytes; returns the
        bytes used, 0 when nothing was stored."""
        return 0

    def reset(self) -> None:
        """System reset."""


class SignalQuiesce(SclpEvent):
    """``system_powerdown``: the guest is asked to shut down."""

    name = "sclpquiesce"
    send_mask = event_mask_bit(EVENT_SIGNAL_QUIESCE)
    SIZE = 9  # header, u16 timeout, u8 unit

    def __init__(self) -> None:
        self.requested = False

    def pending(self) -> bool:
        return self.requested

    def read(self, work: bytearray, pos: int, space: int) -> int:
        if space < self.SIZE or not self.requested:
            return 0
        self.requested = False
        struct.pack_into(">HB", work, pos, self.SIZE, EVENT_SIGNAL_QUIESCE)
        work[pos + 3] |= EVENT_BUFFER_ACCEPTED
        work[pos + 6:pos + 9] = bytes(3)  # no timeout: system_powerdown has none
        return self.SIZE

    def reset(self) -> None:
        self.requested = False


class CpuHotplugEvents(SclpEvent):
    """Configuration management data (CPU hot plug): offered, never pending (no CPU hot plug yet)."""

    name = "sclp-cpu-hotplug"
    send_mask = event_mask_bit(EVENT_CONFIG_MGT_DATA)


class Vt220Console(SclpEvent):
    """ASCII console data (QEMU's ``sclpconsole``): bytes out as written, bytes in as typed."""

    name = "sclpconsole"
    send_mask = receive_mask = event_mask_bit(EVENT_ASCII_CONSOLE)
    SESSION_DATA = 0x00  # the byte in front of the input: an ASCII string follows

    def __init__(self, port: ConsolePort | None = None, output: Callable[[bytes], None] | None = None):
        self.port = port if port is not None else ConsolePort(VT220_INPUT_LIMIT)
        self._output = output or self.port.put_output

    def handles(self, event_type: int) -> bool:
        return event_type == EVENT_ASCII_CONSOLE

    def write(self, work: bytearray, pos: int) -> int:
        length = struct.unpack_from(">H", work, pos)[0]
        self._output(bytes(work[pos + EVENT_HEADER.size:pos + length]))
        work[pos + 3] |= EVENT_BUFFER_ACCEPTED
        return RC_NORMAL_COMPLETION

    def pending(self) -> bool:
        return self.port.has_input()

    def read(self, work: bytearray, pos: int, space: int) -> int:
        room = space - EVENT_HEADER.size - 1
        if room <= 0 or not self.port.has_input():
            return 0
        data = self.port.take_input(room)
        length = EVENT_HEADER.size + 1 + len(data)
        struct.pack_into(">HB", work, pos, length, EVENT_ASCII_CONSOLE)
        work[pos + 3] |= EVENT_BUFFER_ACCEPTED
        work[pos + 6] = self.SESSION_DATA
        work[pos + 7:pos + length] = data
        return length

    def reset(self) -> None:
        self.port.clear_input()


class LineModeConsole(SclpEvent):
    """The line-mode console (QEMU's ``sclplmconsole``).

    Output: a message (or priority message command) carries a message data block, 12 bytes
    of header (u16 length, u16 type, u32 tag, u32 revision) and objects (u16 length, u16
    type); each message text object (type 4: u16 line type flags, u8 alarm control, 3
    reserved bytes, the text) is written as a new line: LF, then its EBCDIC text in ASCII.

    Input: an operator command with a message unit in front of the EBCDIC text.  QEMU 7.2
    (on the little-endian hosts it runs on) stores the GDS identifiers 0x1310 and 0x1320 in
    host byte order and the one-byte subvector lengths as the high byte of a 16-bit length;
    vmd stores the same bytes, so a guest sees what QEMU gives it.
    """

    name = "sclplmconsole"
    send_mask = event_mask_bit(EVENT_OPERATOR_COMMAND) | event_mask_bit(EVENT_PRIORITY_MESSAGE_COMMAND)
    receive_mask = event_mask_bit(EVENT_MESSAGE) | event_mask_bit(EVENT_PRIORITY_MESSAGE_COMMAND)
    MESSAGE_UNIT_SIZE = 16
    MDB_HEADER_SIZE = 12
    MESSAGE_TEXT = 4
    TEXT_OBJECT_HEADER = 10  # length, type, line type flags, alarm control, reserved
    LINE_ENDS = b"\r\n"

    def __init__(self, port: ConsolePort | None = None, echo: bool = True):
        self.port = port if port is not None else ConsolePort(SCCB_SIZE)
        self.echo = echo
        self._lock = threading.Lock()
        self._line = bytearray()
        self._ready = False

    def handles(self, event_type: int) -> bool:
        return event_type in (EVENT_MESSAGE, EVENT_PRIORITY_MESSAGE_COMMAND)

    # -- input ---------------------------------------------------------------------------
    def absorb(self) -> None:
        """(any thread) Take host input into the line until it is complete, echoing it.

        QEMU takes one byte at a time and none while a line waits for the guest, or once the
        line is as long as an SCCB allows (the host then waits for ever, as in QEMU)."""
        with self._lock:
            while not self._ready and len(self._line) < LINE_MODE_LINE_LIMIT:
                data = self.port.take_input(LINE_MODE_LINE_LIMIT - len(self._line), stop_at=self.LINE_ENDS)
                if not data:
                    return
                if data[-1] in self.LINE_ENDS:
                    data = data[:-1]
                    self._ready = True
                self._line += data
                if self.echo and data:
                    self.port.put_output(data)

    def pending(self) -> bool:
        with self._lock:
            return self._ready

    def read(self, work: bytearray, pos: int, space: int) -> int:
        with self._lock:
            if not self._ready:
                return 0
            header = EVENT_HEADER.size + self.MESSAGE_UNIT_SIZE
            if len(self._line) > space - header:
                return 0  # does not fit this SCCB: the next read takes it
            text = bytes(self._line).translate(ASCII_TO_EBCDIC)
            self._line.clear()
            self._ready = False
        length = header + len(text)
        struct.pack_into(">HB", work, pos, length, EVENT_OPERATOR_COMMAND)
        work[pos + EVENT_HEADER.size:pos + header] = self._message_unit(len(text))
        work[pos + header:pos + length] = text
        # the next line is taken on the loop, which announces it with an attention of its own
        self.port.to_loop(self.port.on_input)
        return length

    @staticmethod
    def _message_unit(text_length: int) -> bytes:
        """MDS-MU, CP-MSU and text command vectors, then the self-defining text message and text
        message subvectors, with QEMU's byte order (see the class)."""
        def subvector_length(value: int) -> int:
            return (value >> 8) & 0xFF

        return (struct.pack(">H", 16) + struct.pack("<H", 0x1310)
                + struct.pack(">H", 12) + struct.pack(">H", 0x1212)
                + struct.pack(">H", 8) + struct.pack("<H", 0x1320)
                + bytes([subvector_length(4), 0x31, subvector_length(2 + text_length), 0x30]))

    # -- output ----------------------------------------------------------------------------
    def write(self, work: bytearray, pos: int) -> int:
        mdb = pos + EVENT_HEADER.size
        mdb_length = _u16(work, mdb)
        if mdb_length < self.MDB_HEADER_SIZE:
            return RC_INCONSISTENT_LENGTHS
        first = mdb + self.MDB_HEADER_SIZE
        # every object's length is checked before any is written, as QEMU does
        remaining, obj = mdb_length - self.MDB_HEADER_SIZE, first
        while remaining > 0:
            obj_length = _u16(work, obj)
            if obj_length == 0 or obj_length > remaining:
                return RC_INCONSISTENT_LENGTHS
            remaining -= obj_length
            obj += obj_length
        remaining, obj = mdb_length - self.MDB_HEADER_SIZE, first
        while remaining > 0:
            obj_length = _u16(work, obj)
            if _u16(work, obj + 2) == self.MESSAGE_TEXT:
                text = bytes(work[obj + self.TEXT_OBJECT_HEADER:obj + obj_length])
                self.port.put_output(b"\n" + text.translate(EBCDIC_TO_ASCII))
            remaining -= obj_length
            obj += obj_length
        work[pos + 3] = EVENT_BUFFER_ACCEPTED
        return RC_NORMAL_COMPLETION

    def reset(self) -> None:
        with self._lock:
            self._line.clear()
            self._ready = False
        if self.port.has_input():  # what the host typed past the line goes on being taken
            self.port.to_loop(self.port.on_input)


def _u16(work: bytearray, offset: int) -> int:
    """A halfword of the SCCB; what lies past the work page reads as 0."""
    return int.from_bytes(bytes(work[offset:offset + 2]).ljust(2, b"\0"), "big")


@dataclass
class Sclp:
    """One machine's SCLP: configuration data, the guest's event masks and the events bus."""

    memory: GuestMemory
    config: SclpConfig
    #: called with bytes the guest wrote to the VT220 console when no console device is plugged
    console_output: Callable[[bytes], None] = lambda data: None
    receive_mask: int = 0  # what the guest (control program) accepts, event types 1-32
    send_mask: int = 0  # what the guest sends
    #: the guest's receive-mask bits for event types 33-64 (none exist; they only count as "set")
    receive_mask_high_types: int = 0
    mask_length: int = 4
    quiesce: SignalQuiesce = field(default_factory=SignalQuiesce)
    #: the bus, newest first (QEMU's order): plugged consoles, the VT220 stand-in, CPU hot plug, quiesce
    events: list[SclpEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stand_in = Vt220Console(output=lambda data: self.console_output(data))
        if not self.events:
            self.events = [self.stand_in, CpuHotplugEvents(), self.quiesce]

    # -- the bus ------------------------------------------------------------------------
    def plug(self, event: SclpEvent) -> None:
        """A console device joins the bus (at machine creation); a VT220 console replaces the stand-in."""
        if isinstance(event, Vt220Console) and self.stand_in in self.events:
            self.events.remove(self.stand_in)
        self.events.insert(0, event)

    def unplug(self, event: SclpEvent) -> None:
        if event in self.events:
            self.events.remove(event)

    @property
    def vt220(self) -> Vt220Console | None:
        return next((e for e in self.events if isinstance(e, Vt220Console)), None)

    def host_send_mask(self) -> int:
        mask = 0
        for event in self.events:
            mask |= event.send_mask
        return mask

    def host_receive_mask(self) -> int:
        mask = 0
        for event in self.events:
            mask |= event.receive_mask
        return mask

    # -- the instruction ------------------------------------------------------------
    def service_call(self, command: int, sccb: int, prefix: int = 0) -> int:
        """Execute SERVC; returns the external-interruption parameter to signal.

        :raises ServiceCallException: for the program interruptions QEMU raises.
        """
        if sccb & ~0x7FFFFFF8:
            raise ServiceCallException(PGM_SPECIFICATION)
        if (sccb & ~0x1FFF) == 0 or (sccb & ~0x1FFF) == prefix:
            raise ServiceCallException(PGM_SPECIFICATION)
        try:
            header = self.memory.read(sccb, HEADER.size)
        except AddressingError:
            raise ServiceCallException(PGM_ADDRESSING) from None
        length = HEADER.unpack(header)[0]
        if length < HEADER.size:
            raise ServiceCallException(PGM_SPECIFICATION)
        try:
            work = bytearray(self.memory.read(sccb, min(length, SCCB_SIZE)))
        except AddressingError:
            raise ServiceCallException(PGM_ADDRESSING) from None
        work += bytes(SCCB_SIZE - len(work))
        self._execute(command, work, sccb)
        self.memory.write(sccb, bytes(work[: min(_u16(work, 0), SCCB_SIZE)]))
        return (sccb & ~3) | (1 if self.event_pending() else 0)

    def event_pending(self) -> bool:
        """Whether an event the guest accepts waits to be read (the low bit of the parameter)."""
        return any(event.send_mask & self.receive_mask and event.pending() for event in self.events)

    def _execute(self, command: int, work: bytearray, address: int) -> None:
        length = struct.unpack_from(">H", work, 0)[0]
        code = command & CMD_CODE_MASK
        handlers = {
            CMD_READ_SCP_INFO: self._read_scp_info,
            CMD_READ_SCP_INFO_FORCED: self._read_scp_info,
            CMD_READ_CPU_INFO: self._read_cpu_info,
            CMD_WRITE_EVENT_MASK: self._write_event_mask,
            CMD_WRITE_EVENT_DATA: self._write_event_data,
            CMD_READ_EVENT_DATA: self._read_event_data,
        }
        handler = handlers.get(code)
        if handler is None:
            _set_rc(work, RC_INVALID_SCLP_COMMAND)
            return
        if (address & 0xFFF) + length > 4096 and not work[2] & VARIABLE_LENGTH_RESPONSE:
            # an SCCB may not cross a page unless the guest allows a longer response
            _set_rc(work, RC_SCCB_BOUNDARY_VIOLATION)
            return
        handler(work)

    # -- configuration ----------------------------------------------------------------
    def _cpu_entries(self) -> bytes:
        out = bytearray()
        for cpu in range(self.config.cpu_count):
            out += struct.pack(">BB6s6sBB", cpu, 0, bytes(6), bytes(6), self.config.cpu_type, 0)
        return bytes(out)

    def _read_scp_info(self, work: bytearray) -> None:
        entries = self._cpu_entries()
        offset_cpu = 128
        needed = offset_cpu + len(entries)
        if _u16(work, 0) < needed:
            _set_rc(work, RC_INSUFFICIENT_SCCB_LENGTH)
            return
        increments = self.config.memory_size // (STORAGE_INCREMENT_MIB << 20)
        work[8:needed] = bytes(needed - 8)
        if increments <= 0xFFFF:
            struct.pack_into(">HB", work, 8, increments, STORAGE_INCREMENT_MIB)
        else:
            struct.pack_into(">IQ", work, 100, STORAGE_INCREMENT_MIB, increments)
        struct.pack_into(">HH", work, 16, self.config.cpu_count, offset_cpu)
        work[24:32] = self.config.loadparm[:8].ljust(8)
        struct.pack_into(">Q", work, 48, SCLP_HAS_CPU_INFO)
        struct.pack_into(">H", work, 120, max(self.config.cpu_count - 1, 0))
        work[offset_cpu:needed] = entries
        _set_rc(work, RC_NORMAL_READ_COMPLETION)

    def _read_cpu_info(self, work: bytearray) -> None:
        entries = self._cpu_entries()
        offset = 24
        if _u16(work, 0) < offset + len(entries):
            _set_rc(work, RC_INSUFFICIENT_SCCB_LENGTH)
            return
        work[8:offset] = bytes(offset - 8)
        struct.pack_into(">HHHH", work, 8, self.config.cpu_count, offset, 0, offset + len(entries))
        work[offset:offset + len(entries)] = entries
        _set_rc(work, RC_NORMAL_READ_COMPLETION)

    # -- event facility -----------------------------------------------------------------
    def _write_event_mask(self, work: bytearray) -> None:
        mask_length = _u16(work, 10)
        if mask_length == 0 or mask_length > MAX_MASK_LENGTH:
            _set_rc(work, RC_INVALID_MASK_LENGTH)
            return

        def guest_mask(offset: int) -> int:
            """The first 8 bytes of a mask (QEMU keeps no more) as a 64-bit number."""
            return int.from_bytes(bytes(work[offset:offset + min(mask_length, 8)]).ljust(8, b"\0"), "big")

        def sclp_mask(offset: int, mask: int) -> None:
            """A 32-bit mask as 8 bytes, cut or zero-filled to the guest's mask length."""
            data = (mask << 32).to_bytes(8, "big")[:mask_length].ljust(mask_length, b"\0")
            work[offset:offset + mask_length] = data[:max(0, SCCB_SIZE - offset)]

        cp_receive = guest_mask(12)
        self.receive_mask, self.receive_mask_high_types = cp_receive >> 32, cp_receive & 0xFFFFFFFF
        self.send_mask = guest_mask(12 + mask_length) >> 32
        sclp_mask(12 + 2 * mask_length, self.host_receive_mask())
        sclp_mask(12 + 3 * mask_length, self.host_send_mask())
        self.mask_length = mask_length
        _set_rc(work, RC_NORMAL_COMPLETION)

    def _write_event_data(self, work: bytearray) -> None:
        length = _u16(work, 0)
        if work[2] != FUNCTION_NORMAL_WRITE:
            _set_rc(work, RC_INVALID_FUNCTION)
            return
        # the buffers must tile the data exactly before any is taken
        buffers, pos, left = [], HEADER.size, length - HEADER.size
        while left > 0:
            buffer_length = _u16(work, pos)
            if buffer_length < EVENT_HEADER.size or buffer_length > left:
                _set_rc(work, RC_EVENT_BUFFER_SYNTAX_ERROR)
                return
            buffers.append(pos)
            pos += buffer_length
            left -= buffer_length
        rc = RC_NORMAL_COMPLETION
        for pos in buffers:
            if rc != RC_NORMAL_COMPLETION:
                work[pos + 3] &= ~EVENT_BUFFER_ACCEPTED & 0xFF  # buffers after a failed one are not taken
                continue
            event = next((e for e in self.events if e.handles(work[pos + 2])), None)
            rc = event.write(work, pos) if event is not None else RC_INVALID_FUNCTION
        _set_rc(work, rc)

    def _read_event_data(self, work: bytearray) -> None:
        length = _u16(work, 0)
        if length != SCCB_SIZE:
            _set_rc(work, RC_INSUFFICIENT_SCCB_LENGTH)
            return
        cp_receive = self.receive_mask << 32 | self.receive_mask_high_types
        if work[2] == FUNCTION_UNCONDITIONAL_READ:
            selection = cp_receive
        elif work[2] == FUNCTION_SELECTIVE_READ:
            # the selection mask sits where the first event buffer's header will go
            selection = int.from_bytes(bytes(work[8:8 + min(self.mask_length, 8)]).ljust(8, b"\0"), "big")
            if not cp_receive or selection & ~cp_receive:
                _set_rc(work, RC_INVALID_SELECTION_MASK)
                return
        else:
            _set_rc(work, RC_INVALID_FUNCTION)
            return
        struct.pack_into(">H", work, HEADER.size, 0)
        pos, space, stored = HEADER.size, length - HEADER.size, False
        for event in self.events:
            if selection & (event.send_mask << 32):
                used = event.read(work, pos, space)
                if used:
                    pos, space, stored = pos + used, space - used, True
        if work[5] & VARIABLE_LENGTH_RESPONSE:
            # the length becomes what was stored, and the bit is cleared
            work[5] &= ~VARIABLE_LENGTH_RESPONSE & 0xFF
            struct.pack_into(">H", work, 0, SCCB_SIZE - space)
        _set_rc(work, RC_NORMAL_COMPLETION if stored else RC_NO_EVENT_BUFFERS_STORED)

    def reset(self) -> None:
        """System reset: the guest's masks are gone, and what the events held for it."""
        self.receive_mask = self.send_mask = self.receive_mask_high_types = 0
        for event in self.events:
            event.reset()

    # -- host side ----------------------------------------------------------------------
    def console_input(self, data: bytes) -> bool:
        """Host input for the VT220 console; True when the guest should get an attention."""
        console = self.vt220
        if console is None:
            return False
        console.port.host_input(data)
        return self.event_pending()

    def request_quiesce(self) -> bool:
        """system_powerdown: True when the guest listens for signal quiesce."""
        self.quiesce.requested = True
        return bool(self.receive_mask & event_mask_bit(EVENT_SIGNAL_QUIESCE))


def _set_rc(work: bytearray, rc: int) -> None:
    struct.pack_into(">H", work, 6, rc)

