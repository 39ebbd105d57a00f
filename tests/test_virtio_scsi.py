"""virtio-scsi with scsi-hd and scsi-cd: the adapter, the device models, hot plug, IPL from SCSI.

The guest transcript (guests/src/scsi.c; tests/test_guests_qemu.py and
tests/test_cpu_guests.py) shows vmd answering a long list of requests as QEMU
7.2 does; the list is built here (:func:`scsi_script`) and given to the guest on a
read-only SCSI disk, together with the data disk and CD the commands read.  The
tests below drive the back end directly with what a hostile driver could send,
check the device models against QEMU's command line and QMP, and boot an El
Torito ISO from a scsi-cd with QEMU's firmware.
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, require_peer
from vmd.block import open_drive
from vmd.boot.kernel import parse_kernel
from vmd.errors import GenericError
from vmd.events import EventBus
from vmd.machine import ipl
from vmd.machine.channel import ChannelSubsystemIO, DataStream
from vmd.machine.css import ChannelSubsystem
from vmd.machine.execution import Execution
from vmd.machine.machine import Machine
from vmd.machine.memory import GuestMemory
from vmd.scsi import sense as sn
from vmd.scsi.bus import ScsiBus
from vmd.scsi.disk import ScsiDisk
from vmd.virtio import ccw
from vmd.virtio import scsi as vscsi
from vmd.virtio.device import F_ANY_LAYOUT, F_VERSION_1
from vmd.virtio.ring import DESC_F_NEXT, DESC_F_WRITE


# -- the guest's disks -----------------------------------------------------------------------------

HD_SECTORS = 2048
CD_BLOCKS = 300
#: the CD image ends with half a 2048-byte block (the capacity rounds down)
CD_TAIL = 1024
HD_SERIAL = "VMD-SCSI-HD-0123456789-ABCDEFGHIJKLMN"


def scsi_hd_image() -> bytes:
    """1 MiB whose byte i is (i * 7 + i / 512) mod 256: every sector differs."""
    return bytes((i * 7 + i // 512) & 0xFF for i in range(HD_SECTORS * 512))


def scsi_cd_image() -> bytes:
    """300 CD blocks and a half: byte i is (i * 11 + 3 * (i / 2048)) mod 256."""
    return bytes((i * 11 + 3 * (i // 2048)) & 0xFF for i in range(CD_BLOCKS * 2048 + CD_TAIL))


# the script's entries, as guests/src/scsi.c reads them (struct entry, 128 bytes)
ENTRY = struct.Struct(">BBBBIIB3x64s48s")
SCRIPT_MAGIC = b"VMDSCSI1"
REQUESTQ, CONTROLQ = 2, 0
PRINT_DATA, MERGE_OUT, MERGE_IN, SPLIT_IN = 1, 2, 4, 8
#: the units of the guest's command line
HD, CD, EMPTY_CD, SCRIPT = (0, 0), (0, 1), (0, 3), (2, 5)


@dataclass
class Entry:
    queue: int
    header: bytes
    response_len: int
    out_len: int = 0
    in_len: int = 0
    flags: int = 0
    payload: bytes = b""
    seed: int = 0

    def pack(self) -> bytes:
        return ENTRY.pack(self.queue, self.flags, len(self.header), self.response_len, self.out_len,
                          self.in_len, self.seed, self.header, self.payload)


def lun_field(target: int, lun: int) -> bytes:
    """A virtio-scsi LUN field: 01, target, then the LUN (flat space addressing from 256)."""
    high = (0x40 | lun >> 8) if lun >= 256 else 0
    return bytes((1, target, high, lun & 0xFF)) + bytes(4)


def cmd(unit: tuple[int, int], cdb: bytes | list[int], *, in_len: int = 0, out_len: int = 0, out: bytes = b"",
        seed: int = 0, flags: int = 0, lun: bytes | None = None, tag: int = 0, response: int = 108) -> Entry:
    cdb = bytes(cdb)
    header = (lun if lun is not None else lun_field(*unit)) + struct.pack("<QBBB", tag, 0, 0, 0) + cdb.ljust(32, b"\0")
    return Entry(REQUESTQ, header, response, out_len or len(out), in_len, flags, out, seed)


def tmf(subtype: int, unit: tuple[int, int], tag: int = 0, lun: bytes | None = None) -> Entry:
    header = struct.pack("<II", 0, subtype) + (lun if lun is not None else lun_field(*unit)) + struct.pack("<Q", tag)
    return Entry(CONTROLQ, header, 1)


def an(kind: int, unit: tuple[int, int], events: int) -> Entry:
    return Entry(CONTROLQ, struct.pack("<I", kind) + lun_field(*unit) + struct.pack("<I", events), 5)


def be16(v: int) -> list[int]:
    return list(v.to_bytes(2, "big"))


def be32(v: int) -> list[int]:
    return list(v.to_bytes(4, "big"))


def be64(v: int) -> list[int]:
    return list(v.to_bytes(8, "big"))


def read10(lba: int, blocks: int, flags: int = 0) -> list[int]:
    return [0x28, flags, *be32(lba), 0, *be16(blocks), 0]


def write10(lba: int, blocks: int, flags: int = 0) -> list[int]:
    return [0x2A, flags, *be32(lba), 0, *be16(blocks), 0]


def scripted_commands() -> list[Entry]:
    """The fixed part of the script: every command family, the good and the refused cases."""
    e: list[Entry] = []
    tur = [0] * 6
    inquiry = [0x12, 0, 0, 0, 36, 0]
    # power-on unit attention: INQUIRY is exempt, TEST UNIT READY reports it once
    e += [cmd(HD, inquiry, in_len=36, flags=PRINT_DATA), cmd(HD, tur), cmd(HD, tur),
          cmd(HD, [0x03, 0, 0, 0, 18, 0], in_len=18, flags=PRINT_DATA), cmd(CD, tur),
          cmd(CD, [0x03, 0, 0, 0, 18, 0], in_len=18, flags=PRINT_DATA)]
    # INQUIRY: standard data at several allocation lengths, the VPD pages, refused pages
    e += [cmd(HD, [0x12, 0, 0, 0, 96, 0], in_len=96, flags=PRINT_DATA),
          cmd(HD, [0x12, 0, 0, 0, 4, 0], in_len=4, flags=PRINT_DATA),
          cmd(HD, [0x12, 0, 0, *be16(300), 0], in_len=300),
          cmd(HD, [0x12, 0, 0, 0, 36, 0], in_len=64, flags=PRINT_DATA)]
    for page in (0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2, 0x81, 0xC0):
        e.append(cmd(HD, [0x12, 1, page, 0, 96, 0], in_len=96, flags=PRINT_DATA))
    e += [cmd(HD, [0x12, 2, 0, 0, 36, 0], in_len=36), cmd(HD, [0x12, 0, 0x80, 0, 36, 0], in_len=36),
          cmd(CD, inquiry, in_len=36, flags=PRINT_DATA)]
    for page in (0x00, 0x83, 0xB0, 0xB1):
        e.append(cmd(CD, [0x12, 1, page, 0, 96, 0], in_len=96, flags=PRINT_DATA))
    e += [cmd(SCRIPT, [0x12, 0, 0, 0, 36, 0], in_len=36, flags=PRINT_DATA),
          cmd(SCRIPT, [0x12, 1, 0x83, 0, 96, 0], in_len=96, flags=PRINT_DATA),
          cmd(SCRIPT, [0x12, 1, 0xB1, 0, 16, 0], in_len=16, flags=PRINT_DATA)]
    # REPORT LUNS: the target's LUN list, its length rules, other targets
    report = [0xA0, 0, 0, 0, 0, 0, *be32(64), 0, 0]
    e += [cmd(HD, report, in_len=64, flags=PRINT_DATA), cmd(HD, [0xA0, 0, 2, 0, 0, 0, *be32(64), 0, 0], in_len=64),
          cmd(HD, [0xA0, 0, 3, 0, 0, 0, *be32(64), 0, 0], in_len=64),
          cmd(HD, [0xA0, 0, 0, 0, 0, 0, *be32(8), 0, 0], in_len=8),
          cmd(HD, [0xA0, 0, 0, 0, 0, 0, *be32(28), 0, 0], in_len=28, flags=PRINT_DATA),
          cmd(CD, report, in_len=64), cmd((2, 0), report, in_len=64, flags=PRINT_DATA),
          cmd((1, 0), report, in_len=64)]
    # LUNs nobody has: the target answers (or a unit with a pending unit attention does)
    e += [cmd((0, 7), inquiry, in_len=36, flags=PRINT_DATA), cmd((2, 0), inquiry, in_len=36, flags=PRINT_DATA),
          cmd((0, 7), [0x12, 1, 0, 0, 36, 0], in_len=36, flags=PRINT_DATA),
          cmd((0, 7), [0x12, 1, 0x83, 0, 36, 0], in_len=36), cmd((0, 7), [0x12, 2, 0, 0, 36, 0], in_len=36),
          cmd((0, 7), tur), cmd((0, 7), tur), cmd((0, 7), [0x03, 0, 0, 0, 18, 0], in_len=18, flags=PRINT_DATA),
          cmd((0, 7), [0x03, 1, 0, 0, 18, 0], in_len=18, flags=PRINT_DATA), cmd((2, 0), tur),
          cmd((0, 7), [0x25] + [0] * 9, in_len=8), cmd(HD, tur, lun=bytes(8)),
          cmd(HD, tur, lun=bytes((1, 0, 0x80, 0, 0, 0, 0, 0))), cmd(HD, tur, lun=bytes((1, 0, 0x40, 0, 0, 0, 0, 0))),
          cmd(HD, inquiry, in_len=36, lun=bytes((1, 0, 0x41, 0, 0, 0, 0, 0)), flags=PRINT_DATA),
          cmd(EMPTY_CD, tur), cmd(EMPTY_CD, tur)]
    # capacity
    e += [cmd(HD, [0x25] + [0] * 9, in_len=8, flags=PRINT_DATA), cmd(CD, [0x25] + [0] * 9, in_len=8, flags=PRINT_DATA),
          cmd(EMPTY_CD, [0x25] + [0] * 9, in_len=8), cmd(HD, [0x25, 0, *be32(5), 0, 0, 0, 0], in_len=8),
          cmd(HD, [0x25, 0, *be32(5), 0, 0, 1, 0], in_len=8, flags=PRINT_DATA),
          cmd(HD, [0x9E, 0x10, *be64(0), *be32(32), 0, 0], in_len=32, flags=PRINT_DATA),
          cmd(CD, [0x9E, 0x10, *be64(0), *be32(32), 0, 0], in_len=32, flags=PRINT_DATA),
          cmd(HD, [0x9E, 0x10, *be64(0), *be32(12), 0, 0], in_len=12, flags=PRINT_DATA),
          cmd(HD, [0x9E, 0x11, *be64(0), *be32(32), 0, 0], in_len=32)]
    # reads: every CDB size, the ends of the disk, protection bits, FUA, buffer shapes
    e += [cmd(HD, [0x08, 0, 0, 1, 2, 0], in_len=1024), cmd(HD, [0x08, 0, 0, 0, 0, 0], in_len=128 * 1024),
          cmd(HD, read10(2046, 2), in_len=1024), cmd(HD, read10(2047, 2), in_len=1024),
          cmd(HD, read10(2048, 0)), cmd(HD, read10(2049, 0)), cmd(HD, read10(7, 1, 0x20), in_len=512),
          cmd(HD, read10(7, 1, 0x08), in_len=512), cmd(HD, read10(3, 2), in_len=4096),
          cmd(HD, read10(2047, 1), in_len=1024), cmd(HD, read10(9, 4), in_len=2048, flags=SPLIT_IN),
          cmd(HD, read10(9, 4), in_len=1024), cmd(HD, read10(9, 1), out_len=512),
          cmd(HD, read10(9, 1), in_len=512, flags=MERGE_IN),
          cmd(HD, [0xA8, 0, *be32(100), *be32(3), 0, 0], in_len=1536),
          cmd(HD, [0x88, 0, *be64(1000), *be32(2), 0, 0], in_len=1024),
          cmd(HD, [0x88, 0, *be64(1 << 40), *be32(2), 0, 0], in_len=1024),
          cmd(HD, [0x88, 0, *be64((1 << 64) - 1), *be32(2), 0, 0], in_len=1024),
          cmd(CD, read10(0, 1), in_len=2048, flags=PRINT_DATA), cmd(CD, read10(299, 1), in_len=2048),
          cmd(CD, read10(300, 1), in_len=2048), cmd(CD, [0x08, 0, 0, 5, 1, 0], in_len=2048),
          cmd(EMPTY_CD, read10(0, 1), in_len=2048)]
    # writes and their read-back; write protection; FUA; WRITE AND VERIFY
    e += [cmd(HD, write10(100, 2), out_len=1024, seed=5), cmd(HD, read10(100, 2), in_len=1024),
          cmd(HD, [0x0A, 0, 0, 120, 1, 0], out_len=512, seed=9), cmd(HD, read10(120, 1), in_len=512),
          cmd(HD, [0x8A, 0, *be64(130), *be32(1), 0, 0], out_len=512, seed=33),
          cmd(HD, write10(140, 1, 0x08), out_len=512, seed=44), cmd(HD, [0x2E, 0, *be32(150), 0, 0, 1, 0],
                                                                      out_len=512, seed=55),
          cmd(HD, [0xAA, 0, *be32(160), *be32(1), 0, 0], out_len=512, seed=66),
          cmd(HD, read10(130, 40), in_len=40 * 512), cmd(HD, write10(200, 1), out_len=1536, seed=77),
          cmd(HD, read10(200, 3), in_len=1536), cmd(HD, write10(2047, 2), out_len=1024),
          cmd(HD, write10(300, 1, 0x40), out_len=512), cmd(CD, write10(0, 1), out_len=2048),
          cmd(SCRIPT, write10(0, 1), out_len=512), cmd(EMPTY_CD, write10(0, 1), out_len=2048),
          cmd(HD, write10(5, 1), out_len=256)]
    # cache, seek, verify, reserve and release, format
    e += [cmd(HD, [0x35] + [0] * 9), cmd(HD, [0x91] + [0] * 15), cmd(CD, [0x35] + [0] * 9),
          cmd(HD, [0x2B, 0, *be32(2047), 0, 0, 0, 0]), cmd(HD, [0x2B, 0, *be32(2048), 0, 0, 0, 0]),
          cmd(HD, [0x2F, 0, *be32(0), 0, 0, 1, 0]), cmd(HD, [0x2F, 2, *be32(0), 0, 0, 1, 0], out_len=512),
          cmd(HD, [0x16, 0, 0, 0, 0, 0]), cmd(HD, [0x16, 1, 0, 0, 0, 0]), cmd(HD, [0x56, 2] + [0] * 8),
          cmd(HD, [0x17, 0, 0, 0, 0, 0]), cmd(HD, [0x57, 0] + [0] * 8),
          cmd(HD, [0x04, 0x10, 0, 0, 0, 0], out_len=4), cmd(HD, [0x04, 0, 0, 0, 0, 0])]
    # MODE SENSE: every page, page controls, both CDB sizes, disk and CD-ROM, the read-only unit
    for unit, page, control in ((HD, 0x3F, 0), (HD, 0x08, 0), (HD, 0x3F, 1), (HD, 0x3F, 2), (HD, 0x3F, 3),
                                (HD, 0x1C, 0), (HD, 0x04, 0), (CD, 0x3F, 0), (CD, 0x2A, 0), (CD, 0x2A, 1),
                                (EMPTY_CD, 0x3F, 0), (SCRIPT, 0x08, 0)):
        e.append(cmd(unit, [0x1A, 0, control << 6 | page, 0, 255, 0], in_len=255, flags=PRINT_DATA))
    e += [cmd(HD, [0x1A, 8, 0x3F, 0, 255, 0], in_len=255), cmd(HD, [0x5A, 0, 0x3F, 0, 0, 0, 0, *be16(300), 0],
                                                                in_len=300, flags=PRINT_DATA),
          cmd(CD, [0x5A, 8, 0x3F, 0, 0, 0, 0, *be16(300), 0], in_len=300),
          cmd(HD, [0x1A, 0, 0x01, 0, 8, 0], in_len=8, flags=PRINT_DATA)]
    # MODE SELECT: the write cache off and on, refused changes, a new block size and back
    caching_off = bytes((0x11, 0, 0, 0)) + bytes((0x08, 0x12)) + bytes(0x12)
    caching_on = bytes((0x11, 0, 0, 0)) + bytes((0x08, 0x12, 0x04)) + bytes(0x11)
    e += [cmd(HD, [0x15, 0x10, 0, 0, len(caching_off), 0], out=caching_off),
          cmd(HD, [0x1A, 0, 0x08, 0, 255, 0], in_len=64, flags=PRINT_DATA),
          cmd(HD, write10(400, 1), out_len=512, seed=3),
          cmd(HD, [0x15, 0x10, 0, 0, len(caching_on), 0], out=caching_on),
          cmd(HD, [0x15, 0x00, 0, 0, len(caching_on), 0], out=caching_on),
          cmd(HD, [0x15, 0x10, 0, 0, 8, 0], out=caching_on[:8]),
          cmd(HD, [0x15, 0x10, 0, 0, 3, 0], out=caching_on[:3]),
          cmd(HD, [0x15, 0x10, 0, 0, 6, 0], out=bytes((0, 0, 0, 0, 0x01, 0x0A))),
          cmd(HD, [0x15, 0x10, 0, 0, 16, 0], out=bytes((0, 0, 0, 0, 0x01, 0x0A, 0x40)) + bytes(9)),
          cmd(HD, [0x15, 0x10, 0, 0, 0, 0]), cmd(HD, [0x15, 0x10, 0, 0, 4, 0], out=bytes((0, 0, 0, 4))),
          cmd(HD, [0x15, 0x10, 0, 0, 12, 0], out=bytes((0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x04, 0))),
          cmd(HD, [0x25] + [0] * 9, in_len=8, flags=PRINT_DATA), cmd(HD, read10(1500, 1), in_len=1024),
          cmd(HD, [0x25] + [0] * 9, in_len=8, flags=PRINT_DATA), cmd(HD, read10(1500, 1), in_len=1024),
          cmd(HD, read10(3, 1), in_len=1024),
          cmd(HD, [0x55, 0x10, 0, 0, 0, 0, 0, 0, 16, 0],
              out=bytes((0, 0, 0, 0, 0, 0, 0, 8)) + bytes((0, 0, 0, 0, 0, 0, 2, 0))),
          cmd(HD, [0x25] + [0] * 9, in_len=8, flags=PRINT_DATA), cmd(HD, read10(3, 1), in_len=512)]
    # the CD-ROM's tray: lock, eject refused, unlock, eject, a missing medium, load again
    gesn = [0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8, 0]
    e += [cmd(CD, gesn, in_len=8, flags=PRINT_DATA), cmd(CD, [0x1E, 0, 0, 0, 1, 0]),
          cmd(CD, [0x1A, 0, 0x2A, 0, 28, 0], in_len=28, flags=PRINT_DATA), cmd(CD, [0x1B, 0, 0, 0, 2, 0]),
          cmd(CD, [0x1E, 0, 0, 0, 0, 0]), cmd(CD, [0x1B, 0, 0, 0, 2, 0]), cmd(CD, tur),
          cmd(CD, gesn, in_len=8, flags=PRINT_DATA), cmd(CD, read10(0, 1), in_len=2048),
          cmd(CD, [0x25] + [0] * 9, in_len=8), cmd(CD, [0x1B, 0, 0, 0, 3, 0]), cmd(CD, tur),
          cmd(CD, [0x1B, 0, 0, 0, 0x12, 0]), cmd(CD, tur), cmd(HD, [0x1B, 0, 0, 0, 2, 0]), cmd(HD, tur),
          cmd(EMPTY_CD, [0x1E, 0, 0, 0, 1, 0]), cmd(EMPTY_CD, [0x1B, 0, 0, 0, 2, 0]),
          cmd(EMPTY_CD, [0x1E, 0, 0, 0, 0, 0]), cmd(EMPTY_CD, gesn, in_len=8, flags=PRINT_DATA)]
    # MMC: configuration, TOC, disc information, events, mechanism, DVD structure
    e += [cmd(CD, [0x46, 0, 0, 0, 0, 0, 0, 0, 40, 0], in_len=40, flags=PRINT_DATA),
          cmd(HD, [0x46, 0, 0, 0, 0, 0, 0, 0, 40, 0], in_len=40),
          cmd(EMPTY_CD, [0x46, 0, 0, 0, 0, 0, 0, 0, 8, 0], in_len=8, flags=PRINT_DATA)]
    for flags1, fmt, track in ((0, 0, 0), (2, 0, 0), (0, 0, 1), (0, 0, 0xAA), (0, 0, 2), (0, 1, 0), (0, 2, 0),
                               (2, 2, 0), (0, 3, 0)):
        e.append(cmd(CD, [0x43, flags1, fmt, 0, 0, 0, track, 0, 64, 0], in_len=64, flags=PRINT_DATA))
    e += [cmd(HD, [0x43, 0, 0, 0, 0, 0, 0, 0, 24, 0], in_len=24, flags=PRINT_DATA),
          cmd(CD, [0x51, 0, 0, 0, 0, 0, 0, 0, 34, 0], in_len=34, flags=PRINT_DATA),
          cmd(CD, [0x51, 1, 0, 0, 0, 0, 0, 0, 34, 0], in_len=34),
          cmd(CD, [0x4A, 1, 0, 0, 0, 0, 0, 0, 8, 0], in_len=8, flags=PRINT_DATA),
          cmd(CD, [0x4A, 0, 0, 0, 0x10, 0, 0, 0, 8, 0], in_len=8),
          cmd(CD, [0xBD, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0], in_len=8, flags=PRINT_DATA),
          cmd(HD, [0xBD, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0], in_len=8),
          cmd(CD, [0xAD, 0, 0, 0, 0, 0, 0, 0, *be16(64), 0, 0], in_len=64),
          cmd(CD, [0xAD, 0, 0, 0, 0, 0, 0, 0xFF, *be16(64), 0, 0], in_len=64, flags=PRINT_DATA),
          cmd(CD, [0xAD, 1, 0, 0, 0, 0, 0, 0xFF, *be16(64), 0, 0], in_len=64),
          cmd(EMPTY_CD, [0xAD, 0, 0, 0, 0, 0, 0, 0xFF, *be16(64), 0, 0], in_len=64)]
    # UNMAP and WRITE SAME
    unmap = bytes((0, 22, 0, 16)) + bytes(4) + bytes(be64(600)) + bytes(be32(8)) + bytes(4)
    e += [cmd(HD, [0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], out=unmap), cmd(HD, read10(600, 8), in_len=4096),
          cmd(HD, [0x42, 1, 0, 0, 0, 0, 0, 0, 24, 0], out=unmap),
          cmd(HD, [0x42, 0, 0, 0, 0, 0, 0, 0, 6, 0], out=unmap[:6]),
          cmd(HD, [0x42, 0, 0, 0, 0, 0, 0, 0, 20, 0], out=unmap[:20]),
          cmd(HD, [0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0],
              out=bytes((0, 22, 0, 16)) + bytes(4) + bytes(be64(2040)) + bytes(be32(9)) + bytes(4)),
          cmd(SCRIPT, [0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], out=unmap), cmd(HD, [0x42] + [0] * 9),
          cmd(HD, [0x41, 0, *be32(700), 0, 0, 4, 0], out_len=512),
          cmd(HD, [0x41, 0, *be32(710), 0, 0, 3, 0], out_len=512, seed=17), cmd(HD, read10(700, 16), in_len=8192),
          cmd(HD, [0x41, 1, *be32(720), 0, 0, 3, 0]), cmd(HD, [0x41, 2, *be32(720), 0, 0, 3, 0], out_len=512),
          cmd(HD, [0x41, 0, *be32(720), 0, 0, 0, 0], out_len=512),
          cmd(HD, [0x93, 8, *be64(730), *be32(2), 0, 0], out_len=512),
          cmd(HD, [0x93, 0, *be64(2047), *be32(2), 0, 0], out_len=512, seed=1),
          cmd(CD, [0x41, 0, *be32(0), 0, 0, 1, 0], out_len=2048)]
    # operation codes nobody has, transfers too long, and the adapter's own refusals
    e += [cmd(HD, [0x02] + [0] * 5), cmd(HD, [0xC0] + [0] * 5), cmd(HD, [0x7F] + [0] * 9),
          cmd(HD, [0xE5] + [0] * 11), cmd(EMPTY_CD, [0x02] + [0] * 5),
          cmd(HD, [0xA2, 0, 0, 0, 0, 0, *be32(70000), 0, 0], in_len=70000),
          cmd(HD, [0xA2, 0, 0, 0, 0, 0, *be32(4000), 0, 0], in_len=4000),
          cmd(HD, [0x88, 0, *be64(0), *be32(0x100000), 0, 0], in_len=4096),
          cmd(HD, [0xA2, 0, 0, 0, 0, 0, *be32(0x90000000), 0, 0], in_len=4096),
          cmd(HD, tur, in_len=512), cmd(HD, read10(0, 1), in_len=512, out_len=512),
          cmd(HD, write10(50, 1), out_len=512, flags=MERGE_OUT),
          cmd(HD, [0x12, 0, 0, 0, 36, 0], in_len=36, response=200, flags=PRINT_DATA),
          cmd(HD, [0x12, 0, 0, 0, 36, 0], in_len=36, tag=0x1122334455667788)]
    # task management and asynchronous notification
    e += [tmf(5, HD), cmd(HD, tur), cmd(HD, tur), tmf(0, HD, tag=7), tmf(6, HD, tag=7), tmf(1, HD), tmf(3, HD),
          tmf(7, HD), tmf(2, HD), tmf(4, HD), cmd(HD, tur), cmd(CD, tur), cmd(EMPTY_CD, tur), tmf(5, (1, 0)),
          tmf(5, (0, 7)), tmf(0, (0, 7)), tmf(99, HD), tmf(5, HD, lun=bytes(8)), tmf(4, (9, 0)),
          an(1, HD, 0x10), an(2, CD, 0xFF), Entry(CONTROLQ, struct.pack("<I", 3) + bytes(20), 4),
          cmd(HD, tur), cmd(CD, tur), cmd(EMPTY_CD, tur)]
    return e


#: operation codes the random part picks most of the time
RANDOM_OPCODES = [0x00, 0x03, 0x04, 0x08, 0x0A, 0x12, 0x15, 0x16, 0x17, 0x1A, 0x1B, 0x1E, 0x25, 0x28, 0x2A, 0x2B,
                  0x2E, 0x2F, 0x35, 0x41, 0x42, 0x43, 0x46, 0x4A, 0x51, 0x55, 0x56, 0x57, 0x5A, 0x88, 0x8A, 0x8E,
                  0x8F, 0x93, 0x9E, 0xA0, 0xA8, 0xAA, 0xAD, 0xAE, 0xAF, 0xBD, 0x91, 0x05, 0x37, 0xBE, 0xA1, 0x85]
RANDOM_UNITS = [HD, HD, HD, CD, CD, EMPTY_CD, SCRIPT, (0, 7), (2, 0)]


def random_commands(count: int = 240, seed: int = 20240607) -> list[Entry]:
    """CDBs from a fixed seed: mostly known operation codes with small fields, data areas near
    the transfer length vmd's own parser computes (QEMU decides what they get)."""
    from vmd.scsi import cdb as op

    rng = random.Random(seed)
    out = []
    for _ in range(count):
        unit = rng.choice(RANDOM_UNITS)
        opcode = rng.choice(RANDOM_OPCODES) if rng.random() < 0.85 else rng.randrange(256)
        length = op.cdb_length(opcode) or 16
        body = [rng.choice((0, 0, 0, 1, 2, 8, 0x10, rng.randrange(256))) for _ in range(length - 1)]
        cdb = bytes([opcode, *body])
        block = 2048 if unit in (CD, EMPTY_CD) else 512
        parsed = op.parse(cdb, op.TYPE_ROM if block == 2048 else op.TYPE_DISK, block)
        xfer = parsed.xfer if parsed is not None else 0
        size = xfer if xfer <= 65536 and rng.random() < 0.9 else rng.choice((0, 8, 36, 512, 4096))
        if rng.random() < 0.08:
            size += rng.choice((-1, 1, 512))
        size = max(0, min(size, 128 * 1024))
        to_device = parsed is not None and parsed.mode == op.XFER_TO_DEV
        if rng.random() < 0.05:
            to_device = not to_device
        if to_device:
            out.append(cmd(unit, cdb, out_len=size, seed=rng.randrange(256)))
        else:
            out.append(cmd(unit, cdb, in_len=size, flags=PRINT_DATA if size <= 64 else 0))
    return out


