"""SCSI status codes and sense data (SPC-4, sections 4.5 and 6.39).

A condition is kept as a :class:`Sense` triple (sense key, additional sense
code and qualifier) and rendered as fixed-format (0x70) or descriptor-format
(0x72) sense data when a driver asks for it.  The named conditions are the
ones QEMU's SCSI emulation reports, with its sense keys and codes.
"""

from __future__ import annotations

from typing import NamedTuple

# status codes (SAM-5)
GOOD = 0x00
CHECK_CONDITION = 0x02

# sense keys
NO_SENSE = 0x00
NOT_READY = 0x02
MEDIUM_ERROR = 0x03
HARDWARE_ERROR = 0x04
ILLEGAL_REQUEST = 0x05
UNIT_ATTENTION = 0x06
DATA_PROTECT = 0x07
ABORTED_COMMAND = 0x0B

#: the length of fixed-format sense data as it is built
FIXED_SENSE_LEN = 18
DESCRIPTOR_SENSE_LEN = 8


class Sense(NamedTuple):
    key: int
    asc: int
    ascq: int

    def fixed(self) -> bytes:
        """Fixed-format sense data: response code 0x70, additional length 10."""
        data = bytearray(FIXED_SENSE_LEN)
        data[0] = 0x70
        data[2] = self.key
        data[7] = 10
        data[12] = self.asc
        data[13] = self.ascq
        return bytes(data)

    def descriptor(self) -> bytes:
        """Descriptor-format sense data: response code 0x72 and no descriptors."""
        return bytes((0x72, self.key, self.asc, self.ascq, 0, 0, 0, 0))

    def render(self, fixed: bool) -> bytes:
        return self.fixed() if fixed else self.descriptor()


NO_SENSE_CODE = Sense(NO_SENSE, 0x00, 0x00)
LUN_NOT_READY = Sense(NOT_READY, 0x04, 0x03)
NO_MEDIUM = Sense(NOT_READY, 0x3A, 0x00)
NOT_READY_REMOVAL_PREVENTED = Sense(NOT_READY, 0x53, 0x02)
TARGET_FAILURE = Sense(HARDWARE_ERROR, 0x44, 0x00)
INVALID_OPCODE = Sense(ILLEGAL_REQUEST, 0x20, 0x00)
LBA_OUT_OF_RANGE = Sense(ILLEGAL_REQUEST, 0x21, 0x00)
INVALID_FIELD = Sense(ILLEGAL_REQUEST, 0x24, 0x00)
INVALID_PARAM = Sense(ILLEGAL_REQUEST, 0x26, 0x00)
INVALID_PARAM_LEN = Sense(ILLEGAL_REQUEST, 0x1A, 0x00)
LUN_NOT_SUPPORTED = Sense(ILLEGAL_REQUEST, 0x25, 0x00)
SAVING_PARAMS_NOT_SUPPORTED = Sense(ILLEGAL_REQUEST, 0x39, 0x00)
INCOMPATIBLE_FORMAT = Sense(ILLEGAL_REQUEST, 0x30, 0x00)
ILLEGAL_REQ_REMOVAL_PREVENTED = Sense(ILLEGAL_REQUEST, 0x53, 0x02)
IO_ERROR = Sense(ABORTED_COMMAND, 0x00, 0x06)
READ_ERROR = Sense(MEDIUM_ERROR, 0x11, 0x00)
RESET = Sense(UNIT_ATTENTION, 0x29, 0x00)
MEDIUM_CHANGED = Sense(UNIT_ATTENTION, 0x28, 0x00)
REPORTED_LUNS_CHANGED = Sense(UNIT_ATTENTION, 0x3F, 0x0E)
CAPACITY_CHANGED = Sense(UNIT_ATTENTION, 0x2A, 0x09)
WRITE_PROTECTED = Sense(DATA_PROTECT, 0x27, 0x00)
SPACE_ALLOC_FAILED = Sense(DATA_PROTECT, 0x27, 0x07)


def parse(data: bytes) -> Sense:
    """The condition in sense data of either format; too short to tell is an I/O error (as QEMU)."""
    if data and data[0] & 2:  # descriptor format
        if len(data) < 4:
            return IO_ERROR
        return Sense(data[1], data[2], data[3])
    if len(data) < 14:
        return IO_ERROR
    return Sense(data[2], data[12], data[13])


def convert(stored: bytes, limit: int, fixed: bool) -> bytes:
    """Stored sense data as a driver asked for it: its format, at most ``limit`` bytes.

    Nothing stored reads as NO SENSE; data already in the wanted format is passed on as is.
    """
    if not stored:
        return NO_SENSE_CODE.render(fixed)[:limit]
    if (not stored[0] & 2) == fixed:
        return stored[:limit]
    return parse(stored).render(fixed)[:limit]


def unit_attention_rank(sense: Sense) -> int:
    """How important a unit attention condition is (lower wins), in QEMU's order.

    A pending condition is replaced only by a more important one, so a reset is never
    hidden by, say, a capacity change that came after it.
    """
    if sense.key != UNIT_ATTENTION:
        return 1 << 31
    code = sense.asc << 8 | sense.ascq
    if code == 0x2904:  # device internal reset goes with "power on occurred"
        return 1
    if code == 0x3F01:  # microcode changed goes with "SCSI bus reset occurred"
        return 2
    if sense.asc == 0x29 and sense.ascq in (5, 6):
        return code
    if sense.asc == 0x29 and sense.ascq <= 7:
        return sense.ascq
    if code == 0x2F01:  # commands cleared by power loss notification
        return 8
    return code
