"""Loading guest images into storage: ELF executables (``-kernel``) and raw images.

An s390x ``-kernel`` ELF is loaded the way QEMU's IPL code does it: every
PT_LOAD segment at its physical address, the bytes beyond the file size
zeroed, and the CPU started at the entry point with a 64-bit PSW.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vmd.machine.memory import AddressingError, GuestMemory

PT_LOAD = 1
EM_S390 = 22


class ImageError(Exception):
    """An image that cannot be loaded; the text says why."""


@dataclass(frozen=True)
class LoadedImage:
    entry: int
    segments: list[tuple[int, int]]  # (address, size in storage)


def load_elf(memory: GuestMemory, data: bytes, name: str = "kernel") -> LoadedImage:
    """:raises ImageError: not a big-endian 64-bit s390x ELF, or a segment outside storage."""
    if len(data) < 64 or data[:4] != b"\x7fELF":
        raise ImageError(f"{name}: not an ELF file")
    if data[4] != 2 or data[5] != 2:
        raise ImageError(f"{name}: not a 64-bit big-endian ELF file")
    (e_type, e_machine, _v, e_entry, e_phoff, _sh, _flags, _ehsize, e_phentsize, e_phnum) = struct.unpack_from(
        ">HHIQQQIHHH", data, 16)
    if e_machine != EM_S390:
        raise ImageError(f"{name}: not an s390x ELF file (machine {e_machine})")
    segments = []
    for i in range(e_phnum):
        off = e_phoff + i * e_phentsize
        if off + 56 > len(data):
            raise ImageError(f"{name}: truncated program header table")
        p_type, _flags, p_offset, _vaddr, p_paddr, p_filesz, p_memsz, _align = struct.unpack_from(
            ">IIQQQQQQ", data, off)
        if p_type != PT_LOAD or p_memsz == 0:
            continue
        if p_offset + p_filesz > len(data) or p_filesz > p_memsz:
            raise ImageError(f"{name}: segment {i} lies outside the file")
        try:
            memory.write(p_paddr, data[p_offset:p_offset + p_filesz])
            memory.write(p_paddr + p_filesz, bytes(p_memsz - p_filesz))
        except AddressingError as err:
            raise ImageError(f"{name}: segment {i} at 0x{p_paddr:x} does not fit in guest storage") from err
        segments.append((p_paddr, p_memsz))
    if not segments:
        raise ImageError(f"{name}: no loadable segment")
    return LoadedImage(e_entry, segments)
