"""Initial program load: the firmware image, the IPL parameter block, and DIAGNOSE 0x308.

The machine IPLs the way QEMU's s390-ccw-virtio machine does, so that
QEMU's own s390-ccw firmware runs under vmd unchanged, and vmd's firmware
runs under QEMU:

* the firmware is an ELF linked at 0 and loaded near the top of the first
  2 GiB (``(min(storage, 2 GiB) - 2 MiB)`` rounded down to 64 KiB); a file
  that is not ELF is loaded raw at 0x9000 (at most 4 KiB);
* the boot device with the lowest ``bootindex`` becomes the IPL parameter
  block (IPLB): type CCW for virtio devices, QEMU's private "SCSI" type for a
  SCSI device behind virtio-scsi, with the device's or the machine's
  loadparm in EBCDIC; without a boot device there is no IPLB and the
  firmware scans the subchannels itself;
* QEMU's IPL parameters (boot-menu flags, netboot start address, menu timeout)
  sit in the lowcore at 0xcc;
* DIAGNOSE 0x308 sets (5) and stores (6) the IPLB and resets: 0 (modified
  clear) and 1 (load normal) restart the issuing CPU from the PSW at address
  0; 3 and 4 re-IPL the whole machine from the IPLB last set.

Images are "read-only memory": a re-IPL copies them into storage again, as
QEMU restores its ROM images on reset.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from vmd.machine.loader import EM_S390, ImageError, PT_LOAD
from vmd.machine.memory import AddressingError, GuestMemory

#: IPLB: its length, and the lengths QEMU builds
IPLB_SIZE = 4096
IPLB_MIN_CCW_LEN = 200
IPLB_MIN_FCP_LEN = 384
IPLB_HEADER_LEN = 8
IPL_TYPE_FCP = 0x00
IPL_TYPE_CCW = 0x02
IPL_TYPE_PV = 0x05
IPL_TYPE_QEMU_SCSI = 0xFF
IPLB_FLAG_LOADPARM_VALID = 0x80
#: DIAGNOSE 0x308 return codes (in R1 + 1)
RC_OK = 0x0001
RC_NO_CONF = 0x0102
RC_INVALID = 0x0402
#: where QEMU's IPL parameters (QemuIplParameters) are placed in the lowcore
QIPL_ADDRESS = 0xCC
QIPL_FLAG_BM_OPTS_CMD = 0x80
QIPL_FLAG_BM_OPTS_ZIPL = 0x40
#: the firmware's reserved area at the top of the first 2 GiB
BIOS_MAX_SIZE = 2 << 20
RAW_BIOS_ADDRESS = 0x9000
#: QEMU's -kernel memory layout for Linux images
KERNEL_IMAGE_START = 0x10000
LINUX_MAGIC_ADDRESS = 0x10008
KERNEL_PARM_AREA = 0x10480
KERNEL_PARM_SIZE_ADDRESS = 0x10430
LEGACY_KERNEL_PARM_SIZE = 0x380
INITRD_START = 0x800000
INITRD_PARM_START = 0x10408
INITRD_PARM_SIZE = 0x10410

_ASCII_TO_EBCDIC = {
    **{c: 0xC1 + i for i, c in enumerate("ABCDEFGHI")},
    **{c: 0xD1 + i for i, c in enumerate("JKLMNOPQR")},
    **{c: 0xE2 + i for i, c in enumerate("STUVWXYZ")},
    **{c: 0xF0 + i for i, c in enumerate("0123456789")},
    " ": 0x40, ".": 0x4B,
}


def loadparm_ebcdic(loadparm: str | None) -> bytes:
    """A loadparm (already checked: ``[A-Z0-9. ]{0,8}``) in EBCDIC, padded with blanks."""
    text = (loadparm or "")[:8].upper()
    return bytes(_ASCII_TO_EBCDIC.get(c, 0x40) for c in text).ljust(8, b"\x40")


def firmware_base(memory_size: int) -> int:
    return (min(memory_size, 0x80000000) - BIOS_MAX_SIZE) & ~0xFFFF


@dataclass
class RomImage:
    """Bytes that IPL puts into storage, and puts back on a re-IPL."""

    address: int
    data: bytes
    zero_fill: int = 0  # bytes beyond data to clear (an ELF segment's bss)

    def load(self, memory: GuestMemory) -> None:
        memory.write(self.address, self.data)
        if self.zero_fill:
            memory.write(self.address + len(self.data), bytes(self.zero_fill))


def elf_segments(data: bytes, name: str, offset: int = 0) -> tuple[int, list[RomImage]]:
    """(entry, segments) of a 64-bit big-endian s390x ELF, every address moved by ``offset``.

    :raises ImageError: the file is not such an ELF.
    """
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 2:
        raise ImageError(f"{name}: not a 64-bit big-endian ELF file")
    _type, machine, _v, entry, phoff, _sh, _flags, _eh, phentsize, phnum = struct.unpack_from(
        ">HHIQQQIHHH", data, 16)
    if machine != EM_S390:
        raise ImageError(f"{name}: not an s390x ELF file (machine {machine})")
    images = []
    for i in range(phnum):
        off = phoff + i * phentsize
        if off + 56 > len(data):
            raise ImageError(f"{name}: truncated program header table")
        p_type, _f, p_offset, _vaddr, paddr, filesz, memsz, _align = struct.unpack_from(">IIQQQQQQ", data, off)
        if p_type != PT_LOAD or memsz == 0:
            continue
        if p_offset + filesz > len(data) or filesz > memsz:
            raise ImageError(f"{name}: segment {i} lies outside the file")
        images.append(RomImage(paddr + offset, data[p_offset:p_offset + filesz], memsz - filesz))
    if not images:
        raise ImageError(f"{name}: no loadable segment")
    if offset:
        _relocate(data, images, offset)
    return entry + offset, images


SHT_RELA = 4
R_390_RELATIVE = 12


def _relocate(data: bytes, images: list[RomImage], offset: int) -> None:
    """Apply the R_390_RELATIVE relocations of a position-independent image loaded ``offset`` higher.

    QEMU's loader does this for its firmware, which keeps pointers to its own data (the GOT)
    as link-time addresses; without it they point at low storage, where the program it loads
    would land on them.  Other relocation types are left alone, as QEMU does.
    """
    shoff, = struct.unpack_from(">Q", data, 40)
    shentsize, shnum = struct.unpack_from(">HH", data, 58)
    if not shoff or shentsize < 64 or shoff + shnum * shentsize > len(data):
        return
    for i in range(shnum):
        sh_type, = struct.unpack_from(">I", data, shoff + i * shentsize + 4)
        if sh_type != SHT_RELA:
            continue
        sh_offset, sh_size, _link, _info, _align, entsize = struct.unpack_from(
            ">QQIIQQ", data, shoff + i * shentsize + 24)
        entsize = entsize or 24
        if sh_offset + sh_size > len(data) or entsize < 24:
            continue
        for pos in range(sh_offset, sh_offset + sh_size - entsize + 1, entsize):
            r_offset, r_info, r_addend = struct.unpack_from(">QQq", data, pos)
            if r_info & 0xFFFFFFFF != R_390_RELATIVE:
                continue
            target = r_offset + offset
            for rom in images:
                if rom.address <= target and target + 8 <= rom.address + len(rom.data):
                    patched = bytearray(rom.data)
                    struct.pack_into(">Q", patched, target - rom.address, (r_addend + offset) & (2**64 - 1))
                    rom.data = bytes(patched)
                    break


@dataclass
class IplState:
    """What the machine IPLs from: images, the start address, the IPLB."""

    roms: list[RomImage] = field(default_factory=list)
    start_address: int = 0
    bios_start: int | None = None
    kernel_start: int | None = None
    iplb: bytes | None = None
    qipl_flags: int = 0
    netboot_start: int = 0
    menu_timeout: int = 0

    def load_roms(self, memory: GuestMemory) -> None:
        try:
            for rom in self.roms:
                rom.load(memory)
        except AddressingError as err:
            raise ImageError(f"image at 0x{err.address:x} does not fit in guest storage") from err

    def write_qipl(self, memory: GuestMemory) -> None:
        memory.write(QIPL_ADDRESS, struct.pack(">B3xQI12x", self.qipl_flags, self.netboot_start,
                                               self.menu_timeout))


def load_firmware(path: str, memory_size: int) -> tuple[int, list[RomImage]]:
    """The firmware's entry and images: a relocated ELF, or a raw stage-1 loader at 0x9000.

    :raises ImageError: with QEMU's texts where QEMU has one.
    """
    if memory_size < BIOS_MAX_SIZE:
        raise ImageError("not enough RAM to load the BIOS file")
    try:
        data = Path(path).read_bytes()
    except OSError:
        raise ImageError("could not find stage1 bootloader") from None
    base = firmware_base(memory_size)
    if data[:4] == b"\x7fELF":
        entry, images = elf_segments(data, path, base)
        end = max(r.address + len(r.data) + r.zero_fill for r in images)
        if end > base + BIOS_MAX_SIZE:
            raise ImageError(f"could not load bootloader '{path}'")
        return entry, images
    if len(data) > 4096 or not data:
        raise ImageError(f"could not load bootloader '{path}'")
    return RAW_BIOS_ADDRESS, [RomImage(RAW_BIOS_ADDRESS, data)]


def load_kernel(path: str, memory: GuestMemory, cmdline: str, initrd: str | None) -> tuple[int, list[RomImage]]:
    """QEMU's -kernel: an ELF at its addresses, else a raw image at 0; Linux gets its parameters.

    Returns (start address, images); the images are written into ``memory`` as well, since the
    parameter area and the initrd placement depend on the image.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ImageError(f"could not load kernel '{path}'") from err
    if data[:4] == b"\x7fELF":
        entry, images = elf_segments(data, path)
        size = sum(len(r.data) + r.zero_fill for r in images)
    else:
        if len(data) > memory.size:
            raise ImageError(f"could not load kernel '{path}'")
        images = [RomImage(0, data)]
        size = len(data)
        if data[LINUX_MAGIC_ADDRESS:LINUX_MAGIC_ADDRESS + 6] == b"S390EP":
            entry = KERNEL_IMAGE_START
        elif len(data) >= 8:
            entry = struct.unpack_from(">I", data, 4)[0] & 0x7FFFFFFF  # the short IPL PSW's address
        else:
            raise ImageError("Could not get IPL PSW")
    for rom in images:
        try:
            rom.load(memory)
        except AddressingError as err:
            raise ImageError(f"{path}: segment at 0x{rom.address:x} does not fit in guest storage") from err
    start = entry
    extra: list[RomImage] = []
    if entry in (KERNEL_IMAGE_START, 0x800):
        start = KERNEL_IMAGE_START
        if cmdline or _covers(images, KERNEL_PARM_AREA):
            encoded = cmdline.encode() + b"\0"
            limit = memory.u64(KERNEL_PARM_SIZE_ADDRESS) or LEGACY_KERNEL_PARM_SIZE
            if len(encoded) > limit:
                raise ImageError(f"kernel command line exceeds maximum size: {len(encoded)} > {limit}")
            if _covers(images, KERNEL_PARM_AREA):
                extra.append(RomImage(KERNEL_PARM_AREA, encoded))
    if initrd is not None:
        offset = INITRD_START
        while size + 0x100000 > offset:
            offset += 0x100000
        try:
            blob = Path(initrd).read_bytes()
        except OSError as err:
            raise ImageError(f"could not load initrd '{initrd}'") from err
        if offset + len(blob) > memory.size:
            raise ImageError(f"could not load initrd '{initrd}'")
        extra.append(RomImage(offset, blob))
        if _covers(images, INITRD_PARM_START):
            extra.append(RomImage(INITRD_PARM_START, struct.pack(">QQ", offset, len(blob))))
    for rom in extra:
        rom.load(memory)
    return start, images + extra


