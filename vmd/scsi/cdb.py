"""Command descriptor blocks: length, transfer length, direction and LBA (SPC-4 section 4.2).

The operation code's group (its top three bits) gives the CDB length and
where the generic allocation or transfer length and the logical block address
sit; many commands override that, and QEMU's table of overrides for disks and
CD-ROMs is what decides how many bytes a driver must offer for a command.
Parsing never fails on a CDB of a known group; groups 3, 6 and 7 (reserved
and vendor specific) have no defined length and are refused.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# operation codes
TEST_UNIT_READY = 0x00
REWIND = 0x01
REQUEST_SENSE = 0x03
FORMAT_UNIT = 0x04
READ_BLOCK_LIMITS = 0x05
REASSIGN_BLOCKS = 0x07
READ_6 = 0x08
WRITE_6 = 0x0A
SET_CAPACITY = 0x0B
READ_REVERSE = 0x0F
WRITE_FILEMARKS = 0x10
SPACE = 0x11
INQUIRY = 0x12
MODE_SELECT = 0x15
RESERVE = 0x16
RELEASE = 0x17
COPY = 0x18
ERASE = 0x19
MODE_SENSE = 0x1A
START_STOP = 0x1B
RECEIVE_DIAGNOSTIC = 0x1C
SEND_DIAGNOSTIC = 0x1D
ALLOW_MEDIUM_REMOVAL = 0x1E
SET_WINDOW = 0x24
READ_CAPACITY_10 = 0x25
READ_10 = 0x28
WRITE_10 = 0x2A
SEEK_10 = 0x2B
WRITE_VERIFY_10 = 0x2E
VERIFY_10 = 0x2F
SEARCH_HIGH = 0x30
SEARCH_EQUAL = 0x31
SEARCH_LOW = 0x32
SET_LIMITS = 0x33
PRE_FETCH = 0x34
SYNCHRONIZE_CACHE = 0x35
LOCK_UNLOCK_CACHE = 0x36
MEDIUM_SCAN = 0x38
COMPARE = 0x39
COPY_VERIFY = 0x3A
WRITE_BUFFER = 0x3B
READ_BUFFER = 0x3C
UPDATE_BLOCK = 0x3D
WRITE_LONG_10 = 0x3F
CHANGE_DEFINITION = 0x40
WRITE_SAME_10 = 0x41
UNMAP = 0x42
READ_TOC = 0x43
GET_CONFIGURATION = 0x46
GET_EVENT_STATUS_NOTIFICATION = 0x4A
LOG_SELECT = 0x4C
READ_DISC_INFORMATION = 0x51
RESERVE_TRACK = 0x53
MODE_SELECT_10 = 0x55
RESERVE_10 = 0x56
RELEASE_10 = 0x57
MODE_SENSE_10 = 0x5A
SEND_CUE_SHEET = 0x5D
PERSISTENT_RESERVE_OUT = 0x5F
WRITE_FILEMARKS_16 = 0x80
ALLOW_OVERWRITE = 0x82
ATA_PASSTHROUGH_16 = 0x85
READ_16 = 0x88
WRITE_16 = 0x8A
WRITE_VERIFY_16 = 0x8E
VERIFY_16 = 0x8F
PRE_FETCH_16 = 0x90
SYNCHRONIZE_CACHE_16 = 0x91
LOCATE_16 = 0x92
WRITE_SAME_16 = 0x93
SERVICE_ACTION_IN_16 = 0x9E
REPORT_LUNS = 0xA0
ATA_PASSTHROUGH_12 = 0xA1
MAINTENANCE_IN = 0xA3
MAINTENANCE_OUT = 0xA4
SET_READ_AHEAD = 0xA7
READ_12 = 0xA8
WRITE_12 = 0xAA
ERASE_12 = 0xAC
READ_DVD_STRUCTURE = 0xAD
WRITE_VERIFY_12 = 0xAE
VERIFY_12 = 0xAF
SEARCH_HIGH_12 = 0xB0
SEARCH_EQUAL_12 = 0xB1
SEARCH_LOW_12 = 0xB2
SEND_VOLUME_TAG = 0xB6
SET_CD_SPEED = 0xBB
MECHANISM_STATUS = 0xBD
READ_CD = 0xBE
SEND_DVD_STRUCTURE = 0xBF

#: service action of SERVICE ACTION IN(16) for READ CAPACITY(16)
SAI_READ_CAPACITY_16 = 0x10

# peripheral device types
TYPE_DISK = 0x00
TYPE_ROM = 0x05
TYPE_NOT_PRESENT = 0x1F
TYPE_INACTIVE = 0x20
TYPE_NO_LUN = 0x7F

# data transfer directions, as the command defines it and as the driver's buffers offer it
XFER_NONE = 0
XFER_FROM_DEV = 1
XFER_TO_DEV = 2

#: CDB length by group (operation code >> 5); None: no defined length
_LENGTH_BY_GROUP = (6, 10, 10, None, 16, 12, None, None)

_NO_TRANSFER = frozenset({
    TEST_UNIT_READY, REWIND, START_STOP, SET_CAPACITY, WRITE_FILEMARKS, WRITE_FILEMARKS_16, SPACE,
    RESERVE, RELEASE, ERASE, ALLOW_MEDIUM_REMOVAL, SEEK_10, SYNCHRONIZE_CACHE, SYNCHRONIZE_CACHE_16,
    LOCATE_16, LOCK_UNLOCK_CACHE, SET_CD_SPEED, SET_LIMITS, WRITE_LONG_10, UPDATE_BLOCK, RESERVE_TRACK,
    SET_READ_AHEAD, PRE_FETCH, PRE_FETCH_16, ALLOW_OVERWRITE,
})
_BLOCK_TRANSFER = frozenset({WRITE_10, WRITE_VERIFY_10, WRITE_12, WRITE_VERIFY_12, WRITE_16, WRITE_VERIFY_16,
                             READ_10, READ_12, READ_16})
_TO_DEVICE = frozenset({
    WRITE_6, WRITE_10, WRITE_VERIFY_10, WRITE_12, WRITE_VERIFY_12, WRITE_16, WRITE_VERIFY_16, VERIFY_10,
    VERIFY_12, VERIFY_16, COPY, COPY_VERIFY, COMPARE, CHANGE_DEFINITION, LOG_SELECT, MODE_SELECT,
    MODE_SELECT_10, SEND_DIAGNOSTIC, WRITE_BUFFER, FORMAT_UNIT, REASSIGN_BLOCKS, SEARCH_EQUAL, SEARCH_HIGH,
    SEARCH_LOW, UPDATE_BLOCK, WRITE_LONG_10, WRITE_SAME_10, WRITE_SAME_16, UNMAP, SEARCH_HIGH_12,
    SEARCH_EQUAL_12, SEARCH_LOW_12, MEDIUM_SCAN, SEND_VOLUME_TAG, SEND_CUE_SHEET, SEND_DVD_STRUCTURE,
    PERSISTENT_RESERVE_OUT, MAINTENANCE_OUT, SET_WINDOW,
})


def cdb_length(opcode: int) -> int | None:
    return _LENGTH_BY_GROUP[opcode >> 5]


def generic_transfer_length(cdb: bytes) -> int:
    """The allocation or transfer length field where the CDB's group puts it."""
    group = cdb[0] >> 5
    if group == 0:
        return cdb[4]
    if group in (1, 2):
        return struct.unpack_from(">H", cdb, 7)[0]
    if group == 4:
        return struct.unpack_from(">I", cdb, 10)[0]
    if group == 5:
        return struct.unpack_from(">I", cdb, 6)[0]
    return 0xFFFFFFFF


