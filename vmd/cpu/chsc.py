"""CHANNEL SUBSYSTEM CALL (B25F) and the floating channel-report machine check.

CHSC takes the address of a 4 KiB-aligned request block from general register
R1.  The block starts with its length (16 to 4088, a multiple of 8) and a
command code; the response block (length, response code, a parameter word,
data) is stored right after the request.  The commands and every answer follow
QEMU 7.2 (``target/s390x/ioinst.c``, ``hw/s390x/css.c``), which is what Linux's
``drivers/s390/cio/chsc.c`` meets under TCG:

=======  ====================================  ==========================================
command  name                                  answer
=======  ====================================  ==========================================
0x0002   store channel path description        the defined CHPIDs of an image, format 0
                                               (8 bytes) or 1 (32 bytes) descriptors
0x000e   store event information               never an event: response code 0x0005
0x0010   store channel subsystem               QEMU's fixed general and CHSC
         characteristics                       characteristics words
0x0031   set domain attributes                 enables MCSS-E (operation code 0) or MSS (2)
other    (store subchannel description 0x0004  response code 0x0004, not supported
         included)
=======  ====================================  ==========================================

Response codes: 0x0001 done, 0x0003 invalid request (a length, a reserved bit
or an operation code), 0x0007 unsupported format, 0x0008 no such channel
subsystem image.  Program interruptions, in QEMU's order: specification when the
block is not on a 4 KiB boundary, access exceptions for the request's first 16
bytes, operand when the length is invalid, then access exceptions for the
response (QEMU's low-address protection looks at the response's first byte
only).  The condition code is always 0.  Like QEMU, CHSC takes the whole 64-bit
register as the address, in any addressing mode.

:class:`MachineCheckLine` is the one pending channel-report machine check of a
machine (QEMU keeps it as a bit in its floating-interruption controller): the
channel subsystem raises it when it queues a channel report word the guest has
not been told about, and the first CPU enabled for it takes it
(:meth:`vmd.cpu.vcpu.Vcpu.deliver_pending`).
"""

from __future__ import annotations

import struct
import threading

from vmd.cpu import arch
from vmd.cpu.vcpu import INSTRUCTIONS, ProgramInterruption, Vcpu, _set_cc

__all__ = [
    "CHSC_SCPD",
    "CHSC_SSD",
    "CHSC_SEI",
    "CHSC_SCSC",
    "CHSC_SDA",
    "RC_DONE",
    "RC_INVALID_REQUEST",
    "RC_NOT_SUPPORTED",
    "RC_NO_EVENT",
    "RC_INVALID_FORMAT",
    "RC_INVALID_CSS",
    "REQUEST_HEADER",
    "MIN_REQUEST",
    "MAX_REQUEST",
    "MachineCheckLine",
    "respond",
    "i_chsc",
]

CHSC_SCPD = 0x0002
CHSC_SSD = 0x0004
CHSC_SEI = 0x000E
CHSC_SCSC = 0x0010
CHSC_SDA = 0x0031

RC_DONE = 0x0001
RC_INVALID_REQUEST = 0x0003
RC_NOT_SUPPORTED = 0x0004
RC_NO_EVENT = 0x0005
RC_INVALID_FORMAT = 0x0007
RC_INVALID_CSS = 0x0008

#: QEMU reads this much of a request: length, command and three parameter words
REQUEST_HEADER = 16
MIN_REQUEST = 16
MAX_REQUEST = 4088
BLOCK_ALIGN = 0x1000
#: a response that carries no data: length, code, parameter
MIN_RESPONSE = 8
#: control register 0 bit 35: low-address protection
CR0_LOW_ADDRESS_PROTECTION = arch.bit64(35)

