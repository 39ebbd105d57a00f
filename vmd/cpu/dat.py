"""Dynamic address translation (PoP ch. 3, "Dynamic Address Translation"), without I/O.

The engine translates the guest's own accesses; this module does the same for the
operands of instructions vmd emulates (a trapped LCTLG reads its operand through the
kernel's page tables, STSI stores into a vmalloc'd buffer...).  Table entries are
read through a callback, so the walk can be tested against tables built in a plain
bytes object.

A translation starts from an address-space-control element (ASCE), picked by the
PSW's address-space control (primary: CR1, secondary: CR7, home: CR13; access-register
mode through ALET 0/1), and walks up to five levels:

    region-first  index = vaddr bits 0-10    region-second  bits 11-21
    region-third  bits 22-32                 segment        bits 33-43
    page          bits 44-51                 byte           bits 52-63

Table entries are 8 bytes, and table origins are absolute addresses (the PoP leaves
real or absolute open; QEMU and vmd take absolute).  With EDAT-1 a segment-table
entry may map a 1 MiB frame directly (FC bit), with EDAT-2 a region-third-table entry
a 2 GiB frame.  The result is a *real* address: the caller applies prefixing.

Exceptions carry the program-interruption code and the translation-exception
identification the CPU stores at real 168 (0xA8): the failing page address, the
fetch/store indication (bits 52-53) and the address-space id (bits 62-63).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

MASK64 = (1 << 64) - 1
PAGE_MASK = ~0xFFF & MASK64

# -- program-interruption codes of access exceptions ------------------------------------------
PGM_PROTECTION = 0x04
PGM_ADDRESSING = 0x05
PGM_SEGMENT_TRANSLATION = 0x10
PGM_PAGE_TRANSLATION = 0x11
PGM_TRANSLATION_SPECIFICATION = 0x12
PGM_SPECIAL_OPERATION = 0x13
PGM_ALET_SPECIFICATION = 0x28
PGM_ASCE_TYPE = 0x38
PGM_REGION_FIRST = 0x39
PGM_REGION_SECOND = 0x3A
PGM_REGION_THIRD = 0x3B

# -- address-space control (PSW bits 16-17) -----------------------------------------------------
ASC_PRIMARY = 0
ASC_ACCESS_REGISTER = 1
ASC_SECONDARY = 2
ASC_HOME = 3
#: which control register holds the ASCE for each space
ASCE_REGISTER = {ASC_PRIMARY: 1, ASC_SECONDARY: 7, ASC_HOME: 13}

# -- the ASCE (PoP "Address-Space-Control Element") ------------------------------------------------
ASCE_PRIVATE = 0x100  # bit 55: no low-address protection, no common segments
ASCE_REAL_SPACE = 0x20  # bit 58: the address is the real address
ASCE_TYPE = 0x0C  # bits 60-61: designation type
ASCE_LENGTH = 0x03  # bits 62-63: table length in 4 KiB units, minus one

TYPE_REGION_FIRST = 3
TYPE_REGION_SECOND = 2
TYPE_REGION_THIRD = 1
TYPE_SEGMENT = 0

# -- table entries ----------------------------------------------------------------------------------
REGION_ORIGIN = PAGE_MASK  # bits 0-51
REGION_PROTECT = 0x200  # bit 54 (EDAT-1)
REGION_OFFSET = 0xC0  # bits 56-57: table offset
REGION_INVALID = 0x20  # bit 58
REGION_TYPE = 0x0C  # bits 60-61: 3 first, 2 second, 1 third
REGION_LENGTH = 0x03  # bits 62-63
REGION3_FORMAT = 0x400  # bit 53 (EDAT-2): the entry maps a 2 GiB frame
REGION3_COMMON = 0x10  # bit 59 (EDAT-2): common region
REGION3_FRAME = ~((1 << 31) - 1) & MASK64  # bits 0-32

SEGMENT_ORIGIN = ~0x7FF & MASK64  # bits 0-52: page-table origin
SEGMENT_FORMAT = 0x400  # bit 53 (EDAT-1): the entry maps a 1 MiB frame
SEGMENT_PROTECT = 0x200  # bit 54
SEGMENT_INVALID = 0x20  # bit 58
SEGMENT_COMMON = 0x10  # bit 59
SEGMENT_TYPE = 0x0C  # bits 60-61: must be 0
SEGMENT_FRAME = ~((1 << 20) - 1) & MASK64  # bits 0-43

PAGE_FRAME = PAGE_MASK  # bits 0-51
PAGE_ZERO = 0x800  # bit 52: must be zero
PAGE_INVALID = 0x400  # bit 53
PAGE_PROTECT = 0x200  # bit 54

# -- translation-exception identification (stored at real 0xA8) -----------------------------------
TEC_FETCH = 0x800  # bit 52: the access was a fetch
TEC_STORE = 0x400  # bit 53: the access was a store
TEC_LOW_ADDRESS = 0x80  # bit 56: low-address protection
TEC_DAT_PROTECTION = 0x04  # bit 61

#: the region/segment levels: (vaddr shift of the 11-bit index, exception when the entry is invalid)
LEVELS = {
    TYPE_REGION_FIRST: (53, PGM_REGION_FIRST),
    TYPE_REGION_SECOND: (42, PGM_REGION_SECOND),
    TYPE_REGION_THIRD: (31, PGM_REGION_THIRD),
    TYPE_SEGMENT: (20, PGM_SEGMENT_TRANSLATION),
}


class TranslationError(Exception):
    """An access exception: ``code`` is the program-interruption code, ``tec`` the translation-
    exception identification (None for exceptions that store none, e.g. addressing)."""

    def __init__(self, code: int, tec: int | None = None):
        super().__init__(f"program interruption 0x{code:02x}")
        self.code = code
        self.tec = tec


@dataclass(frozen=True)
class Translation:
    """Where a virtual address lands: its real address, and whether DAT protects it from stores."""

    real: int
    protected: bool


class _Fault(Exception):
    """Internal: a translation exception before the TEC is known."""

    def __init__(self, code: int):
        self.code = code


def _index(vaddr: int, level: int) -> int:
    return (vaddr >> LEVELS[level][0]) & 0x7FF


def walk(vaddr: int, asce: int, fetch: Callable[[int], int], *, edat1: bool = False,
         edat2: bool = False) -> Translation:
    """Translate ``vaddr`` through the tables ``asce`` designates.

    ``fetch(address)`` returns the 8-byte entry at an absolute address (raising
    :class:`TranslationError` with the addressing code when it is outside storage).

    :raises TranslationError: the exception, with no TEC (the caller builds it).
    """
    try:
        return _walk(vaddr & MASK64, asce, fetch, edat1, edat2)
    except _Fault as fault:
        raise TranslationError(fault.code) from None


def _walk(vaddr: int, asce: int, fetch, edat1: bool, edat2: bool) -> Translation:
    if asce & ASCE_REAL_SPACE:
        return Translation(vaddr, False)
    level = (asce & ASCE_TYPE) >> 2
    private = bool(asce & ASCE_PRIVATE)
    # the address must not reach beyond what the first table covers
    if level < TYPE_REGION_FIRST and vaddr >> (LEVELS[level][0] + 11):
        raise _Fault(PGM_ASCE_TYPE)
    index = _index(vaddr, level)
    if index >> 9 > asce & ASCE_LENGTH:
        raise _Fault(LEVELS[level][1])
    origin = asce & REGION_ORIGIN
    protected = False
    while level > TYPE_SEGMENT:
        entry = fetch(origin + index * 8)
        if entry & REGION_INVALID:
            raise _Fault(LEVELS[level][1])
        if (entry & REGION_TYPE) >> 2 != level:
            raise _Fault(PGM_TRANSLATION_SPECIFICATION)
        if edat1 and entry & REGION_PROTECT:
            protected = True
        if level == TYPE_REGION_THIRD and edat2:
            if entry & REGION3_COMMON and private:
                raise _Fault(PGM_TRANSLATION_SPECIFICATION)
            if entry & REGION3_FORMAT:
                return Translation((entry & REGION3_FRAME) | (vaddr & ~REGION3_FRAME & MASK64), protected)
        level -= 1
        index = _index(vaddr, level)
        offset, length = (entry & REGION_OFFSET) >> 6, entry & REGION_LENGTH
        if not offset <= index >> 9 <= length:
            raise _Fault(LEVELS[level][1])
        origin = entry & REGION_ORIGIN
    entry = fetch(origin + index * 8)
    if entry & SEGMENT_INVALID:
        raise _Fault(PGM_SEGMENT_TRANSLATION)
    if entry & SEGMENT_TYPE:
        raise _Fault(PGM_TRANSLATION_SPECIFICATION)
    if entry & SEGMENT_COMMON and private:
        raise _Fault(PGM_TRANSLATION_SPECIFICATION)
    if entry & SEGMENT_PROTECT:
        protected = True
    if edat1 and entry & SEGMENT_FORMAT:
        return Translation((entry & SEGMENT_FRAME) | (vaddr & ~SEGMENT_FRAME & MASK64), protected)
    entry = fetch((entry & SEGMENT_ORIGIN) + ((vaddr >> 12) & 0xFF) * 8)
    if entry & PAGE_INVALID:
        raise _Fault(PGM_PAGE_TRANSLATION)
    if entry & PAGE_ZERO:
        raise _Fault(PGM_TRANSLATION_SPECIFICATION)
    if entry & PAGE_PROTECT:
        protected = True
    return Translation((entry & PAGE_FRAME) | (vaddr & 0xFFF), protected)


# -- the access: address space, protection, the TEC ------------------------------------------------
def low_address(address: int) -> bool:
    """The locations low-address protection covers: 0-511 and 4096-4607."""
    return address < 512 or 4096 <= address < 4608


@dataclass(frozen=True)
class Context:
    """What a translation reads from the CPU: DAT on, the address-space control, the control
    registers (only 0, 1, 7 and 13 matter), and the EDAT levels in effect."""

    dat: bool
    asc: int
    cr: tuple[int, ...]
    edat1: bool = False
    edat2: bool = False

    def asce(self, asc: int, alet: int = 0) -> tuple[int, int]:
        """(ASCE, address-space id for the TEC) of an access in space ``asc``."""
        if asc == ASC_ACCESS_REGISTER:
            # vmd knows no ART: ALET 0 is the primary, ALET 1 the secondary space
            if alet == 0:
                return self.cr[1], ASC_PRIMARY
            if alet == 1:
                return self.cr[7], ASC_SECONDARY
            raise TranslationError(PGM_ALET_SPECIFICATION)
        return self.cr[ASCE_REGISTER[asc]], asc

    def low_address_protected(self, asce: int) -> bool:
        """CR0 bit 35, unless DAT is on and the space is private."""
        if not self.cr[0] & (1 << 28):
            return False
        return not self.dat or not asce & ASCE_PRIVATE


def translate(ctx: Context, vaddr: int, fetch: Callable[[int], int], *, store: bool = False,
              alet: int = 0, asc: int | None = None) -> int:
    """The real address of one byte of an operand at logical address ``vaddr``.

    ``asc`` overrides the PSW's address-space control (LRA and TPROT use the PSW's; MVCOS-like
    accesses name theirs).  Checks low-address and DAT protection for stores.

    :raises TranslationError: with the code and the TEC to store.
    """
    vaddr &= MASK64
    space = ctx.asc if asc is None else asc
    asce, space_id = (0, space) if not ctx.dat else ctx.asce(space, alet)
    tec = (vaddr & PAGE_MASK) | (TEC_STORE if store else TEC_FETCH) | space_id
    if store and low_address(vaddr) and ctx.low_address_protected(asce):
        raise TranslationError(PGM_PROTECTION, tec | TEC_LOW_ADDRESS)
    if not ctx.dat:
        return vaddr
    try:
        result = walk(vaddr, asce, fetch, edat1=ctx.edat1, edat2=ctx.edat2)
    except TranslationError as exc:
        raise TranslationError(exc.code, None if exc.code == PGM_ADDRESSING else tec) from None
    if store and result.protected:
        raise TranslationError(PGM_PROTECTION, tec | TEC_DAT_PROTECTION)
    return result.real
