"""Disks and CD-ROMs on a SCSI bus: the command set of QEMU's scsi-hd and scsi-cd (SBC-3, MMC-6).

A :class:`ScsiDisk` emulates one logical unit on a block image (anything with
``size``, ``read``, ``write``, ``write_zeroes``, ``discard`` and ``flush``): INQUIRY
with the vital product data pages, READ CAPACITY, READ and WRITE in every CDB size,
MODE SENSE and MODE SELECT, SYNCHRONIZE CACHE, UNMAP and WRITE SAME, and for CD-ROMs
the MMC commands drivers and firmware ask (GET CONFIGURATION, READ TOC, READ DISC
INFORMATION, GET EVENT STATUS NOTIFICATION, MECHANISM STATUS, READ DVD STRUCTURE).
Answers follow QEMU 7.2 field by field, quirks included: emulated commands transfer
their whole allocation length (zero-padded), the capacity used for range checks is
the one last reported, and a MODE SELECT may change the block size.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from typing import Protocol

from vmd.scsi import cdb as op
from vmd.scsi import sense as sn
from vmd.scsi.bus import HW_VERSION, UNSET, CheckCondition, DataArea, Outcome, ScsiDevice
from vmd.scsi.cdb import Command

log = logging.getLogger("vmd.scsi")

SECTOR = 512
#: QEMU sizes its emulation buffer to the allocation length but refuses anything beyond 64 KiB
MAX_EMULATED_TRANSFER = 65536
MAX_INQUIRY_LEN = 256
#: WRITE SAME writes its pattern in pieces of at most this many bytes
WRITE_SAME_CHUNK = 512 * 1024
#: READ and WRITE move their data area in pieces of this many bytes
TRANSFER_CHUNK = 1 << 20
#: a medium of more 512-byte sectors than an 80-minute CD is a DVD
CD_MAX_SECTORS = 80 * 60 * 75 * 2048 // SECTOR
PROFILE_NONE = 0x0000
PROFILE_CD_ROM = 0x0008
PROFILE_DVD_ROM = 0x0010
GESN_MEDIA = 4
MEC_NO_CHANGE = 0
MEC_EJECT_REQUESTED = 1
MEC_NEW_MEDIA = 2
MS_TRAY_OPEN = 1
MS_MEDIA_PRESENT = 2
# mode pages
MODE_PAGE_VENDOR_SPECIFIC = 0x00
MODE_PAGE_R_W_ERROR = 0x01
MODE_PAGE_HD_GEOMETRY = 0x04
MODE_PAGE_FLEXIBLE_DISK_GEOMETRY = 0x05
MODE_PAGE_CACHING = 0x08
MODE_PAGE_AUDIO_CTL = 0x0E
MODE_PAGE_CAPABILITIES = 0x2A
MODE_PAGE_APPLE_VENDOR = 0x30
MODE_PAGE_ALL = 0x3F
# the quirk bits, as QEMU numbers them
QUIRK_MODE_PAGE_APPLE_VENDOR = 0
QUIRK_MODE_SENSE_ROM_USE_DBD = 1
QUIRK_MODE_PAGE_VENDOR_SPECIFIC_APPLE = 2
QUIRK_MODE_PAGE_TRUNCATED = 3

_U64 = (1 << 64) - 1
_DISK_AND_ROM = (op.TYPE_DISK, op.TYPE_ROM)
_MODE_PAGES = {
    MODE_PAGE_VENDOR_SPECIFIC: _DISK_AND_ROM,
    MODE_PAGE_R_W_ERROR: _DISK_AND_ROM,
    MODE_PAGE_HD_GEOMETRY: (op.TYPE_DISK,),
    MODE_PAGE_FLEXIBLE_DISK_GEOMETRY: (op.TYPE_DISK,),
    MODE_PAGE_CACHING: _DISK_AND_ROM,
    MODE_PAGE_AUDIO_CTL: (op.TYPE_ROM,),
    MODE_PAGE_CAPABILITIES: (op.TYPE_ROM,),
    MODE_PAGE_APPLE_VENDOR: (op.TYPE_ROM,),
}
#: commands answered without a medium
_WITHOUT_MEDIUM = frozenset({
    op.INQUIRY, op.MODE_SENSE, op.MODE_SENSE_10, op.RESERVE, op.RESERVE_10, op.RELEASE, op.RELEASE_10,
    op.START_STOP, op.ALLOW_MEDIUM_REMOVAL, op.GET_CONFIGURATION, op.GET_EVENT_STATUS_NOTIFICATION,
    op.MECHANISM_STATUS, op.REQUEST_SENSE,
})
_READS = frozenset({op.READ_6, op.READ_10, op.READ_12, op.READ_16})
_WRITES = frozenset({op.WRITE_6, op.WRITE_10, op.WRITE_12, op.WRITE_16, op.WRITE_VERIFY_10, op.WRITE_VERIFY_12,
                     op.WRITE_VERIFY_16})
#: commands whose FUA bit (or nature) makes QEMU flush around the transfer
_FUA_CAPABLE = frozenset({op.READ_10, op.READ_12, op.READ_16, op.WRITE_10, op.WRITE_12, op.WRITE_16})
_ALWAYS_FUA = frozenset({op.WRITE_VERIFY_10, op.WRITE_VERIFY_12, op.WRITE_VERIFY_16})


class BlockImage(Protocol):
    size: int
    read_only: bool

    def read(self, offset: int, length: int) -> bytes: ...

    def write(self, offset: int, data: bytes) -> None: ...

    def write_zeroes(self, offset: int, length: int, unmap: bool = False) -> None: ...

    def discard(self, offset: int, length: int) -> None: ...

    def flush(self) -> None: ...


@dataclass
class DiskSettings:
    """The scsi-hd/scsi-cd properties that shape what the guest sees."""

    vendor: str = "QEMU"
    product: str | None = None
    version: str = HW_VERSION
    serial: str | None = None
    device_id: str | None = None
    wwn: int = 0
    port_wwn: int = 0
    port_index: int = 0
    removable: bool = False
    dpofua: bool = False
    logical_block_size: int = 512
    physical_block_size: int = 512
    min_io_size: int = 0
    opt_io_size: int = 0
    discard_granularity: int = 4096
    max_unmap_size: int = 1 << 30
    max_io_size: int = (1 << 31) - 1
    rotation_rate: int = 0
    scsi_version: int = 5
    write_cache: bool = True
    #: cylinders, heads, sectors for the geometry mode pages
    geometry: tuple[int, int, int] = (0, 0, 0)
    quirks: int = 0
    #: the largest transfer the image takes in one request (QEMU: INT_MAX rounded to 512)
    max_transfer: int = (1 << 31) - 512


class ScsiDisk(ScsiDevice):
    """scsi-hd (``cdrom=False``) or scsi-cd on a block image (None: a CD-ROM drive without a disc).

    Blocks are the settings' logical block size for a disk, 2048 bytes for a CD-ROM, unless
    ``block_size`` says otherwise.
    """

    def __init__(self, image: BlockImage | None, settings: DiskSettings | None = None, *, cdrom: bool = False,
                 channel: int = 0, target: int = UNSET, lun: int = UNSET, label: str | None = None,
                 block_size: int | None = None):
        super().__init__(channel, target, lun, label)
        self.image = image
        self.settings = settings or DiskSettings()
        s = self.settings
        self.cdrom = cdrom
        self.device_type = op.TYPE_ROM if cdrom else op.TYPE_DISK
        self.removable = cdrom or s.removable
        if s.product is None:
            s.product = "QEMU CD-ROM" if cdrom else "QEMU HARDDISK"
        self.block_size = block_size or (2048 if cdrom else s.logical_block_size)
        self.writable = image is not None and not cdrom and not image.read_only
        self.write_cache = s.write_cache
        self.tray_open = False
        self.tray_locked = False
        self.media_event = False
        self.eject_request = False
        self.scsi_version = s.scsi_version
        self.max_lba = 0
        self._reset_state()

    # -- state ----------------------------------------------------------------------------------
    def _reset_state(self) -> None:
        blocks = self._sectors() // (self.block_size // SECTOR)
        self.max_lba = blocks - 1 if blocks else 0
        self.tray_locked = False
        self.tray_open = False
        self.scsi_version = self.settings.scsi_version

    def reset(self) -> None:
        super().reset()
        self._reset_state()

    def _sectors(self) -> int:
        """The image's size in 512-byte sectors (0 without a medium)."""
        return self.image.size // SECTOR if self.image is not None else 0

    @property
    def available(self) -> bool:
        return self.image is not None and not self.tray_open

    def flush(self) -> None:
        if self.image is not None and self.writable:
            try:
                self.image.flush()
            except Exception as err:  # noqa: BLE001 - a failing host flush is logged, not raised into the guest
                log.warning("scsi: flush failed: %s", err)

    # -- dispatch ---------------------------------------------------------------------------------
    def execute(self, command: Command, size: int, area: DataArea) -> Outcome:
        code = command.opcode
        if code in _READS or code in _WRITES:
            return self._block_io(command, size, area)
        return self._emulate(command, size, area)

    def _emulate(self, command: Command, size: int, area: DataArea) -> Outcome:
        code = command.opcode
        if code not in _WITHOUT_MEDIUM and not self.available:
            raise CheckCondition(sn.NO_MEDIUM)
        if command.xfer > MAX_EMULATED_TRANSFER:
            raise CheckCondition(sn.INVALID_FIELD)
        handler = self._EMULATED.get(code)
        if handler is None:
            raise CheckCondition(sn.INVALID_OPCODE)
        result = handler(self, command)
        if command.xfer == 0:
            return Outcome()
        if command.mode == op.XFER_TO_DEV:
            # the parameter data arrives, then the command looks at it
            parameters = area.read(0, command.xfer).ljust(command.xfer, b"\0")
            apply = self._PARAMETERS.get(code)
            if apply is not None:
                apply(self, command, parameters)
            return Outcome(consumed=command.xfer)
        return Outcome(data=bytes((result or b"")[:command.xfer]).ljust(command.xfer, b"\0"))

    # -- reads and writes ----------------------------------------------------------------------------
    def _in_range(self, lba: int, blocks: int) -> bool:
        """QEMU's check_lba_range, in its 64-bit arithmetic."""
        end = lba + blocks
        return end < 1 << 64 and end <= (self.max_lba + 1) & _U64

    def _block_io(self, command: Command, size: int, area: DataArea) -> Outcome:
        if not self.available:
            raise CheckCondition(sn.NO_MEDIUM)
        code = command.opcode
        blocks = op.block_count(command.cdb)
        writing = code in _WRITES
        if writing and not self.writable:
            raise CheckCondition(sn.WRITE_PROTECTED)
        if self.scsi_version > 2 and command.cdb[1] & 0xE0:
            raise CheckCondition(sn.INVALID_FIELD)  # protection information
        if not self._in_range(command.lba, blocks):
            raise CheckCondition(sn.LBA_OUT_OF_RANGE)
        if blocks == 0:
            return Outcome()
        offset = command.lba * self.block_size
        length = _dma_length(size)
        fua = code in _ALWAYS_FUA or (code in _FUA_CAPABLE and command.cdb[1] & 0x08)
        try:
            if offset + length > self.image.size:
                # a data area larger than the transfer reaches past the image: the block layer
                # refuses the whole request
                raise ValueError(f"{length} bytes at {offset} pass the end of the image")
            if not writing and fua:
                self.flush()
            for pos in range(0, length, TRANSFER_CHUNK):
                piece = min(TRANSFER_CHUNK, length - pos)
                if writing:
                    self.image.write(offset + pos, area.read(pos, piece))
                else:
                    area.write(pos, self.image.read(offset + pos, piece))
            if writing and (fua or not self.write_cache):
                self.image.flush()
            return Outcome(block_io=True, consumed=length)
        except Exception as err:  # noqa: BLE001 - a host I/O error fails the command, not the device
            log.debug("scsi: %s of %d bytes at %d failed: %s", "write" if writing else "read", size, offset, err)
            raise CheckCondition(sn.IO_ERROR) from None

    # -- INQUIRY ---------------------------------------------------------------------------------------
    def _inquiry(self, command: Command) -> bytes:
        cdb = command.cdb
        if cdb[1] & 0x1:
            return self._vpd_page(cdb[2])
        if cdb[2] != 0:
            raise CheckCondition(sn.INVALID_FIELD)
        s = self.settings
        length = min(command.xfer, MAX_INQUIRY_LEN)
        data = bytearray(36)
        data[0] = self.device_type & 0x1F
        data[1] = 0x80 if self.removable else 0
        data[2] = s.scsi_version & 0xFF
        data[3] = 2 | 0x10  # response data format 2, HiSup
        data[4] = length - 5 if length > 36 else 36 - 5
        data[7] = 0x10 | (0x02 if self.bus is None or self.bus.tcq else 0)
        data[8:16] = _padded(s.vendor, 8)
        data[16:32] = _padded(s.product, 16)
        data[32:36] = s.version.encode()[:4].ljust(4, b"\0")
        return bytes(data)

    def _vpd_page(self, page: int) -> bytes:
        s = self.settings
        body = bytearray()
        if page == 0x00:
            body.append(0x00)
            if s.serial is not None:
                body.append(0x80)
            body.append(0x83)
            if self.device_type == op.TYPE_DISK:
                body += bytes((0xB0, 0xB1, 0xB2))
        elif page == 0x80:
            if s.serial is None:
                raise CheckCondition(sn.INVALID_FIELD)
            body += s.serial.encode()[:36]
        elif page == 0x83:
            ident = (s.device_id or "").encode()[:255 - 8]
            if ident:
                body += bytes((0x2, 0, 0, len(ident))) + ident
            if s.wwn:
                body += bytes((0x1, 0x3, 0, 8)) + struct.pack(">Q", s.wwn)
            if s.port_wwn:
                body += bytes((0x61, 0x93, 0, 8)) + struct.pack(">Q", s.port_wwn)
            if s.port_index:
                body += bytes((0x61, 0x94, 0, 4)) + struct.pack(">HH", 0, s.port_index)
        elif page == 0xB0:
            if self.device_type == op.TYPE_ROM:
                raise CheckCondition(sn.INVALID_FIELD)
            body += self._block_limits()
        elif page == 0xB1:
            body += struct.pack(">H", s.rotation_rate) + bytes(0x40 - 6)
        elif page == 0xB2:
            body += bytes((0, 0xE0, 2 if s.discard_granularity else 1, 0))
        else:
            raise CheckCondition(sn.INVALID_FIELD)
        return bytes((self.device_type & 0x1F, page, 0, len(body))) + bytes(body)

    def _block_limits(self) -> bytes:
        s = self.settings
        bs = self.block_size
        max_io = s.max_io_size // bs
        if self.device_type == op.TYPE_DISK:
            from_image = s.max_transfer // bs
            max_io = min(max_io, from_image) if max_io and from_image else (max_io or from_image)
        min_io, opt_io = s.min_io_size // bs, s.opt_io_size // bs
        page = bytearray(0x3C)
        page[0] = 1  # WSNZ
        if max_io:
            struct.pack_into(">HII", page, 2, min(min_io, max_io) & 0xFFFF, max_io, min(opt_io, max_io))
        else:
            struct.pack_into(">H2xI", page, 2, min_io & 0xFFFF, opt_io)
        struct.pack_into(">III", page, 16, s.max_unmap_size // bs, 255, s.discard_granularity // bs)
        struct.pack_into(">I", page, 36, max_io)
        return bytes(page)

    # -- capacity -----------------------------------------------------------------------------------------
    def _blocks(self) -> int:
        return self._sectors() // (self.block_size // SECTOR)

    def _read_capacity_10(self, command: Command) -> bytes:
        if not self._sectors():
            raise CheckCondition(sn.LUN_NOT_READY)
        if not command.cdb[8] & 1 and command.lba:
            raise CheckCondition(sn.INVALID_FIELD)
        last = (self._blocks() - 1) & _U64
        self.max_lba = last
        return struct.pack(">II", min(last, 0xFFFFFFFF), self.block_size & 0xFF00)

    def _service_action_in(self, command: Command) -> bytes:
        cdb = command.cdb
        if cdb[1] & 31 != op.SAI_READ_CAPACITY_16:
            raise CheckCondition(sn.INVALID_FIELD)
        if not self._sectors():
            raise CheckCondition(sn.LUN_NOT_READY)
        if not cdb[14] & 1 and command.lba:
            raise CheckCondition(sn.INVALID_FIELD)
        last = (self._blocks() - 1) & _U64
        self.max_lba = last
        data = bytearray(32)
        struct.pack_into(">QI", data, 0, last, self.block_size & 0xFF00)
        data[13] = _physical_block_exponent(self.settings)
        if self.settings.discard_granularity:
            data[14] = 0x80  # thin provisioning enabled
        return bytes(data)

    # -- MODE SENSE / MODE SELECT ------------------------------------------------------------------------
    def _mode_page(self, page: int, control: int) -> bytes | None:
        """One mode page with its 2-byte header, or None when the unit has no such page."""
        if self.device_type not in _MODE_PAGES.get(page, ()):
            return None
        s = self.settings
        cyls, heads, secs = s.geometry
        changeable = control == 1
        if page == MODE_PAGE_HD_GEOMETRY:
            p = bytearray(0x16)
            if not changeable:
                p[0:3] = cyls.to_bytes(4, "big")[1:]
                p[3] = heads & 0xFF
                p[4:7] = cyls.to_bytes(4, "big")[1:]
                p[7:10] = cyls.to_bytes(4, "big")[1:]
                p[11] = 200
                p[12:15] = b"\xff\xff\xff"
                p[18:20] = (5400).to_bytes(2, "big")
        elif page == MODE_PAGE_FLEXIBLE_DISK_GEOMETRY:
            p = bytearray(0x1E)
            if not changeable:
                p[0:2] = (5000).to_bytes(2, "big")
                p[2] = heads & 0xFF
                p[3] = secs & 0xFF
                p[4] = (self.block_size >> 8) & 0xFF
                p[6:8] = (cyls & 0xFFFF).to_bytes(2, "big")
                p[8:10] = (cyls & 0xFFFF).to_bytes(2, "big")
                p[10:12] = (cyls & 0xFFFF).to_bytes(2, "big")
                p[13] = 1
                p[14] = 1
                p[16] = 1
                p[17] = 1
                p[18] = 1
                p[26:28] = (5400).to_bytes(2, "big")
        elif page == MODE_PAGE_CACHING:
            p = bytearray(0x12)
            if changeable or self.write_cache:
                p[0] = 4  # WCE
        elif page == MODE_PAGE_R_W_ERROR:
            p = bytearray(10)
            if changeable:
                if self.device_type == op.TYPE_ROM:
                    p[0] = 0x80
            else:
                p[0] = 0x80  # automatic write reallocation
                if self.device_type == op.TYPE_ROM:
                    p[1] = 0x20  # read retry count
        elif page == MODE_PAGE_AUDIO_CTL:
            p = bytearray(14)
        elif page == MODE_PAGE_CAPABILITIES:
            p = bytearray(0x14)
            if not changeable:
                p[0] = 0x3B
                p[2] = 0x7F
                p[3] = 0xFF
                p[4] = 0x2D | (2 if self.tray_locked else 0)
                p[6:8] = (50 * 176).to_bytes(2, "big")
                p[8:10] = (2).to_bytes(2, "big")
                p[10:12] = (2048).to_bytes(2, "big")
                p[12:14] = (16 * 176).to_bytes(2, "big")
                p[16:18] = (16 * 176).to_bytes(2, "big")
                p[18:20] = (16 * 176).to_bytes(2, "big")
        elif page == MODE_PAGE_APPLE_VENDOR:
            if not s.quirks >> QUIRK_MODE_PAGE_APPLE_VENDOR & 1:
                return None
            p = bytearray(0x1E)
            if not changeable:
                p[8:31] = b"APPLE COMPUTER, INC   \0"[:0x1E - 8]
        else:  # MODE_PAGE_VENDOR_SPECIFIC
            if not (self.device_type == op.TYPE_DISK and s.quirks >> QUIRK_MODE_PAGE_VENDOR_SPECIFIC_APPLE & 1):
                return None
            p = bytearray(b"\xff\xff" if changeable else bytes(2))
        return bytes((page, len(p))) + bytes(p)

    def _mode_sense(self, command: Command) -> bytes:
        cdb = command.cdb
        six = cdb[0] == op.MODE_SENSE
        dbd = bool(cdb[1] & 0x8)
        page = cdb[2] & 0x3F
        control = (cdb[2] & 0xC0) >> 6
        s = self.settings
        if self.device_type == op.TYPE_DISK:
            specific = 0x10 if s.dpofua else 0
            if not self.writable:
                specific |= 0x80
        else:
            specific = 0
            if s.quirks >> QUIRK_MODE_SENSE_ROM_USE_DBD & 1:
                if s.quirks >> QUIRK_MODE_PAGE_APPLE_VENDOR & 1 and page == MODE_PAGE_APPLE_VENDOR:
                    dbd = True
            else:
                dbd = True  # MMC drives have no block descriptors
        header = bytearray(4 if six else 8)
        if six:
            header[2] = specific
        else:
            header[3] = specific
        sectors = self._sectors()
        descriptor = b""
        if not dbd and sectors:
            blocks = sectors // (self.block_size // SECTOR)
            if blocks > 0xFFFFFF:
                blocks = 0
            descriptor = bytes((0,)) + blocks.to_bytes(3, "big") + bytes((0, 0, (self.block_size >> 8) & 0xFF, 0))
            if six:
                header[3] = 8
            else:
                header[7] = 8
        if control == 3:
            raise CheckCondition(sn.SAVING_PARAMS_NOT_SUPPORTED)
        if page == MODE_PAGE_ALL:
            pages = b"".join(p for p in (self._mode_page(n, control) for n in range(0x3F)) if p is not None)
        else:
            pages = self._mode_page(page, control)
            if pages is None:
                raise CheckCondition(sn.INVALID_FIELD)
        data = header + descriptor + pages
        if six:
            data[0] = (len(data) - 1) & 0xFF
        else:
            data[0:2] = ((len(data) - 2) & 0xFFFF).to_bytes(2, "big")
        return bytes(data)

    def _mode_select(self, command: Command, data: bytes) -> None:
        if command.cdb[1] & 0x11 != 0x10 and not self.settings.quirks >> QUIRK_MODE_PAGE_VENDOR_SPECIFIC_APPLE & 1:
            raise CheckCondition(sn.INVALID_FIELD)  # only PF=1, SP=0
        six = command.opcode == op.MODE_SELECT
        header_len = 4 if six else 8
        length = command.xfer
        if length < header_len:
            raise CheckCondition(sn.INVALID_PARAM_LEN)
        descriptor_len = data[3] if six else struct.unpack_from(">H", data, 6)[0]
        length -= header_len
        pos = header_len
        if length < descriptor_len:
            raise CheckCondition(sn.INVALID_PARAM_LEN)
        if descriptor_len not in (0, 8):
            raise CheckCondition(sn.INVALID_PARAM)
        if descriptor_len:
            size = data[pos + 5] << 16 | data[pos + 6] << 8 | data[pos + 7]
            # only multiples of 512 up to 65024: what the rest of the emulation can take
            if size and not size & ~0xFE00 and size != self.block_size:
                self.block_size = size
        length -= descriptor_len
        pos += descriptor_len
        pages = data[pos:pos + length]
        self._select_pages(pages, apply=False)
        self._select_pages(pages, apply=True)
        if not self.write_cache:
            self.flush()

    def _select_pages(self, data: bytes, apply: bool) -> None:
        pos, length = 0, len(data)
        while length > 0:
            page = data[pos] & 0x3F
            if data[pos] & 0x40:
                if length < 4:
                    raise CheckCondition(sn.INVALID_PARAM_LEN)
                subpage = data[pos + 1]
                page_len = struct.unpack_from(">H", data, pos + 2)[0]
                pos, length = pos + 4, length - 4
            else:
                if length < 2:
                    raise CheckCondition(sn.INVALID_PARAM_LEN)
                subpage = 0
                page_len = data[pos + 1]
                pos, length = pos + 2, length - 2
            if subpage:
                raise CheckCondition(sn.INVALID_PARAM)
            if page_len > length and not self.settings.quirks & QUIRK_MODE_PAGE_TRUNCATED:
                # (QEMU tests the quirk's number as a mask here)
                raise CheckCondition(sn.INVALID_PARAM_LEN)
            body = data[pos:pos + page_len].ljust(page_len, b"\0")
            if apply:
                if page == MODE_PAGE_CACHING:
                    self.write_cache = bool(body[0] & 4) if body else False
            elif not self._mode_select_matches(page, body):
                raise CheckCondition(sn.INVALID_PARAM)
            pos, length = pos + page_len, length - page_len

    def _mode_select_matches(self, page: int, body: bytes) -> bool:
        """Whether a MODE SELECT page changes only what MODE SENSE says is changeable."""
        if len(body) + 2 > 256 or page == MODE_PAGE_ALL:
            return False
        current = self._mode_page(page, 0)
        if current is None or len(current) != len(body) + 2:
            return False
        changeable = self._mode_page(page, 1)
        return all(not ((current[i] ^ body[i - 2]) & ~changeable[i] & 0xFF) for i in range(2, len(current)))

    # -- UNMAP, WRITE SAME, VERIFY, FORMAT UNIT ---------------------------------------------------------
    def _unmap(self, command: Command, data: bytes) -> None:
        if command.cdb[1] & 0x1:
            raise CheckCondition(sn.INVALID_FIELD)  # ANCHOR
        length = command.xfer
        if length < 8:
            raise CheckCondition(sn.INVALID_PARAM_LEN)
        data_len, descriptors_len = struct.unpack_from(">HH", data, 0)
        if length < data_len + 2 or length < descriptors_len + 8 or descriptors_len & 15:
            raise CheckCondition(sn.INVALID_PARAM_LEN)
        if not self.writable:
            raise CheckCondition(sn.WRITE_PROTECTED)
        for i in range(descriptors_len >> 4):
            lba, blocks = struct.unpack_from(">QI", data, 8 + 16 * i)
            if not self._in_range(lba, blocks):
                raise CheckCondition(sn.LBA_OUT_OF_RANGE)
            self._io(self.image.discard, lba * self.block_size, blocks * self.block_size)

    def _write_same(self, command: Command, data: bytes) -> None:
        cdb = command.cdb
        blocks = op.block_count(cdb)
        if blocks == 0 or cdb[1] & 0x16:
            raise CheckCondition(sn.INVALID_FIELD)  # PBDATA, LBDATA, ANCHOR
        if not self.writable:
            raise CheckCondition(sn.WRITE_PROTECTED)
        if not self._in_range(command.lba, blocks):
            raise CheckCondition(sn.LBA_OUT_OF_RANGE)
        bs = self.block_size
        offset, length = command.lba * bs, blocks * bs
        pattern = bytes(data[:bs])
        if not any(pattern):
            self._io(self.image.write_zeroes, offset, length, bool(cdb[1] & 0x8))
        else:
            chunk = (pattern * (WRITE_SAME_CHUNK // bs + 1))[:min(WRITE_SAME_CHUNK, length)]
            pos = 0
            while pos < length:
                piece = chunk[:length - pos]
                self._io(self.image.write, offset + pos, piece)
                pos += len(piece)
        if not self.write_cache:
            self._io(self.image.flush)

    def _ignore_parameters(self, command: Command, data: bytes) -> None:
        """FORMAT UNIT takes its parameter list and does nothing."""

    def _io(self, method, *args) -> None:
        try:
            method(*args)
        except Exception as err:  # noqa: BLE001 - a host I/O error fails the command
            log.debug("scsi: %s failed: %s", getattr(method, "__name__", "I/O"), err)
            raise CheckCondition(sn.IO_ERROR) from None

    # -- small commands ---------------------------------------------------------------------------
    def _nothing(self, command: Command) -> None:
        return None

    def _reserve(self, command: Command) -> None:
        mask = 1 if command.opcode in (op.RESERVE, op.RELEASE) else 3
        if command.cdb[1] & mask:
            raise CheckCondition(sn.INVALID_FIELD)

    def _start_stop(self, command: Command) -> None:
        flags = command.cdb[4]
        start, load_eject = bool(flags & 1), bool(flags & 2)
        if flags & 0xF0:
            return None  # a power condition: no eject or load
        if self.removable and load_eject:
            if not start and not self.tray_open and self.tray_locked:
                raise CheckCondition(sn.ILLEGAL_REQ_REMOVAL_PREVENTED if self.image is not None
                                     else sn.NOT_READY_REMOVAL_PREVENTED)
            if self.tray_open != (not start):
                self.tray_open = not start
        return None

    def _prevent_allow(self, command: Command) -> None:
        self.tray_locked = bool(command.cdb[4] & 1)

    def _request_sense(self, command: Command) -> bytes:
        return sn.NO_SENSE_CODE.render(not command.cdb[1] & 1)

    def _synchronize_cache(self, command: Command) -> None:
        self._io(self.image.flush)

    def _seek(self, command: Command) -> None:
        if command.lba > self.max_lba:
            raise CheckCondition(sn.LBA_OUT_OF_RANGE)

    def _verify(self, command: Command) -> None:
        if command.cdb[1] & 6:
            raise CheckCondition(sn.INVALID_FIELD)

    # -- MMC ------------------------------------------------------------------------------------------
    def _require_rom(self) -> None:
        if self.device_type != op.TYPE_ROM:
            raise CheckCondition(sn.INVALID_FIELD)

    def _media_is_dvd(self) -> bool:
        return self.device_type == op.TYPE_ROM and self.available and self._sectors() > CD_MAX_SECTORS

    def _media_is_cd(self) -> bool:
        return self.device_type == op.TYPE_ROM and self.available and self._sectors() <= CD_MAX_SECTORS

    def _read_toc(self, command: Command) -> bytes:
        cdb = command.cdb
        msf = bool(cdb[1] & 2)
        form = cdb[2] & 0xF
        start_track = cdb[6]
        blocks = self._sectors() // (self.block_size // SECTOR)
        if form == 0:
            return _toc(blocks, msf, start_track)
        if form == 1:  # multi-session: one session
            return bytes((0, 0x0A, 0x01, 0x01)) + bytes(8)
        if form == 2:
            return _raw_toc(blocks, msf)
        raise CheckCondition(sn.INVALID_FIELD)

    def _get_configuration(self, command: Command) -> bytes:
        self._require_rom()
        current = PROFILE_DVD_ROM if self._media_is_dvd() else PROFILE_CD_ROM if self._media_is_cd() else PROFILE_NONE
        data = bytearray(40)
        struct.pack_into(">I", data, 0, 36)
        struct.pack_into(">H", data, 6, current)
        data[10] = 0x03
        data[11] = 8
        struct.pack_into(">H", data, 12, PROFILE_DVD_ROM)
        data[14] = current == PROFILE_DVD_ROM
        struct.pack_into(">H", data, 16, PROFILE_CD_ROM)
        data[18] = current == PROFILE_CD_ROM
        struct.pack_into(">H", data, 20, 1)  # core feature
        data[22] = 0x08 | 0x03
        data[23] = 8
        struct.pack_into(">I", data, 24, 1)  # SCSI
        data[28] = 1
        struct.pack_into(">H", data, 32, 3)  # removable medium feature
        data[34] = 0x08 | 0x03
        data[35] = 4
        data[36] = 0x39
        return bytes(data)

    def _event_status(self, command: Command) -> bytes:
        self._require_rom()
        cdb = command.cdb
        if not cdb[1] & 1:
            raise CheckCondition(sn.INVALID_FIELD)  # asynchronous notification
        data = bytearray(4)
        data[3] = 1 << GESN_MEDIA
        if cdb[4] & (1 << GESN_MEDIA):
            data[2] = GESN_MEDIA
            status = MS_TRAY_OPEN if self.tray_open else MS_MEDIA_PRESENT if self.image is not None else 0
            event = MEC_NO_CHANGE
            if status != MS_TRAY_OPEN:
                if self.media_event:
                    event, self.media_event = MEC_NEW_MEDIA, False
                elif self.eject_request:
                    event, self.eject_request = MEC_EJECT_REQUESTED, False
            data += bytes((event, status, 0, 0))
        else:
            data[2] = 0x80
        struct.pack_into(">H", data, 0, len(data) - 4)
        return bytes(data)

    def _mechanism_status(self, command: Command) -> bytes:
        self._require_rom()
        return bytes((0, 0, 0, 0, 0, 1, 0, 0))

    def _disc_information(self, command: Command) -> bytes:
        self._require_rom()
        if command.cdb[1] & 7:
            raise CheckCondition(sn.INVALID_FIELD)  # types 1 and 2 are for Blu-ray
        data = bytearray(34)
        data[1] = 32
        data[2] = 0xE
        data[3:7] = bytes((1, 1, 1, 1))
        data[7] = 0x20
        return bytes(data)

    def _dvd_structure(self, command: Command) -> bytes:
        self._require_rom()
        cdb = command.cdb
        media, layer, form = cdb[1], cdb[6], cdb[7]
        sizes = {0: 2048 + 4, 1: 4 + 4, 2: 0, 3: 188 + 4, 4: 2048 + 4}
        if media != 0:
            raise CheckCondition(sn.INVALID_FIELD)
        if form != 0xFF:
            if not self.available:
                raise CheckCondition(sn.NO_MEDIUM)
            if self._media_is_cd():
                raise CheckCondition(sn.INCOMPATIBLE_FORMAT)
            if form >= 5:
                raise CheckCondition(sn.INVALID_FIELD)
        if form == 0:
            if layer != 0:
                raise CheckCondition(sn.INVALID_FIELD)
            data = bytearray(sizes[0])
            data[4:8] = bytes((1, 0xF, 1, 0))
            end = (self._sectors() >> 2) - 1
            struct.pack_into(">II", data, 12, end & 0xFFFFFFFF, end & 0xFFFFFFFF)
        elif form in (1, 4):
            data = bytearray(sizes[form])
        elif form == 0xFF:
            data = bytearray(4)
            for kind in (0, 1, 3, 4):
                data += bytes((kind, 0x40)) + sizes[kind].to_bytes(2, "big")
        else:
            raise CheckCondition(sn.INVALID_FIELD)
        struct.pack_into(">H", data, 0, (len(data) - 2) & 0xFFFF)
        return bytes(data)

    _EMULATED = {
        op.TEST_UNIT_READY: _nothing,
        op.INQUIRY: _inquiry,
        op.MODE_SENSE: _mode_sense,
        op.MODE_SENSE_10: _mode_sense,
        op.READ_TOC: _read_toc,
        op.RESERVE: _reserve,
        op.RESERVE_10: _reserve,
        op.RELEASE: _reserve,
        op.RELEASE_10: _reserve,
        op.START_STOP: _start_stop,
        op.ALLOW_MEDIUM_REMOVAL: _prevent_allow,
        op.READ_CAPACITY_10: _read_capacity_10,
        op.REQUEST_SENSE: _request_sense,
        op.MECHANISM_STATUS: _mechanism_status,
        op.GET_CONFIGURATION: _get_configuration,
        op.GET_EVENT_STATUS_NOTIFICATION: _event_status,
        op.READ_DISC_INFORMATION: _disc_information,
        op.READ_DVD_STRUCTURE: _dvd_structure,
        op.SERVICE_ACTION_IN_16: _service_action_in,
        op.SYNCHRONIZE_CACHE: _synchronize_cache,
        op.SEEK_10: _seek,
        op.MODE_SELECT: _nothing,
        op.MODE_SELECT_10: _nothing,
        op.UNMAP: _nothing,
        op.VERIFY_10: _verify,
        op.VERIFY_12: _verify,
        op.VERIFY_16: _verify,
        op.WRITE_SAME_10: _nothing,
        op.WRITE_SAME_16: _nothing,
        op.FORMAT_UNIT: _nothing,
    }
    #: what the commands with parameter data do with it
    _PARAMETERS = {
        op.MODE_SELECT: _mode_select,
        op.MODE_SELECT_10: _mode_select,
        op.UNMAP: _unmap,
        op.WRITE_SAME_10: _write_same,
        op.WRITE_SAME_16: _write_same,
        op.FORMAT_UNIT: _ignore_parameters,
    }


def _dma_length(size: int) -> int:
    """The bytes QEMU's DMA helpers move for a data area of ``size`` bytes: all of it when it
    is a multiple of 512, else (their quirk) only the remainder, from the area's start.

    The transfer length only sets the least the area must hold: a larger area is read or
    written whole, starting at the command's LBA.
    """
    return size if size % SECTOR == 0 else size % SECTOR


def _padded(text: str, width: int) -> bytes:
    return text.encode()[:width].ljust(width, b" ")


def _physical_block_exponent(s: DiskSettings) -> int:
    exponent, size = 0, s.physical_block_size
    while size > s.logical_block_size:
        size >>= 1
        exponent += 1
    return exponent


def _msf(lba: int) -> bytes:
    lba += 150
    return bytes(((lba // 75) // 60 & 0xFF, (lba // 75) % 60, lba % 75))


def _toc(blocks: int, msf: bool, start_track: int) -> bytes:
    """READ TOC format 0: the data track 1 and the lead-out."""
    if start_track > 1 and start_track != 0xAA:
        raise CheckCondition(sn.INVALID_FIELD)
    data = bytearray(b"\0\0\x01\x01")
    if start_track <= 1:
        data += bytes((0, 0x14, 1, 0))
        data += bytes(1) + _msf(0) if msf else bytes(4)
    data += bytes((0, 0x16, 0xAA, 0))
    data += bytes(1) + _msf(blocks) if msf else (blocks & 0xFFFFFFFF).to_bytes(4, "big")
    struct.pack_into(">H", data, 0, len(data) - 2)
    return bytes(data)


def _raw_toc(blocks: int, msf: bool) -> bytes:
    """READ TOC format 2: the session's A0, A1, A2 and track 1 entries."""
    data = bytearray(b"\0\0\x01\x01")
    data += bytes((1, 0x14, 0, 0xA0, 0, 0, 0, 0, 1, 0, 0))
    data += bytes((1, 0x14, 0, 0xA1, 0, 0, 0, 0, 1, 0, 0))
    data += bytes((1, 0x14, 0, 0xA2, 0, 0, 0))
    data += bytes(1) + _msf(blocks) if msf else (blocks & 0xFFFFFFFF).to_bytes(4, "big")
    data += bytes((1, 0x14, 0, 1, 0, 0, 0))
    data += bytes(1) + _msf(0) if msf else bytes(4)
    struct.pack_into(">H", data, 0, len(data) - 2)
    return bytes(data)
