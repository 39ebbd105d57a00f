"""Dynamic address translation (vmd.cpu.dat) and its use for emulated instructions' operands.

The property tests build region, segment and page tables the way the Principles of
Operation lays them out (ch. 3, "Translation Tables") from a random mapping of
virtual pages to frames, and check the walk against that mapping: every mapped page
lands in its frame, every unmapped one raises the exception of the level where its
path ends.  The engine tests run hand-encoded guests with DAT on, whose trapped
instructions (STIDP, LCTLG, STCTG) take their operands through the guest's tables.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmd.cpu import arch, dat, libunicorn

MASK64 = (1 << 64) - 1
#: (index shift, exception of an invalid entry) from the region-first table down to the page table
LEVEL_SHIFT = {3: 53, 2: 42, 1: 31, 0: 20}
LEVEL_EXC = {3: dat.PGM_REGION_FIRST, 2: dat.PGM_REGION_SECOND, 1: dat.PGM_REGION_THIRD,
             0: dat.PGM_SEGMENT_TRANSLATION}


class Tables:
    """Translation tables in a sparse storage, built level by level as the PoP formats them:
    region entries = origin | TF | I | TT | TL, segment entries = page-table origin | P | I,
    page entries = frame | I | P."""

    def __init__(self, top: int, length: int = 3):
        self.storage: dict[int, int] = {}
        self.next_free = 0x100000
        self.top = top
        self.asce = self._table(top, length) | (top << 2) | length

    def _table(self, level: int, length: int = 3) -> int:
        """A new table of ``level`` (-1: page table), every entry invalid."""
        origin = self.next_free
        entries = 256 if level < 0 else 512 * (length + 1)
        invalid = dat.PAGE_INVALID if level < 0 else (dat.SEGMENT_INVALID if level == 0
                                                      else dat.REGION_INVALID | (level << 2))
        for i in range(entries):
            self.storage[origin + 8 * i] = invalid
        self.next_free += 0x1000 * (4 if level >= 0 else 1)
        return origin

    def fetch(self, address: int) -> int:
        if address not in self.storage:
            raise dat.TranslationError(dat.PGM_ADDRESSING)
        return self.storage[address]

    def map(self, vaddr: int, frame: int, protect: bool = False) -> None:
        origin = self.asce & dat.REGION_ORIGIN
        for level in range(self.top, 0, -1):
            slot = origin + ((vaddr >> LEVEL_SHIFT[level]) & 0x7FF) * 8
            entry = self.storage[slot]
            if entry & dat.REGION_INVALID:
                entry = self._table(level - 1) | (level << 2) | 3  # TF 0, TL 3: a full table
                self.storage[slot] = entry
            origin = entry & dat.REGION_ORIGIN
        slot = origin + ((vaddr >> 20) & 0x7FF) * 8
        entry = self.storage[slot]
        if entry & dat.SEGMENT_INVALID:
            entry = self._table(-1)
            self.storage[slot] = entry
        page_table = entry & dat.SEGMENT_ORIGIN
        self.storage[page_table + ((vaddr >> 12) & 0xFF) * 8] = frame | (dat.PAGE_PROTECT if protect else 0)

    def expected_fault(self, vaddr: int) -> int:
        """The exception the PoP gives for an unmapped address: the level whose entry is invalid."""
        origin = self.asce & dat.REGION_ORIGIN
        for level in range(self.top, -1, -1):
            entry = self.storage[origin + ((vaddr >> LEVEL_SHIFT[level]) & 0x7FF) * 8]
            invalid = dat.REGION_INVALID if level else dat.SEGMENT_INVALID
            if entry & invalid:
                return LEVEL_EXC[level]
            origin = entry & (dat.REGION_ORIGIN if level else dat.SEGMENT_ORIGIN)
        return dat.PGM_PAGE_TRANSLATION


def reach(top: int) -> int:
    """Bits of virtual address a table of type ``top`` covers."""
    return 64 if top == 3 else LEVEL_SHIFT[top] + 11


pages = st.integers(min_value=0, max_value=(1 << 52) - 1)


@settings(max_examples=60, deadline=None)
@given(top=st.integers(0, 3), data=st.data())
def test_walk_lands_every_mapped_page_in_its_frame(top, data):
    tables = Tables(top)
    limit = (1 << (reach(top) - 12)) - 1
    mapping = data.draw(st.dictionaries(st.integers(0, limit), st.tuples(st.integers(0, (1 << 40) - 1),
                                                                         st.booleans()),
                                        min_size=1, max_size=12))
    for page, (frame, protect) in mapping.items():
        tables.map(page << 12, frame << 12, protect)
    for page, (frame, protect) in mapping.items():
        offset = data.draw(st.integers(0, 0xFFF))
        result = dat.walk((page << 12) | offset, tables.asce, tables.fetch)
        assert result == dat.Translation((frame << 12) | offset, protect)
    probe = data.draw(st.integers(0, limit).filter(lambda p: p not in mapping))
    with pytest.raises(dat.TranslationError) as err:
        dat.walk(probe << 12, tables.asce, tables.fetch)
    assert err.value.code == tables.expected_fault(probe << 12)


@settings(max_examples=40, deadline=None)
@given(top=st.integers(0, 2), high=st.integers(1, (1 << 11) - 1), low=st.integers(0, (1 << 20) - 1))
def test_address_beyond_the_first_table_is_an_asce_type_exception(top, high, low):
    tables = Tables(top)
    vaddr = ((high << reach(top)) | (low << 12)) & MASK64
    with pytest.raises(dat.TranslationError) as err:
        dat.walk(vaddr, tables.asce, tables.fetch)
    assert err.value.code == dat.PGM_ASCE_TYPE


@settings(max_examples=40, deadline=None)
@given(top=st.integers(0, 3), length=st.integers(0, 2), block=st.integers(0, 3))
def test_asce_table_length_bounds_the_first_index(top, length, block):
    tables = Tables(top, length)
    vaddr = (block << 9) << LEVEL_SHIFT[top]
    if block > length:
        with pytest.raises(dat.TranslationError) as err:
            dat.walk(vaddr, tables.asce, tables.fetch)
        assert err.value.code == LEVEL_EXC[top]
    else:
        tables.map(vaddr, 0x5000)
        assert dat.walk(vaddr, tables.asce, tables.fetch).real == 0x5000


def test_entry_of_the_wrong_type_is_a_translation_specification():
    tables = Tables(2)
    tables.map(0x1234_5000, 0x7000)
    slot = tables.asce & dat.REGION_ORIGIN
    tables.storage[slot] = (tables.storage[slot] & ~dat.REGION_TYPE) | (3 << 2)  # claims region-first
    with pytest.raises(dat.TranslationError) as err:
        dat.walk(0x1234_5000, tables.asce, tables.fetch)
    assert err.value.code == dat.PGM_TRANSLATION_SPECIFICATION


def test_page_entry_bit_52_is_a_translation_specification():
    tables = Tables(0)
    tables.map(0x3000, 0x9000)
    page_table = tables.storage[tables.asce & dat.REGION_ORIGIN] & dat.SEGMENT_ORIGIN
    tables.storage[page_table + 3 * 8] |= dat.PAGE_ZERO
    with pytest.raises(dat.TranslationError) as err:
        dat.walk(0x3000, tables.asce, tables.fetch)
    assert err.value.code == dat.PGM_TRANSLATION_SPECIFICATION


def test_region_table_offset_and_length_bound_the_next_index():
    tables = Tables(1)
    tables.map(1 << 29, 0xA000)  # the segment index's leftmost two bits (vaddr bits 33-34) are 01
    slot = tables.asce & dat.REGION_ORIGIN
    tables.storage[slot] = (tables.storage[slot] & ~(dat.REGION_OFFSET | dat.REGION_LENGTH)) | (2 << 6) | 3
    with pytest.raises(dat.TranslationError) as err:  # the segment table now starts at block 2
        dat.walk(1 << 29, tables.asce, tables.fetch)
    assert err.value.code == dat.PGM_SEGMENT_TRANSLATION


def test_edat_large_frames():
    tables = Tables(1)
    tables.map(0x8000_0000, 0x1000)
    region3 = tables.storage[(tables.asce & dat.REGION_ORIGIN) + 8]
    segment_table = region3 & dat.REGION_ORIGIN
    tables.storage[segment_table + 5 * 8] = 0x4070_0000 | dat.SEGMENT_FORMAT
    vaddr = 0x8000_0000 + (5 << 20) + 0x12345
    assert dat.walk(vaddr, tables.asce, tables.fetch, edat1=True).real == 0x4070_0000 + 0x12345
    with pytest.raises(dat.TranslationError):  # without EDAT-1 the entry designates a page table
        dat.walk(vaddr, tables.asce, tables.fetch)
    tables.storage[(tables.asce & dat.REGION_ORIGIN) + 8 * 3] = (0x1_8000_0000 | dat.REGION3_FORMAT
                                                               | (1 << 2))
    vaddr = 3 << 31 | 0x7654_3210
    assert dat.walk(vaddr, tables.asce, tables.fetch, edat1=True, edat2=True).real == 0x1_8000_0000 | 0x7654_3210


def test_real_space_asce_translates_to_itself():
    assert dat.walk(0x1234_5678_9ABC, dat.ASCE_REAL_SPACE, lambda a: 0).real == 0x1234_5678_9ABC


def test_context_picks_the_space_and_builds_the_tec():
    tables = Tables(0)
    tables.map(0x5000, 0x6000, protect=True)
    cr = [0] * 16
    cr[13] = tables.asce
    ctx = dat.Context(True, dat.ASC_HOME, tuple(cr))
    assert dat.translate(ctx, 0x5123, tables.fetch) == 0x6123
    with pytest.raises(dat.TranslationError) as err:
        dat.translate(ctx, 0x5123, tables.fetch, store=True)
    assert (err.value.code, err.value.tec) == (dat.PGM_PROTECTION, 0x5000 | dat.TEC_STORE
                                               | dat.TEC_DAT_PROTECTION | dat.ASC_HOME)
    with pytest.raises(dat.TranslationError) as err:
        dat.translate(ctx, 0x7FF0, tables.fetch)
    assert (err.value.code, err.value.tec) == (dat.PGM_PAGE_TRANSLATION, 0x7000 | dat.TEC_FETCH | dat.ASC_HOME)
    # the primary space has no tables: an ASCE of 0 designates a segment table at 0
    cr[0] = 1 << 28  # low-address protection
    ctx = dat.Context(True, dat.ASC_PRIMARY, tuple(cr))
    with pytest.raises(dat.TranslationError) as err:
        dat.translate(ctx, 0x100, tables.fetch, store=True)
    assert (err.value.code, err.value.tec) == (dat.PGM_PROTECTION, dat.TEC_STORE | dat.TEC_LOW_ADDRESS)
    assert dat.translate(dat.Context(False, 0, tuple(cr)), 0x200, tables.fetch, store=True) == 0x200


# -- the operands of emulated instructions under DAT (the engine) -------------------------------------
needs_engine = pytest.mark.skipif(not libunicorn.is_patched(),
                                  reason="the patched libunicorn is not built (scripts/build-libunicorn)")

PSW_DAT_HOME = arch.PSW_64BIT | arch.PSW_DAT | arch.PSW_ASC  # DAT on, home space
CODE = 0x10000
WAIT_PSW_AT = 0x9000
SEGMENT_TABLE = 0x20000
PAGE_TABLE = 0x28000
STIDP_R2 = "b2022000"    # stidp 0(%r2)
LCTLG_R2 = "eb99200000 2f".replace(" ", "")  # lctlg %c9,%c9,0(%r2)
STCTG_R2 = "eb99200000 25".replace(" ", "")  # stctg %c9,%c9,0(%r2)
LPSWE_WAIT = "b2b26000"  # lpswe 0(%r6)


@pytest.fixture
def machine():
    from vmd.cpu.unicorn_engine import UnicornEngine
    from vmd.cpu.vcpu import MachineHooks, Vcpu
    from vmd.machine.execution import DEFAULT_FACILITIES
    from vmd.machine.memory import GuestMemory

    memory = GuestMemory(4 << 20)
    engine = UnicornEngine(memory)
    hooks = MachineHooks(service_call=lambda *a: 0, disabled_wait=lambda *a: None, stop_all=lambda *a: None)
    regs = engine.add_cpu()
    cpu = Vcpu(0, regs, memory, hooks, facilities=DEFAULT_FACILITIES)
    regs.on_trap = cpu.on_trap
    cpu.reset()
    cpu.operating = True
    # the home space: the first MiB maps to itself (code, lowcore), virtual 0x100000 + n pages to
    # frames 0x300000 + n (a different place), the rest is invalid
    page_table = b"".join(struct.pack(">Q", n << 12) for n in range(256))
    memory.write(PAGE_TABLE, page_table)
    memory.write(PAGE_TABLE + 0x800, b"".join(struct.pack(">Q", 0x300000 + (n << 12)) for n in range(4))
                 + b"".join(struct.pack(">Q", dat.PAGE_INVALID) for n in range(252)))
    memory.write(SEGMENT_TABLE, struct.pack(">QQ", PAGE_TABLE, PAGE_TABLE + 0x800)
                 + struct.pack(">Q", dat.SEGMENT_INVALID) * 2046)
    cpu.engine.set_cr(13, SEGMENT_TABLE | 3)  # segment-table designation, length 4 blocks
    memory.write(WAIT_PSW_AT, struct.pack(">QQ", PSW_DAT_HOME | arch.PSW_WAIT | arch.PSW_EXT, 0))
    memory.write(arch.LC_PGM_NEW_PSW, struct.pack(">QQ", arch.PSW_64BIT | arch.PSW_WAIT | arch.PSW_EXT, 0xDEAD))
    yield cpu
    engine.close()


def _run(cpu, code_hex: str, **regs: int) -> None:
    cpu.memory.write(CODE, bytes.fromhex(code_hex + LPSWE_WAIT))
    for name, value in regs.items():
        cpu.engine.set_gpr(int(name[1:]), value)
    cpu.engine.set_gpr(6, WAIT_PSW_AT)
    cpu.load_psw(PSW_DAT_HOME, CODE)
    for _ in range(20):
        cpu.engine.run(2_000_000)
        if cpu.waiting:
            return
    raise AssertionError(f"no wait reached: {cpu.psw()}")


@needs_engine
def test_stidp_stores_through_the_page_tables(machine):
    cpu = machine
    _run(cpu, STIDP_R2, r2=0x101008)
    assert cpu.psw()[1] == 0  # the wait PSW's address: no program interruption
    assert cpu.memory.u64(0x301008) == cpu.cpu_id
    assert cpu.memory.u64(0x101008) == 0


@needs_engine
def test_lctlg_and_stctg_operands_are_virtual(machine):
    cpu = machine
    cpu.memory.put_u64(0x302010, 0x1122_3344_5566_7788)
    _run(cpu, LCTLG_R2, r2=0x102010)
    assert cpu.engine.cr(9) == 0x1122_3344_5566_7788
    _run(cpu, STCTG_R2, r2=0x103018)
    assert cpu.memory.u64(0x303018) == 0x1122_3344_5566_7788


@needs_engine
def test_unmapped_operand_is_a_page_translation_exception_with_its_tec(machine):
    cpu = machine
    _run(cpu, STIDP_R2, r2=0x105008)
    assert cpu.psw()[1] == 0xDEAD
    assert struct.unpack(">HH", cpu.memory.read(arch.LC_PGM_ILC, 4)) == (4, dat.PGM_PAGE_TRANSLATION)
    assert cpu.memory.u64(arch.LC_PGM_OLD_PSW + 8) == CODE  # nullified: the old PSW names the STIDP
    assert cpu.memory.u64(0xA8) == 0x105000 | dat.TEC_STORE | dat.ASC_HOME


# -- the DAT instructions a kernel issues (as QEMU 7.2 carries them out) -------------------------------
LG_R7 = "e37020000004"   # lg %r7,0(%r2): a guest load, translated by the engine (its TLB)
LG_R8 = "e38020000004"   # lg %r8,0(%r2)
IPTE = "b2210045"        # ipte %r4,%r5
IDTE = "b98e0045"        # idte %r4,%r0,%r5
CSPG = "b98a0041"        # cspg %r4,%r1: compare R4, swap in R5, the operand at R1
LRA = "b1402000"         # lra %r4,0(%r2)
LRAG = "e34020000003"    # lrag %r4,0(%r2)
STURG = "b9250054"       # sturg %r5,%r4
LURAG = "b9050074"       # lurag %r7,%r4
IPM_R9 = "b2220090"      # ipm %r9: the condition code into bits 34-35


def _pgm(cpu) -> tuple[int, int]:
    """(program-interruption code, old PSW address) of the last program interruption."""
    return cpu.memory.read(arch.LC_PGM_ILC + 2, 2)[1], cpu.memory.u64(arch.LC_PGM_OLD_PSW + 8)


@needs_engine
def test_ipte_invalidates_the_entry_and_purges_the_engine_tlb(machine):
    cpu = machine
    cpu.memory.put_u64(0x301008, 0xFEED)
    _run(cpu, LG_R7 + IPTE + LG_R8, r2=0x101008, r4=PAGE_TABLE + 0x800, r5=0x101000, r8=0)
    assert cpu.engine.gpr(7) == 0xFEED                          # mapped before
    assert cpu.memory.u64(PAGE_TABLE + 0x808) == 0x301000 | dat.PAGE_INVALID
    assert cpu.psw()[1] == 0xDEAD and _pgm(cpu) == (dat.PGM_PAGE_TRANSLATION, CODE + 10)
    assert cpu.engine.gpr(8) == 0                               # the second load did not run


@needs_engine
def test_idte_invalidates_segment_entries(machine):
    cpu = machine
    # segment index 1 (virtual 0x100000), one entry (R2 bits 53-63 = 0)
    _run(cpu, LG_R7 + IDTE + LG_R8, r2=0x101008, r4=SEGMENT_TABLE | 3, r5=0x100000)
    assert cpu.memory.u64(SEGMENT_TABLE + 8) == PAGE_TABLE + 0x800 | dat.SEGMENT_INVALID
    assert cpu.memory.u64(SEGMENT_TABLE) == PAGE_TABLE                 # its neighbour stays
    assert cpu.psw()[1] == 0xDEAD and _pgm(cpu) == (dat.PGM_SEGMENT_TRANSLATION, CODE + 10)


@needs_engine
def test_cspg_swaps_and_purges(machine):
    cpu = machine
    entry = PAGE_TABLE + 0x808                                  # the PTE of virtual 0x101000
    # equal: the entry R1 designates gets R5; R1's rightmost bit asks for the purge, so the
    # engine's translation of the page is gone
    _run(cpu, LG_R7 + CSPG + LG_R8, r2=0x101008, r4=0x301000, r5=0x301000 | dat.PAGE_INVALID,
         r1=entry | 1, r8=0)
    assert cpu.memory.u64(entry) == 0x301000 | dat.PAGE_INVALID
    assert _pgm(cpu) == (dat.PGM_PAGE_TRANSLATION, CODE + 10) and cpu.engine.gpr(8) == 0


@needs_engine
def test_cspg_compares(machine):
    cpu = machine
    entry = PAGE_TABLE + 0x808
    cpu.memory.put_u64(entry, 0x301000)
    # unequal: cc 1, R4 gets the entry, storage unchanged
    cpu.engine.set_gpr(5, 0x12345)
    _run(cpu, CSPG + IPM_R9, r4=0x999000, r1=entry)
    assert cpu.psw()[1] == 0
    assert cpu.engine.gpr(4) == 0x301000 and (cpu.engine.gpr(9) >> 28) & 3 == 1
    assert cpu.memory.u64(entry) == 0x301000
    # equal, no purge bit: cc 0, R5 stored
    _run(cpu, CSPG + IPM_R9, r4=0x301000, r5=0x302000, r1=entry)
    assert cpu.memory.u64(entry) == 0x302000 and (cpu.engine.gpr(9) >> 28) & 3 == 0
    # an odd R1 is a specification exception
    _run(cpu, "b98a0051", r1=entry)
    assert _pgm(cpu) == (arch.PGM_SPECIFICATION, CODE + 4)


@needs_engine
def test_lra_translates_or_reports_the_exception(machine):
    cpu = machine
    _run(cpu, LRAG + IPM_R9, r2=0x102345)
    assert cpu.engine.gpr(4) == 0x302345 and (cpu.engine.gpr(9) >> 28) & 3 == 0
    _run(cpu, LRA + IPM_R9, r2=0x105000)              # invalid page: cc 3, the code in R1
    assert cpu.psw()[1] == 0
    assert cpu.engine.gpr(4) == 0x80000000 | dat.PGM_PAGE_TRANSLATION and (cpu.engine.gpr(9) >> 28) & 3 == 3
    assert cpu.memory.u64(0xA8) == 0                  # no exception: no TEC stored


@needs_engine
def test_sturg_and_lurag_use_real_addresses(machine):
    cpu = machine
    _run(cpu, STURG + LURAG, r4=0x101010, r5=0xABCD_EF01_2345_6789)
    assert cpu.memory.u64(0x101010) == 0xABCD_EF01_2345_6789      # real 0x101010, not the frame
    assert cpu.memory.u64(0x301010) == 0
    assert cpu.engine.gpr(7) == 0xABCD_EF01_2345_6789
    _run(cpu, STURG, r4=0x101014)                                  # not on a doubleword
    assert _pgm(cpu) == (arch.PGM_SPECIFICATION, CODE + 4)


@needs_engine
def test_vmd_stores_drop_code_that_runs_under_another_address(machine):
    """vmd's own stores (here: a loader's) invalidate translated code by absolute address: the
    frame at 0x300000 runs as virtual 0x100000."""
    cpu = machine
    for imm in (1, 7):
        cpu.memory.write(0x300000, bytes.fromhex("a729") + struct.pack(">H", imm) + bytes.fromhex(LPSWE_WAIT))
        cpu.engine.set_gpr(6, WAIT_PSW_AT)
        cpu.load_psw(PSW_DAT_HOME, 0x100000)
        cpu.engine.run(2_000_000)
        assert cpu.waiting and cpu.engine.gpr(2) == imm
    assert cpu.memory.u64(0xA8) == 0


@needs_engine
def test_dat_off_operands_read_no_control_register(machine):
    """With DAT off an emulated instruction's operand costs what it did before DAT: no control
    register is read for it, and the PSW is read once per trap (with the interruption codes)."""
    cpu = machine
    reads = {"cr": 0, "psw": 0}
    engine = cpu.engine
    real = {name: getattr(engine, name) for name in ("cr", "psw", "trap_state")}

    def counting(name, kind):
        def read(*args):
            reads[kind] += 1
            return real[name](*args)
        return read
    engine.cr, engine.psw, engine.trap_state = (counting("cr", "cr"), counting("psw", "psw"),
                                                counting("trap_state", "psw"))
    try:
        cpu.memory.write(CODE, bytes.fromhex(STIDP_R2 * 8 + STCTG_R2 + LPSWE_WAIT))
        for n, value in {2: 0x8000, 6: WAIT_PSW_AT}.items():
            engine.set_gpr(n, value)
        cpu.memory.write(WAIT_PSW_AT, struct.pack(">QQ", arch.PSW_64BIT | arch.PSW_WAIT | arch.PSW_EXT, 0))
        cpu.load_psw(arch.PSW_64BIT, CODE)
        reads.update(cr=0, psw=0)
        engine.run(2_000_000)
    finally:
        for name, method in real.items():
            setattr(engine, name, method)
    assert cpu.waiting and cpu.memory.u64(0x8000) == engine.cr(9)
    assert reads == {"cr": 1, "psw": 10}   # STCTG's CR9 itself; 10 traps


MVCOS = "c85020004000"   # mvcos 0(%r2),0(%r4),%r5
OAC1_PRIMARY = 0x0001 << 16   # R0: operand 1 in the primary space (AS 00, A valid)


@pytest.fixture
def primary_space(machine):
    """The primary space (CR1) maps virtual 0x100000 + n pages to frames 0x380000 + n (n < 2);
    the home space maps them to 0x300000 + n."""
    segment_table, page_table = 0x40000, 0x48000
    machine.memory.write(page_table, struct.pack(">QQ", 0x380000, 0x381000)
                         + struct.pack(">Q", dat.PAGE_INVALID) * 254)
    machine.memory.write(segment_table, struct.pack(">Q", dat.SEGMENT_INVALID) * 2048)
    machine.memory.put_u64(segment_table + 8, page_table)
    machine.engine.set_cr(1, segment_table | 3)
    return machine


@needs_engine
def test_mvcos_moves_from_the_home_space_to_the_primary(primary_space):
    """The kernel's copy_to_user: operand 1 in the primary (user) space, operand 2 in the PSW's
    (home) space, the length in R3; across a page boundary of each."""
    cpu = primary_space
    data = bytes(range(64))
    cpu.memory.write(0x300FE0, data)
    _run(cpu, MVCOS + IPM_R9, r0=OAC1_PRIMARY, r2=0x100FF0, r4=0x100FE0, r5=len(data))
    assert cpu.psw()[1] == 0 and (cpu.engine.gpr(9) >> 28) & 3 == 0
    assert cpu.memory.read(0x380FF0, 16) + cpu.memory.read(0x381000, 48) == data
    assert cpu.memory.read(0x300FF0, 16) == data[16:32]          # the home space's frame unchanged


@needs_engine
def test_mvcos_moves_at_most_4096_bytes(primary_space):
    cpu = primary_space
    cpu.memory.write(0x300000, b"\x5A" * 0x2000)
    _run(cpu, MVCOS + IPM_R9, r0=OAC1_PRIMARY, r2=0x100000, r4=0x100000, r5=5000)
    assert (cpu.engine.gpr(9) >> 28) & 3 == 3
    assert cpu.memory.read(0x380000, 4097) == b"\x5A" * 4096 + b"\0"


@needs_engine
def test_mvcos_page_fault_names_the_space_and_stores_nothing(primary_space):
    """A user page not mapped yet: a page-translation exception whose TEC names the primary
    space, the MVCOS nullified (the kernel maps the page and runs it again), nothing stored."""
    cpu = primary_space
    cpu.memory.write(0x300FF0, b"\x77" * 0x20)
    _run(cpu, MVCOS, r0=OAC1_PRIMARY, r2=0x101FF0, r4=0x100FF0, r5=0x20)
    assert cpu.psw()[1] == 0xDEAD
    assert struct.unpack(">HH", cpu.memory.read(arch.LC_PGM_ILC, 4)) == (6, dat.PGM_PAGE_TRANSLATION)
    assert cpu.memory.u64(arch.LC_PGM_OLD_PSW + 8) == CODE
    assert cpu.memory.u64(0xA8) == 0x102000 | dat.TEC_STORE | dat.ASC_PRIMARY
    assert cpu.memory.read(0x381FF0, 16) == bytes(16)
