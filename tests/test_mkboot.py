"""Boot disks (vmd/boot, `vmctl mkboot`): the zipl boot map, and QEMU's own firmware booting it.

The structure tests write boot maps and read them back (hypothesis), feed the
reader damaged and arbitrary disks, and check the kernel layout rules. The
fidelity tests boot the disks in qemu-system-s390x with its s390-ccw firmware
from a virtio-blk device: the test guests' transcripts must equal their
`-kernel` goldens after the firmware's own lines, `-machine loadparm=N` must
pick entry N, and what the firmware loaded into storage (read back over QMP
with pmemsave) must equal what the reader says it loads: the command line at
0x10480, the initrd and its address and size at 0x10408, and, for a boot
entry that stops in a disabled wait, every byte of every LOAD component.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, require_peer
from vmd import vmctl
from vmd.boot import kernel as kern
from vmd.boot import zipl
from vmd.boot.kernel import KernelError, Segment
from vmd.boot.zipl import BootEntry, BootMapError, BootProgram

GUESTS = ROOT / "guests"
BIN = GUESTS / "bin"
EXPECTED = GUESTS / "expected"
TIMEOUT = 60

DISABLED_WAIT_PSW = 0x000A_0000_0000_0000       # zipl's PSW for programs that must not run
#: at 0x8000: larl %r1,0x8010; lpswe 0(%r1); then a disabled-wait PSW (address 0xbad000) at 0x8010.
#: A wait PSW loaded by the IPL itself leaves QEMU's CPU idle without an event; LPSWE reports it.
STOP_ADDRESS = 0x8000
STOP_CODE = (bytes.fromhex("c010 00000008 b2b2 1000") + bytes(6)
             + struct.pack(">QQ", 0x0002_0001_8000_0000, 0xBAD000))
FIRMWARE_PREAMBLE = re.compile(rb"LOADPARM=\[(.{8})\]\r\nUsing virtio-blk\.\r\nUsing SCSI scheme\.\r\n\.+\r\n")


def guest(name: str) -> bytes:
    return (BIN / f"{name}.elf").read_bytes()


def golden(name: str) -> bytes:
    return (EXPECTED / f"{name}.txt").read_bytes()


# --- the format: write, read back ------------------------------------------------------------

def loaded_image(segment: Segment, block_size: int) -> bytes:
    """What the firmware writes for a segment: its bytes, zeros to its size and to the block boundary."""
    return segment.data + bytes(kern.loaded_end(segment, block_size) - segment.address - len(segment.data))


@st.composite
def segments(draw, block_size: int) -> Segment:
    data = draw(st.binary(max_size=3 * block_size + 17))
    zeros = draw(st.one_of(st.just(0), st.integers(0, 3 * block_size), st.integers(0, 300_000)))
    if not data and not zeros:
        zeros = 1
    address = draw(st.integers(0x2000, 0x7FFF_FFFF))
    return Segment(address, data, len(data) + zeros)


@st.composite
def boot_maps(draw) -> tuple[int, list[BootProgram | None]]:
    block_size = draw(st.sampled_from(zipl.BLOCK_SIZES))
    capacity = block_size // 32 - 2
    count = draw(st.integers(1, 5))
    programs: list[BootProgram | None] = []
    for position in range(count):
        if position and draw(st.integers(0, 3)) == 0:
            programs.append(None)
            continue
        if position and programs[0] is not None and draw(st.integers(0, 4)) == 0:
            programs.append(programs[0])                    # the same program at two loadparms
            continue
        segs = tuple(draw(st.lists(segments(block_size), min_size=1, max_size=min(capacity, 4))))
        psw = draw(st.integers(0, (1 << 64) - 1)) | zipl.PSW_ESA_MARKER
        programs.append(BootProgram(segs, psw))
    return block_size, programs


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(boot_maps())
def test_written_boot_maps_read_back(case):
    block_size, programs = case
    image = zipl.build_image(programs, block_size)
    assert len(image) % block_size == 0
    assert zipl.build_image(programs, block_size) == image                # reproducible
    boot_map = zipl.read_boot_map(image)                                    # block size from the MBR
    assert boot_map.block_size == block_size
    assert boot_map.version == 1
    assert sorted(boot_map.programs) == [i for i, p in enumerate(programs) if p is not None]
    for position, program in enumerate(programs):
        if program is None:
            with pytest.raises(BootMapError, match=f"slot {position} is empty"):
                boot_map.program(position)
            continue
        read = boot_map.program(position)
        assert read.psw == program.psw
        assert [load.address for load in read.loads] == [s.address for s in program.segments]
        memory = boot_map.memory(position)
        assert [data for _, data in memory] == [loaded_image(s, block_size) for s in program.segments]


@pytest.mark.parametrize("block_size", [512, 4096])
def test_block_lists_chain_past_one_block(block_size):
    """A large .bss needs more pointers than one list block holds: the last slot chains."""
    slots = block_size // 16
    zero_run = zipl.ZERO_RUN_BYTES
    bss = zero_run * (2 * slots + 3)                                        # three list blocks
    segment = Segment(0x100000, b"\x5a" * (block_size + 1), block_size + 1 + bss)
    image = zipl.build_image([BootProgram((segment,), zipl.PSW_ESA_MARKER)], block_size)
    boot_map = zipl.read_boot_map(image)
    (load,) = boot_map.program(0).loads
    assert len(load.list_blocks) == 3
    assert load.length == kern.loaded_end(segment, block_size) - segment.address
    assert boot_map.read_load(load) == loaded_image(segment, block_size)
    # the writer shares one run of zero blocks among all the .bss pointers
    assert len({run.block for run in load.runs[1:]}) == 1


def test_data_beyond_one_pointer_is_split_into_runs():
    """A block pointer counts at most 65536 blocks (16-bit count of blocks after the first)."""
    data = random.Random(7).randbytes(512 * 0x10000 + 1000)
    segment = Segment(0x100000, data)
    boot_map = zipl.read_boot_map(zipl.build_image([BootProgram((segment,), zipl.PSW_ESA_MARKER)]))
    (load,) = boot_map.program(0).loads
    assert [run.count for run in load.runs] == [0x10000, 2]
    assert boot_map.read_load(load)[:len(data)] == data


def test_block_zero_program_table_and_component_table_layout():
    """The bytes the firmware reads, at the offsets docs/BOOTMAP.md gives (512-byte blocks)."""
    segment = Segment(0x20000, b"\x07" * 600, 2000)
    image = zipl.build_image([BootProgram((segment,), 0x0008_0001_8002_0000)])
    mbr = image[:512]
    assert mbr[0:4] == b"zIPL"
    assert struct.unpack_from(">I", mbr, 4) == (1,)
    assert mbr[8:16] == bytes(8)
    assert struct.unpack_from(">QHH4x", mbr, 16) == (1, 512, 0)            # program table pointer
    assert mbr[0x70:0x78] == b"zIPL\x01\x00\x02\x01"                        # boot info: IPL, SCSI, s390x
    table = image[512:1024]
    assert table[:16] == b"zIPL" + bytes(12)
    component_block, size, count = struct.unpack_from(">QHH4x", table, 16)
    assert (size, count) == (512, 0) and table[32:] == bytes(480)
    components = image[component_block * 512:(component_block + 1) * 512]
    assert components[:32] == b"zIPL" + bytes(28)
    list_block, size, count, kind, address = struct.unpack_from(">QHH4x7xBQ", components, 32)
    assert (size, count, kind, address) == (512, 0, 0x02, 0x20000)
    assert struct.unpack_from(">QHH4x7xBQ", components, 64) == (0, 0, 0, 0x01, 0x0008_0001_8002_0000)
    assert components[96:] == bytes(416)
    pointers = image[list_block * 512:(list_block + 1) * 512]
    data_block, size, count = struct.unpack_from(">QHH4x", pointers, 0)
    assert (size, count) == (512, 1)                                        # 600 bytes: 2 blocks
    assert image[data_block * 512:data_block * 512 + 600] == b"\x07" * 600
    zero_block, size, count = struct.unpack_from(">QHH4x", pointers, 16)
    assert (size, count) == (512, 1)                                        # the rest of 2000: 2 blocks
    assert pointers[32:] == bytes(480)


def test_writer_refuses_what_the_format_cannot_hold():
    psw = zipl.PSW_ESA_MARKER
    one = BootProgram((Segment(0x20000, b"x"),), psw)
    with pytest.raises(BootMapError, match="entry 0"):
        zipl.build_image([None, one])
    with pytest.raises(BootMapError, match="31"):
        zipl.build_image([one] * 32)
    with pytest.raises(BootMapError, match="block size 1000"):
        zipl.build_image([one], 1000)
    with pytest.raises(BootMapError, match="holds 14"):
        zipl.build_image([BootProgram(tuple(Segment(0x20000 + i * 0x1000, b"x") for i in range(15)), psw)])
    with pytest.raises(BootMapError, match="bit 12"):
        zipl.build_image([BootProgram((Segment(0x20000, b"x"),), 0x0000_0001_8002_0000)])
    with pytest.raises(BootMapError, match="empty"):
        zipl.build_image([BootProgram((Segment(0x20000, b""),), psw)])
    with pytest.raises(BootMapError, match="too small"):
        zipl.build_image([one], 512, disk_size=1024)
    with pytest.raises(BootMapError, match="multiple"):
        zipl.build_image([one], 512, disk_size=100_000)
    assert len(zipl.build_image([one], 512, disk_size=1 << 20)) == 1 << 20


# --- the reader against damaged and hostile disks --------------------------------------------

def sample_image(block_size: int = 512) -> bytes:
    return zipl.build_image([BootProgram((Segment(0x20000, b"\x11" * 700, 5000),), zipl.PSW_ESA_MARKER | 0x20000),
                             None,
                             BootProgram((Segment(0x30000, b"\x22" * 10),), zipl.PSW_ESA_MARKER | 0x30000)],
                            block_size)


def locate(image: bytes, block_size: int = 512) -> dict[str, int]:
    """Byte offsets of the structures of sample_image's entry 0."""
    boot_map = zipl.read_boot_map(image, block_size)
    program = boot_map.program(0)
    return {"table": program.table_block * block_size, "list": program.loads[0].list_blocks[0] * block_size,
            "pt": boot_map.program_table_block * block_size}


