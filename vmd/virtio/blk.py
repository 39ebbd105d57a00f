"""virtio-blk (virtio 1.2, section 5.2): a block device on one request queue.

A request is a 16-byte header (type, reserved, sector) the driver reads out,
then data, then one status byte the device writes.  Reads, writes, flush,
GET_ID, discard and write-zeroes reach the image through the block layer's
node interface; every bad request (outside the disk, not a multiple of the
logical block, a write to a read-only disk) gets VIRTIO_BLK_S_IOERR and the
device carries on, as QEMU's does.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from typing import Protocol

from vmd.virtio.device import VirtioBackend
from vmd.virtio.ring import Chain, Virtqueue

log = logging.getLogger("vmd.virtio")

VIRTIO_ID_BLOCK = 2
# feature bits
F_SIZE_MAX = 1
F_SEG_MAX = 2
F_GEOMETRY = 4
F_RO = 5
F_BLK_SIZE = 6
F_SCSI = 7
F_FLUSH = 9
F_TOPOLOGY = 10
F_CONFIG_WCE = 11
F_MQ = 12
F_DISCARD = 13
F_WRITE_ZEROES = 14
# request types
T_IN = 0
T_OUT = 1
T_SCSI_CMD = 2
T_FLUSH = 4
T_GET_ID = 8
T_DISCARD = 11
T_WRITE_ZEROES = 13
# status
S_OK = 0
S_IOERR = 1
S_UNSUPP = 2
SECTOR = 512
ID_BYTES = 20
#: QEMU's limits for discard and write-zeroes requests (sectors per segment, segments per request)
MAX_DISCARD_SECTORS = 0x3FFFFF
MAX_WRITE_ZEROES_SECTORS = 0x3FFFFF
WRITE_ZEROES_UNMAP = 1


class BlockImage(Protocol):
    """The block layer's node, as far as the device uses it."""

    size: int
    read_only: bool

    def read(self, offset: int, length: int) -> bytes: ...

    def write(self, offset: int, data: bytes) -> None: ...

    def write_zeroes(self, offset: int, length: int, unmap: bool = False) -> None: ...

    def discard(self, offset: int, length: int) -> None: ...

    def flush(self) -> None: ...


@dataclass
class BlkSettings:
    """The virtio-blk-ccw properties that shape what the guest sees."""

    queue_size: int = 256
    num_queues: int = 1
    seg_max_adjust: bool = True
    logical_block_size: int = 512
    physical_block_size: int = 512
    min_io_size: int = 0
    opt_io_size: int = 0
    cyls: int = 0
    heads: int = 0
    secs: int = 0
    serial: str | None = None
    write_cache: bool = True
    config_wce: bool = True
    discard: bool = True
    write_zeroes: bool = True
    max_discard_sectors: int = MAX_DISCARD_SECTORS
    max_write_zeroes_sectors: int = MAX_WRITE_ZEROES_SECTORS