def scsi_script() -> list[Entry]:
    return scripted_commands() + random_commands()


#: the script's flag for the run with hot plug (the guest waits at its "ready" lines)
SCRIPT_HOTPLUG = 1


def scsi_script_image(flags: int = 0) -> bytes:
    """The script unit's disk: a header sector ("VMDSCSI1", the entry count, flags), then the entries."""
    entries = scsi_script()
    body = b"".join(entry.pack() for entry in entries)
    header = (SCRIPT_MAGIC + struct.pack(">II", len(entries), flags)).ljust(512, b"\0")
    image = header + body
    return image.ljust((len(image) + 511) // 512 * 512 + 64 * 1024, b"\0")


# -- the guest with hot plug ----------------------------------------------------------------------


GUEST = ROOT / "guests" / "bin" / "scsi.elf"
EXPECTED_HOTPLUG = ROOT / "guests" / "expected" / "hotplug" / "scsi.txt"
TIMEOUT = 120
#: what the test does at each of the guest's "ready" lines
HOTPLUG = {
    "hotplug: ready": [("device_add", {"driver": "scsi-cd", "id": "hp1", "bus": "scsi0.0", "scsi-id": 4, "lun": 2})],
    "unplug: ready": [("device_del", {"id": "hp1"})],
    "hotplug two: ready": [("device_add", {"driver": "scsi-cd", "id": "hp2", "scsi-id": 4, "lun": 2}),
                           ("device_add", {"driver": "scsi-cd", "id": "hp3", "scsi-id": 4, "lun": 300})],
    "hotplug without buffers: ready": [("device_add", {"driver": "scsi-cd", "id": "hp4", "scsi-id": 5,
                                                       "lun": 0})],
}


def guest_args() -> list[str]:
    from test_guests_qemu import GUESTS

    return GUESTS["scsi"]


def write_guest_files(directory: Path, flags: int = 0) -> None:
    (directory / "scsi-hd.img").write_bytes(scsi_hd_image())
    (directory / "scsi-cd.iso").write_bytes(scsi_cd_image())
    (directory / "scsi-script.img").write_bytes(scsi_script_image(flags))


def run_with_hotplug(command: list[str], directory: Path) -> tuple[bytes, int, list[str]]:
    """Run the guest with its hot-plug script; at each "ready" line send that step's QMP commands.
    Returns the console transcript, the exit status and the steps carried out."""
    write_guest_files(directory, SCRIPT_HOTPLUG)
    sock_path = directory / "qmp.sock"
    proc = subprocess.Popen([*command, "-qmp", f"unix:{sock_path},server=on,wait=off"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=directory)
    watchdog = threading.Timer(TIMEOUT, proc.kill)
    watchdog.start()
    try:
        deadline = time.monotonic() + 30
        sock = socket.socket(socket.AF_UNIX)
        while True:
            try:
                sock.connect(str(sock_path))
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"no QMP socket: {proc.stderr.read().decode(errors='replace')}")
                time.sleep(0.02)
        sock.settimeout(TIMEOUT)
        replies = sock.makefile("rb")
        replies.readline()  # greeting

        def call(name: str, arguments: dict | None = None) -> dict:
            message = {"execute": name, **({"arguments": arguments} if arguments else {})}
            sock.sendall(json.dumps(message).encode() + b"\n")
            while True:
                reply = json.loads(replies.readline())
                if "event" not in reply:
                    return reply

        assert call("qmp_capabilities") == {"return": {}}
        transcript = b""
        steps = []
        for line in proc.stdout:
            transcript += line
            step = line.decode(errors="replace").rstrip("\n")
            if step in HOTPLUG:
                steps.append(step)
                for name, arguments in HOTPLUG[step]:
                    assert call(name, arguments) == {"return": {}}, (step, name, arguments)
        sock.close()
        return transcript, proc.wait(TIMEOUT), steps
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def vmd_guest_command(directory: Path) -> list[str]:
    return [sys.executable, "-m", "vmd", "-M", "s390-ccw-virtio", "-nographic", "-nodefaults", *guest_args(),
            "-kernel", str(GUEST), "--runtime-dir", str(directory / "run")]


def qemu_guest_command(qemu: str) -> list[str]:
    return [qemu, "-M", "s390-ccw-virtio", "-nographic", "-action", "panic=exit-failure", *guest_args(),
            "-kernel", str(GUEST)]


def test_guest_hotplug_run_matches_qemu(tmp_path):
    transcript, returncode, steps = run_with_hotplug(vmd_guest_command(tmp_path), tmp_path)
    assert transcript.decode(errors="replace") == EXPECTED_HOTPLUG.read_text()
    assert steps == list(HOTPLUG)
    assert returncode == 0


@pytest.mark.qemu
def test_qemu_hotplug_run_matches_golden(tmp_path):
    qemu = require_peer("qemu-system-s390x")
    transcript, returncode, steps = run_with_hotplug(qemu_guest_command(qemu), tmp_path)
    if os.environ.get("VMD_UPDATE_GOLDEN") == "1" and returncode == 0:
        EXPECTED_HOTPLUG.write_bytes(transcript)
    assert returncode == 0
    assert steps == list(HOTPLUG)
    assert transcript == EXPECTED_HOTPLUG.read_bytes()
    assert b"FAIL" not in transcript


# -- the back end against hostile drivers ------------------------------------------------------------


MEM = 4 << 20
QUEUE_BASE = 0x100000  # queue i: descriptors, available and used rings in three pages from here
BUFFERS = 0x200000


class Props:
    max_revision = 2
    indirect_desc = event_idx = notify_on_empty = any_layout = queue_reset = True
    iommu_platform = packed = False


class Owner:
    def __init__(self):
        self.io_handler = None


class Image:
    def __init__(self, size: int, read_only: bool = False):
        self.data = bytearray(bytes((i * 7 + i // 512) & 0xFF for i in range(size)))
        self.read_only = read_only

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, offset, length):
        if offset + length > len(self.data):
            raise ValueError("beyond the image")
        return bytes(self.data[offset:offset + length])

    def write(self, offset, data):
        self.data[offset:offset + len(data)] = data

    def write_zeroes(self, offset, length, unmap=False):
        self.write(offset, bytes(length))

    def discard(self, offset, length):
        pass

    def flush(self):
        pass


class Driver:
    """A modern (or legacy) virtio-scsi driver over a transport, queue by queue, in guest storage."""

    def __init__(self, legacy: bool = False, features: int = (1 << vscsi.F_HOTPLUG), settings=None):
        self.memory = GuestMemory(MEM)
        css = ChannelSubsystem()
        owner = Owner()
        sch = css.assign(owner, None, 0x32, hotplugged=False)
        self.io = ChannelSubsystemIO(css, self.memory)
        self.bus = ScsiBus("scsi0.0")
        self.hd = ScsiDisk(Image(1 << 20), target=0, lun=0, label="hd")
        self.cd = ScsiDisk(Image(20 * 2048, read_only=True), cdrom=True, target=0, lun=1, label="cd")
        for unit in (self.hd, self.cd):
            self.bus.attach(unit)
        self.backend = vscsi.VirtioScsi(self.bus, settings)
        self.transport = ccw.VirtioCcwTransport(self.backend, self.memory, self.io, sch, Props())
        owner.io_handler = self.transport
        self.io.io(sch).flags |= 0x0080
        self.legacy = legacy
        self.order = ">" if legacy else "<"
        if not legacy:
            self.ccw(ccw.CMD_SET_VIRTIO_REV, struct.pack(">HH", 1, 0))
            self.ccw(ccw.CMD_WRITE_FEAT, struct.pack("<IB", features & 0xFFFFFFFF, 0))
            self.ccw(ccw.CMD_WRITE_FEAT, struct.pack("<IB", 1, 1))
        else:
            self.ccw(ccw.CMD_WRITE_FEAT, struct.pack("<IB", features & 0xFFFFFFFF, 0))
        self.avail_idx = [0, 0, 0]
        self.used_seen = [0, 0, 0]
        for i in range(3):
            base = QUEUE_BASE + i * 0x3000
            if legacy:
                self.ccw(ccw.CMD_SET_VQ, struct.pack(">QIHH", base, 4096, i, 256))
            else:
                self.ccw(ccw.CMD_SET_VQ, struct.pack(">QIHHQQ", base, 0, i, 16, base + 0x1000, base + 0x2000))
        self.ccw(ccw.CMD_WRITE_STATUS, bytes([0x0F]))
        self.next_buffer = BUFFERS

    def ccw(self, command: int, payload: bytes = b"") -> None:
        self.memory.write(0x40000, payload)
        self.transport.execute_ccw(command, DataStream(self.memory, 0x40000, len(payload), False, False))

    def _rings(self, i: int) -> tuple[int, int, int, int]:
        base = QUEUE_BASE + i * 0x3000
        if self.legacy:
            size = 256
            avail = base + 16 * size
            used = (avail + 6 + 2 * size + 4095) & ~4095
            return base, avail, used, size
        return base, base + 0x1000, base + 0x2000, 16

    def buffer(self, data: bytes | int) -> tuple[int, int]:
        """Storage for a buffer: bytes to put there, or a size to fill with 0xee."""
        content = bytes([0xEE]) * data if isinstance(data, int) else data
        address = self.next_buffer
        self.memory.write(address, content)
        self.next_buffer += (len(content) + 15) & ~15 or 16
        return address, len(content)

    def send(self, queue: int, readable: list[bytes], writable: list[int], kick: bool = True) -> int:
        """One chain; returns its head (the descriptors start at 0 every time)."""
        desc, avail, _used, size = self._rings(queue)
        areas = [(self.buffer(b), 0) for b in readable] + [(self.buffer(n), DESC_F_WRITE) for n in writable]
        self.areas = areas
        for i, ((address, length), flags) in enumerate(areas):
            nxt = DESC_F_NEXT if i + 1 < len(areas) else 0
            self.memory.write(desc + 16 * i, struct.pack(self.order + "QIHH", address, length, flags | nxt, i + 1))
        ring = avail + 4 + 2 * (self.avail_idx[queue] % size)
        self.memory.write(ring, struct.pack(self.order + "H", 0))
        self.avail_idx[queue] += 1
        self.memory.write(avail + 2, struct.pack(self.order + "H", self.avail_idx[queue]))
        if kick:
            self.transport.kick(queue)
        return 0

    def used(self, queue: int) -> int | None:
        """The length of the next used entry, or None."""
        _desc, _avail, used, size = self._rings(queue)
        index = struct.unpack(self.order + "H", self.memory.read(used + 2, 2))[0]
        if index == self.used_seen[queue]:
            return None
        slot = used + 4 + 8 * (self.used_seen[queue] % size)
        self.used_seen[queue] += 1
        return struct.unpack(self.order + "II", self.memory.read(slot, 8))[1]

    def written(self, n: int) -> bytes:
        (address, length), _flags = self.areas[n]
        return self.memory.read(address, length)

    def command(self, cdb: list[int], target: int = 0, lun: int = 0, data_in: int = 0, data_out: bytes = b"",
                lun_field: bytes | None = None):
        header = (lun_field if lun_field is not None else lun_field_for(target, lun)) + bytes(11) \
            + bytes(cdb).ljust(32, b"\0")
        readable = [header] + ([data_out] if data_out else [])
        self.send(2, readable, [108] + ([data_in] if data_in else []))
        used = self.used(2)
        response = self.written(len(readable))
        sense_len, resid, _qual, status, code = struct.unpack(self.order + "IIHBB", response[:12])
        data = self.written(len(readable) + 1) if data_in else b""
        return used, code, status, response[12:12 + sense_len], resid, data


def lun_field_for(target: int, lun: int) -> bytes:
    return lun_field(target, lun)


def test_configuration_space_as_qemu_fills_it():
    driver = Driver()
    config = driver.backend.config()
    assert struct.unpack("<IIIIIIIHHI", config) == (1, 254, 0xFFFF, 128, 16, 96, 32, 0, 255, 16383)
    assert driver.backend.features() == (1 << vscsi.F_HOTPLUG) | (1 << vscsi.F_CHANGE)
    narrow = vscsi.VirtioScsi(ScsiBus("x.0"), vscsi.ScsiSettings(virtqueue_size=64, seg_max_adjust=False))
    assert struct.unpack_from(">I", narrow.config(), 4)[0] == 126  # legacy byte order, 128 - 2
    assert narrow.queue_sizes == (64, 64, 64)


def test_a_command_and_its_response_header():
    driver = Driver()
    used, code, status, sense, resid, _ = driver.command([0] * 6)
    assert (used, code, status, sn.parse(sense)) == (108, vscsi.S_OK, sn.CHECK_CONDITION, sn.RESET)
    used, code, status, sense, resid, data = driver.command([0x12, 0, 0, 0, 36, 0], data_in=64)
    assert (used, code, status, sense, resid) == (108 + 64, vscsi.S_OK, 0, b"", 28)
    assert data[8:16] == b"QEMU    " and data[36:] == bytes([0xEE]) * 28


def test_legacy_drivers_get_big_endian_headers():
    driver = Driver(legacy=True)
    assert not driver.backend.has(F_VERSION_1)
    used, code, status, sense, _resid, _ = driver.command([0] * 6)
    assert (code, status, len(sense)) == (vscsi.S_OK, sn.CHECK_CONDITION, 18)


def test_adapter_responses_bad_target_overrun_failure():
    driver = Driver()
    assert driver.command([0] * 6, target=5)[1] == vscsi.S_BAD_TARGET
    assert driver.command([0] * 6, lun_field=bytes(8))[1] == vscsi.S_BAD_TARGET          # not 01 target LUN
    assert driver.command([0] * 6, lun_field=bytes((1, 0, 0x80, 0)) + bytes(4))[1] == vscsi.S_BAD_TARGET
    read = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]
    assert driver.command(read, data_in=100)[1:3] == (vscsi.S_OVERRUN, 0)               # too small
    assert driver.command(read, data_out=bytes(512))[1] == vscsi.S_OVERRUN             # the wrong way
    driver.send(2, [lun_field(0, 0) + bytes(11) + bytes(read).ljust(32, b"\0"), bytes(512)], [108, 512])
    assert driver.used(2) == 108 + 1024
    assert struct.unpack_from("<B", driver.written(2), 11)[0] == vscsi.S_FAILURE       # both ways


def test_without_any_layout_the_first_buffers_are_the_headers():
    """A driver that did not negotiate VIRTIO_F_ANY_LAYOUT (modern drivers cannot see it) gets the
    whole first buffer of each direction taken as the header, padding and all."""
    driver = Driver()
    assert not driver.backend.has(F_ANY_LAYOUT)
    header = lun_field(0, 0) + bytes(11) + bytes([0x12, 0, 0, 0, 36, 0]).ljust(32, b"\0")
    driver.send(2, [header], [108 + 36])  # response and data in one buffer: no data area at all
    assert driver.used(2) == 108  # the data area (none) and the response header
    assert driver.written(1)[11] == vscsi.S_OVERRUN


def test_short_headers_break_the_device_until_it_is_reset():
    driver = Driver()
    driver.send(2, [bytes(20)], [108])  # request header shorter than 51 bytes
    assert driver.used(2) is None
    assert driver.backend.broken and driver.transport.status & 0x40  # DEVICE_NEEDS_RESET
    driver.send(2, [lun_field(0, 0) + bytes(43)], [108])
    assert driver.used(2) is None  # a broken device does nothing
    driver.ccw(ccw.CMD_VDEV_RESET)
    assert not driver.backend.broken


def test_task_management_and_asynchronous_notification():
    driver = Driver()

    def tmf(subtype: int, target: int, lun: int, lun_bytes: bytes | None = None) -> int:
        body = struct.pack("<II", 0, subtype) + (lun_bytes or lun_field(target, lun)) + struct.pack("<Q", 9)
        driver.send(0, [body], [1])
        assert driver.used(0) == 1
        return driver.written(1)[0]

    driver.command([0] * 6)  # the power-on unit attention, seen
    assert tmf(vscsi.TMF_LOGICAL_UNIT_RESET, 0, 0) == vscsi.S_OK
    assert sn.parse(driver.command([0] * 6)[3]) == sn.RESET  # the reset happened
    assert tmf(vscsi.TMF_ABORT_TASK, 0, 0) == vscsi.S_OK
    assert tmf(vscsi.TMF_QUERY_TASK_SET, 0, 0) == vscsi.S_OK
    assert tmf(vscsi.TMF_CLEAR_ACA, 0, 0) == vscsi.S_FUNCTION_REJECTED
    assert tmf(vscsi.TMF_LOGICAL_UNIT_RESET, 3, 0) == vscsi.S_BAD_TARGET
    assert tmf(vscsi.TMF_LOGICAL_UNIT_RESET, 0, 7) == vscsi.S_INCORRECT_LUN
    assert tmf(vscsi.TMF_I_T_NEXUS_RESET, 9, 0) == vscsi.S_OK  # no check of the target at all
    assert tmf(77, 0, 0) == vscsi.S_FUNCTION_REJECTED
    driver.send(0, [struct.pack("<I", vscsi.T_AN_QUERY) + lun_field(0, 0) + struct.pack("<I", 0x10)], [5])
    assert driver.used(0) == 5 and driver.written(1) == bytes(5)
    driver.send(0, [struct.pack("<I", 9) + bytes(20)], [8])
    assert driver.used(0) == 0 and driver.written(1) == bytes([0xEE]) * 8  # unknown: nothing written


def test_hotplug_events_dropped_events_and_the_lun_changed_condition():
    driver = Driver()
    driver.send(1, [], [16])  # one event buffer
    assert driver.backend.event_queue is not None
    extra = ScsiDisk(None, cdrom=True, target=4, lun=300)
    driver.bus.attach(extra, hotplugged=True)
    assert driver.used(1) == 16
    assert driver.written(0) == struct.pack("<I", vscsi.T_TRANSPORT_RESET) + bytes((1, 4, 0x41, 0x2C)) + bytes(4) \
        + struct.pack("<I", vscsi.EVT_RESET_RESCAN)
    driver.bus.detach(extra)  # no buffer: dropped
    assert driver.used(1) is None and driver.backend.events_dropped
    driver.send(1, [], [16])
    assert driver.used(1) == 16
    assert driver.written(0) == struct.pack("<I", vscsi.T_EVENTS_MISSED) + bytes(12)
    assert driver.bus.unit_attention == sn.REPORTED_LUNS_CHANGED
    driver.command([0] * 6)  # the unit's own power-on reset first
    assert sn.parse(driver.command([0] * 6)[3]) == sn.REPORTED_LUNS_CHANGED


def test_no_hotplug_events_without_the_feature():
    driver = Driver(features=0)
    driver.send(1, [], [16])
    driver.bus.attach(ScsiDisk(None, cdrom=True, target=4, lun=0), hotplugged=True)
    assert driver.used(1) is None and driver.bus.unit_attention == sn.NO_SENSE_CODE


def test_the_driver_may_shrink_sense_and_cdb_sizes():
    driver = Driver()
    config = bytearray(driver.backend.config())
    struct.pack_into("<II", config, 20, 8, 16)
    driver.ccw(ccw.CMD_WRITE_CONF, bytes(config))
    assert (driver.backend.sense_size, driver.backend.cdb_size) == (8, 16)
    driver.send(2, [lun_field(0, 0) + bytes(11) + bytes(16)], [20])
    assert driver.used(2) == 20
    response = driver.written(1)
    assert struct.unpack_from("<I", response)[0] == 8 and response[12:20] == sn.RESET.fixed()[:8]
    struct.pack_into("<I", config, 20, 70000)  # too large: ignored (QEMU breaks the device)
    driver.ccw(ccw.CMD_WRITE_CONF, bytes(config))
    assert driver.backend.sense_size == 8
    driver.ccw(ccw.CMD_VDEV_RESET)
    assert (driver.backend.sense_size, driver.backend.cdb_size) == (96, 32)


def test_reset_resets_every_unit():
    driver = Driver()
    driver.command([0] * 6)
    assert driver.command([0] * 6)[2] == sn.GOOD
    driver.ccw(ccw.CMD_WRITE_STATUS, bytes([0]))
    assert driver.hd.unit_attention == sn.RESET and driver.cd.unit_attention == sn.RESET


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queue=st.sampled_from([0, 1, 2]), readable=st.lists(st.binary(max_size=80), max_size=3),
       writable=st.lists(st.integers(1, 300), max_size=3))
def test_any_chain_on_any_queue_never_raises(queue, readable, writable):
    driver = Driver()
    readable = [r for r in readable if r]
    if not readable and not writable:
        return
    driver.send(queue, readable, writable)
    driver.used(queue)
    driver.command([0x12, 0, 0, 0, 36, 0], data_in=36)  # the device is either broken or still answers


# -- the device models, the machine's SCSI bus, the IPL block --------------------------------------------


def machine_with_drive(tmp_path) -> Machine:
    """A machine (no guest code) with the 1 MiB image of a -drive, id d0."""
    machine = Machine(EventBus())
    path = tmp_path / "d.img"
    path.write_bytes(bytes(1 << 20))
    machine.block.add("d0", open_drive({"file": str(path), "format": "raw"}), from_drive=True)
    return machine


def test_scsi_devices_plug_into_the_newest_controller_and_take_addresses(tmp_path):
    machine = machine_with_drive(tmp_path)
    with pytest.raises(GenericError, match="No 'SCSI' bus found for device 'scsi-hd'"):
        machine.add_device("scsi-hd", None, None, {"drive": "d0"})
    first = machine.add_device("virtio-scsi-ccw", "s0", None, {})
    second = machine.add_device("virtio-scsi-ccw", None, None, {})
    assert (first.child_bus.name, second.child_bus.name) == ("s0.0", "scsi.0")
    cd = machine.add_device("scsi-cd", "cd", None, {})
    assert cd.bus_owner is second and cd.parent_bus_path() == "/machine/peripheral-anon/device[0]/virtio-backend/scsi.0"
    hd = machine.add_device("scsi-hd", "hd", "s0.0", {"drive": "d0", "lun": "3"})
    assert hd.bus_owner is first and (hd.unit.target, hd.unit.lun) == (0, 3)
    props = hd.qom_properties()
    assert props["scsi-id"][1]() == 0 and props["lun"][1]() == 3
    assert props["parent_bus"][1]() == "/machine/peripheral/s0/virtio-backend/s0.0"
    with pytest.raises(GenericError, match="lun already used by 'hd'"):
        machine.add_device("scsi-cd", None, "s0.0", {"scsi-id": 0, "lun": 3})
    with pytest.raises(GenericError, match="Device 'scsi-cd' can't go on virtual-css-bus bus"):
        machine.add_device("scsi-cd", None, "virtual-css", {})
    with pytest.raises(GenericError, match="Device 'virtio-rng-ccw' can't go on SCSI bus"):
        machine.add_device("virtio-rng-ccw", None, "s0.0", {})
    with pytest.raises(GenericError, match="Drive 'd0' is already in use by another device"):
        machine.add_device("scsi-hd", None, "s0.0", {"drive": "d0"})


def test_a_controller_leaves_with_its_devices_and_frees_their_drives(tmp_path):
    deferred = []
    machine = machine_with_drive(tmp_path)
    machine.defer = deferred.append
    events = []
    machine.events.emit = lambda name, data=None: events.append((name, data))
    machine.add_device("virtio-scsi-ccw", "s0", None, {})
    machine.add_device("scsi-hd", "hd", None, {"drive": "d0"})
    machine.add_device("scsi-cd", None, None, {})
    bus = machine.find("s0").child_bus
    assert len(bus.devices) == 2
    machine.delete_device("s0")
    for announce in deferred:
        announce()
    paths = [data["path"] for name, data in events if name == "DEVICE_DELETED"]
    assert paths == ["/machine/peripheral-anon/device[0]", "/machine/peripheral/hd",
                     "/machine/peripheral/s0/virtio-backend", "/machine/peripheral/s0"]
    assert not bus.devices and not machine.devices
    machine.add_device("virtio-scsi-ccw", None, None, {})
    machine.add_device("scsi-hd", None, None, {"drive": "d0"})  # the drive is free again


def test_the_boot_device_behind_virtio_scsi_gets_qemus_scsi_iplb(tmp_path):
    machine = machine_with_drive(tmp_path)
    machine.add_device("virtio-scsi-ccw", "s0", None, {"devno": "fe.0.1234"})
    machine.add_device("scsi-hd", "hd", None, {"drive": "d0", "scsi-id": 7, "lun": 2, "bootindex": 1})

    class Fake:
        _boot_device = Execution._boot_device
        _initial_iplb = Execution._initial_iplb

    fake = Fake()
    fake.machine = machine
    fake.ipl = ipl.IplState()
    fake.ipl.bios_start = 0x1000
    fake.machine_loadparm = "AB"
    block = fake._initial_iplb()
    assert block == ipl.build_scsi_iplb(0x1234, 0, 2, 7, 0, ipl.loadparm_ebcdic("AB"))
    assert block[12] == ipl.IPL_TYPE_QEMU_SCSI and struct.unpack_from(">IHH", block, 24) == (2, 7, 0)


# -- booting an El Torito ISO from a scsi-cd (docs: bootdevices.rst) --------------------------------------


HELLO = ROOT / "guests" / "bin" / "hello.elf"
QEMU_FIRMWARE = Path("/usr/share/qemu/s390-ccw.img")
#: what QEMU's firmware prints before it starts the program of an ISO on a SCSI CD-ROM
QEMU_ISO_PREAMBLE = (b"LOADPARM=[        ]\r\nUsing virtio-scsi.\r\nSCSI CD-ROM detected.\r\n"
                     b"ISO boot image size verified\r\n\r\n")
#: bytes 8-31 of a Linux image, which QEMU's firmware checks in an El Torito boot image
LINUX_S390_MAGIC = bytes.fromhex("02000018600000500200006860000050" "4040404040404040")


def el_torito_iso(tmp_path: Path, program: Path = HELLO) -> Path:
    """An ISO whose El Torito boot image is ``program`` laid out from address 0: its IPL PSW at 0
    (64-bit addressing, the ELF entry) and the Linux image's magic at 8, as the firmware wants."""
    xorriso = require_peer("xorriso")
    kernel = parse_kernel(program.read_bytes(), program.name)
    end = max(s.address + len(s.data) for s in kernel.segments)
    image = bytearray((end + 2047) // 2048 * 2048)
    for segment in kernel.segments:
        image[segment.address:segment.address + len(segment.data)] = segment.data
    image[0:8] = struct.pack(">Q", 0x0008_0001_8000_0000 | kernel.entry)
    image[8:32] = LINUX_S390_MAGIC
    root = tmp_path / "iso-root"
    root.mkdir()
    (root / "boot.img").write_bytes(image)
    iso = tmp_path / "boot.iso"
    proc = subprocess.run([xorriso, "-as", "mkisofs", "-quiet", "-o", str(iso), "-b", "boot.img", "-no-emul-boot",
                           str(root)], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return iso


def iso_boot_args(iso: Path) -> list[str]:
    """The bootdevices.rst line: the ISO as a -blockdev node on a scsi-cd, the boot device."""
    return ["-M", "s390-ccw-virtio", "-nographic", "-m", "128M",
            "-blockdev", f"file,node-name=c1,filename={iso}", "-device", "virtio-scsi",
            "-device", "scsi-cd,drive=c1,bootindex=1"]


@pytest.mark.qemu
def test_qemu_firmware_boots_an_el_torito_iso_from_a_scsi_cd(qemu_binary, tmp_path):
    iso = el_torito_iso(tmp_path)
    proc = subprocess.run([qemu_binary, *iso_boot_args(iso), "-action", "panic=exit-failure"],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout == QEMU_ISO_PREAMBLE + (ROOT / "guests" / "expected" / "hello.txt").read_bytes()


def test_vmd_runs_qemu_firmware_to_boot_the_iso(tmp_path):
    require_peer("qemu-system-s390x")  # the firmware comes with it
    if not QEMU_FIRMWARE.is_file():
        pytest.fail(f"qemu-system-s390x is installed but {QEMU_FIRMWARE} is missing")
    iso = el_torito_iso(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "vmd", *iso_boot_args(iso), "-bios", str(QEMU_FIRMWARE),
                           "--runtime-dir", str(tmp_path / "run")],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout == QEMU_ISO_PREAMBLE + (ROOT / "guests" / "expected" / "hello.txt").read_bytes()


def test_vmds_own_firmware_boots_the_iso(tmp_path):
    iso = el_torito_iso(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "vmd", *iso_boot_args(iso), "--runtime-dir", str(tmp_path / "run")],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    lines = proc.stdout.split(b"\r\n")
    assert b"SCSI CD-ROM detected." in lines and b"Using virtio-scsi." in lines
    assert proc.stdout.endswith(b"\r\n\r\n" + (ROOT / "guests" / "expected" / "hello.txt").read_bytes())


# -- vmd against qemu-system-s390x: help, command lines, QMP ---------------------------------------------

@pytest.mark.qemu
@pytest.mark.parametrize("model", ["scsi-hd", "scsi-cd"])
def test_device_help_matches_qemu(qemu_binary, model):
    theirs = subprocess.run([qemu_binary, "-M", "s390-ccw-virtio", "-device", f"{model},help"],
                            capture_output=True, text=True, timeout=30).stdout
    ours = subprocess.run([sys.executable, "-m", "vmd", "-device", f"{model},help"],
                          capture_output=True, text=True, timeout=30, cwd=ROOT).stdout
    assert ours == theirs


@pytest.mark.qemu
def test_device_list_has_the_scsi_models_in_qemus_words(qemu_binary):
    theirs = subprocess.run([qemu_binary, "-M", "s390-ccw-virtio", "-device", "help"],
                            capture_output=True, text=True, timeout=30).stdout
    ours = subprocess.run([sys.executable, "-m", "vmd", "-device", "help"],
                          capture_output=True, text=True, timeout=30, cwd=ROOT).stdout
    wanted = [line for line in theirs.splitlines() if line.startswith(('name "scsi-hd"', 'name "scsi-cd"'))]
    assert len(wanted) == 2 and set(wanted) <= set(ours.splitlines())
    storage = ours.split("\n\n")[[b.startswith("Storage devices:") for b in ours.split("\n\n")].index(True)]
    assert all(line in storage for line in wanted)


DRIVE = ["-drive", "file=d.img,if=none,id=d0,format=raw"]
BAD_LINES = [
    [*DRIVE, "-device", "scsi-hd,drive=d0"],
    ["-device", "virtio-scsi,id=s0", "-device", "scsi-hd"],
    ["-device", "virtio-scsi,id=s0", *DRIVE, "-device", "scsi-hd,drive=d0,bus=nope.0"],
    ["-device", "virtio-scsi,id=s0", *DRIVE, "-device", "scsi-hd,drive=d0,bus=s0"],
    ["-device", "virtio-scsi,id=s0", "-device", "scsi-cd,bus=virtual-css"],
    ["-device", "virtio-scsi,id=s0", "-device", "virtio-rng-ccw,bus=s0.0"],
    ["-device", "virtio-scsi", "-device", "virtio-scsi", "-device", "scsi-cd,bus=scsi.1", "-device",
     "scsi-cd,bus=scsi.2"],
    ["-device", "virtio-scsi,id=s0", "-device", "scsi-cd,id=a,scsi-id=3,lun=0", "-device",
     "scsi-cd,id=b,scsi-id=3,lun=0"],
    ["-device", "virtio-scsi,id=s0", "-device", "scsi-cd,scsi-id=3,lun=0", "-device", "scsi-cd,scsi-id=3,lun=0"],
    ["-device", "virtio-scsi,id=s0", "-device", "scsi-cd,channel=1"],
    ["-device", "virtio-scsi,id=s0", "-device", "scsi-cd,scsi-id=256"],
    ["-device", "virtio-scsi,id=s0", "-device", "scsi-cd,lun=16384"],
    ["-device", "virtio-scsi,id=s0", "-device", "scsi-hd,drive=nope"],
    ["-device", "virtio-scsi,id=s0", *DRIVE, "-device", "scsi-hd,drive=d0", "-device", "scsi-hd,drive=d0"],
    ["-device", "virtio-scsi,id=s0", "-blockdev", "file,node-name=n0,filename=d.img", "-device",
     "scsi-hd,drive=n0", "-device", "scsi-hd,drive=n0"],
    ["-device", "virtio-scsi,id=s0", "-device", "scsi-hd,drive="],
    ["-device", "virtio-scsi,id=s0", "-device", "scsi-hd,foo=1"],
    ["-device", "virtio-scsi,id=s0", "-device", "scsi-hd,lun=x"],
    ["-device", "virtio-scsi,id=s0,num_queues=0"],
    ["-device", "virtio-scsi,id=s0,virtqueue_size=2"],
    ["-device", "virtio-scsi,id=s0", *DRIVE, "-device", "scsi-hd,drive=d0,logical_block_size=1000"],
    ["-device", "virtio-scsi,id=s0", *DRIVE, "-device", "scsi-hd,drive=d0,logical_block_size=4096"],
    ["-device", "virtio-scsi,id=s0", *DRIVE, "-device", "scsi-hd,drive=d0,min_io_size=100"],
    ["-device", "virtio-scsi,id=s0", *DRIVE, "-device", "scsi-hd,drive=d0,discard_granularity=100"],
    ["-device", "virtio-scsi,id=s0", *DRIVE, "-device", "scsi-hd,drive=d0,cyls=100000,heads=16,secs=63"],
    ["-device", "virtio-scsi,id=s0", *DRIVE, "-device", "scsi-hd,drive=d0,cyls=100"],
    ["-device", "virtio-scsi,id=s0", *DRIVE, "-device", "scsi-hd,drive=d0,loadparm=1"],
    ["-device", "virtio-scsi,id=s0", *DRIVE, "-device", "scsi-cd,drive=d0,bootindex=1", "-device",
     "scsi-cd,bootindex=1"],
    ["-device", "virtio-scsi,id=s0", "-drive", "if=none,id=e", "-device", "scsi-hd,drive=e"],
    ["-device", "virtio-scsi,id=s0", "-blockdev", "file,node-name=n0,filename=d.img", "-device",
     "scsi-hd,drive=n0", "-device", "scsi-cd,drive=n0"],
]


@pytest.mark.qemu
@pytest.mark.parametrize("args", BAD_LINES, ids=lambda a: " ".join(a))
def test_bad_command_lines_fail_as_in_qemu(qemu_binary, args, tmp_path):
    (tmp_path / "d.img").write_bytes(bytes(1 << 20))
    base = ["-M", "s390-ccw-virtio", "-nodefaults", "-nographic", "-S"]
    theirs = subprocess.run([qemu_binary, *base, *args], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    ours = subprocess.run([sys.executable, "-m", "vmd", *base, *args, "--runtime-dir", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert (ours.returncode, theirs.returncode) == (1, 1)
    assert ours.stderr.replace("vmd:", "qemu-system-s390x:", 1) == theirs.stderr


QMP_CONVERSATION = [
    {"execute": "qmp_capabilities"},
    {"execute": "device_add", "arguments": {"driver": "scsi-cd", "id": "x"}},
    {"execute": "device_add", "arguments": {"driver": "virtio-scsi-ccw", "id": "s0", "devno": "fe.0.0009"}},
    {"execute": "device_add", "arguments": {"driver": "scsi-cd", "id": "x", "bus": "s0.0"}},
    {"execute": "device_add", "arguments": {"driver": "scsi-cd", "id": "y", "scsi-id": 5, "lun": "2"}},
    {"execute": "device_add", "arguments": {"driver": "scsi-cd", "scsi-id": 5, "lun": 2}},
    {"execute": "device_add", "arguments": {"driver": "scsi-cd", "bus": "nope"}},
    {"execute": "device_add", "arguments": {"driver": "scsi-hd", "bus": "s0.0"}},
    {"execute": "qom-get", "arguments": {"path": "/machine/peripheral/y", "property": "parent_bus"}},
    {"execute": "qom-get", "arguments": {"path": "/machine/peripheral/x", "property": "lun"}},
    {"execute": "qom-get", "arguments": {"path": "/machine/peripheral/y", "property": "scsi-id"}},
    {"execute": "device_del", "arguments": {"id": "y"}},
    {"execute": "device_del", "arguments": {"id": "s0"}},
]


def qmp_replies(command: list[str], directory: Path) -> list[dict]:
    """Each command's reply, then the DEVICE_DELETED events (four are due), from a machine started with -S."""
    sock_path = directory / "qmp.sock"
    proc = subprocess.Popen([*command, "-qmp", f"unix:{sock_path},server=on,wait=off"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=directory)
    try:
        deadline = time.monotonic() + 30
        sock = socket.socket(socket.AF_UNIX)
        while True:
            try:
                sock.connect(str(sock_path))
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(proc.stderr.read().decode(errors="replace"))
                time.sleep(0.02)
        sock.settimeout(30)
        stream = sock.makefile("rb")
        stream.readline()
        replies, events = [], []
        for message in QMP_CONVERSATION:
            sock.sendall(json.dumps(message).encode() + b"\n")
            while True:
                reply = json.loads(stream.readline())
                if "event" in reply:
                    events.append(reply)
                    continue
                replies.append(reply)
                break
        sock.settimeout(3)  # QEMU announces unplugged devices from its main loop, a little later
        try:
            while sum(e["event"] == "DEVICE_DELETED" for e in events) < 4:
                events.append(json.loads(stream.readline()))
        except (TimeoutError, socket.timeout):
            pass
        sock.close()
        deleted = [e["data"] for e in events if e["event"] == "DEVICE_DELETED"]
        return replies + deleted
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.qemu
def test_hot_plug_over_qmp_answers_as_qemu(qemu_binary, tmp_path):
    base = ["-M", "s390-ccw-virtio", "-nodefaults", "-nographic", "-S"]
    theirs = qmp_replies([qemu_binary, *base], tmp_path)
    ours = qmp_replies([sys.executable, "-m", "vmd", *base, "--runtime-dir", str(tmp_path / "run")], tmp_path)
    assert ours == theirs
    assert {"error": {"class": "GenericError", "desc": "No 'SCSI' bus found for device 'scsi-cd'"}} in ours