def _covers(images: list[RomImage], address: int) -> bool:
    return any(r.address <= address < r.address + len(r.data) for r in images)


# -- the IPL parameter block -----------------------------------------------------------------
def build_ccw_iplb(devno: int, ssid: int, loadparm: bytes) -> bytes:
    """QEMU's IPLB for a virtio-ccw boot device (type CCW, 200 bytes)."""
    block = bytearray(IPLB_MIN_CCW_LEN)
    struct.pack_into(">I3xBIBBH", block, 0, IPLB_MIN_CCW_LEN, 0, IPLB_MIN_CCW_LEN - IPLB_HEADER_LEN,
                     IPL_TYPE_CCW, IPLB_FLAG_LOADPARM_VALID, 0)
    block[16:24] = loadparm
    block[109] = ssid & 3
    struct.pack_into(">H", block, 110, devno)
    return bytes(block)


def build_scsi_iplb(devno: int, ssid: int, lun: int, target: int, channel: int, loadparm: bytes) -> bytes:
    """QEMU's private IPLB type for a SCSI disk behind a virtio-scsi controller."""
    block = bytearray(IPLB_MIN_CCW_LEN)
    struct.pack_into(">I3xBIBBH", block, 0, IPLB_MIN_CCW_LEN, 0, IPLB_MIN_CCW_LEN - IPLB_HEADER_LEN,
                     IPL_TYPE_QEMU_SCSI, IPLB_FLAG_LOADPARM_VALID, 0)
    block[16:24] = loadparm
    struct.pack_into(">IHH", block, 24, lun, target, channel)
    block[109] = ssid & 3
    struct.pack_into(">H", block, 110, devno)
    return bytes(block)


def iplb_valid(block: bytes) -> bool:
    """QEMU's check for DIAGNOSE 0x308 subcode 5: a CCW or FCP block of at least its minimum length."""
    length = struct.unpack_from(">I", block, 0)[0]
    kind = block[12] if len(block) > 12 else None
    if kind == IPL_TYPE_CCW:
        return length >= IPLB_MIN_CCW_LEN
    if kind == IPL_TYPE_FCP:
        return length >= IPLB_MIN_FCP_LEN
    return False


def iplb_loadparm(block: bytes) -> bytes | None:
    """The EBCDIC loadparm of an IPLB, when its flag says it is valid."""
    if len(block) >= 24 and block[13] & IPLB_FLAG_LOADPARM_VALID:
        return block[16:24]
    return None
