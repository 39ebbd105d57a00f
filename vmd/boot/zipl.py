"""zipl boot maps on SCSI-type disks (virtio-blk, virtio-scsi): writer and reader.

The on-disk format is the one IBM's zipl writes and QEMU's s390-ccw firmware
reads; docs/BOOTMAP.md describes every field and what the firmware checks::

    block 0     master boot record: "zIPL", version 1, pointer to the program table
    block 1     program table: "zIPL", then one pointer per boot entry (loadparm 0..30)
    then        per boot entry, a component table: a "zIPL" header, LOAD entries
                (load address + pointer to a block list), one EXEC entry (the PSW)
    then        block lists (runs of data blocks; the last slot chains to the next
                list) and the data itself

``make_boot_image`` and ``write_boot_image`` build a disk from kernels;
``build_image`` is the format writer underneath; ``read_boot_map`` parses a disk
back with the firmware's checks, and ``BootMap.memory`` gives what the firmware
would load for a loadparm.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

from vmd.boot.kernel import (
    DEFAULT_MEMORY, PSW_ADDRESS_BITS, BootImageError, Segment, prepare_entry,
)

ZIPL_MAGIC = b"zIPL"
MBR_VERSION = 1
PROGRAM_TABLE_BLOCK = 1
PROGRAM_TABLE_SIZE = 512
#: program table slots QEMU's firmware reads: loadparm 0 (the default) to 30
MAX_ENTRIES = 31
#: the firmware accepts logical block sizes from 512 to 4096 bytes
BLOCK_SIZES = (512, 1024, 2048, 4096)

HEADER_IPL = 0x00
HEADER_DUMP = 0x01
ENTRY_EXECUTE = 0x01
ENTRY_LOAD = 0x02
ENTRY_SIGNATURE = 0x03          # secure boot; QEMU's firmware skips it

BOOT_INFO_OFFSET = 0x70
BOOT_INFO_VERSION = 1
BOOT_INFO_IPL = 0x00
BOOT_INFO_DEV_TYPE_SCSI = 0x02
BOOT_INFO_FLAGS_S390X = 0x01

#: block number, block size, number of blocks after the first
POINTER = struct.Struct(">QHH4x")
MBR_HEAD = struct.Struct(">4sI8x")
BOOT_INFO_HEAD = struct.Struct(">4sBBBB")
COMPONENT_HEADER = struct.Struct(">4sB27x")
#: pointer, 7 bytes pad, type, load address (LOAD) or short PSW (EXEC)
COMPONENT_ENTRY = struct.Struct(">QHH4x7xBQ")

MAX_RUN = 0x10000               # blocks one pointer covers: the count field has 16 bits
MAX_BLOCK_NUMBER = 0x7FFF_FFFF  # the firmware passes block numbers through a C int
FILLER = b"\xaa" * POINTER.size  # what the firmware's buffer holds past the block it read
ZERO_RUN_BYTES = 0x10000        # one shared run of zero blocks serves every .bss

PSW_ESA_MARKER = 1 << 51        # bit 12: an ESA-format (short) PSW
PSW_EA = 1 << 32                # bit 31: extended addressing
PSW_BA = 1 << 31                # bit 32: basic addressing


class BootMapError(BootImageError):
    """A boot map that cannot be written, or a disk whose boot map the firmware would refuse."""


@dataclass(frozen=True)
class BootProgram:
    """One boot entry: segments loaded in order, then the short PSW loaded from address 0."""

    segments: tuple[Segment, ...]
    psw: int


@dataclass(frozen=True)
class BootEntry:
    """A kernel file's bytes, an optional initrd and command line; ``name`` labels errors."""

    kernel: bytes
    initrd: bytes | None = None
    append: str | None = None
    name: str = field(default="kernel", compare=False)


# --- writing ---------------------------------------------------------------------------------

