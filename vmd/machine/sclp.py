"""The Service-Call Logical Processor (SCLP): the SERVICE CALL instruction's far side.

A guest puts a command word in one register and the address of a Service
Call Control Block (SCCB) in another and executes SERVC.  The SCLP validates
the SCCB, carries out the command, stores a response code in the SCCB header
and signals completion with a service-signal external interruption (code
0x2401) whose parameter is the SCCB address, with the low bit set when event
data is waiting to be read.

Commands: Read SCP Info (and its forced form), Read CPU Info, and the event
facility: Write Event Mask, Write Event Data, Read Event Data.  Events: the
VT220 ASCII console (type 0x1A, the ``-nographic`` console) and signal
quiesce (type 0x1D, sent on ``system_powerdown``).  The line-mode console
(message events) is not offered yet: the masks returned say so.

The layouts and response codes follow the SCLP interface as Linux and QEMU use
it (``include/hw/s390x/sclp.h`` for the field offsets).  Storage access goes
through :class:`~vmd.machine.memory.GuestMemory`: the SCCB is copied in, worked
on privately (the guest cannot change lengths under our feet), and written back.
"""

from __future__ import annotations

import collections
import struct
from dataclasses import dataclass, field
from typing import Callable

from vmd.machine.memory import AddressingError, GuestMemory

SCCB_SIZE = 4096
HEADER = struct.Struct(">HB3sH")  # length, function code, control mask, response code

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

EVENT_CONFIG_MGT_DATA = 0x04  # CPU hot plug notifications
EVENT_ASCII_CONSOLE = 0x1A
EVENT_SIGNAL_QUIESCE = 0x1D
EVENT_BUFFER_ACCEPTED = 0x80
VARIABLE_LENGTH_RESPONSE = 0x80

#: program interruption codes SERVC can raise
PGM_ADDRESSING = 0x05
PGM_SPECIFICATION = 0x06

STORAGE_INCREMENT_MIB = 1  # rnsize: storage reported in 1 MiB increments
SCLP_HAS_CPU_INFO = 0x0C00000000000000


def event_mask_bit(event_type: int) -> int:
    """The 32-bit mask bit of an event type: type t is the (t-1)th bit from the left."""
    return 0x80000000 >> (event_type - 1)


SUPPORTED_SEND = (event_mask_bit(EVENT_CONFIG_MGT_DATA) | event_mask_bit(EVENT_ASCII_CONSOLE)
                  | event_mask_bit(EVENT_SIGNAL_QUIESCE))
SUPPORTED_RECEIVE = event_mask_bit(EVENT_ASCII_CONSOLE)


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