def block_count(cdb: bytes) -> int:
    """The number of blocks of a READ/WRITE/WRITE SAME: the generic field, 256 for a 6-byte zero."""
    if cdb[0] >> 5 == 0 and cdb[4] == 0:
        return 256
    return generic_transfer_length(cdb)


def logical_block_address(cdb: bytes) -> int | None:
    group = cdb[0] >> 5
    if group == 0:
        return struct.unpack_from(">I", cdb, 0)[0] & 0x1FFFFF
    if group in (1, 2, 5):
        return struct.unpack_from(">I", cdb, 2)[0]
    if group == 4:
        return struct.unpack_from(">Q", cdb, 2)[0]
    return None


@dataclass(frozen=True)
class Command:
    """A parsed CDB: its bytes (exactly its length), the bytes it transfers and which way."""

    cdb: bytes
    xfer: int
    mode: int
    lba: int | None

    @property
    def opcode(self) -> int:
        return self.cdb[0]


def parse(cdb: bytes, device_type: int, block_size: int) -> Command | None:
    """The command in ``cdb`` for a disk or CD-ROM of ``block_size``; None when its group has no
    length or ``cdb`` is shorter than that (a virtio driver may shrink its CDB field).

    ``cdb`` may be longer than the command: a virtio request carries 32 bytes.
    """
    if not cdb:
        return None
    length = cdb_length(cdb[0])
    if length is None or len(cdb) < length:
        return None
    raw = bytes(cdb[:length])
    xfer = _transfer_length(raw, device_type, block_size)
    if xfer == 0:
        mode = XFER_NONE
    elif raw[0] in _TO_DEVICE:
        mode = XFER_TO_DEV
    elif raw[0] in (ATA_PASSTHROUGH_12, ATA_PASSTHROUGH_16):
        mode = XFER_FROM_DEV if raw[2] & 0x08 else XFER_TO_DEV
    else:
        mode = XFER_FROM_DEV
    return Command(raw, xfer, mode, logical_block_address(raw))