def build_image(programs: Sequence[BootProgram | None], block_size: int = 512,
                disk_size: int | None = None) -> bytes:
    """The disk image: ``programs[i]`` boots with loadparm i (0 is the default); None leaves slot i empty.

    Checks the format's limits only; ``make_boot_image`` also checks the memory layout.
    """
    _check_block_size(block_size)
    if not programs or programs[0] is None:
        raise BootMapError("boot entry 0 (the default) is missing")
    if len(programs) > MAX_ENTRIES:
        raise BootMapError(f"{len(programs)} boot entries; the program table holds {MAX_ENTRIES} (loadparm 0-30)")
    for position, program in enumerate(programs):
        if program is not None:
            _check_program(program, block_size, position)
    writer = _Writer(block_size, programs)
    table = bytearray(PROGRAM_TABLE_SIZE)
    table[:4] = ZIPL_MAGIC
    written: dict[BootProgram, int] = {}
    for position, program in enumerate(programs):
        if program is None:
            continue
        if program not in written:
            written[program] = writer.add_program(program)
        POINTER.pack_into(table, POINTER.size * (position + 1), written[program], block_size, 0)
    writer.put(PROGRAM_TABLE_BLOCK, table)
    mbr = bytearray(block_size)
    MBR_HEAD.pack_into(mbr, 0, ZIPL_MAGIC, MBR_VERSION)
    POINTER.pack_into(mbr, MBR_HEAD.size, PROGRAM_TABLE_BLOCK, block_size, 0)
    BOOT_INFO_HEAD.pack_into(mbr, BOOT_INFO_OFFSET, ZIPL_MAGIC, BOOT_INFO_VERSION, BOOT_INFO_IPL,
                             BOOT_INFO_DEV_TYPE_SCSI, BOOT_INFO_FLAGS_S390X)
    POINTER.pack_into(mbr, BOOT_INFO_OFFSET + BOOT_INFO_HEAD.size, PROGRAM_TABLE_BLOCK, block_size, 0)
    writer.put(0, mbr)
    return writer.finish(disk_size)


def _check_block_size(block_size: int) -> None:
    if block_size not in BLOCK_SIZES:
        raise BootMapError(f"block size {block_size}: QEMU's firmware boots disks with 512, 1024, 2048"
                           " or 4096-byte blocks")


def _check_program(program: BootProgram, block_size: int, position: int) -> None:
    capacity = block_size // COMPONENT_ENTRY.size - 2       # less the header and the EXEC entry
    if not program.segments:
        raise BootMapError(f"boot entry {position} loads nothing")
    if len(program.segments) > capacity:
        raise BootMapError(f"boot entry {position} has {len(program.segments)} segments; a component table"
                           f" in a {block_size}-byte block holds {capacity}")
    for segment in program.segments:
        if segment.size == 0:
            raise BootMapError(f"boot entry {position}: {segment.describe()} is empty")
    if not 0 <= program.psw < 1 << 64 or not program.psw & PSW_ESA_MARKER:
        raise BootMapError(f"boot entry {position}: PSW 0x{program.psw:016x} is not a short PSW"
                           " (bit 12 must be set)")