# store channel path description, parameter words 0 and 1
_SCPD_M = 0x20000000
_SCPD_C = 0x10000000
_SCPD_FMT = 0x0F000000
_SCPD_CSSID = 0x00FF0000
_SCPD_RFMT = 0x00000F00
_SCPD_RESERVED0 = 0xC000F000
_SCPD_RESERVED1 = 0xFFFFFF00
_SCPD_CHPID = 0x000000FF
# store channel subsystem characteristics, parameter word 0
_SCSC_M = 0x20000000
_SCSC_FMT = 0x000F0000
_SCSC_CSSID = 0x0000FF00
_SCSC_RESERVED = 0xDFF000FF
# set domain attributes, parameter word 0
_SDA_FMT = 0x0F000000
_SDA_RESERVED = 0xF0FF0000
_SDA_OC = 0x0000FFFF
_SDA_OC_MCSSE = 0x0
_SDA_OC_MSS = 0x2
_SDA_LENGTH = 0x0400

#: QEMU's store-channel-subsystem-characteristics answer: 510 words of general characteristics
#: (the words named here are non-zero), then 508 words of CHSC characteristics
_GENERAL_CHARACTERISTICS = {0: 0x03000000, 1: 0x00079000, 3: 0x00080000}
_CHSC_CHARACTERISTICS = {0: 0x40000000, 3: 0x00040000}
_SCSC_RESPONSE_LENGTH = 4080


def _characteristics() -> bytes:
    general = [0] * 510
    chsc = [0] * 508
    for index, word in _GENERAL_CHARACTERISTICS.items():
        general[index] = word
    for index, word in _CHSC_CHARACTERISTICS.items():
        chsc[index] = word
    return struct.pack(">510I508I", *general, *chsc)


_SCSC_DATA = _characteristics()
assert MIN_RESPONSE + len(_SCSC_DATA) == _SCSC_RESPONSE_LENGTH


def _response(code: int, param: int = 0, data: bytes = b"") -> bytes:
    return struct.pack(">HHI", MIN_RESPONSE + len(data), code, param) + data


def _image_present(css, cssid: int) -> bool:
    """QEMU's css_present: the default image always exists, another one once a device was put there
    (every device defines a CHPID in its image, and CHPIDs stay defined)."""
    return cssid == css.default_cssid or any(path.cssid == cssid for path in css.channel_paths())


def _store_channel_path_description(css, length: int, p0: int, p1: int, p2: int) -> bytes:
    rfmt = (p0 & _SCPD_RFMT) >> 8
    if rfmt in (0, 1):
        rfmt = 1 if p0 & _SCPD_C else 0  # QEMU: formats 0 and 1 are chosen by the C bit alone
    if length != REQUEST_HEADER or p0 & _SCPD_RESERVED0 or p1 & _SCPD_RESERVED1 or p2:
        return _response(RC_INVALID_REQUEST, rfmt)
    if p0 & _SCPD_FMT:
        return _response(RC_INVALID_FORMAT, rfmt)
    cssid = (p0 & _SCPD_CSSID) >> 16
    m = bool(p0 & _SCPD_M)
    if cssid and (not m or not _image_present(css, cssid)):
        return _response(RC_INVALID_CSS, rfmt)
    first, last = p0 & _SCPD_CHPID, p1 & _SCPD_CHPID
    if last < first:
        return _response(RC_INVALID_REQUEST, rfmt)
    image = css.default_cssid if not m and not cssid else cssid
    descriptors = []
    for path in css.channel_paths():
        if path.cssid != image or not first <= path.chpid <= last:
            continue
        word = 0x80000000 | (path.type << 8) | path.chpid
        if rfmt == 0:
            descriptors.append(struct.pack(">II", word, 0))
        elif rfmt == 1:
            descriptors.append(struct.pack(">I28x", word))
        # any other format: a successful answer without descriptors, as in QEMU
    return _response(RC_DONE, rfmt, b"".join(descriptors))


def _store_characteristics(css, length: int, p0: int, p1: int, p2: int) -> bytes:
    if length != REQUEST_HEADER:
        return _response(RC_INVALID_REQUEST)
    if p0 & _SCSC_FMT:
        return _response(RC_INVALID_FORMAT)
    cssid = (p0 & _SCSC_CSSID) >> 8
    if cssid and (not p0 & _SCSC_M or not _image_present(css, cssid)):
        return _response(RC_INVALID_CSS)
    if p0 & _SCSC_RESERVED or p1 or p2:
        return _response(RC_INVALID_REQUEST)
    return _response(RC_DONE, 0, _SCSC_DATA)