def damaged(offset: int, data: bytes, image: bytes | None = None) -> bytes:
    image = bytearray(sample_image() if image is None else image)
    image[offset:offset + len(data)] = data
    return bytes(image)


def test_reader_names_what_the_firmware_would_refuse():
    image = sample_image()
    where = locate(image)
    full_list = image[where["list"]:where["list"] + 16] * 31           # 31 data pointers, then the last slot
    cases = [
        (image[:300], "shorter|past the end"),
        (damaged(0, b"IPL1"), "no zIPL magic"),
        (damaged(16, bytes(8)), "program table pointer is empty"),
        (damaged(16, struct.pack(">Q", 999)), "past the end"),
        (damaged(16, struct.pack(">Q", 1 << 40)), "2\\^31"),
        (damaged(where["pt"], b"xIPL"), "program table .* no zIPL magic"),
        (damaged(where["pt"] + 16, bytes(16 * 31)), "program table .* is empty"),
        (damaged(where["table"], b"ZIPL"), "component table .* no zIPL magic"),
        (damaged(where["table"] + 4, b"\x01"), "dump program"),
        (damaged(where["table"] + 32 + 23, b"\x07"), "type 0x07"),
        (damaged(where["table"] + 64 + 23, b"\x02"), "LOAD without a block list"),
        (damaged(where["table"] + 64 + 24, bytes(8)), "lacks bit 12"),
        (damaged(where["list"] + 8, b"\x10\x00"), "block size 4096"),
        (damaged(where["list"], struct.pack(">Q", 2 ** 20)), "past the end"),
        (damaged(where["list"], full_list + struct.pack(">QHH4x", where["list"] // 512, 512, 0)), "loop back"),
        (damaged(where["list"], full_list + struct.pack(">QHH4x", 3, 512, 4)), "ends in a data pointer"),
    ]
    for disk, message in cases:
        with pytest.raises(BootMapError, match=message):
            zipl.read_boot_map(disk, 512)
    # an entry whose component table is all LOADs, without EXEC in the block
    table = bytearray(512)
    table[:4] = b"zIPL"
    for offset in range(32, 512, 32):
        struct.pack_into(">QHH4x7xBQ", table, offset, where["list"] // 512, 512, 0, 0x02, 0x20000)
    with pytest.raises(BootMapError, match="no EXEC entry within its block"):
        zipl.read_boot_map(damaged(where["table"], bytes(table)), 512)


def test_reader_skips_signature_entries_as_the_firmware_does():
    image = sample_image()
    where = locate(image)
    program = zipl.read_boot_map(image).program(0)
    # move the LOAD and EXEC entries down by one, put a SIGNATURE entry first
    entries = image[where["table"] + 32:where["table"] + 96]
    signature = struct.pack(">QHH4x7xBQ", 5, 512, 0, 0x03, 0)
    disk = damaged(where["table"] + 32, signature + entries, image)
    read = zipl.read_boot_map(disk).program(0)
    assert read.signatures == 1
    assert read.loads == program.loads and read.psw == program.psw


def test_reader_mirrors_the_firmwares_filler_continuation():
    """A count-0 pointer followed by 16 bytes of 0xAA is a continuation to the firmware, wherever it sits."""
    image = sample_image()
    where = locate(image)
    program = zipl.read_boot_map(image).program(0)
    first = program.loads[0].list_blocks[0]
    # a fresh list block at the end of the disk holding the original pointers
    moved = bytearray(image[first * 512:(first + 1) * 512])
    new_block = len(image) // 512
    head = struct.pack(">QHH4x", new_block, 512, 0) + b"\xaa" * 16
    disk = damaged(where["list"], head, image) + bytes(moved)
    read = zipl.read_boot_map(disk).program(0)
    assert read.loads[0].list_blocks == (first, new_block)
    assert read.loads[0].runs == program.loads[0].runs


@pytest.mark.parametrize("block_size", [512, 4096])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_reader_never_crashes_on_damaged_disks(block_size, data):
    image = bytearray(sample_image(block_size))
    for _ in range(data.draw(st.integers(1, 8))):
        offset = data.draw(st.integers(0, len(image) - 1))
        image[offset:offset + 8] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        boot_map = zipl.read_boot_map(bytes(image), data.draw(st.sampled_from([None, block_size])))
    except BootMapError:
        return
    for position in boot_map.programs:
        try:
            boot_map.memory(position, limit=1 << 26)
        except BootMapError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.sampled_from([None, 512, 1024]))
def test_reader_never_crashes_on_arbitrary_bytes(blob, block_size):
    disk = b"zIPL\x00\x00\x00\x01" + blob if blob[:1] == b"z" else blob
    try:
        zipl.read_boot_map(disk, block_size)
    except BootMapError:
        pass


def test_reader_reads_paths_and_files(tmp_path):
    image = sample_image()
    path = tmp_path / "disk.img"
    path.write_bytes(image)
    expected = zipl.read_boot_map(image).memory(2)
    assert zipl.read_boot_map(path).memory(2) == expected
    assert zipl.read_boot_map(str(path)).memory(2) == expected
    with open(path, "rb") as file:
        assert zipl.read_boot_map(file).memory(2) == expected
    with pytest.raises(BootMapError, match="loadparm 31"):
        zipl.read_boot_map(path).program(31)


# --- kernels: what one entry loads -----------------------------------------------------------

def elf(segments: list[tuple[int, bytes, int]], entry: int, *, machine: int = 22, kind: int = 2,
        ident: bytes = b"\x7fELF\x02\x02\x01") -> bytes:
    """A minimal ELF64 big-endian executable with PT_LOAD segments (paddr, bytes, memsz)."""
    header = bytearray(64)
    header[:7] = ident
    phoff = 64
    struct.pack_into(">HHIQQQIHHHHHH", header, 16, kind, machine, 1, entry, phoff, 0, 0, 64, 56,
                     len(segments), 64, 0, 0)
    table = bytearray()
    body = bytearray()
    offset = phoff + 56 * len(segments)
    for paddr, data, memsz in segments:
        table += struct.pack(">IIQQQQQQ", 1, 7, offset + len(body), paddr, paddr, len(data), memsz, 0x1000)
        body += data
    return bytes(header + table + body)


def linux_image(size: int = 0x11000, command_line_size: int = 0) -> bytes:
    image = bytearray(size)
    image[0x10008:0x1000E] = b"S390EP"
    struct.pack_into(">Q", image, kern.MAX_COMMAND_LINE_FIELD, command_line_size)
    return bytes(image)


def test_test_guests_load_like_kernel_does():
    kernel = kern.parse_kernel(guest("sigp"), "sigp")
    assert kernel.kind == "elf" and kernel.entry == 0x20000
    assert kernel.psw == 0x0008_0001_8002_0000                              # 64-bit, bit 12 set
    assert [(s.address, s.size) for s in kernel.segments] == [(0x20000, 0x2420), (0x24000, 0x2C000)]
    assert kernel.segments[1].data == b""                                   # .bss: memory size only


def test_elf_checks():
    ok = [(0x20000, b"\x07\xfe", 0x100)]
    assert kern.parse_kernel(elf(ok, 0x20000)).entry == 0x20000
    for data, message in [
        (elf(ok, 0x20000)[:40], "truncated"),
        (elf(ok, 0x20000, ident=b"\x7fELF\x01\x02\x01"), "64-bit big-endian"),
        (elf(ok, 0x20000, machine=62), "machine 62"),
        (elf(ok, 0x20000, kind=3), "not an ELF executable"),
        (elf([], 0x20000), "no loadable segment"),
        (elf(ok, 0x30000), "outside every loaded segment"),
        (elf(ok, 0x20001), "even address"),
        (elf([(0x20000, b"ab", 1)], 0x20000), "outside the file"),
        (elf(ok, 0x20000)[:64 + 56 + 1], "outside the file"),
        (elf(ok, 0x20000)[:80], "truncated program header"),
    ]:
        with pytest.raises(KernelError, match=message):
            kern.parse_kernel(data)


def test_elf_entries_get_a_parameter_area_of_their_own():
    segments, psw = kern.prepare_entry(guest("hello"), b"INITRD" * 1000, "root=/dev/vda quiet")
    assert psw == 0x0008_0001_8002_0000
    params, hello, initrd = segments
    assert (params.label, params.address) == ("parameter area", kern.INITRD_START_FIELD)
    assert struct.unpack_from(">QQ", params.data, 0) == (kern.INITRD_ADDRESS, 6000)
    offset = kern.COMMAND_LINE - params.address
    assert params.data[offset:] == b"root=/dev/vda quiet\0"
    assert (initrd.address, initrd.data) == (kern.INITRD_ADDRESS, b"INITRD" * 1000)


def test_linux_images_get_parameters_in_their_own_parameter_area():
    image = linux_image()
    segments, psw = kern.prepare_entry(image, b"\x01\x02", "console=ttyS0")
    assert psw == 0x0008_0000_8001_0000                                     # 31-bit at 0x10000, as zipl
    kernel, initrd = segments
    assert kernel.address == 0x10000 and len(kernel.data) == len(image) - 0x10000
    assert kernel.data[0x408:0x418] == struct.pack(">QQ", kern.INITRD_ADDRESS, 2)
    assert kernel.data[0x480:0x480 + 14] == b"console=ttyS0\0"
    assert kernel.data[:0x400] == image[0x10000:0x10400]
    # no initrd, no command line: the image is loaded as it is
    (plain,), _ = kern.prepare_entry(image)
    assert plain.data == image[0x10000:]


def test_command_line_size_comes_from_the_kernel():
    with pytest.raises(KernelError, match="at most 895"):
        kern.prepare_entry(linux_image(), append="x" * 896)
    kern.prepare_entry(linux_image(0x12000, 4096), append="x" * 4000)
    with pytest.raises(KernelError, match="at most 4095"):
        kern.prepare_entry(linux_image(0x12000, 4096), append="x" * 4096)
    with pytest.raises(KernelError, match="NUL"):
        kern.prepare_entry(linux_image(), append="a\0b")


def test_initrd_goes_above_a_large_kernel():
    big = elf([(0x20000, b"\x07\xfe", 0x900000)], 0x20000)
    segments, _ = kern.prepare_entry(big, b"rd")
    initrd = next(s for s in segments if s.label == "initrd")
    assert initrd.address == 0xB00000                          # the first MiB at least 1 MiB past 0x920000
    with pytest.raises(KernelError, match="empty"):
        kern.prepare_entry(big, b"")


def test_layout_rules():
    lowcore = elf([(0x1000, b"\x07\xfe", 0x10)], 0x1000)
    with pytest.raises(KernelError, match="below 0x2000"):
        kern.prepare_entry(lowcore)
    overlap = elf([(0x20000, b"\x07\xfe", 0x2000), (0x21000, b"a", 1)], 0x20000)
    with pytest.raises(KernelError, match="overlap"):
        kern.prepare_entry(overlap)
    # a segment's block tail may reach into the next segment: that one is loaded after it
    kern.prepare_entry(elf([(0x20000, b"\x07\xfe", 0x10), (0x20100, b"a", 1)], 0x20000))
    huge = elf([(0x20000, b"\x07\xfe", 125 << 20)], 0x20000)
    with pytest.raises(KernelError, match="too large for a guest with 128 MiB"):
        kern.prepare_entry(huge)
    kern.prepare_entry(huge, memory=256 << 20)
    with pytest.raises(KernelError, match="initrd .* too large"):
        kern.prepare_entry(guest("hello"), bytes(121 << 20))
    straddle = elf([(0x10000, b"\x07\xfe", 0x410)], 0x10000)
    with pytest.raises(KernelError, match="straddles"):
        kern.prepare_entry(straddle, b"rd")
    with pytest.raises(KernelError, match="straddles"):
        kern.prepare_entry(elf([(0x10400, b"\x07\xfe", 0x81)], 0x10400), append="x")
    with pytest.raises(KernelError, match="neither an ELF file nor a Linux image"):
        kern.prepare_entry(b"#!/bin/sh\n")


def test_make_boot_image_entries_and_limits():
    entries = [BootEntry(guest("hello"), name="hello"), BootEntry(guest("pgm"), append="x", name="pgm")]
    boot_map = zipl.read_boot_map(zipl.make_boot_image(entries, block_size=4096))
    assert sorted(boot_map.programs) == [0, 1]
    assert boot_map.program(1).entry_address == 0x20000 and boot_map.program(1).addressing_mode == 64
    with pytest.raises(BootMapError, match="no boot entry"):
        zipl.make_boot_image([])
    with pytest.raises(BootMapError, match="31"):
        zipl.make_boot_image(entries * 16)
    with pytest.raises(KernelError, match="pgm"):
        zipl.make_boot_image([BootEntry(b"\x7fELF" + bytes(100), name="pgm")])


def test_parse_size():
    assert [zipl.parse_size(t) for t in ("512", "64K", "16M", "2g", "1T", "3MiB")] == [
        512, 64 << 10, 16 << 20, 2 << 30, 1 << 40, 3 << 20]
    for bad in ("", "M", "1.5G", "-1", "12X"):
        with pytest.raises(BootMapError):
            zipl.parse_size(bad)


# --- vmctl mkboot ----------------------------------------------------------------------------

@given(st.lists(st.text(alphabet="ab,=/ ", min_size=1, max_size=8), min_size=1, max_size=3))
def test_entry_spec_commas_double_up(parts):
    kernel = parts[0]
    initrd = parts[1] if len(parts) > 1 else None
    append = parts[2] if len(parts) > 2 else None
    text = kernel.replace(",", ",,")
    if initrd is not None:
        text += ",initrd=" + initrd.replace(",", ",,")
    if append is not None:
        text += ",append=" + append
    assert vmctl.parse_entry_spec(text) == (kernel, initrd, append)


def test_entry_spec_errors():
    assert vmctl.parse_entry_spec("k.elf,append=a,b=c,initrd=x") == ("k.elf", None, "a,b=c,initrd=x")
    for bad in (",initrd=x", "k.elf,foo=1", "k.elf,initrd=a,initrd=b", "k.elf,", "k.elf,initrd"):
        with pytest.raises(ValueError):
            vmctl.parse_entry_spec(bad)


def test_mkboot_writes_and_reports(tmp_path, capsys):
    out = tmp_path / "disk.img"
    rd = tmp_path / "rd"
    rd.write_bytes(b"ramdisk")
    code = vmctl.main(["mkboot", str(out), "--kernel", str(BIN / "hello.elf"), "--append", "a b",
                       "--entry", f"{BIN / 'pgm.elf'},initrd={rd},append=c,d", "--size", "1M"])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "2 boot entries, 512-byte blocks, raw" in stdout
    assert "loadparm 1: " in stdout and "starts at 0x20000 (64-bit)" in stdout
    assert out.stat().st_size == 1 << 20
    boot_map = zipl.read_boot_map(out)
    params = dict(boot_map.memory(1))[kern.INITRD_START_FIELD]
    assert params[:16] == struct.pack(">QQ", kern.INITRD_ADDRESS, 7)
    assert params[0x78:0x7C] == b"c,d\0"
    assert dict(boot_map.memory(1))[kern.INITRD_ADDRESS][:7] == b"ramdisk"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporary file left


@pytest.mark.parametrize("args,message", [
    (["--kernel", "missing.elf"], "kernel 'missing.elf': No such file"),
    (["--kernel", str(BIN / "hello.elf"), "--initrd", "missing.rd"], "initrd 'missing.rd'"),
    (["--kernel", str(ROOT / "README.md")], "neither an ELF file nor a Linux image"),
    (["--kernel", str(BIN / "hello.elf"), "--memory", "4M"], "no room"),
    (["--kernel", str(BIN / "hello.elf"), "--size", "1K"], "too small"),
    (["--kernel", str(BIN / "hello.elf"), "--size", "lots"], "size 'lots'"),
    (["--kernel", str(BIN / "hello.elf"), "--entry", "a.elf,x=1"], "'x=1' is not"),
])
def test_mkboot_errors(tmp_path, capsys, args, message):
    out = tmp_path / "disk.img"
    assert vmctl.main(["mkboot", str(out), *args]) == vmctl.EXIT_ERROR
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_mkboot_leaves_nothing_behind_when_it_cannot_write(tmp_path, capsys):
    out = tmp_path / "disk.img"
    out.mkdir()
    assert vmctl.main(["mkboot", str(out), "--kernel", str(BIN / "hello.elf")]) == vmctl.EXIT_ERROR
    assert f"cannot write {out}: Is a directory" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["disk.img"]


def test_mkboot_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        vmctl.main(["mkboot", "out.img"])
    assert exit_info.value.code == vmctl.EXIT_USAGE
    assert "--kernel" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        vmctl.main(["mkboot", "out.img", "--kernel", "k", "--block-size", "1024"])


def test_qmp_commands_still_come_first(tmp_path, capsys):
    """mkboot is only a local command in first position; everything else still goes to vmd."""
    code = vmctl.main(["-s", str(tmp_path / "no.sock"), "query-status"])
    assert code == vmctl.EXIT_ERROR
    assert "cannot connect" in capsys.readouterr().err


def test_mkboot_qcow2(tmp_path):
    qemu_img = require_peer("qemu-img")
    out = tmp_path / "disk.qcow2"
    assert vmctl.main(["mkboot", str(out), "--kernel", str(BIN / "hello.elf"), "--format", "qcow2",
                       "--size", "8M"]) == 0
    info = json.loads(subprocess.run([qemu_img, "info", "--output=json", str(out)], capture_output=True,
                                     check=True).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] == 8 << 20
    raw = tmp_path / "back.img"
    subprocess.run([qemu_img, "convert", "-O", "raw", str(out), str(raw)], check=True)
    expected = zipl.make_boot_image([BootEntry(guest("hello"))], disk_size=8 << 20)
    assert raw.read_bytes() == expected


def test_mkboot_as_a_program(tmp_path):
    out = tmp_path / "disk.img"
    proc = subprocess.run([sys.executable, "-m", "vmd.vmctl", "mkboot", str(out), "--kernel",
                           str(BIN / "hello.elf")], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == zipl.make_boot_image([BootEntry(guest("hello"))])


# --- fidelity: QEMU's firmware boots the disks -----------------------------------------------

def drive_args(disk: Path, block_size: int = 512, image_format: str = "raw") -> list[str]:
    device = "virtio-blk-ccw,drive=d0,bootindex=1"
    if block_size != 512:
        device += f",logical_block_size={block_size},physical_block_size={block_size}"
    return ["-drive", f"file={disk},format={image_format},if=none,id=d0", "-device", device]


def boot(qemu: str, disk: Path, tmp_path: Path, *, block_size: int = 512, loadparm: str | None = None,
         image_format: str = "raw") -> subprocess.CompletedProcess:
    machine = "s390-ccw-virtio" + (f",loadparm={loadparm}" if loadparm is not None else "")
    return subprocess.run([qemu, "-M", machine, "-nographic", "-m", "128M", "-action", "panic=exit-failure",
                           *drive_args(disk, block_size, image_format)],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT, cwd=tmp_path)


def guest_output(console: bytes, loadparm: str = "") -> bytes:
    """The console after the firmware's lines, which must be there."""
    match = FIRMWARE_PREAMBLE.match(console)
    assert match, f"no firmware preamble in: {console[:300]!r}"
    assert match.group(1) == loadparm.ljust(8).encode()
    return console[match.end():]


def write_disk(tmp_path: Path, entries: list[BootEntry], block_size: int = 512, name: str = "disk.img") -> Path:
    disk = tmp_path / name
    zipl.write_boot_image(disk, entries, block_size=block_size)
    return disk


@pytest.mark.qemu
@pytest.mark.parametrize("block_size", [512, 4096])
def test_qemu_firmware_boots_the_hello_guest(qemu_binary, tmp_path, block_size):
    disk = write_disk(tmp_path, [BootEntry(guest("hello"))], block_size)
    proc = boot(qemu_binary, disk, tmp_path, block_size=block_size)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert guest_output(proc.stdout) == golden("hello")


@pytest.mark.qemu
def test_qemu_firmware_boots_qcow2(qemu_binary, tmp_path):
    require_peer("qemu-img")
    disk = tmp_path / "disk.qcow2"
    zipl.write_boot_image(disk, [BootEntry(guest("hello"))], image_format="qcow2")
    proc = boot(qemu_binary, disk, tmp_path, image_format="qcow2")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert guest_output(proc.stdout) == golden("hello")


@pytest.mark.qemu
@pytest.mark.parametrize("loadparm,name", [("0", "hello"), ("1", "pgm"), ("2", "timer"), ("XY", "hello")])
def test_qemu_firmware_picks_the_entry_by_loadparm(qemu_binary, tmp_path, loadparm, name):
    """loadparm N boots program table slot N; a loadparm that is not a number boots slot 0."""
    disk = write_disk(tmp_path, [BootEntry(guest(n), name=n) for n in ("hello", "pgm", "timer")])
    proc = boot(qemu_binary, disk, tmp_path, loadparm=loadparm)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert guest_output(proc.stdout, loadparm) == golden(name)


@pytest.mark.qemu
def test_qemu_firmware_and_reader_agree_on_an_empty_slot(qemu_binary, tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(zipl.build_image([BootProgram((Segment(0x20000, b"x"),), DISABLED_WAIT_PSW), None]))
    with pytest.raises(BootMapError, match="slot 1 is empty"):
        zipl.read_boot_map(disk).program(1)
    proc = boot(qemu_binary, disk, tmp_path, loadparm="1")
    assert b"! No EXEC entry !" in proc.stdout


class Qemu:
    """qemu-system-s390x booting a disk, stopped at the start and driven over QMP."""

    def __init__(self, qemu: str, disk: Path, tmp_path: Path, block_size: int = 512):
        self.tmp_path = tmp_path
        sock_path = tmp_path / "qmp.sock"
        self.console_path = tmp_path / "console.txt"
        with open(self.console_path, "wb") as console:
            self.proc = subprocess.Popen(
                [qemu, "-M", "s390-ccw-virtio", "-nographic", "-m", "128M", "-no-shutdown",
                 "-action", "panic=pause", *drive_args(disk, block_size), "-S",
                 "-qmp", f"unix:{sock_path},server=on,wait=off"],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.PIPE, cwd=tmp_path)
        deadline = time.monotonic() + 15
        while not sock_path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no QMP socket: {self.proc.stderr.read().decode(errors='replace')}")
            time.sleep(0.02)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(str(sock_path))
        self.stream = self.sock.makefile("rw")
        json.loads(self.stream.readline())
        self.execute("qmp_capabilities")
        self.events: list[str] = []

    def execute(self, command: str, **arguments) -> object:
        self.stream.write(json.dumps({"execute": command, "arguments": arguments}) + "\n")
        self.stream.flush()
        while True:
            message = json.loads(self.stream.readline())
            if "event" in message:
                self.events.append(message["event"])
            elif "error" in message:
                raise RuntimeError(message["error"])
            else:
                return message["return"]

    def run_until(self, *events: str) -> str:
        self.execute("cont")
        while not set(events) & set(self.events):
            message = json.loads(self.stream.readline())
            if "event" in message:
                self.events.append(message["event"])
        return next(e for e in self.events if e in events)

    def read(self, address: int, size: int) -> bytes:
        path = self.tmp_path / f"mem-{address:x}"
        self.execute("pmemsave", val=address, size=size, filename=str(path))
        return path.read_bytes()

    def close(self) -> bytes:
        try:
            self.execute("quit")
        except (OSError, ValueError):
            pass
        try:
            self.proc.wait(timeout=TIMEOUT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.sock.close()
            self.proc.stderr.close()
        return self.console_path.read_bytes()


@pytest.fixture
def qemu_session(qemu_binary, tmp_path):
    sessions = []

    def start(disk: Path, block_size: int = 512) -> Qemu:
        sessions.append(Qemu(qemu_binary, disk, tmp_path, block_size))
        return sessions[-1]

    yield start
    for session in sessions:
        if session.proc.poll() is None:
            session.close()


@pytest.mark.qemu
@pytest.mark.parametrize("block_size", [512, 4096])
def test_qemu_firmware_loads_what_the_reader_says(qemu_session, tmp_path, block_size):
    """A program that stops at once in a disabled wait: every loaded byte, read back from guest storage."""
    rng = random.Random(block_size)
    program = BootProgram((
        Segment(STOP_ADDRESS, STOP_CODE, label="stop"),
        Segment(0x9000, rng.randbytes(3000), 3000, label="small"),
        Segment(0x30003, rng.randbytes(777), 5000, label="unaligned, with zeros"),
        Segment(0x100000, rng.randbytes(70_000), 70_000 + 300 * zipl.ZERO_RUN_BYTES, label="chained lists"),
        Segment(0x7000000, rng.randbytes(block_size), label="near the top"),
    ), kern.PSW_64BIT | STOP_ADDRESS)
    disk = tmp_path / "disk.img"
    disk.write_bytes(zipl.build_image([program], block_size))
    boot_map = zipl.read_boot_map(disk)
    assert len(boot_map.program(0).loads[3].list_blocks) >= 2
    qemu = qemu_session(disk, block_size)
    assert qemu.run_until("GUEST_PANICKED", "SHUTDOWN") == "GUEST_PANICKED"
    for address, data in boot_map.memory(0):
        assert qemu.read(address, len(data)) == data, f"0x{address:x}"
    qemu.close()


def linux_style_image(elf_data: bytes) -> bytes:
    """A Linux-layout raw image around a test guest: 0x10000 switches to 64-bit and jumps to 0x20000."""
    parsed = kern.parse_kernel(elf_data)
    image = bytearray(max(s.address + len(s.data) for s in parsed.segments))
    branch = (parsed.entry - 0x10002) // 2
    image[0x10000:0x10008] = b"\x01\x0e" + b"\xc0\xf4" + branch.to_bytes(4, "big")     # sam64; jg entry
    image[0x10008:0x1000E] = b"S390EP"
    for segment in parsed.segments:
        image[segment.address:segment.address + len(segment.data)] = segment.data
    return bytes(image)


@pytest.mark.qemu
@pytest.mark.parametrize("kind", ["elf", "linux"])
def test_qemu_firmware_places_command_line_and_initrd(qemu_session, tmp_path, kind):
    """The hello guest boots; the command line is at 0x10480, the initrd where 0x10408/0x10410 say."""
    kernel = guest("hello") if kind == "elf" else linux_style_image(guest("hello"))
    initrd = random.Random(5).randbytes(200_000)
    command_line = "console=ttysclp0 root=/dev/ram0 vmd.test=\"a,b\""
    disk = write_disk(tmp_path, [BootEntry(kernel, initrd, command_line, name=kind)])
    program = zipl.read_boot_map(disk).program(0)
    assert program.addressing_mode == (64 if kind == "elf" else 31)
    qemu = qemu_session(disk)
    assert qemu.run_until("SHUTDOWN", "GUEST_PANICKED") == "SHUTDOWN"
    params = qemu.read(0x10400, 0x400)
    initrd_address, initrd_size = struct.unpack_from(">QQ", params, 8)
    assert (initrd_address, initrd_size) == (kern.INITRD_ADDRESS, len(initrd))
    assert params[0x80:0x80 + len(command_line) + 1] == command_line.encode() + b"\0"
    assert qemu.read(initrd_address, initrd_size) == initrd
    assert guest_output(qemu.close()) == golden("hello")


# --- fidelity: vmd runs QEMU's own firmware on the same disks ---------------------------------
#: Debian's qemu-system-misc installs QEMU's s390-ccw firmware here
QEMU_FIRMWARE = Path("/usr/share/qemu/s390-ccw.img")


def boot_vmd(disk: Path, tmp_path: Path, *, block_size: int = 512, loadparm: str | None = None,
             image_format: str = "raw") -> subprocess.CompletedProcess:
    require_peer("qemu-system-s390x")  # the firmware comes with it
    if not QEMU_FIRMWARE.is_file():
        pytest.fail(f"qemu-system-s390x is installed but {QEMU_FIRMWARE} is missing")
    machine = "s390-ccw-virtio" + (f",loadparm={loadparm}" if loadparm is not None else "")
    return subprocess.run([sys.executable, "-m", "vmd", "-M", machine, "-nographic", "-m", "128M",
                           "-bios", str(QEMU_FIRMWARE), *drive_args(disk, block_size, image_format),
                           "--runtime-dir", str(tmp_path)],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT, cwd=tmp_path)


@pytest.mark.parametrize("block_size", [512, 4096])
def test_vmd_runs_qemu_firmware_to_boot_the_hello_guest(tmp_path, block_size):
    disk = write_disk(tmp_path, [BootEntry(guest("hello"))], block_size)
    proc = boot_vmd(disk, tmp_path, block_size=block_size)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert guest_output(proc.stdout) == golden("hello")


@pytest.mark.parametrize("loadparm,name", [("1", "pgm"), ("2", "timer")])
def test_vmd_runs_qemu_firmware_with_a_loadparm(tmp_path, loadparm, name):
    disk = write_disk(tmp_path, [BootEntry(guest(n), name=n) for n in ("hello", "pgm", "timer")])
    proc = boot_vmd(disk, tmp_path, loadparm=loadparm)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert guest_output(proc.stdout, loadparm) == golden(name)


def test_vmd_runs_qemu_firmware_on_qcow2(tmp_path):
    require_peer("qemu-img")
    disk = tmp_path / "disk.qcow2"
    zipl.write_boot_image(disk, [BootEntry(guest("hello"))], image_format="qcow2")
    proc = boot_vmd(disk, tmp_path, image_format="qcow2")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert guest_output(proc.stdout) == golden("hello")