def guess_geometry(sectors: int, first_sector: bytes = b"") -> tuple[int, int, int]:
    """CHS for a disk without a given geometry, the way QEMU's hd_geometry_guess does it.

    A DOS partition table that ends on a cylinder boundary gives heads and sectors; otherwise
    16 heads and 63 sectors per track, cylinders clamped to 2..16383.
    """
    heads, secs = 16, 63
    if len(first_sector) >= 512 and first_sector[510:512] == b"\x55\xaa":
        for i in range(4):
            entry = first_sector[446 + 16 * i: 462 + 16 * i]
            if entry[4] == 0:
                continue
            end_head = entry[5]
            end_sec = entry[6] & 63
            if end_head and end_sec and end_head + 1 <= 16:  # more heads: a BIOS translation, not physical
                cyls = sectors // ((end_head + 1) * end_sec)
                if 1 <= cyls <= 16383:
                    return cyls, end_head + 1, end_sec
    cyls = max(2, min(16383, sectors // (heads * secs)))
    return cyls, heads, secs


class VirtioBlk(VirtioBackend):
    device_id = VIRTIO_ID_BLOCK
    legacy_features = 1 << F_SCSI

    def __init__(self, image: BlockImage, settings: BlkSettings | None = None):
        super().__init__()
        self.image = image
        self.settings = settings or BlkSettings()
        s = self.settings
        self.queue_sizes = (s.queue_size,) * max(1, s.num_queues)
        self.capacity = image.size // SECTOR
        if s.cyls and s.heads and s.secs:
            self.geometry = (s.cyls, s.heads, s.secs)
        else:
            try:
                first = image.read(0, 512) if image.size >= 512 else b""
            except Exception:  # noqa: BLE001 - an unreadable disk still gets a geometry
                first = b""
            self.geometry = guess_geometry(self.capacity, first)
        self.writeback = s.write_cache
        self.serial = (s.serial or "").encode()[:ID_BYTES]

    def features(self) -> int:
        s = self.settings
        bits = (1 << F_SEG_MAX) | (1 << F_GEOMETRY) | (1 << F_BLK_SIZE) | (1 << F_TOPOLOGY) | (1 << F_FLUSH)
        if s.config_wce:
            bits |= 1 << F_CONFIG_WCE
        if self.image.read_only:
            bits |= 1 << F_RO
        if s.num_queues > 1:
            bits |= 1 << F_MQ
        if s.discard and not self.image.read_only:
            bits |= 1 << F_DISCARD
        if s.write_zeroes and not self.image.read_only:
            bits |= 1 << F_WRITE_ZEROES
        return bits

    def config(self) -> bytes:
        s = self.settings
        blk = s.logical_block_size
        seg_max = s.queue_size - 2 if s.seg_max_adjust else 128 - 2
        phys_exp = max(0, (s.physical_block_size // blk).bit_length() - 1)
        cyls, heads, secs = self.geometry
        offered = self.features()
        # QEMU sizes the space by the features offered: up to the last field one of them needs
        size = 57 if offered >> F_WRITE_ZEROES & 1 else 48 if offered >> F_DISCARD & 1 else 36
        return self.pack(
            "QIIHBBIBBHIBBHIIIIIB3x",
            self.capacity, 0, seg_max, cyls, heads, secs, blk,
            phys_exp, 0, s.min_io_size // blk, s.opt_io_size // blk,
            1 if self.writeback else 0, 0, max(1, s.num_queues),
            s.max_discard_sectors, 1, blk // SECTOR,
            s.max_write_zeroes_sectors, 1, 1,
        )[:size]

    def write_config(self, offset: int, data: bytes) -> None:
        """Only the writeback byte (offset 32) is the driver's to change, with CONFIG_WCE."""
        if offset <= 32 < offset + len(data) and self.has(F_CONFIG_WCE):
            self.writeback = bool(data[32 - offset])

    # -- requests ------------------------------------------------------------------------------
    def queue_notify(self, queue: Virtqueue) -> None:
        old_used = queue.used_idx
        while True:
            chain = queue.pop()
            if chain is None:
                break
            written = self._request(queue, chain)
            queue.push(chain, written)
        if queue.used_idx != old_used and queue.needs_interrupt(old_used):
            self.notify(queue.index)

    def _request(self, queue: Virtqueue, chain: Chain) -> int:
        """Carry out one request; returns the bytes written into the driver's buffers."""
        if chain.readable_len < 16 or chain.writable_len < 1:
            log.warning("virtio-blk: request without header or status byte")
            return 0
        header = queue.gather(chain.readable, 16)
        kind, _ioprio, sector = self.unpack_from("IIQ", header)
        # the status byte is the last writable byte; data areas are what precedes it
        status_area = _last_byte(chain.writable)
        data_in = _drop_last_byte(chain.writable)
        data_out = _skip(chain.readable, 16)
        written = 0
        try:
            if kind == T_IN:
                length = sum(n for _a, n in data_in)
                offset = self._range(sector, length)
                written = queue.scatter(data_in, self.image.read(offset, length))
                status = S_OK
            elif kind == T_OUT:
                if self.image.read_only:
                    raise _IoError("read-only")
                length = sum(n for _a, n in data_out)
                offset = self._range(sector, length)
                self.image.write(offset, queue.gather(data_out))
                if not self.writeback:
                    self.image.flush()
                status = S_OK
            elif kind == T_FLUSH:
                self.image.flush()
                status = S_OK
            elif kind == T_GET_ID:
                ident = self.serial.ljust(ID_BYTES, b"\0")
                written = queue.scatter(data_in, ident[:sum(n for _a, n in data_in)])
                status = S_OK
            elif kind in (T_DISCARD, T_WRITE_ZEROES):
                status = self._discard_or_zero(queue, kind, data_out)
            else:
                status = S_UNSUPP
        except _IoError as err:
            log.debug("virtio-blk: request %d at sector %d: %s", kind, sector, err)
            status = S_IOERR
        except Exception as err:  # noqa: BLE001 - a host I/O error fails the request, not the daemon
            log.warning("virtio-blk: request %d at sector %d failed: %s", kind, sector, err)
            status = S_IOERR
        queue.scatter([status_area], bytes([status]))
        return written + 1

    def _range(self, sector: int, length: int) -> int:
        """The byte offset of a transfer, or _IoError when it is misaligned or leaves the disk."""
        blk = self.settings.logical_block_size
        offset = sector * SECTOR
        if length % blk or offset % blk:
            raise _IoError(f"transfer of {length} bytes at sector {sector} is not block-aligned")
        if sector > self.capacity or length > (self.capacity - sector) * SECTOR:
            raise _IoError(f"transfer of {length} bytes at sector {sector} leaves the disk")
        return offset

    def _discard_or_zero(self, queue: Virtqueue, kind: int, data_out: list[tuple[int, int]]) -> int:
        feature = F_DISCARD if kind == T_DISCARD else F_WRITE_ZEROES
        if not self.features() >> feature & 1:
            return S_UNSUPP
        payload = queue.gather(data_out)
        if len(payload) != 16:  # QEMU takes exactly one segment (max_*_seg is 1)
            return S_UNSUPP
        sector, count, flags = self.unpack_from("QII", payload)
        limit = self.settings.max_discard_sectors if kind == T_DISCARD else self.settings.max_write_zeroes_sectors
        if count > limit:
            return S_IOERR
        if kind == T_DISCARD and flags:
            return S_UNSUPP
        if kind == T_WRITE_ZEROES and flags & ~WRITE_ZEROES_UNMAP:
            return S_UNSUPP
        offset = self._range(sector, count * SECTOR)
        if kind == T_DISCARD:
            self.image.discard(offset, count * SECTOR)
        else:
            self.image.write_zeroes(offset, count * SECTOR, unmap=bool(flags & WRITE_ZEROES_UNMAP))
        return S_OK

    def reset(self) -> None:
        super().reset()
        self.writeback = self.settings.write_cache

    def close(self) -> None:
        close = getattr(self.image, "close", None)
        if close is not None:
            close()


class _IoError(Exception):
    pass


def _skip(areas: list[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    out = []
    for addr, size in areas:
        if n >= size:
            n -= size
            continue
        out.append((addr + n, size - n))
        n = 0
    return out


def _last_byte(areas: list[tuple[int, int]]) -> tuple[int, int]:
    addr, size = areas[-1]
    return addr + size - 1, 1


def _drop_last_byte(areas: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = list(areas)
    addr, size = out.pop()
    if size > 1:
        out.append((addr, size - 1))
    return out