def _set_domain_attributes(css, length: int, p0: int, p1: int, p2: int) -> bytes:
    if length != _SDA_LENGTH or p0 & _SDA_RESERVED:
        return _response(RC_INVALID_REQUEST)
    if p0 & _SDA_FMT:
        return _response(RC_INVALID_FORMAT)
    operation = p0 & _SDA_OC
    if operation == _SDA_OC_MCSSE:
        css.enable_mcsse()
    elif operation == _SDA_OC_MSS:
        css.enable_mss()
    else:
        return _response(RC_INVALID_REQUEST)
    return _response(RC_DONE)


def _store_event_information(css, length: int, p0: int, p1: int, p2: int) -> bytes:
    # QEMU's only event sources are zPCI devices; without them there is never an event
    return _response(RC_NO_EVENT)


_COMMANDS = {
    CHSC_SCPD: _store_channel_path_description,
    CHSC_SCSC: _store_characteristics,
    CHSC_SDA: _set_domain_attributes,
    CHSC_SEI: _store_event_information,
}


def respond(css, request: bytes) -> bytes:
    """The response block for a request whose length is valid (``MIN_REQUEST``..``MAX_REQUEST``).

    ``request`` holds at least the first :data:`REQUEST_HEADER` bytes of the block;
    ``css`` is the :class:`~vmd.machine.css.ChannelSubsystem` (set domain attributes
    changes what it lets the guest see).
    """
    head = request[:REQUEST_HEADER].ljust(REQUEST_HEADER, b"\0")
    length, command, p0, p1, p2 = struct.unpack(">HHIII", head)
    handler = _COMMANDS.get(command)
    if handler is None:
        return _response(RC_NOT_SUPPORTED)
    return handler(css, length, p0, p1, p2)


def _low_address_protected(cpu: Vcpu, address: int) -> bool:
    """Low-address protection (CR0 bit 35, DAT off) of a store that starts at ``address``."""
    if not cpu.engine.cr(0) & CR0_LOW_ADDRESS_PROTECTION:
        return False
    return address < 512 or 4096 <= address < 4096 + 512


def i_chsc(cpu: Vcpu, text: bytes):
    """CHSC R1,R2 (RRE): the request block at the address in R1; R2 is not used."""
    if cpu.io is None:
        raise ProgramInterruption(arch.PGM_OPERATION)
    r1 = text[3] >> 4
    address = cpu.engine.gpr(r1)
    if address % BLOCK_ALIGN:
        raise ProgramInterruption(arch.PGM_SPECIFICATION)
    request = cpu.read(address, REQUEST_HEADER)
    length = struct.unpack_from(">H", request)[0]
    if not MIN_REQUEST <= length <= MAX_REQUEST or length % 8:
        raise ProgramInterruption(arch.PGM_OPERAND)
    response = respond(cpu.io.css, request)
    target = address + length
    if _low_address_protected(cpu, target):
        raise ProgramInterruption(arch.PGM_PROTECTION)
    cpu.write(target, response)
    _set_cc(cpu, 0)


class MachineCheckLine:
    """The machine's pending channel-report machine check: one bit, set from any thread, taken once.

    The channel subsystem raises it only when the guest has drained the channel report words
    (STORE CHANNEL REPORT WORD found none), so one bit is enough, as in QEMU.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = False

    @property
    def pending(self) -> bool:
        return self._pending

    def raise_channel_report(self) -> None:
        with self._lock:
            self._pending = True

    def take(self) -> bool:
        """Claim the pending machine check for one CPU; False when another CPU took it first."""
        with self._lock:
            pending, self._pending = self._pending, False
            return pending

    def clear(self) -> None:
        """Subsystem reset."""
        with self._lock:
            self._pending = False


INSTRUCTIONS[(0xB2, 0x5F)] = i_chsc