def _transfer_length(cdb: bytes, device_type: int, block_size: int) -> int:
    """QEMU's scsi_req_xfer: the generic length, or what the command defines instead."""
    op = cdb[0]
    xfer = generic_transfer_length(cdb)
    if op in _NO_TRANSFER:
        return 0
    if op in (VERIFY_10, VERIFY_12, VERIFY_16):
        if not cdb[1] & 2:
            return 0
        if cdb[1] & 4:
            xfer = 1
        return xfer * block_size
    if op == MODE_SENSE:
        return xfer
    if op in (WRITE_SAME_10, WRITE_SAME_16):
        return 0 if cdb[1] & 1 else block_size
    if op == READ_CAPACITY_10:
        return 8
    if op == READ_BLOCK_LIMITS:
        return 6
    if op == SEND_VOLUME_TAG:  # SET STREAMING for CD-ROMs
        return cdb[9] << 8 | cdb[10] if device_type == TYPE_ROM else cdb[8] << 8 | cdb[9]
    if op in (WRITE_6, READ_6, READ_REVERSE):
        return (xfer or 256) * block_size
    if op in _BLOCK_TRANSFER:
        return xfer * block_size
    if op == FORMAT_UNIT:
        if device_type == TYPE_ROM and cdb[1] & 16:
            return 12
        return 0 if not cdb[1] & 16 else 8 if cdb[1] & 32 else 4
    if op in (INQUIRY, RECEIVE_DIAGNOSTIC, SEND_DIAGNOSTIC):
        return cdb[3] << 8 | cdb[4]
    if op in (READ_CD, READ_BUFFER, WRITE_BUFFER, SEND_CUE_SHEET):
        return cdb[6] << 16 | cdb[7] << 8 | cdb[8]
    if op == PERSISTENT_RESERVE_OUT:
        return struct.unpack_from(">I", cdb, 5)[0]
    if op == ERASE_12:
        if device_type == TYPE_ROM:  # GET PERFORMANCE
            return _performance_length(cdb[8] << 8 | cdb[9], cdb[10], cdb[1] & 0x1F)
        return xfer
    if op in (MECHANISM_STATUS, READ_DVD_STRUCTURE, SEND_DVD_STRUCTURE, MAINTENANCE_OUT, MAINTENANCE_IN):
        return cdb[8] << 8 | cdb[9] if device_type == TYPE_ROM else xfer
    if op == ATA_PASSTHROUGH_12:
        return 0 if device_type == TYPE_ROM else _ata_length(cdb, block_size, cdb[3], cdb[4])
    if op == ATA_PASSTHROUGH_16:
        extend = cdb[1] & 1
        return _ata_length(cdb, block_size, cdb[4] | (cdb[3] << 8 if extend else 0),
                           cdb[6] | (cdb[5] << 8 if extend else 0))
    return xfer


def _performance_length(descriptors: int, kind: int, data_type: int) -> int:
    """GET PERFORMANCE (MMC-6 section 6.7): the size of the descriptors asked for."""
    if kind == 0:
        return (16 if data_type & 3 == 0 else 6) * descriptors + 8
    if kind in (1, 4, 5):
        return 8 * descriptors + 8
    if kind == 2:
        return 2048 * descriptors + 8
    if kind == 3:
        return 16 * descriptors + 8
    return 8


def _ata_length(cdb: bytes, block_size: int, count_field: int, sector_field: int) -> int:
    """ATA PASS-THROUGH: T_LENGTH picks the field, BYTE_BLOCK and T_TYPE the unit."""
    which = cdb[2] & 3
    count = count_field if which == 1 else sector_field if which == 2 else 0
    unit = (block_size if cdb[2] & 0x10 else 512) if cdb[2] & 0x04 else 1
    return count * unit