@dataclass
class Sclp:
    """One machine's SCLP: configuration data, event masks, pending inbound events."""

    memory: GuestMemory
    config: SclpConfig
    #: called with bytes the guest wrote to a console (VT220 or line mode)
    console_output: Callable[[bytes], None] = lambda data: None
    receive_mask: int = 0  # what the guest (control program) accepts
    send_mask: int = 0  # what the guest sends
    pending_input: collections.deque = field(default_factory=collections.deque)
    quiesce_pending: bool = False

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
        self._execute(command, work, sccb)
        self.memory.write(sccb, bytes(work[: min(length, SCCB_SIZE)]))
        return (sccb & ~3) | (1 if self.event_pending() else 0)

    def event_pending(self) -> bool:
        return bool(
            (self.pending_input and self.receive_mask & event_mask_bit(EVENT_ASCII_CONSOLE))
            or (self.quiesce_pending and self.receive_mask & event_mask_bit(EVENT_SIGNAL_QUIESCE))
        )

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
        if len(work) < needed:
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
        if len(work) < offset + len(entries):
            _set_rc(work, RC_INSUFFICIENT_SCCB_LENGTH)
            return
        work[8:offset] = bytes(offset - 8)
        struct.pack_into(">HHHH", work, 8, self.config.cpu_count, offset, 0, offset + len(entries))
        work[offset:offset + len(entries)] = entries
        _set_rc(work, RC_NORMAL_READ_COMPLETION)

    # -- event facility -----------------------------------------------------------------
    def _write_event_mask(self, work: bytearray) -> None:
        if len(work) < 12:
            _set_rc(work, RC_INSUFFICIENT_SCCB_LENGTH)
            return
        mask_length = struct.unpack_from(">H", work, 10)[0]
        if mask_length == 0 or mask_length > 1021 or len(work) < 12 + 4 * mask_length:
            _set_rc(work, RC_INVALID_MASK_LENGTH)
            return
        cp_receive = int.from_bytes(bytes(work[12:12 + mask_length]).ljust(4, b"\0")[:4], "big")
        cp_send = int.from_bytes(bytes(work[12 + mask_length:12 + 2 * mask_length]).ljust(4, b"\0")[:4], "big")
        self.receive_mask, self.send_mask = cp_receive, cp_send
        sclp_receive = SUPPORTED_RECEIVE.to_bytes(4, "big").ljust(mask_length, b"\0")[:mask_length]
        sclp_send = SUPPORTED_SEND.to_bytes(4, "big").ljust(mask_length, b"\0")[:mask_length]
        work[12 + 2 * mask_length:12 + 3 * mask_length] = sclp_receive
        work[12 + 3 * mask_length:12 + 4 * mask_length] = sclp_send
        _set_rc(work, RC_NORMAL_COMPLETION)

    def _write_event_data(self, work: bytearray) -> None:
        length = struct.unpack_from(">H", work, 0)[0]
        if work[2] != 0:  # function code: only a normal write
            _set_rc(work, RC_INVALID_FUNCTION)
            return
        pos, end = HEADER.size, min(length, len(work))
        if end - pos < 6:
            _set_rc(work, RC_EVENT_BUFFER_SYNTAX_ERROR)
            return
        while pos < end:
            if end - pos < 6:
                _set_rc(work, RC_EVENT_BUFFER_SYNTAX_ERROR)
                return
            ev_len, ev_type = struct.unpack_from(">HB", work, pos)
            if ev_len < 6 or pos + ev_len > end:
                _set_rc(work, RC_INCONSISTENT_LENGTHS)
                return
            payload = bytes(work[pos + 6:pos + ev_len])
            if ev_type == EVENT_ASCII_CONSOLE:
                self.console_output(payload)
            else:
                _set_rc(work, RC_INVALID_SELECTION_MASK)
                return
            work[pos + 3] |= EVENT_BUFFER_ACCEPTED
            pos += ev_len
        _set_rc(work, RC_NORMAL_COMPLETION)

    def _read_event_data(self, work: bytearray) -> None:
        length = struct.unpack_from(">H", work, 0)[0]
        space = min(length, len(work)) - HEADER.size
        pos = HEADER.size
        stored = False
        if self.quiesce_pending and self.receive_mask & event_mask_bit(EVENT_SIGNAL_QUIESCE) and space >= 10:
            struct.pack_into(">HBBHHBB", work, pos, 10, EVENT_SIGNAL_QUIESCE, 0, 0, 0, 0, 0)
            self.quiesce_pending = False
            pos, space, stored = pos + 10, space - 10, True
        while self.pending_input and self.receive_mask & event_mask_bit(EVENT_ASCII_CONSOLE) and space > 6:
            data = self.pending_input.popleft()
            chunk, rest = data[: space - 6], data[space - 6:]
            if rest:
                self.pending_input.appendleft(rest)
            struct.pack_into(">HBBH", work, pos, 6 + len(chunk), EVENT_ASCII_CONSOLE, 0, 0)
            work[pos + 6:pos + 6 + len(chunk)] = chunk
            pos += 6 + len(chunk)
            space -= 6 + len(chunk)
            stored = True
        if not stored:
            _set_rc(work, RC_NO_EVENT_BUFFERS_STORED)
            return
        struct.pack_into(">H", work, 0, pos)
        _set_rc(work, RC_NORMAL_READ_COMPLETION)

    def reset(self) -> None:
        self.receive_mask = self.send_mask = 0
        self.pending_input.clear()
        self.quiesce_pending = False

    # -- host side ----------------------------------------------------------------------
    def console_input(self, data: bytes) -> bool:
        """Queue console input; True when the guest should get a service signal for it."""
        self.pending_input.append(bytes(data))
        return bool(self.receive_mask & event_mask_bit(EVENT_ASCII_CONSOLE))

    def request_quiesce(self) -> bool:
        """system_powerdown: True when the guest listens for signal quiesce."""
        self.quiesce_pending = True
        return bool(self.receive_mask & event_mask_bit(EVENT_SIGNAL_QUIESCE))


def _set_rc(work: bytearray, rc: int) -> None:
    struct.pack_into(">H", work, 6, rc)

