"""The SCSI command set (vmd/scsi): CDB parsing, the bus's request rules, scsi-hd and scsi-cd.

The guest transcript (guests/src/scsi.c, golden from QEMU 7.2) is where vmd's answers are
compared with QEMU's, command by command; these tests pin the same rules down at the level
of the package, on images in memory and in files: any CDB, to any unit, with any data area,
gives a well-formed completion; the quirks the transcript showed (how a completed command
clears a unit attention, the DMA length of an unaligned data area, a block size set by MODE
SELECT while the capacity used for range checks stays the old one) are stated here too.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmd.block import open_drive
from vmd.scsi import cdb as op
from vmd.scsi import sense as sn
from vmd.scsi.bus import AddressError, ScsiBus, ScsiDevice
from vmd.scsi.disk import DiskSettings, ScsiDisk
from vmd.scsi.sense import CHECK_CONDITION, GOOD

SECTOR = 512


class Image:
    """A block image in memory with the block layer's interface; counts flushes."""

    def __init__(self, size: int, read_only: bool = False, pattern: bool = True):
        self.data = bytearray(bytes((i * 7 + i // 512) & 0xFF for i in range(size)) if pattern else bytes(size))
        self.read_only = read_only
        self.flushes = 0
        self.discarded: list[tuple[int, int]] = []

    @property
    def size(self) -> int:
        return len(self.data)

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or offset + length > len(self.data):
            raise ValueError(f"beyond the image: {offset}+{length}")

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        return bytes(self.data[offset:offset + length])

    def write(self, offset: int, data: bytes) -> None:
        self._check(offset, len(data))
        if self.read_only:
            raise ValueError("read-only")
        self.data[offset:offset + len(data)] = data

    def write_zeroes(self, offset: int, length: int, unmap: bool = False) -> None:
        self.write(offset, bytes(length))

    def discard(self, offset: int, length: int) -> None:
        self._check(offset, length)
        self.discarded.append((offset, length))

    def flush(self) -> None:
        self.flushes += 1


def make_bus(hd_size: int = 1 << 20, cd_size: int = 300 * 2048):
    """Target 0: a disk at LUN 0, a CD-ROM at LUN 1, an empty CD-ROM drive at LUN 3."""
    bus = ScsiBus("scsi0.0")
    hd = ScsiDisk(Image(hd_size), DiskSettings(serial="SERIAL-1", device_id="hd0", geometry=(2, 16, 63)),
                  target=0, lun=0, label="hd")
    cd = ScsiDisk(Image(cd_size, read_only=True), cdrom=True, target=0, lun=1, label="cd")
    empty = ScsiDisk(None, cdrom=True, target=0, lun=3)
    for unit in (hd, cd, empty):
        bus.check_address(unit)
        bus.attach(unit)
    return bus, hd, cd, empty


def run(bus, unit, cdb, size=0, data_out=b"", lun=None):
    request = bus.request(unit, unit.lun if lun is None else lun, bytes(cdb))
    return request.run(size, data_out)


def clear_ua(bus, *units):
    for unit in units:
        run(bus, unit, [0] * 6)


def key(completion) -> tuple[int, int, int]:
    return sn.parse(completion.sense)


# -- CDB parsing -------------------------------------------------------------------------------

@pytest.mark.parametrize("opcode,length", [(0x00, 6), (0x1F, 6), (0x28, 10), (0x5F, 10), (0x60, None),
                                           (0x88, 16), (0x9F, 16), (0xA8, 12), (0xBF, 12), (0xC0, None),
                                           (0xFF, None)])
def test_cdb_length_comes_from_the_group(opcode, length):
    assert op.cdb_length(opcode) == length
    parsed = op.parse(bytes([opcode]) + bytes(31), op.TYPE_DISK, 512)
    assert (parsed is None) == (length is None)
    if parsed is not None:
        assert len(parsed.cdb) == length


@pytest.mark.parametrize("cdb,kind,block,xfer,mode", [
    ([0x08, 0, 0, 0, 0, 0], op.TYPE_DISK, 512, 256 * 512, op.XFER_FROM_DEV),       # READ(6) 0 = 256 blocks
    ([0x0A, 0, 0, 0, 2, 0], op.TYPE_DISK, 512, 1024, op.XFER_TO_DEV),
    ([0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0], op.TYPE_DISK, 512, 0, op.XFER_NONE),       # READ(10) 0 blocks
    ([0x28, 0, 0, 0, 0, 0, 0, 0, 3, 0], op.TYPE_ROM, 2048, 3 * 2048, op.XFER_FROM_DEV),
    ([0x25] + [0xFF] * 9, op.TYPE_DISK, 512, 8, op.XFER_FROM_DEV),                 # READ CAPACITY(10)
    ([0x12, 0, 0, 1, 4, 0], op.TYPE_DISK, 512, 260, op.XFER_FROM_DEV),             # INQUIRY: 16-bit length
    ([0x00, 0, 0, 0, 9, 0], op.TYPE_DISK, 512, 0, op.XFER_NONE),                   # TEST UNIT READY
    ([0x41, 0, 0, 0, 0, 0, 0, 0, 4, 0], op.TYPE_DISK, 512, 512, op.XFER_TO_DEV),   # WRITE SAME: one block
    ([0x41, 1, 0, 0, 0, 0, 0, 0, 4, 0], op.TYPE_DISK, 512, 0, op.XFER_NONE),       # ... without data
    ([0x2F, 2, 0, 0, 0, 0, 0, 0, 4, 0], op.TYPE_DISK, 512, 2048, op.XFER_TO_DEV),  # VERIFY with BYTCHK
    ([0x2F, 0, 0, 0, 0, 0, 0, 0, 4, 0], op.TYPE_DISK, 512, 0, op.XFER_NONE),
    ([0xBD, 0, 0, 0, 0, 0, 1, 0, 0, 8, 0, 0], op.TYPE_ROM, 2048, 8, op.XFER_FROM_DEV),  # MECHANISM STATUS
    ([0xBD, 0, 0, 0, 0, 0, 1, 0, 0, 8, 0, 0], op.TYPE_DISK, 512, 0x01000008, op.XFER_FROM_DEV),
    ([0x04, 0x10, 0, 0, 0, 0], op.TYPE_DISK, 512, 4, op.XFER_TO_DEV),               # FORMAT UNIT with data
    ([0x04, 0x10, 0, 0, 0, 0], op.TYPE_ROM, 2048, 12, op.XFER_TO_DEV),
    ([0xA1, 0x00, 0x0E, 0, 2, 0, 0, 0, 0, 0, 0, 0], op.TYPE_DISK, 512, 1024, op.XFER_FROM_DEV),  # ATA, 2 sectors
])
def test_transfer_lengths_and_directions(cdb, kind, block, xfer, mode):
    parsed = op.parse(bytes(cdb), kind, block)
    assert (parsed.xfer, parsed.mode) == (xfer, mode)


@given(st.binary(min_size=1, max_size=32), st.sampled_from([op.TYPE_DISK, op.TYPE_ROM]),
       st.sampled_from([512, 1024, 2048, 4096]))
def test_any_cdb_parses_or_is_refused(cdb, kind, block):
    parsed = op.parse(cdb, kind, block)
    if cdb[0] >> 5 in (3, 6, 7) or len(cdb) < op.cdb_length(cdb[0]):
        assert parsed is None
        return
    assert len(parsed.cdb) == op.cdb_length(cdb[0])
    assert parsed.xfer >= 0
    assert (parsed.mode == op.XFER_NONE) == (parsed.xfer == 0)
    assert parsed.lba is not None and 0 <= parsed.lba < 1 << 64


# -- sense data --------------------------------------------------------------------------------

def test_sense_formats_convert_both_ways():
    fixed = sn.LBA_OUT_OF_RANGE.fixed()
    assert fixed == bytes.fromhex("700005000000000a000000002100000000 00".replace(" ", ""))
    descriptor = sn.convert(fixed, 252, fixed=False)
    assert descriptor == bytes.fromhex("7205210000000000")
    assert sn.convert(descriptor, 252, fixed=True) == fixed
    assert sn.convert(b"", 4, fixed=True) == bytes.fromhex("70000000")
    assert sn.parse(b"\x70\x00") == sn.IO_ERROR  # too short to read


def test_unit_attention_precedence_keeps_a_reset():
    unit = ScsiDevice(0, 0, 0)
    unit.set_unit_attention(sn.CAPACITY_CHANGED)
    unit.set_unit_attention(sn.RESET)
    unit.set_unit_attention(sn.REPORTED_LUNS_CHANGED)
    assert unit.unit_attention == sn.RESET


# -- addresses ----------------------------------------------------------------------------------

def test_addresses_are_checked_and_filled_in_as_qemu_does():
    bus = ScsiBus("b.0")
    with pytest.raises(AddressError, match="bad scsi channel id: 1"):
        bus.check_address(ScsiDevice(1, 0, 0))
    with pytest.raises(AddressError, match="bad scsi device id: 256"):
        bus.check_address(ScsiDevice(0, 256, 0))
    with pytest.raises(AddressError, match="bad scsi device lun: 16384"):
        bus.check_address(ScsiDevice(0, 0, 16384))
    first = ScsiDevice(0, 0xFFFFFFFF, 2, "a")
    bus.assign_address(first)
    bus.attach(first)
    assert (first.target, first.lun) == (0, 2)
    second = ScsiDevice(0, 0xFFFFFFFF, 2)  # the same LUN: the next free target
    bus.assign_address(second)
    assert second.target == 1
    third = ScsiDevice(0, 0, 0xFFFFFFFF)  # the lowest free LUN of target 0
    bus.assign_address(third)
    assert third.lun == 0
    with pytest.raises(AddressError, match="lun already used by 'a'"):
        bus.check_address(ScsiDevice(0, 0, 2))
    anonymous = ScsiDevice(0, 5, 5)
    bus.attach(anonymous)
    with pytest.raises(AddressError, match=r"lun already used by '\(null\)'"):
        bus.check_address(ScsiDevice(0, 5, 5))


def test_a_full_bus_has_no_free_target():
    bus = ScsiBus("b.0", max_target=2)
    for target in range(3):
        bus.attach(ScsiDevice(0, target, 0))
    with pytest.raises(AddressError, match="no free target"):
        bus.assign_address(ScsiDevice(0, 0xFFFFFFFF, 0))


# -- the request rules ---------------------------------------------------------------------------

def test_power_on_unit_attention_is_reported_once_and_inquiry_is_exempt():
    bus, hd, _cd, _empty = make_bus()
    inquiry = run(bus, hd, [0x12, 0, 0, 0, 36, 0], 36)
    assert inquiry.status == GOOD and inquiry.data[16:32] == b"QEMU HARDDISK   "
    first = run(bus, hd, [0] * 6)
    assert first.status == CHECK_CONDITION and key(first) == sn.RESET
    assert run(bus, hd, [0] * 6).status == GOOD


def test_a_completed_command_clears_the_unit_attention_of_the_unit_that_answered():
    """QEMU 7.2 clears it when any non-exempt request completes, even one refused as an unknown
    operation code (which it treats as operation code 0)."""
    bus, hd, _cd, empty = make_bus()
    refused = run(bus, empty, [0xC0] + [0] * 11)
    assert key(refused) == sn.INVALID_OPCODE
    assert key(run(bus, empty, [0] * 6)) == sn.NO_MEDIUM  # the reset was cleared
    # a LUN nobody has is answered for by the newest unit of the target (here the empty drive)
    bus2, hd2, cd2, empty2 = make_bus()
    assert key(run(bus2, empty2, [0] * 6, lun=7)) == sn.RESET
    assert key(run(bus2, empty2, [0] * 6, lun=7)) == sn.LUN_NOT_SUPPORTED


def test_unit_attention_taken_by_a_request_that_never_runs_is_gone():
    bus, hd, _cd, _empty = make_bus()
    request = bus.request(hd, 0, bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]))
    assert request.mode == op.XFER_FROM_DEV and request.xfer == 512  # the adapter refuses it (overrun)
    assert run(bus, hd, [0] * 6).status == GOOD


def test_request_sense_returns_the_last_failure_then_no_sense():
    bus, hd, _cd, _empty = make_bus()
    clear_ua(bus, hd)
    failed = run(bus, hd, [0x28, 0, 0xFF, 0, 0, 0, 0, 0, 1, 0], 512)
    assert key(failed) == sn.LBA_OUT_OF_RANGE
    stored = run(bus, hd, [0x03, 0, 0, 0, 18, 0], 18)
    assert stored.status == GOOD and sn.parse(stored.data) == sn.LBA_OUT_OF_RANGE
    descriptor = run(bus, hd, [0x03, 1, 0, 0, 18, 0], 18)
    assert descriptor.data[:4] == bytes((0x72, 0, 0, 0))  # NO SENSE, descriptor format, padded
    assert descriptor.residual == 0


def test_report_luns_lists_lun_0_then_the_newest_units_first():
    bus, hd, cd, empty = make_bus()
    far = ScsiDisk(None, cdrom=True, target=0, lun=300)
    bus.attach(far)
    done = run(bus, hd, [0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0], 64)
    assert done.status == GOOD
    assert struct.unpack_from(">I", done.data)[0] == 32
    luns = [done.data[8 + 8 * i:10 + 8 * i] for i in range(4)]
    assert luns == [b"\0\0", b"\x41\x2c", b"\0\x03", b"\0\x01"]
    short = run(bus, hd, [0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 28, 0, 0], 28)
    assert len(short.data) == 24 and short.residual == 4
    assert key(run(bus, hd, [0xA0, 0, 3, 0, 0, 0, 0, 0, 0, 64, 0, 0], 64)) == sn.INVALID_FIELD
    assert key(run(bus, cd, [0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0], 64)) == sn.LUN_NOT_SUPPORTED


def test_the_target_answers_inquiry_for_luns_it_lacks():
    bus, hd, _cd, _empty = make_bus()
    clear_ua(bus, hd)
    missing = run(bus, hd, [0x12, 0, 0, 0, 36, 0], 36, lun=9)
    assert missing.data == bytes((0x7F,)) + bytes(35)
    lonely = ScsiBus("x.0")
    unit = ScsiDisk(Image(4096), target=2, lun=5)
    lonely.attach(unit)
    target = run(lonely, unit, [0x12, 0, 0, 0, 36, 0], 36, lun=0)
    assert target.data[0] == 0x3F and target.data[16:32] == b"QEMU TARGET     " and target.data[32:36] == b"2.5\0"


# -- scsi-hd -------------------------------------------------------------------------------------

def test_inquiry_vpd_pages_of_a_disk():
    bus, hd, _cd, _empty = make_bus()
    pages = run(bus, hd, [0x12, 1, 0, 0, 32, 0], 32).data
    assert pages[:10] == bytes((0, 0, 0, 6, 0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2))
    serial = run(bus, hd, [0x12, 1, 0x80, 0, 32, 0], 32).data
    assert serial[:12] == bytes((0, 0x80, 0, 8)) + b"SERIAL-1"
    ident = run(bus, hd, [0x12, 1, 0x83, 0, 32, 0], 32).data
    assert ident[:11] == bytes((0, 0x83, 0, 7, 2, 0, 0, 3)) + b"hd0"
    limits = run(bus, hd, [0x12, 1, 0xB0, 0, 64, 0], 64).data
    assert limits[3] == 0x3C and struct.unpack_from(">I", limits, 8)[0] == 0x3FFFFF
    assert key(run(bus, hd, [0x12, 1, 0x81, 0, 32, 0], 32)) == sn.INVALID_FIELD


def test_reads_and_writes_in_every_cdb_size(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes((i * 3) & 0xFF for i in range(1 << 20)))
    node = open_drive({"file": str(path), "format": "raw"})
    try:
        bus = ScsiBus("b.0")
        hd = ScsiDisk(node, target=0, lun=0)
        bus.attach(hd)
        clear_ua(bus, hd)
        for cdb in ([0x0A, 0, 0, 10, 1, 0], [0x2A, 0, 0, 0, 0, 11, 0, 0, 1, 0],
                    [0xAA, 0, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0], [0x8A, 0] + [0] * 7 + [13, 0, 0, 0, 1, 0, 0]):
            assert run(bus, hd, cdb, 512, bytes([cdb[0]]) * 512).status == GOOD
        for lba, opcode in ((10, 0x0A), (11, 0x2A), (12, 0xAA), (13, 0x8A)):
            read = run(bus, hd, [0x28, 0, 0, 0, 0, lba, 0, 0, 1, 0], 512)
            assert read.data == bytes([opcode]) * 512 and read.residual == 0
        assert run(bus, hd, [0x35] + [0] * 9).status == GOOD
    finally:
        node.close()
    data = path.read_bytes()
    assert data[10 * 512:11 * 512] == b"\x0a" * 512 and data[14 * 512] == (14 * 512 * 3) & 0xFF


def test_range_checks_and_the_capacity_they_use():
    bus, hd, _cd, _empty = make_bus()
    clear_ua(bus, hd)
    assert run(bus, hd, [0x28, 0, 0, 0, 0x07, 0xFE, 0, 0, 2, 0], 1024).status == GOOD
    assert key(run(bus, hd, [0x28, 0, 0, 0, 0x07, 0xFF, 0, 0, 2, 0], 1024)) == sn.LBA_OUT_OF_RANGE
    assert run(bus, hd, [0x28, 0, 0, 0, 0x08, 0x00, 0, 0, 0, 0]).status == GOOD  # 0 blocks just past the end
    high = [0x88, 0] + [0xFF] * 8 + [0, 0, 0, 2, 0, 0]
    assert key(run(bus, hd, high, 1024)) == sn.LBA_OUT_OF_RANGE  # no wrap-around
    # MODE SELECT may change the block size; range checks keep the old capacity until READ CAPACITY
    select = bytes((0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x04, 0))
    assert run(bus, hd, [0x15, 0x10, 0, 0, 12, 0], 12, select).status == GOOD
    assert key(run(bus, hd, [0x28, 0, 0, 0, 0x05, 0xDC, 0, 0, 1, 0], 1024)) == sn.IO_ERROR  # beyond the image
    capacity = run(bus, hd, [0x25] + [0] * 9, 8)
    assert capacity.data == struct.pack(">II", 1023, 1024)
    assert key(run(bus, hd, [0x28, 0, 0, 0, 0x05, 0xDC, 0, 0, 1, 0], 1024)) == sn.LBA_OUT_OF_RANGE


def test_a_larger_data_area_moves_as_qemus_dma_helpers_move_it():
    bus, hd, _cd, _empty = make_bus()
    clear_ua(bus, hd)
    whole = run(bus, hd, [0x28, 0, 0, 0, 0, 1, 0, 0, 1, 0], 2048)  # 4 blocks read for a 1-block command
    assert whole.data == bytes(hd.image.data[512:2560]) and whole.residual == 512 - 2048
    odd = run(bus, hd, [0x28, 0, 0, 0, 0, 1, 0, 0, 1, 0], 700)  # unaligned: only the 188-byte remainder
    assert odd.data == bytes(hd.image.data[512:700])


def test_write_protection_and_fua():
    bus, hd, cd, _empty = make_bus()
    clear_ua(bus, hd, cd)
    assert key(run(bus, cd, [0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0], 2048, bytes(2048))) == sn.WRITE_PROTECTED
    before = hd.image.flushes
    assert run(bus, hd, [0x2A, 0x08, 0, 0, 0, 5, 0, 0, 1, 0], 512, bytes(512)).status == GOOD
    assert hd.image.flushes == before + 1  # FUA
    readonly = ScsiDisk(Image(8192, read_only=True), target=1, lun=0)
    bus.attach(readonly)
    clear_ua(bus, readonly)
    header = run(bus, readonly, [0x1A, 0, 0x3F, 0, 4, 0], 4).data
    assert header[2] == 0x80  # write protected, in the mode parameter header
    assert key(run(bus, readonly, [0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0], 512, bytes(512))) == sn.WRITE_PROTECTED


def test_mode_select_turns_the_write_cache_off_and_writes_flush():
    bus, hd, _cd, _empty = make_bus()
    clear_ua(bus, hd)
    caching = run(bus, hd, [0x1A, 0x08, 0x08, 0, 24, 0], 24).data  # DBD: no block descriptor
    assert caching[4:7] == bytes((0x08, 0x12, 0x04))
    off = bytes((0x11, 0, 0, 0, 0x08, 0x12)) + bytes(0x12)
    assert run(bus, hd, [0x15, 0x10, 0, 0, len(off), 0], len(off), off).status == GOOD
    assert run(bus, hd, [0x1A, 0x08, 0x08, 0, 24, 0], 24).data[6] == 0
    before = hd.image.flushes
    run(bus, hd, [0x2A, 0, 0, 0, 0, 9, 0, 0, 1, 0], 512, bytes(512))
    assert hd.image.flushes == before + 1
    # a field MODE SENSE does not call changeable
    bad = bytes((0x11, 0, 0, 0, 0x08, 0x12, 0x05)) + bytes(0x11)
    assert key(run(bus, hd, [0x15, 0x10, 0, 0, len(bad), 0], len(bad), bad)) == sn.INVALID_PARAM
    assert key(run(bus, hd, [0x15, 0x00, 0, 0, len(off), 0], len(off), off)) == sn.INVALID_FIELD  # PF=0


def test_unmap_and_write_same():
    bus, hd, _cd, _empty = make_bus()
    clear_ua(bus, hd)
    unmap = bytes((0, 22, 0, 16)) + bytes(4) + struct.pack(">QI", 100, 8) + bytes(4)
    assert run(bus, hd, [0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], 24, unmap).status == GOOD
    assert hd.image.discarded == [(100 * 512, 8 * 512)]
    assert key(run(bus, hd, [0x42, 1, 0, 0, 0, 0, 0, 0, 24, 0], 24, unmap)) == sn.INVALID_FIELD
    assert key(run(bus, hd, [0x42, 0, 0, 0, 0, 0, 0, 0, 6, 0], 6, unmap[:6])) == sn.INVALID_PARAM_LEN
    pattern = bytes(range(256)) * 2
    assert run(bus, hd, [0x41, 0, 0, 0, 0, 200, 0, 0, 3, 0], 512, pattern).status == GOOD
    assert bytes(hd.image.data[200 * 512:203 * 512]) == pattern * 3
    assert run(bus, hd, [0x41, 0, 0, 0, 0, 210, 0, 0, 2, 0], 512, bytes(512)).status == GOOD
    assert not any(hd.image.data[210 * 512:212 * 512])
    assert key(run(bus, hd, [0x41, 2, 0, 0, 0, 220, 0, 0, 1, 0], 512, pattern)) == sn.INVALID_FIELD  # LBDATA


# -- scsi-cd -------------------------------------------------------------------------------------

def test_cdrom_identity_capacity_and_toc():
    bus, _hd, cd, _empty = make_bus()
    clear_ua(bus, cd)
    inquiry = run(bus, cd, [0x12, 0, 0, 0, 36, 0], 36).data
    assert inquiry[0:2] == bytes((5, 0x80)) and inquiry[16:32] == b"QEMU CD-ROM     "
    assert run(bus, cd, [0x25] + [0] * 9, 8).data == struct.pack(">II", 299, 2048)
    toc = run(bus, cd, [0x43, 0, 0, 0, 0, 0, 0, 0, 20, 0], 20).data
    assert toc == bytes.fromhex("001201010014010000000000" "0016aa000000012c")
    msf = run(bus, cd, [0x43, 2, 0, 0, 0, 0, 0, 0, 20, 0], 20).data
    assert msf[8:12] == bytes((0, 0, 2, 0)) and msf[16:20] == bytes((0, 0, 6, 0))  # 0:02:00 and 0:06:00
    config = run(bus, cd, [0x46, 0, 0, 0, 0, 0, 0, 0, 40, 0], 40).data
    assert struct.unpack_from(">H", config, 6)[0] == 0x0008  # current profile: CD-ROM
    assert key(run(bus, cd, [0x12, 1, 0xB0, 0, 64, 0], 64)) == sn.INVALID_FIELD


def test_the_tray_locks_ejects_and_loads():
    bus, _hd, cd, empty = make_bus()
    clear_ua(bus, cd, empty)
    events = [0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8, 0]
    assert run(bus, cd, events, 8).data == bytes.fromhex("0004041000020000")  # medium present
    run(bus, cd, [0x1E, 0, 0, 0, 1, 0])
    assert key(run(bus, cd, [0x1B, 0, 0, 0, 2, 0])) == sn.ILLEGAL_REQ_REMOVAL_PREVENTED
    run(bus, cd, [0x1E, 0, 0, 0, 0, 0])
    assert run(bus, cd, [0x1B, 0, 0, 0, 2, 0]).status == GOOD
    assert key(run(bus, cd, [0] * 6)) == sn.NO_MEDIUM
    assert run(bus, cd, events, 8).data[5] == 1  # tray open
    assert run(bus, cd, [0x1B, 0, 0, 0, 3, 0]).status == GOOD
    assert run(bus, cd, [0] * 6).status == GOOD
    run(bus, empty, [0x1E, 0, 0, 0, 1, 0])
    assert key(run(bus, empty, [0x1B, 0, 0, 0, 2, 0])) == sn.NOT_READY_REMOVAL_PREVENTED
    assert key(run(bus, empty, [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], 2048)) == sn.NO_MEDIUM
    bus.reset()  # a reset closes and unlocks the tray
    assert cd.tray_open is False and cd.tray_locked is False


def test_dvd_structure_is_refused_for_a_cd_sized_medium_and_listed_for_a_dvd():
    bus, _hd, cd, _empty = make_bus()
    clear_ua(bus, cd)
    assert key(run(bus, cd, [0xAD, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0], 64)) == sn.INCOMPATIBLE_FORMAT
    dvd = ScsiDisk(Image(800 << 20, pattern=False), cdrom=True, target=4, lun=0)
    bus.attach(dvd)
    clear_ua(bus, dvd)
    physical = run(bus, dvd, [0xAD, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x04, 0, 0], 2052).data
    assert struct.unpack_from(">I", physical, 12)[0] == ((800 << 20) // 512 >> 2) - 1
    profile = run(bus, dvd, [0x46, 0, 0, 0, 0, 0, 0, 0, 8, 0], 8).data
    assert struct.unpack_from(">H", profile, 6)[0] == 0x0010  # DVD-ROM


# -- any CDB, any unit, any data area --------------------------------------------------------------

units = st.sampled_from(["hd", "cd", "empty", "missing"])
cdbs = st.one_of(
    st.binary(min_size=1, max_size=32),
    st.builds(lambda o, rest: bytes([o]) + rest,
              st.sampled_from(sorted({0x00, 0x03, 0x04, 0x08, 0x0A, 0x12, 0x15, 0x16, 0x1A, 0x1B, 0x1E, 0x25, 0x28,
                                      0x2A, 0x2B, 0x2F, 0x35, 0x41, 0x42, 0x43, 0x46, 0x4A, 0x51, 0x55, 0x5A, 0x88,
                                      0x8A, 0x93, 0x9E, 0xA0, 0xA8, 0xAA, 0xAD, 0xBD})),
              st.binary(min_size=15, max_size=31)))
requests = st.tuples(units, cdbs, st.integers(0, 9000), st.booleans(), st.binary(max_size=600))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests, min_size=1, max_size=12))
def test_any_request_sequence_completes_well_formed(sequence):
    bus, hd, cd, empty = make_bus(hd_size=64 * 1024, cd_size=20 * 2048)
    by_name = {"hd": (hd, 0), "cd": (cd, 1), "empty": (empty, 3), "missing": (empty, 9)}
    for name, cdb, size, outgoing, payload in sequence:
        unit, lun = by_name[name]
        request = bus.request(unit, lun, cdb)
        assert request.xfer >= 0
        if request.mode != op.XFER_NONE and request.xfer > size:
            continue  # the adapter refuses it before it runs
        data_out = (payload * (size // max(1, len(payload)) + 1))[:size] if outgoing and payload else bytes(size)
        done = request.run(size, data_out if request.mode == op.XFER_TO_DEV else b"")
        assert done.status in (GOOD, CHECK_CONDITION)
        assert len(done.data) <= max(size, 0)
        if done.status == CHECK_CONDITION:
            assert len(done.sense) == 18 and done.sense[0] == 0x70 and done.sense[7] == 10
            assert done.sense[2] in (sn.NOT_READY, sn.ILLEGAL_REQUEST, sn.UNIT_ATTENTION, sn.DATA_PROTECT,
                                     sn.ABORTED_COMMAND, sn.MEDIUM_ERROR)
            assert not done.data
    assert len(hd.image.data) == 64 * 1024 and len(cd.image.data) == 20 * 2048  # nothing grew


class CountingArea:
    """A data area that says it is huge and counts what is moved through it."""

    def __init__(self):
        self.moved = 0

    def read(self, offset: int, length: int) -> bytes:
        self.moved += length
        return bytes(length)

    def write(self, offset: int, data: bytes) -> None:
        self.moved += len(data)


def test_a_data_area_past_the_image_moves_nothing_and_a_large_one_moves_in_pieces():
    bus, hd, _cd, _empty = make_bus(hd_size=8 << 20)
    clear_ua(bus, hd)
    area = CountingArea()
    done = bus.request(hd, 0, bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0])).run(1 << 40, area)
    assert key(done) == sn.IO_ERROR and area.moved == 0
    area = CountingArea()
    write = bus.request(hd, 0, bytes([0x2A, 0, 0, 0, 0, 0, 0, 0x20, 0, 0])).run(4 << 20, area)
    assert write.status == GOOD and area.moved == 4 << 20 and write.residual == 0
