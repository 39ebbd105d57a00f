"""What one boot entry loads: a kernel's segments, the initrd, the command line.

Two kinds of kernel file:

- an s390x ELF executable: every PT_LOAD segment at its physical address, its
  bytes past the file size zeroed (as QEMU's ``-kernel`` loads it), started at
  the ELF entry point in 64-bit addressing mode;
- anything else is taken for a Linux image (``arch/s390/boot/bzImage``, a raw
  memory image that starts at address 0): as zipl does, the first 64 KiB
  (lowcore and IPL records) stay behind, the rest is loaded at 0x10000 and
  started there in 31-bit mode, where Linux's startup code expects to begin.

The initrd goes to 8 MiB, or the next MiB at least 1 MiB past the kernel (QEMU's
rule for ``-initrd``); its address and size go to 0x10408 and 0x10410 and the
command line to 0x10480, Linux's parameter area. When no kernel segment covers
those addresses (the vmd test guests live at 0x20000) they form a small segment
of their own.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

ELF_MAGIC = b"\x7fELF"
EM_S390 = 22
ET_EXEC = 2
PT_LOAD = 1
ELF_HEADER = struct.Struct(">HHIQQQIHHHHHH")      # from e_type (offset 16) to e_shstrndx
PROGRAM_HEADER = struct.Struct(">IIQQQQQQ")

#: the firmware's own lowcore while it loads; nothing may be loaded below
LOWCORE_END = 0x2000
LINUX_IMAGE_START = 0x10000
INITRD_START_FIELD = 0x10408
INITRD_SIZE_FIELD = 0x10410
MAX_COMMAND_LINE_FIELD = 0x10430
COMMAND_LINE = 0x10480
LEGACY_COMMAND_LINE_SIZE = 896
INITRD_ADDRESS = 0x80_0000
INITRD_ALIGN = 0x10_0000
#: a short PSW holds a 31-bit address, and the firmware lives below 2 GiB
ADDRESS_LIMIT = 0x8000_0000
#: the top of storage (below 2 GiB) that QEMU's firmware occupies: 2 MiB in QEMU 7.2,
#: 3 MiB in later versions, plus the IPL parameter blocks just below it
FIRMWARE_RESERVE = 0x40_0000
DEFAULT_MEMORY = 128 * 1024 * 1024

PSW_ADDRESS_BITS = 0x7FFF_FFFF
#: short (ESA-format) PSWs for the EXEC entry: bit 12 set, EA+BA (64-bit) or BA (31-bit)
PSW_64BIT = 0x0008_0001_8000_0000
PSW_31BIT = 0x0008_0000_8000_0000


class BootImageError(ValueError):
    """Input that cannot become a bootable disk; the text says why."""


class KernelError(BootImageError):
    """A kernel, initrd or command line that cannot be booted as asked."""


@dataclass(frozen=True)
class Segment:
    """Bytes for guest storage at ``address``; ``size`` (at least ``len(data)``) adds zeros after them."""

    address: int
    data: bytes = b""
    size: int = -1
    label: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", bytes(self.data))
        if self.size == -1:
            object.__setattr__(self, "size", len(self.data))
        if self.address < 0 or self.size < len(self.data) or self.address + self.size > 1 << 64:
            raise KernelError(f"{self.describe()}: bad address or size")

    @property
    def end(self) -> int:
        return self.address + self.size

    def describe(self) -> str:
        span = f"0x{self.address:x}-0x{self.address + max(self.size, 1) - 1:x}"
        return f"{self.label} ({span})" if self.label else span


@dataclass(frozen=True)
class Kernel:
    kind: str                      # "elf" or "linux"
    segments: tuple[Segment, ...]
    entry: int
    psw: int


def parse_kernel(data: bytes, name: str = "kernel") -> Kernel:
    """The segments, entry point and start PSW of an s390x ELF executable or a Linux image."""
    if data[:4] == ELF_MAGIC:
        return _parse_elf(data, name)
    return _parse_linux_image(data, name)


def _parse_elf(data: bytes, name: str) -> Kernel:
    if len(data) < 64:
        raise KernelError(f"{name}: truncated ELF header")
    if data[4] != 2 or data[5] != 2:
        raise KernelError(f"{name}: not a 64-bit big-endian ELF file")
    (e_type, e_machine, _version, e_entry, e_phoff, _shoff, _flags, _ehsize,
     e_phentsize, e_phnum, _shentsize, _shnum, _shstrndx) = ELF_HEADER.unpack_from(data, 16)
    if e_machine != EM_S390:
        raise KernelError(f"{name}: not an s390x ELF file (machine {e_machine})")
    if e_type != ET_EXEC:
        raise KernelError(f"{name}: not an ELF executable (type {e_type})")
    if e_phnum and e_phentsize < PROGRAM_HEADER.size:
        raise KernelError(f"{name}: program headers of {e_phentsize} bytes")
    segments = []
    for index in range(e_phnum):
        offset = e_phoff + index * e_phentsize
        if offset + PROGRAM_HEADER.size > len(data):
            raise KernelError(f"{name}: truncated program header table")
        p_type, _flags, p_offset, _vaddr, p_paddr, p_filesz, p_memsz, _align = PROGRAM_HEADER.unpack_from(data, offset)
        if p_type != PT_LOAD or p_memsz == 0:
            continue
        if p_filesz > p_memsz or p_offset + p_filesz > len(data):
            raise KernelError(f"{name}: segment {index} lies outside the file")
        if p_paddr + p_memsz > 1 << 64:
            raise KernelError(f"{name}: segment {index} wraps around the address space")
        segments.append(Segment(p_paddr, data[p_offset:p_offset + p_filesz], p_memsz,
                                label=f"{name} segment {index}"))
    if not segments:
        raise KernelError(f"{name}: no loadable segment")
    if not any(s.address <= e_entry < s.end for s in segments):
        raise KernelError(f"{name}: entry point 0x{e_entry:x} lies outside every loaded segment")
    if e_entry >= ADDRESS_LIMIT or e_entry & 1:
        raise KernelError(f"{name}: entry point 0x{e_entry:x} is not an even address below 2 GiB,"
                          " which a short PSW cannot hold")
    return Kernel("elf", tuple(segments), e_entry, PSW_64BIT | e_entry)


def _parse_linux_image(data: bytes, name: str) -> Kernel:
    needed = COMMAND_LINE + LEGACY_COMMAND_LINE_SIZE
    if len(data) < needed:
        raise KernelError(f"{name}: neither an ELF file nor a Linux image (a Linux image holds its"
                          f" parameter area at 0x10400-0x{needed - 1:x}; this file has {len(data)} bytes)")
    image = Segment(LINUX_IMAGE_START, data[LINUX_IMAGE_START:], label=f"{name} image")
    return Kernel("linux", (image,), LINUX_IMAGE_START, PSW_31BIT | LINUX_IMAGE_START)


def memory_limit(memory: int) -> int:
    """The first address the firmware may use in a guest with ``memory`` bytes of storage."""
    return max((min(memory, ADDRESS_LIMIT) - FIRMWARE_RESERVE) & ~0xFFFF, 0)


def loaded_end(segment: Segment, block_size: int) -> int:
    """Where the firmware stops writing: it loads whole blocks."""
    return segment.address + -(-segment.size // block_size) * block_size


def prepare_entry(kernel_data: bytes, initrd: bytes | None = None, append: str | None = None, *,
                  block_size: int = 512, memory: int = DEFAULT_MEMORY,
                  name: str = "kernel") -> tuple[tuple[Segment, ...], int]:
    """The segments (in ascending address order) and the start PSW of one boot entry."""
    kernel = parse_kernel(kernel_data, name)
    segments = list(kernel.segments)
    patches: list[tuple[int, bytes, str]] = []
    if initrd is not None:
        if not initrd:
            raise KernelError("the initrd is empty")
        kernel_end = max(loaded_end(s, block_size) for s in segments)
        address = INITRD_ADDRESS
        while address < kernel_end + INITRD_ALIGN:
            address += INITRD_ALIGN
        segments.append(Segment(address, initrd, label="initrd"))
        patches.append((INITRD_START_FIELD, struct.pack(">QQ", address, len(initrd)), "initrd address and size"))
    if append is not None:
        text = append.encode()
        if b"\0" in text:
            raise KernelError("the command line contains a NUL character")
        limit = _max_command_line(segments)
        if len(text) + 1 > limit:
            raise KernelError(f"the command line has {len(text)} bytes; the kernel takes at most {limit - 1}")
        patches.append((COMMAND_LINE, text + b"\0", "command line"))
    segments = _apply_patches(segments, patches)
    segments.sort(key=lambda s: s.address)
    check_layout(segments, block_size, memory)
    return tuple(segments), kernel.psw


def _max_command_line(segments: list[Segment]) -> int:
    """Linux >= 5.x states its command line size at 0x10430; 0 (older kernels) means 896 bytes."""
    for segment in segments:
        offset = MAX_COMMAND_LINE_FIELD - segment.address
        if 0 <= offset and offset + 8 <= len(segment.data):
            size = int.from_bytes(segment.data[offset:offset + 8], "big")
            return size or LEGACY_COMMAND_LINE_SIZE
    return LEGACY_COMMAND_LINE_SIZE


def _apply_patches(segments: list[Segment], patches: list[tuple[int, bytes, str]]) -> list[Segment]:
    """Writes each patch into the segment that covers it; the rest form a segment of their own."""
    loose = []
    for address, data, what in patches:
        end = address + len(data)
        touched = [i for i, s in enumerate(segments) if s.address < end and address < s.end]
        if not touched:
            loose.append((address, data))
            continue
        host = segments[touched[0]]
        if len(touched) > 1 or address < host.address or end > host.end:
            raise KernelError(f"the {what} (0x{address:x}-0x{end - 1:x}) straddles the edge of {host.describe()}")
        body = bytearray(host.data)
        if len(body) < end - host.address:
            body.extend(bytes(end - host.address - len(body)))
        body[address - host.address:end - host.address] = data
        segments[touched[0]] = Segment(host.address, bytes(body), host.size, label=host.label)
    if loose:
        start = min(a for a, _ in loose)
        body = bytearray(max(a + len(d) for a, d in loose) - start)
        for address, data in loose:
            body[address - start:address - start + len(data)] = data
        segments.append(Segment(start, bytes(body), label="parameter area"))
    return segments


def check_layout(segments: list[Segment] | tuple[Segment, ...], block_size: int, memory: int) -> None:
    """Refuses loads into the lowcore, overlapping segments, and loads into the firmware's storage.

    The firmware writes whole blocks, so a segment's tail reaches the next block
    boundary; the segments are loaded in ascending address order, so a later
    segment overwrites the tail of the one before.
    """
    limit = memory_limit(memory)
    if limit <= LOWCORE_END:
        raise KernelError(f"a guest with {_mib(memory)} of storage leaves no room to load anything")
    previous = None
    for segment in sorted(segments, key=lambda s: s.address):
        if segment.address < LOWCORE_END:
            raise KernelError(f"{segment.describe()} starts below 0x{LOWCORE_END:x}: the firmware's lowcore"
                              " is in use while it loads")
        if previous is not None and segment.address < previous.end:
            raise KernelError(f"{previous.describe()} and {segment.describe()} overlap")
        end = loaded_end(segment, block_size)
        if end > limit:
            raise KernelError(f"{segment.describe()} ends at 0x{end - 1:x}, past 0x{limit - 1:x}: too large for a"
                              f" guest with {_mib(memory)} of storage (the firmware occupies the top"
                              f" {FIRMWARE_RESERVE >> 20} MiB below min(storage, 2 GiB))")
        previous = segment


def _mib(size: int) -> str:
    return f"{size / (1 << 20):g} MiB"