class _Writer:
    """Lays blocks out in order: MBR, program table, shared zero run, then per program."""

    def __init__(self, block_size: int, programs: Sequence[BootProgram | None]):
        self.block_size = block_size
        self.out = bytearray(2 * block_size)             # the MBR and the program table
        zero_tail = max((_blocks(s.size, block_size) - _blocks(len(s.data), block_size)
                         for p in programs if p is not None for s in p.segments), default=0)
        self.zero_count = min(zero_tail, ZERO_RUN_BYTES // block_size)
        self.zero_block = self.allocate(self.zero_count) if self.zero_count else 0

    def allocate(self, count: int) -> int:
        first = len(self.out) // self.block_size
        self.out.extend(bytes(count * self.block_size))
        return first

    def put(self, block: int, data: bytes | bytearray) -> None:
        start = block * self.block_size
        self.out[start:start + len(data)] = data

    def add_program(self, program: BootProgram) -> int:
        table_block = self.allocate(1)
        table = bytearray(self.block_size)
        COMPONENT_HEADER.pack_into(table, 0, ZIPL_MAGIC, HEADER_IPL)
        offset = COMPONENT_HEADER.size
        for segment in program.segments:
            COMPONENT_ENTRY.pack_into(table, offset, self.add_segment(segment), self.block_size, 0,
                                      ENTRY_LOAD, segment.address)
            offset += COMPONENT_ENTRY.size
        COMPONENT_ENTRY.pack_into(table, offset, 0, 0, 0, ENTRY_EXECUTE, program.psw)
        self.put(table_block, table)
        return table_block

    def add_segment(self, segment: Segment) -> int:
        """Writes the data and its block lists; returns the first list's block number."""
        size = self.block_size
        runs: list[tuple[int, int]] = []
        data_blocks = _blocks(len(segment.data), size)
        if data_blocks:
            first = self.allocate(data_blocks)
            self.put(first, segment.data)
            runs += [(first + i, min(MAX_RUN, data_blocks - i)) for i in range(0, data_blocks, MAX_RUN)]
        zero_blocks = _blocks(segment.size, size) - data_blocks
        while zero_blocks:
            count = min(zero_blocks, self.zero_count)
            runs.append((self.zero_block, count))
            zero_blocks -= count
        per_list = size // POINTER.size - 1                 # the last slot chains to the next list
        lists = _blocks(len(runs), per_list)
        first_list = self.allocate(lists)
        for index in range(lists):
            body = bytearray(size)
            for slot, (block, count) in enumerate(runs[index * per_list:(index + 1) * per_list]):
                POINTER.pack_into(body, slot * POINTER.size, block, size, count - 1)
            if index + 1 < lists:
                POINTER.pack_into(body, per_list * POINTER.size, first_list + index + 1, size, 0)
            self.put(first_list + index, body)
        return first_list

    def finish(self, disk_size: int | None) -> bytes:
        used = len(self.out)
        if used // self.block_size - 1 > MAX_BLOCK_NUMBER:
            raise BootMapError(f"the boot map needs {used} bytes; the firmware addresses 2^31 blocks")
        if disk_size is not None:
            if disk_size % self.block_size:
                raise BootMapError(f"disk size {disk_size} is not a multiple of the {self.block_size}-byte block")
            if disk_size < used:
                raise BootMapError(f"disk size {disk_size} is too small: the boot map needs {used} bytes")
            self.out.extend(bytes(disk_size - used))
        return bytes(self.out)


def _blocks(size: int, block_size: int) -> int:
    return -(-size // block_size)


# --- reading ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class BlockRun:
    block: int
    count: int


@dataclass(frozen=True)
class LoadEntry:
    """A LOAD component: the firmware writes ``length`` bytes (whole blocks) from ``address`` on."""

    address: int
    list_blocks: tuple[int, ...]
    runs: tuple[BlockRun, ...]
    length: int


@dataclass(frozen=True)
class Program:
    position: int
    table_block: int
    loads: tuple[LoadEntry, ...]
    psw: int
    signatures: int = 0             # SIGNATURE entries, skipped as the firmware does

    @property
    def entry_address(self) -> int:
        return self.psw & PSW_ADDRESS_BITS

    @property
    def addressing_mode(self) -> int:
        return 64 if self.psw & PSW_EA and self.psw & PSW_BA else 31 if self.psw & PSW_BA else 24


class _Disk:
    """Reads a disk image from bytes, a path or a binary file, refusing reads past its end."""

    def __init__(self, source: bytes | bytearray | memoryview | str | os.PathLike | BinaryIO):
        self._read: Callable[[int, int], bytes]
        if isinstance(source, (bytes, bytearray, memoryview)):
            view = memoryview(source)
            self.size = len(view)
            self._read = lambda offset, length: bytes(view[offset:offset + length])
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            self.size = path.stat().st_size

            def read_path(offset: int, length: int) -> bytes:
                with open(path, "rb") as file:
                    file.seek(offset)
                    return file.read(length)
            self._read = read_path
        else:
            file = source
            self.size = file.seek(0, os.SEEK_END)

            def read_file(offset: int, length: int) -> bytes:
                file.seek(offset)
                return file.read(length)
            self._read = read_file

    def read(self, offset: int, length: int, what: str) -> bytes:
        if offset + length > self.size:
            raise BootMapError(f"{what} lies past the end of the disk image ({self.size} bytes)")
        return self._read(offset, length)


@dataclass
class BootMap:
    """A disk's boot map as the firmware sees it; programs by position (loadparm)."""

    block_size: int
    version: int
    program_table_block: int
    programs: dict[int, Program]
    _disk: _Disk = field(repr=False, compare=False)

    def program(self, loadparm: int) -> Program:
        if not 0 <= loadparm < MAX_ENTRIES:
            raise BootMapError(f"loadparm {loadparm}: the firmware accepts 0 to {MAX_ENTRIES - 1}")
        if loadparm not in self.programs:
            raise BootMapError(f"program table slot {loadparm} is empty: the firmware would take block 0"
                               " (the MBR) for a component table")
        return self.programs[loadparm]

    def read_load(self, load: LoadEntry) -> bytes:
        size = self.block_size
        return b"".join(self._disk.read(run.block * size, run.count * size, f"block {run.block}")
                        for run in load.runs)

    def memory(self, loadparm: int = 0, limit: int = 1 << 30) -> list[tuple[int, bytes]]:
        """What the firmware writes for ``loadparm``, in load order: (address, bytes)."""
        program = self.program(loadparm)
        if sum(load.length for load in program.loads) > limit:
            raise BootMapError(f"boot entry {loadparm} loads more than {limit} bytes")
        return [(load.address, self.read_load(load)) for load in program.loads]


def read_boot_map(source: bytes | bytearray | memoryview | str | os.PathLike | BinaryIO,
                  block_size: int | None = None) -> BootMap:
    """Parses a SCSI-type zipl boot map with the checks of QEMU's firmware, and stricter ones.

    ``block_size`` defaults to the size recorded in the program table pointer.
    Raises BootMapError naming the block and the field at fault.
    """
    disk = _Disk(source)
    head = disk.read(0, 512, "block 0 (the master boot record)")
    magic, version = MBR_HEAD.unpack_from(head)
    if magic != ZIPL_MAGIC:
        raise BootMapError("block 0 has no zIPL magic: not a zipl boot disk of the SCSI type")
    table_block, table_size, _count = POINTER.unpack_from(head, MBR_HEAD.size)
    if block_size is None:
        if table_size not in BLOCK_SIZES:
            raise BootMapError(f"the program table pointer records block size {table_size}; name the disk's"
                               " block size")
        block_size = table_size
    _check_block_size(block_size)
    if table_block == 0:
        raise BootMapError("block 0: the program table pointer is empty")
    _check_block_number(table_block, "the program table pointer")
    table = disk.read(table_block * block_size, block_size, f"the program table (block {table_block})")
    if table[:4] != ZIPL_MAGIC:
        raise BootMapError(f"the program table (block {table_block}) has no zIPL magic")
    programs = {}
    for position in range(MAX_ENTRIES):
        block, _size, _count = POINTER.unpack_from(table, POINTER.size * (position + 1))
        if block:
            programs[position] = _read_program(disk, block_size, position, block)
    if not programs:
        raise BootMapError(f"the program table (block {table_block}) is empty")
    return BootMap(block_size, version, table_block, programs, disk)


def _check_block_number(block: int, what: str) -> None:
    if block > MAX_BLOCK_NUMBER:
        raise BootMapError(f"{what} names block {block}; the firmware handles block numbers below 2^31")


def _read_program(disk: _Disk, block_size: int, position: int, block: int) -> Program:
    where = f"boot entry {position}: component table (block {block})"
    _check_block_number(block, where)
    table = disk.read(block * block_size, block_size, where)
    magic, header_type = COMPONENT_HEADER.unpack_from(table)
    if magic != ZIPL_MAGIC:
        raise BootMapError(f"{where} has no zIPL magic")
    if header_type != HEADER_IPL:
        kind = "a dump program" if header_type == HEADER_DUMP else f"type {header_type}"
        raise BootMapError(f"{where} is {kind}; the firmware boots IPL programs (type 0) only")
    loads = []
    signatures = 0
    offset = COMPONENT_HEADER.size
    while True:
        if offset + COMPONENT_ENTRY.size > block_size:
            raise BootMapError(f"{where} has no EXEC entry within its block")
        list_block, _size, _count, entry_type, value = COMPONENT_ENTRY.unpack_from(table, offset)
        index = (offset - COMPONENT_HEADER.size) // COMPONENT_ENTRY.size
        if entry_type == ENTRY_LOAD:
            loads.append(_read_load(disk, block_size, f"{where}, entry {index}", list_block, value))
        elif entry_type == ENTRY_SIGNATURE:
            signatures += 1
        elif entry_type == ENTRY_EXECUTE:
            if not value & PSW_ESA_MARKER:
                raise BootMapError(f"{where}: the EXEC PSW 0x{value:016x} lacks bit 12; the CPU would take a"
                                   " specification exception")
            return Program(position, block, tuple(loads), value, signatures)
        else:
            raise BootMapError(f"{where}, entry {index} has type 0x{entry_type:02x}; the firmware wants LOAD"
                               " (0x02) entries ended by an EXEC (0x01) entry")
        offset += COMPONENT_ENTRY.size


def _read_load(disk: _Disk, block_size: int, where: str, list_block: int, address: int) -> LoadEntry:
    if list_block == 0:
        raise BootMapError(f"{where}: LOAD without a block list")
    slots = block_size // POINTER.size
    runs: list[BlockRun] = []
    lists: list[int] = []
    block = list_block
    while block:
        if block in lists:
            raise BootMapError(f"{where}: the block lists loop back to block {block}")
        _check_block_number(block, f"{where}: a block list pointer")
        lists.append(block)
        body = disk.read(block * block_size, block_size, f"{where}: block list {block}")
        following = 0
        for slot in range(slots):
            pointer_block, size, count = POINTER.unpack_from(body, slot * POINTER.size)
            if pointer_block == 0:
                break
            if slot == slots - 1:
                # The firmware takes the last slot of a 4096-byte list for the next list whatever it
                # holds; in a smaller list, only a count of 0 makes it one (the next slot is filler).
                if slots != 256 and count != 0:
                    raise BootMapError(f"{where}: block list {block} ends in a data pointer; the firmware"
                                       " would read the filler past the block as pointers")
                following = pointer_block
                break
            if count == 0 and body[(slot + 1) * POINTER.size:(slot + 2) * POINTER.size] == FILLER:
                following = pointer_block
                break
            if size != block_size:
                raise BootMapError(f"{where}: block list {block}, slot {slot} records block size {size};"
                                   f" the disk's is {block_size}")
            _check_block_number(pointer_block + count, f"{where}: block list {block}, slot {slot}")
            disk.read((pointer_block + count + 1) * block_size - 1, 1,
                      f"{where}: the data of block list {block}, slot {slot}")
            runs.append(BlockRun(pointer_block, count + 1))
        block = following
    length = sum(run.count for run in runs) * block_size
    if address + length > 1 << 64:
        raise BootMapError(f"{where}: {length} bytes at 0x{address:x} wrap around the address space")
    return LoadEntry(address, tuple(lists), tuple(runs), length)


# --- disks from kernels ----------------------------------------------------------------------

def make_boot_image(entries: Sequence[BootEntry], *, block_size: int = 512, disk_size: int | None = None,
                    memory: int = DEFAULT_MEMORY) -> bytes:
    """A bootable disk image: ``entries[0]`` is the default (loadparm 0), ``entries[i]`` loadparm i.

    ``memory`` is the guest's storage size that the layout must fit (the
    firmware occupies its top, below 2 GiB).
    """
    _check_block_size(block_size)
    if not entries:
        raise BootMapError("no boot entry")
    if len(entries) > MAX_ENTRIES:
        raise BootMapError(f"{len(entries)} boot entries; the program table holds {MAX_ENTRIES} (loadparm 0-30)")
    programs = []
    for entry in entries:
        segments, psw = prepare_entry(entry.kernel, entry.initrd, entry.append, block_size=block_size,
                                      memory=memory, name=entry.name)
        programs.append(BootProgram(segments, psw))
    return build_image(programs, block_size, disk_size)


def write_boot_image(path: str | os.PathLike, entries: Sequence[BootEntry], *, block_size: int = 512,
                     disk_size: int | None = None, memory: int = DEFAULT_MEMORY,
                     image_format: str = "raw") -> BootMap:
    """Writes the disk (raw, or qcow2 through qemu-img) in one step; returns its boot map as read back."""
    if image_format not in ("raw", "qcow2"):
        raise BootMapError(f"image format '{image_format}': raw or qcow2")
    qemu_img = shutil.which("qemu-img") if image_format == "qcow2" else None
    if image_format == "qcow2" and qemu_img is None:
        raise BootMapError("qcow2 output needs qemu-img, which is not installed; write --format raw")
    image = make_boot_image(entries, block_size=block_size, disk_size=disk_size, memory=memory)
    boot_map = read_boot_map(image, block_size)
    target = Path(path)
    raw_name = _create_beside(target)
    try:
        with open(raw_name, "wb") as file:
            file.write(image)
        if qemu_img is not None:
            converted = _create_beside(target)
            proc = subprocess.run([qemu_img, "convert", "-f", "raw", "-O", "qcow2", raw_name, converted],
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True)
            os.unlink(raw_name)
            raw_name = converted
            if proc.returncode != 0:
                raise BootMapError(f"qemu-img convert failed: {proc.stderr.strip()}")
        os.replace(raw_name, target)
    except BaseException as err:
        if os.path.exists(raw_name):
            os.unlink(raw_name)
        if isinstance(err, OSError):
            raise BootMapError(f"cannot write {target}: {err.strerror or err}") from err
        raise
    return boot_map


def _create_beside(target: Path) -> str:
    """A new empty file next to ``target`` (so that os.replace is atomic), with the umask's permissions."""
    for _ in range(100):
        name = str(target.with_name(f".{target.name}.{secrets.token_hex(4)}"))
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return name
        except FileExistsError:
            continue
        except OSError as err:
            raise BootMapError(f"cannot write {target}: {err.strerror}") from err
    raise BootMapError(f"cannot create a temporary file beside {target}")


_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``512``, ``64K``, ``16M``, ``2G``, ``1T`` (powers of 1024) to bytes."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise BootMapError(f"size '{text}': a number with an optional K, M, G or T suffix")
    return int(match.group(1)) << (10 * " kmgt".index(match.group(2).lower() or " "))
