"""Architected CPUs on top of the engine: PSW handling, interruptions, trapped instructions.

Theory of operation.  The engine always runs the guest in problem state; the
guest's own problem-state bit lives in :attr:`Vcpu.problem_state`.  A
privileged instruction therefore traps (program exception 0x02); when the
guest is in supervisor state, :meth:`Vcpu.on_trap` emulates it through
:data:`INSTRUCTIONS` (a table keyed by opcode) and resumes after it.  Every
other exception is delivered to the guest as the architected program
interruption: old PSW and code into the lowcore, new PSW loaded.

Interruptions from the outside (service signal, clock comparator, CPU timer,
I/O) are queued on the CPU and delivered between engine slices, when the PSW
and control registers enable them.  A wait PSW parks the CPU; an enabled wait
resumes on the next deliverable interruption, a disabled wait ends the
machine once no other CPU runs (QEMU's rules: address ...fff is a clean
shutdown, anything else a guest panic).  Delivery follows QEMU's order and
chains while interruptions stay deliverable: the floating channel-report
machine check, external (emergency signal, external call, clock comparator,
CPU timer, service signal), I/O, restart, and last the stop that SIGP asked
for.

Several CPUs.  Every Vcpu of a machine shares one engine instance; its
:class:`~vmd.cpu.unicorn_engine.CpuEngine` reads and writes its registers
whether it is the CPU the instance runs or not, so one CPU's handler may act
on another (SIGP, :mod:`vmd.cpu.sigp`).  A CPU is *operating* or *stopped*
(:attr:`Vcpu.operating`); an operating CPU with a wait PSW is *waiting*.

Storage operands are logical addresses: with DAT on in the PSW they are translated
through the guest's tables (:mod:`vmd.cpu.dat`, with the architected access exceptions
and their translation-exception identification), then prefixed with the CPU's prefix.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from vmd.cpu import arch, dat
from vmd.cpu.arch import PSW_PROBLEM
from vmd.cpu.unicorn_engine import INTNO_PGM, INTNO_SVC
from vmd.machine.memory import AddressingError, GuestMemory

log = logging.getLogger("vmd.cpu")

MASK64 = (1 << 64) - 1
PSW_ENABLED = arch.PSW_IO | arch.PSW_EXT | arch.PSW_MCHK
#: runtime-instrumentation bit of the PSW mask (bit 24), cleared by a CPU reset
PSW_RI = arch.bit64(24)
#: how many interruptions one delivery chain may take (each new PSW may enable the next)
MAX_CHAIN = 16
#: QEMU's order among pending external interruptions (do_ext_interrupt)
EXT_PRIORITY = {
    arch.EXT_EMERGENCY_SIGNAL: 0,
    arch.EXT_EXTERNAL_CALL: 1,
    arch.EXT_CLOCK_COMPARATOR: 2,
    arch.EXT_CPU_TIMER: 3,
    arch.EXT_SERVICE_SIGNAL: 4,
}
#: external interruptions that store only the CPU address and code (the parameter word is kept)
CPU_LOCAL_EXT = frozenset({arch.EXT_EMERGENCY_SIGNAL, arch.EXT_EXTERNAL_CALL, arch.EXT_CLOCK_COMPARATOR,
                           arch.EXT_CPU_TIMER})
SUBCLASS_MASK = {
    arch.EXT_SERVICE_SIGNAL: arch.CR0_SERVICE_SIGNAL,
    arch.EXT_CLOCK_COMPARATOR: arch.CR0_CLOCK_COMPARATOR,
    arch.EXT_CPU_TIMER: arch.CR0_CPU_TIMER,
    arch.EXT_EXTERNAL_CALL: arch.CR0_EXTERNAL_CALL,
    arch.EXT_EMERGENCY_SIGNAL: arch.CR0_EMERGENCY_SIGNAL,
}
#: control registers after an initial CPU reset (PoP "Initial CPU Reset")
INITIAL_CR = {0: 0xE0, 14: 0xC2000000}

# == machine checks: interruption code (PoP "Machine-Check Interruption Code") ==================
MCIC_CHANNEL_REPORT = arch.bit64(9)  # subclass: channel report pending
#: the validity bits QEMU sets (s390_build_validity_mcic): PSW-MWP, masks, program mask, instruction
#: address, floating-point, general and control registers, CPU timer, access registers, prefix,
#: FPC, clock comparator, TOD programmable register
MCIC_VALIDITY = (arch.bit64(20) | arch.bit64(21) | arch.bit64(22) | arch.bit64(23) | arch.bit64(27)
                 | arch.bit64(28) | arch.bit64(29) | arch.bit64(31) | arch.bit64(33) | arch.bit64(42)
                 | arch.bit64(43) | arch.bit64(46) | arch.bit64(47))
MCIC_VALID_VECTORS = arch.bit64(25)
MCIC_VALID_GUARDED_STORAGE = arch.bit64(36)
FACILITY_VECTOR = 129
FACILITY_EDAT1 = 8
FACILITY_EDAT2 = 78
#: CR0 bit 40: enhanced-DAT control
CR0_EDAT = arch.bit64(40)
#: control register holding the ASCE of each address-space control (access-register mode: CR1)
ASCE_OF_SPACE = {dat.ASC_PRIMARY: 1, dat.ASC_ACCESS_REGISTER: 1, dat.ASC_SECONDARY: 7, dat.ASC_HOME: 13}
#: the translation-exception identification in the lowcore (real 168)
LC_TRANS_EXC_CODE = 0xA8
#: CR0 bit 37: the secondary-space control
CR0_SECONDARY_SPACE = arch.bit64(37)
#: the most bytes one MOVE WITH OPTIONAL SPECIFICATIONS moves
MVCOS_MAX = 4096
#: SET INTERRUPTION CONTROLS modes
SIC_MODE_ALL = 0
SIC_MODE_SINGLE = 1
#: MONITOR CALL: the program-interruption code, and where the class and code go in the lowcore
PGM_MONITOR_EVENT = 0x40
LC_MONITOR_CLASS = 0x94
LC_MONITOR_CODE = 0xB0
#: low-address protection covers real 0-511 and 4096-4607: stores from here on never meet it
LOW_ADDRESS_END = 4608
#: translations vmd keeps per CPU for its own operand accesses (cleared when full)
TLB_ENTRIES = 4096
FACILITY_GUARDED_STORAGE = 133
#: the machine-check extended save area designation in the lowcore, and the area's size
LC_MCESAD = 0x11B0
EXTENDED_SAVE_SIZE = 1024


def _facility(facilities: bytes, bit: int) -> bool:
    return len(facilities) > bit // 8 and bool(facilities[bit // 8] & (0x80 >> (bit % 8)))
# == end of machine checks ========================================================================


class ProgramInterruption(Exception):
    """Raised by an emulated instruction: deliver this program interruption code."""

    def __init__(self, code: int):
        super().__init__(f"program interruption 0x{code:02x}")
        self.code = code


@dataclass
class MachineHooks:
    """What a CPU asks of the machine, from the CPU thread (implementations hop to the loop)."""

    service_call: Callable[["Vcpu", int, int], int]  # (cpu, command, sccb) -> cc, or raises
    disabled_wait: Callable[["Vcpu", int, int], None]  # (cpu, mask, addr)
    stop_all: Callable[["Vcpu"], None]  # every CPU stopped: QEMU shuts the machine down
    diagnose: Callable[["Vcpu", int, int, int], int] | None = None  # (cpu, code, r1, r3) -> cc
    stsi: Callable[["Vcpu", int, int, int, int], int] | None = None
    #: every CPU of the machine, indexed by CPU address (SIGP's targets)
    cpus: list["Vcpu"] = field(default_factory=list)


@dataclass
class PendingExternal:
    code: int
    param: int = 0
    cpu_address: int = 0


@dataclass
class Vcpu:
    address: int
    engine: object
    memory: GuestMemory
    hooks: MachineHooks
    cpu_id: int = 0xFF00000000000000
    prefix: int = 0
    problem_state: bool = False
    operating: bool = False
    waiting: bool = False
    clock_comparator: int = MASK64
    cpu_timer_deadline: float | None = None  # host monotonic seconds
    todpr: int = 0
    external: list[PendingExternal] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    facilities: bytes = bytes(8)
    #: storage keys by 4 KiB frame (the engine itself does not check keys)
    storage_keys: dict[int, int] = field(default_factory=dict)
    #: the channel subsystem's I/O side (vmd.machine.channel.ChannelSubsystemIO), when there is one
    io: object = None
    #: the machine's floating channel-report machine check (vmd.cpu.chsc.MachineCheckLine), if any
    machine_checks: object = None
    #: a SIGP restart waits for delivery (QEMU's INTERRUPT_RESTART)
    restart_pending: bool = False
    #: SIGP stop (0x05) or stop-and-store-status (0x09) under way, QEMU's sigp_order: until the
    #: CPU has stopped, every other order but the resets finds it busy
    stop_order: int = 0
    instructions: int = 0
    traps: int = 0
    #: while a trapped instruction is emulated: the PSW mask it found, its addressing-mode mask,
    #: and its DAT context once an operand access needed one (None otherwise)
    _trap_mask: int | None = None
    _trap_amode: int | None = None
    _trap_ctx: dat.Context | None = None
    #: the last DAT context built, with what it was built from
    _ctx_cache: tuple | None = None
    #: vmd's own translations for operand accesses: (space, ASCE, page, store) -> real frame;
    #: purged with the engine's TLB (LCTL, PTLB, IPTE, IDTE, CSP, SPX, a CPU switch of tables)
    tlb: dict = field(default_factory=dict)
    #: LOAD PROGRAM PARAMETER's register
    program_parameter: int = 0

    # -- PSW ----------------------------------------------------------------------------
    def psw(self) -> tuple[int, int]:
        """The guest's PSW: the engine's, with the guest's own problem-state bit."""
        mask, addr = self.engine.psw()
        mask &= ~PSW_PROBLEM
        if self.problem_state:
            mask |= PSW_PROBLEM
        return mask, addr

    def load_psw(self, mask: int, addr: int) -> None:
        self._trap_mask = self._trap_ctx = None  # later accesses see the new PSW
        self.problem_state = bool(mask & PSW_PROBLEM)
        self.engine.set_psw(mask | PSW_PROBLEM, addr)
        self.waiting = bool(mask & arch.PSW_WAIT)
        if self.waiting:
            self.engine.stop()
            if not mask & PSW_ENABLED:
                self.hooks.disabled_wait(self, mask, addr)

    def running(self) -> bool:
        """Operating and not in a disabled wait: the CPUs QEMU counts before it ends the machine."""
        if not self.operating:
            return False
        return not self.waiting or bool(self.engine.psw()[0] & PSW_ENABLED)

    def enter_stopped(self, last_ends_machine: bool = True) -> None:
        """Into the stopped state; when no CPU runs any more, the machine shuts down (QEMU's
        do_stop_interrupt asks for SHUTDOWN guest-shutdown)."""
        self.operating = False
        self.engine.stop()
        if last_ends_machine and not any(cpu.running() for cpu in (self.hooks.cpus or [self])):
            self.hooks.stop_all(self)

    def set_prefix(self, value: int) -> None:
        """The prefix register: the engine's, for guest accesses, and ours, for vmd's lowcore accesses."""
        self.prefix = value
        self.engine.set_prefix(value)

    def addressing_mask(self) -> int:
        if self._trap_amode is not None:  # fixed while one trapped instruction is emulated
            return self._trap_amode
        mask, _ = self.engine.psw()
        if mask & arch.PSW_EA:
            return MASK64
        return 0x7FFFFFFF if mask & arch.PSW_BA else 0xFFFFFF

    def reset(self, initial: bool = True, keep_floating: bool = False) -> None:
        """Initial CPU reset (IPL, system_reset, SIGP initial CPU reset), or with ``initial``
        false the CPU reset (SIGP CPU reset).

        Both leave the CPU stopped, end a SIGP stop under way and drop the CPU's pending
        interruptions (with ``keep_floating`` the service signal stays: QEMU keeps it outside the
        CPU).  The initial reset also sets the PSW, prefix, control registers, floating-point
        control, clock comparator, CPU timer and TOD programmable register to their initial
        values; general, floating-point and access registers are kept (QEMU's s390_cpu_reset).
        """
        with self.lock:
            self.external = [p for p in self.external
                             if keep_floating and p.code == arch.EXT_SERVICE_SIGNAL]
        self.restart_pending = False
        self.stop_order = 0
        self.operating = False
        if not initial:
            mask, addr = self.engine.psw()
            self.engine.set_psw(mask & ~PSW_RI, addr)
            return
        self.waiting = False
        self.problem_state = False
        self.set_prefix(0)
        self.clock_comparator = MASK64
        self.cpu_timer_deadline = None
        self.todpr = 0
        for n in range(16):
            self.engine.set_cr(n, INITIAL_CR.get(n, 0))
        self.engine.set_fpc(0)
        self.engine.set_psw(PSW_PROBLEM, 0)
        self.purge_tlb()

    # -- storage --------------------------------------------------------------------------
    def absolute(self, real: int) -> int:
        """Prefixing: real page 0-1 and the prefix area swap places."""
        if real < 0x2000:
            return real + self.prefix
        if self.prefix <= real < self.prefix + 0x2000:
            return real - self.prefix
        return real

    def _pieces(self, real: int, length: int) -> list[tuple[int, int, int]]:
        """(offset, absolute address, length) pieces of a real range, cut where prefixing swaps."""
        prefix = self.prefix
        if prefix == 0 or length <= 0:
            return [(0, real, length)]
        bounds = (0x2000, prefix, prefix + 0x2000)
        out, at, end = [], real, real + length
        while at < end:
            cut = min([b for b in bounds if b > at] + [end])
            out.append((at - real, self.absolute(at), cut - at))
            at = cut
        return out

    def _unprefixed(self, real: int, length: int) -> bool:
        """Whether prefixing leaves the whole real range where it is (the common case)."""
        prefix = self.prefix
        return prefix == 0 or (real >= 0x2000 and (real + length <= prefix or real >= prefix + 0x2000))

    def read_real(self, real: int, length: int) -> bytes:
        try:
            if self._unprefixed(real, length):
                return self.memory.read(real, length)
            return b"".join(self.memory.read(a, n) for _, a, n in self._pieces(real, length))
        except AddressingError:
            raise ProgramInterruption(arch.PGM_ADDRESSING) from None

    def write_real(self, real: int, data: bytes) -> None:
        try:
            if self._unprefixed(real, len(data)):
                self.memory.write(real, data)
                return
            pieces = self._pieces(real, len(data))
            for _, a, n in pieces:  # all or nothing: check every piece before writing any
                self.memory.check(a, n)
            for off, a, n in pieces:
                self.memory.write(a, data[off:off + n])
        except AddressingError:
            raise ProgramInterruption(arch.PGM_ADDRESSING) from None

    # -- logical addresses: DAT for the operands of emulated instructions ------------------------
    def _psw_mask(self) -> int:
        """The PSW mask operand accesses go by: the trapped instruction's, else the engine's."""
        mask = self._trap_mask
        return self.engine.psw()[0] if mask is None else mask

    def dat_context(self) -> dat.Context:
        """What a translation needs from this CPU now (PSW DAT and address-space control, CRs);
        computed once per trapped instruction."""
        ctx = self._trap_ctx
        if ctx is not None:
            return ctx
        mask = self._psw_mask()
        # the last context serves as long as the PSW's DAT and space bits and the control
        # registers (the engine counts their writes) stay the same
        key = (mask & (arch.PSW_DAT | arch.PSW_ASC), self.engine.cr_writes, self.facilities)
        cached = self._ctx_cache
        if cached is not None and cached[0] == key:
            ctx = cached[1]
        else:
            cr0 = self.engine.cr(0)
            edat1 = bool(cr0 & CR0_EDAT) and _facility(self.facilities, FACILITY_EDAT1)
            ctx = dat.Context(bool(mask & arch.PSW_DAT), (mask & arch.PSW_ASC) >> 46,
                              (cr0, self.engine.cr(1), 0, 0, 0, 0, 0, self.engine.cr(7), 0, 0, 0, 0, 0,
                               self.engine.cr(13)),
                              edat1, edat1 and _facility(self.facilities, FACILITY_EDAT2))
            self._ctx_cache = (key, ctx)
        if self._trap_mask is not None:
            self._trap_ctx = ctx
        return ctx

    def _table_entry(self, address: int) -> int:
        try:
            return self.memory.u64(address)
        except AddressingError:
            raise dat.TranslationError(arch.PGM_ADDRESSING) from None

    def translate(self, logical: int, store: bool = False, ctx: dat.Context | None = None,
                  asc: int | None = None, store_tec: bool = True) -> int:
        """The real address of a logical one; an access exception (with its TEC in the lowcore,
        unless ``store_tec`` is false) becomes the program interruption."""
        if ctx is None:
            ctx = self.dat_context()
        if not ctx.dat and not store:
            return logical
        key = (ctx.asc if asc is None else asc, ctx.cr[ASCE_OF_SPACE.get(ctx.asc if asc is None else asc, 1)],
               logical >> 12, store)
        if ctx.dat and not (store and dat.low_address(logical)):
            frame = self.tlb.get(key)
            if frame is not None:
                return frame | (logical & 0xFFF)
        try:
            real = dat.translate(ctx, logical, self._table_entry, store=store, asc=asc)
        except dat.TranslationError as exc:
            if exc.tec is not None and store_tec:
                self.lowcore_write(LC_TRANS_EXC_CODE, exc.tec.to_bytes(8, "big"))
            raise ProgramInterruption(exc.code) from None
        if ctx.dat:
            if len(self.tlb) > TLB_ENTRIES:
                self.tlb.clear()
            self.tlb[key] = real & ~0xFFF
        return real

    def _logical_pieces(self, logical: int, length: int, store: bool,
                        asc: int | None = None) -> list[tuple[int, int]]:
        """(real address, length) per page of a logical range; every page is translated (and
        checked) before any is accessed."""
        ctx = self.dat_context()
        mask = self.addressing_mask()
        out, at, left = [], logical, length
        while left > 0:
            n = min(left, 0x1000 - (at & 0xFFF))
            out.append((self.translate(at & mask, store, ctx, asc), n))
            at, left = (at + n) & mask, left - n
        return out

    def _real_span(self, logical: int, length: int, store: bool, asc: int | None = None) -> int | None:
        """The real address of a logical range that lies in one page (DAT on) or does not
        wrap (DAT off), so one translation covers it; None when the full path must decide."""
        amode = self.addressing_mask()
        at = logical & amode
        if not self._psw_mask() & arch.PSW_DAT:
            # DAT off: the logical address is the real one; stores that may meet low-address
            # protection take the full path
            return at if at + length - 1 <= amode and (not store or at >= LOW_ADDRESS_END) else None
        if (at & 0xFFF) + length <= 0x1000:
            return self.translate(at, store, asc=asc)
        return None

    def read(self, logical: int, length: int, asc: int | None = None) -> bytes:
        """An operand fetch at a logical address (translated when the PSW has DAT on, in the
        PSW's address space or in ``asc``)."""
        real = self._real_span(logical, length, False, asc)
        if real is not None:
            return self.read_real(real, length)
        pieces = self._logical_pieces(logical, length, False, asc)
        if len(pieces) == 1:
            return self.read_real(pieces[0][0], length)
        return b"".join(self.read_real(r, n) for r, n in pieces)

    def write(self, logical: int, data: bytes, asc: int | None = None) -> None:
        """An operand store at a logical address: translated, low-address and DAT protection."""
        real = self._real_span(logical, len(data), True, asc)
        if real is not None:  # one piece: write_real stores all or nothing
            self.write_real(real, data)
            return
        pieces = self._logical_pieces(logical, len(data), True, asc)
        for real, n in pieces:  # all or nothing: an addressing exception stores nothing
            for _, a, m in self._pieces(real, n):
                if a + m > self.memory.size:
                    raise ProgramInterruption(arch.PGM_ADDRESSING)
        off = 0
        for real, n in pieces:
            self.write_real(real, data[off:off + n])
            off += n

    def purge_tlb(self) -> None:
        """Drop this CPU's translations: the engine's TLB and vmd's own."""
        self.tlb.clear()
        self._trap_ctx = None  # control registers may have changed (LCTL)
        self.engine.flush_tlb()

    def lowcore_write(self, offset: int, data: bytes) -> None:
        self.memory.write(self.prefix + offset, data)

    def lowcore_u64(self, offset: int) -> int:
        return self.memory.u64(self.prefix + offset)

    # -- interruptions ---------------------------------------------------------------------
    def swap_psw(self, old_offset: int, new_offset: int, old_addr: int | None = None) -> None:
        mask, addr = self.psw()
        if old_addr is not None:
            addr = old_addr
        # the old PSW keeps the wait bit of a CPU interrupted in the wait state (as QEMU stores it)
        self.lowcore_write(old_offset, struct.pack(">QQ", mask, addr & MASK64))
        new_mask = self.lowcore_u64(new_offset)
        new_addr = self.lowcore_u64(new_offset + 8)
        self.waiting = False
        self.load_psw(new_mask, new_addr)

    def program_interruption(self, code: int, ilc: int, addr: int) -> None:
        """Deliver a program interruption for the instruction at ``addr``."""
        old = addr if code in arch.NULLIFYING else addr + ilc
        self.lowcore_write(arch.LC_PGM_ILC, struct.pack(">HH", ilc, code))
        self.swap_psw(arch.LC_PGM_OLD_PSW, arch.LC_PGM_NEW_PSW, old)

    def svc_interruption(self, number: int, ilc: int, addr: int) -> None:
        self.lowcore_write(arch.LC_SVC_ILC, struct.pack(">HH", ilc, number))
        self.swap_psw(arch.LC_SVC_OLD_PSW, arch.LC_SVC_NEW_PSW, addr + ilc)

    def queue_external(self, pending: PendingExternal) -> None:
        with self.lock:
            self.external.append(pending)
        self.kick()

    def kick(self) -> None:
        """Make the CPU look at its pending interruptions soon (any thread): the running slice
        ends and the runner wakes."""
        self.engine.kick()

    def recheck(self) -> None:
        """The PSW or CR0 changed under a trapped instruction (SSM, STOSM, LPSW, LCTL...): when an
        interruption became deliverable, leave the engine so that the runner delivers it now."""
        if self.restart_pending or self.stop_order:
            self.engine.stop()
            return
        queues = getattr(self.io, "pending", None)
        io_pending = bool(queues) and any(queues)
        machine_check = self.machine_checks is not None and self.machine_checks.pending
        if not self.external and not io_pending and not machine_check:
            return  # the common case: one attribute test, no register read
        mask = self.engine.psw()[0]
        if machine_check and self._machine_check_enabled(mask):
            self.engine.stop()
            return
        if mask & arch.PSW_EXT and self.external:
            cr0 = self.engine.cr(0)
            with self.lock:
                if any(self._subclass_enabled(p.code, cr0) for p in self.external):
                    self.engine.stop()
                    return
        if mask & arch.PSW_IO and io_pending:
            cr6 = self.engine.cr(6)
            if any(queue and cr6 & (0x80000000 >> isc) for isc, queue in enumerate(queues)):
                self.engine.stop()

    def timer_set(self) -> None:
        """SCKC or SPT moved a timer: the running slice ends no later than the timer is due."""
        due = self.next_timer()
        if due is None:
            return
        if due > 0:
            self.engine.shorten(due)
            return
        with self.lock:
            self._timers()  # due already: pending now
        self.recheck()

    @staticmethod
    def _subclass_enabled(code: int, cr0: int) -> bool:
        return bool(cr0 & SUBCLASS_MASK.get(code, 0))

    def tod(self) -> int:
        return self.engine.tod()

    def _timers(self) -> None:
        """Turn expired clock comparator / CPU timer into pending external interruptions."""
        if self.clock_comparator != MASK64 and self.tod() >= self.clock_comparator:
            if not any(p.code == arch.EXT_CLOCK_COMPARATOR for p in self.external):
                self.external.append(PendingExternal(arch.EXT_CLOCK_COMPARATOR))
        if self.cpu_timer_deadline is not None and time.monotonic() >= self.cpu_timer_deadline:
            if not any(p.code == arch.EXT_CPU_TIMER for p in self.external):
                self.external.append(PendingExternal(arch.EXT_CPU_TIMER))

    def next_timer(self) -> float | None:
        """Host seconds until the next timer may fire (for an enabled wait)."""
        waits = []
        if self.clock_comparator != MASK64:
            waits.append(max(0.0, (self.clock_comparator - self.tod()) / 4096 / 1e6))
        if self.cpu_timer_deadline is not None:
            waits.append(max(0.0, self.cpu_timer_deadline - time.monotonic()))
        return min(waits) if waits else None

    def cpu_timer(self) -> int:
        """The CPU timer's current value (signed, TOD units); -1 before the first SPT."""
        if self.cpu_timer_deadline is None:
            return -1
        return int((self.cpu_timer_deadline - time.monotonic()) * 1e6 * 4096)

    def deliver_pending(self) -> bool:
        """Deliver what is pending and enabled, in QEMU's order (s390_cpu_do_interrupt): machine
        check, external, I/O, restart, then a SIGP stop; the chain goes on while the new PSWs enable
        more, and ends with the stop.  True when anything was delivered."""
        with self.lock:
            self._timers()
        delivered = False
        for _ in range(MAX_CHAIN):
            if not self._deliver_one():
                break
            delivered = True
            if not self.operating:
                break
        return delivered

    def _deliver_one(self) -> bool:
        mask = self.engine.psw()[0]
        if self._deliver_machine_check(mask):
            return True
        if mask & arch.PSW_EXT and self.external and self._deliver_external():
            return True
        if self._deliver_io(mask):
            return True
        if self.restart_pending:
            self.restart_pending = False
            self.swap_psw(arch.LC_RESTART_OLD_PSW, arch.LC_RESTART_NEW_PSW)
            return True
        if self.stop_order:
            self.stop_interruption()
            return True
        return False

    def _deliver_external(self) -> bool:
        cr0 = self.engine.cr(0)
        while True:
            with self.lock:
                best, best_key = None, None
                for i, pending in enumerate(self.external):
                    if not self._subclass_enabled(pending.code, cr0):
                        continue
                    key = (EXT_PRIORITY.get(pending.code, len(EXT_PRIORITY)),
                           pending.cpu_address if pending.code == arch.EXT_EMERGENCY_SIGNAL else 0)
                    if best_key is None or key < best_key:
                        best, best_key = i, key
                if best is None:
                    return False
                pending = self.external.pop(best)
            if pending.code == arch.EXT_CLOCK_COMPARATOR and self.tod() < self.clock_comparator:
                continue  # the comparator was moved since it fired
            break
        if pending.code in CPU_LOCAL_EXT:
            self.lowcore_write(arch.LC_CPU_ADDRESS, struct.pack(">HH", pending.cpu_address, pending.code))
        else:
            self.lowcore_write(arch.LC_EXT_PARAMS, struct.pack(">IHH", pending.param, pending.cpu_address,
                                                                  pending.code))
        self.swap_psw(arch.LC_EXT_OLD_PSW, arch.LC_EXT_NEW_PSW)
        return True

    def stop_interruption(self) -> None:
        """A SIGP stop takes effect (QEMU's do_stop_interrupt): stopped, the machine ends when no
        CPU runs any more, and for stop-and-store-status the status goes to absolute 0x1200."""
        order = self.stop_order
        self.enter_stopped()
        if order == arch.SIGP_STOP_AND_STORE_STATUS:
            self.store_status(arch.LC_FLOAT_SAVE, store_arch=True)
        self.stop_order = 0

    def store_status(self, address: int, store_arch: bool = False) -> bool:
        """Store the CPU's status into the 512-byte save area at an absolute address (PoP "Store
        Status"; QEMU's s390_store_status); False when the area is not in storage.  ``store_arch``
        also stores the architectural-mode id 1 at absolute 163."""
        try:
            area = bytearray(self.memory.read(address, arch.STATUS_SAVE_SIZE))
        except AddressingError:
            return False
        engine = self.engine
        mask, addr = self.psw()
        struct.pack_into(">16Q", area, 0x000, *(engine.fpr(i) for i in range(16)))
        struct.pack_into(">16Q", area, 0x080, *(engine.gpr(i) for i in range(16)))
        struct.pack_into(">QQ", area, 0x100, mask, addr)
        struct.pack_into(">II", area, 0x118, self.prefix, engine.fpc())
        struct.pack_into(">I", area, 0x124, self.todpr)
        struct.pack_into(">QQ", area, 0x128, self.cpu_timer() & MASK64, self.clock_comparator >> 8)
        struct.pack_into(">16I", area, 0x140, *(engine.ar(i) for i in range(16)))
        struct.pack_into(">16Q", area, 0x180, *(engine.cr(i) for i in range(16)))
        if store_arch:
            self.memory.write(arch.LC_AR_MODE_ID, b"\x01")
        self.memory.write(address, bytes(area))
        return True

    # == machine checks: the channel-report-pending machine check =============================
    def _machine_check_enabled(self, mask: int) -> bool:
        """PSW bit 13 and CR14's channel-report-pending subclass mask (bit 35)."""
        return bool(mask & arch.PSW_MCHK) and bool(self.engine.cr(14) & arch.CR14_CHANNEL_REPORT)

    def _deliver_machine_check(self, mask: int) -> bool:
        """The floating channel-report machine check, when this CPU is enabled for it and takes it
        first (QEMU's do_mchk_interrupt).

        Stored in this CPU's lowcore: the registers in the save areas at 0x1200-0x13ff (not the
        PSW at 0x1300), the architectural-mode id 1 at 0xa3, the interruption code at 0xe8, the
        old PSW at 0x160; the vector registers go to the extended save area MCESAD (0x11b0)
        names.  The interruption code has the channel-report subclass and QEMU's validity bits;
        like QEMU, the vector-register validity bit stands for any non-zero MCESAD (QEMU's
        store to an address outside storage is silently dropped), and the CPU timer's save
        area gets its value (QEMU: its internal deadline, as with store status).
        """
        line = self.machine_checks
        if line is None or not line.pending or not self._machine_check_enabled(mask):
            return False
        if not line.take():
            return False  # another CPU took it
        engine = self.engine
        mcic = MCIC_CHANNEL_REPORT | MCIC_VALIDITY
        if _facility(self.facilities, FACILITY_VECTOR):
            extended = self.lowcore_u64(LC_MCESAD) & ~0x3FF
            if extended:
                mcic |= MCIC_VALID_VECTORS
                try:
                    self.memory.check(extended, EXTENDED_SAVE_SIZE)
                except AddressingError:
                    pass
                else:
                    # the 32 vector registers; the area's second half stays as it is
                    self.memory.write(extended, b"".join(engine.vr(n).to_bytes(16, "big") for n in range(32)))
        if _facility(self.facilities, FACILITY_GUARDED_STORAGE):
            mcic |= MCIC_VALID_GUARDED_STORAGE
        self.lowcore_write(arch.LC_AR_MODE_ID, b"\x01")
        self.lowcore_write(arch.LC_FLOAT_SAVE, struct.pack(">16Q", *(engine.fpr(i) for i in range(16))))
        self.lowcore_write(arch.LC_GPR_SAVE, struct.pack(">16Q", *(engine.gpr(i) for i in range(16))))
        self.lowcore_write(arch.LC_PREFIX_SAVE, struct.pack(">II", self.prefix, engine.fpc()))
        self.lowcore_write(arch.LC_TOD_PROG_SAVE, struct.pack(">IQQ", self.todpr, self.cpu_timer() & MASK64,
                                                              self.clock_comparator >> 8))
        self.lowcore_write(arch.LC_ACCESS_SAVE, struct.pack(">16I", *(engine.ar(i) for i in range(16))))
        self.lowcore_write(arch.LC_CREGS_SAVE, struct.pack(">16Q", *(engine.cr(i) for i in range(16))))
        self.lowcore_write(arch.LC_MCCK_CODE, struct.pack(">Q", mcic))
        self.swap_psw(arch.LC_MCCK_OLD_PSW, arch.LC_MCCK_NEW_PSW)
        return True
    # == end of machine checks ================================================================

    def _deliver_io(self, mask: int) -> bool:
        """An I/O interruption enabled by the PSW and CR6's ISC mask: subsystem id, parameter, ISC."""
        if self.io is None or not mask & arch.PSW_IO:
            return False
        item = self.io.take(self.engine.cr(6))
        if item is None:
            return False
        self.lowcore_write(arch.LC_SUBCHANNEL_ID, struct.pack(">III", item.sid, item.intparm, item.word))
        self.swap_psw(arch.LC_IO_OLD_PSW, arch.LC_IO_NEW_PSW)
        return True

    # -- traps ------------------------------------------------------------------------------
    def on_trap(self, intno: int) -> None:
        """Engine callback (CPU thread): emulate a privileged instruction or deliver the exception."""
        self.traps += 1
        mask, addr, pgm_code, pgm_ilen, svc_code, svc_ilen = self.engine.trap_state()
        if intno == INTNO_SVC:
            self.svc_interruption(svc_code, svc_ilen or 2, addr)
            return
        if intno != INTNO_PGM:
            return
        if pgm_code == arch.PGM_PRIVILEGED:
            handlers = INSTRUCTIONS
        elif pgm_code == arch.PGM_OPERATION:
            handlers = ENGINE_GAPS
        else:
            # the engine's own exception: its ILC (from the instruction, or 2 for a failed
            # instruction fetch, whose text cannot be read) and its TEC, already in the lowcore
            self.program_interruption(pgm_code, pgm_ilen or 2, addr)
            return
        # The PSW as the instruction found it serves every operand access of the instruction
        # (read once here, not per access); loading a new PSW drops it.
        self._trap_mask = mask
        self._trap_amode = amode = (MASK64 if mask & arch.PSW_EA else
                                    (0x7FFFFFFF if mask & arch.PSW_BA else 0xFFFFFF))
        try:
            text = self._fetch(addr)
        except ProgramInterruption:
            # the engine fetched it; vmd's view must not differ, but if it does, the engine's
            # exception stands
            self._trap_mask = self._trap_amode = self._trap_ctx = None
            self.program_interruption(pgm_code, pgm_ilen or 2, addr)
            return
        ilc = len(text)
        try:
            if handlers is INSTRUCTIONS and self.problem_state and not _unprivileged(text):
                raise ProgramInterruption(arch.PGM_PRIVILEGED)
            handler = lookup(text, handlers)
            if handler is None:
                if handlers is INSTRUCTIONS:
                    log.debug("no emulation for privileged instruction %s at 0x%x", text.hex(), addr)
                raise ProgramInterruption(arch.PGM_OPERATION)
            if handler(self, text) is not PSW_LOADED:
                self.engine.set_pc((addr + ilc) & amode)
        except ProgramInterruption as exc:
            self._trap_mask = self._trap_amode = self._trap_ctx = None
            self.program_interruption(exc.code, ilc, addr)
        finally:
            self._trap_mask = self._trap_amode = self._trap_ctx = None

    def _fetch(self, addr: int) -> bytes:
        """The text of the instruction at ``addr`` (its length from the first opcode byte)."""
        room = 0x1000 - (addr & 0xFFF)  # a short fetch stays in the page (the next may be invalid)
        head = self.read(addr, 6 if room >= 6 else room)
        ilc = arch.ilc_of(head[0])
        if ilc <= len(head):
            return head[:ilc]
        return head + self.read((addr + len(head)) & self._trap_amode, ilc - len(head))


# -- instruction decoding -----------------------------------------------------------------
PSW_LOADED = object()  # a handler's answer when it loaded a new PSW itself
#: the I/O and external masks in the PSW's system-mask byte (bits 6 and 7)
SYSTEM_MASK_IO_EXT = 0x03


def _s_addr(cpu: Vcpu, text: bytes) -> int:
    """The second-operand address of an S/SI/RS-format instruction (base + 12-bit displacement)."""
    b2 = text[2] >> 4
    d2 = ((text[2] & 0xF) << 8) | text[3]
    return ((cpu.engine.gpr(b2) if b2 else 0) + d2) & cpu.addressing_mask()


def _rsy_addr(cpu: Vcpu, text: bytes) -> int:
    b2 = text[2] >> 4
    dl = ((text[2] & 0xF) << 8) | text[3]
    dh = text[4]
    disp = (dh << 12) | dl
    if disp & 0x80000:
        disp -= 1 << 20
    return ((cpu.engine.gpr(b2) if b2 else 0) + disp) & cpu.addressing_mask()


def _rx_addr(cpu: Vcpu, text: bytes) -> int:
    """The second-operand address of an RX-format instruction (index + base + 12-bit displacement)."""
    x2, b2 = text[1] & 0xF, text[2] >> 4
    d2 = ((text[2] & 0xF) << 8) | text[3]
    return ((cpu.engine.gpr(x2) if x2 else 0) + (cpu.engine.gpr(b2) if b2 else 0) + d2) & cpu.addressing_mask()


def _rxy_addr(cpu: Vcpu, text: bytes) -> int:
    """RXY: index + base + signed 20-bit displacement."""
    x2 = text[1] & 0xF
    index = cpu.engine.gpr(x2) if x2 else 0
    return (index + _rsy_addr(cpu, text)) & cpu.addressing_mask()


def _si_addr(cpu: Vcpu, text: bytes) -> int:
    b1 = text[2] >> 4
    d1 = ((text[2] & 0xF) << 8) | text[3]
    return ((cpu.engine.gpr(b1) if b1 else 0) + d1) & cpu.addressing_mask()


def _aligned(addr: int, n: int) -> int:
    if addr % n:
        raise ProgramInterruption(arch.PGM_SPECIFICATION)
    return addr


def _replace_psw_mask(cpu: Vcpu, mask: int) -> None:
    """A new PSW mask with the same problem state, wait bit and address (a condition code, a
    system mask, a key): only the engine's mask is rewritten, and the trapped instruction's
    view of it follows."""
    cpu.engine.set_psw_mask(mask)
    if cpu._trap_mask is not None:
        cpu._trap_mask, cpu._trap_ctx = mask, None


def _set_cc(cpu: Vcpu, cc: int) -> None:
    _replace_psw_mask(cpu, (cpu._psw_mask() & ~arch.PSW_CC) | (cc << (63 - 19)))


def i_lpswe(cpu: Vcpu, text: bytes):
    addr = _aligned(_s_addr(cpu, text), 8)
    mask, target = struct.unpack(">QQ", cpu.read(addr, 16))
    if mask & arch.PSW_EA and not mask & arch.PSW_BA:
        raise ProgramInterruption(arch.PGM_SPECIFICATION)
    cpu.load_psw(mask, target)
    if not cpu.waiting:
        cpu.recheck()
    return PSW_LOADED


def i_lpsw(cpu: Vcpu, text: bytes):
    """LPSW: an ESA/390-format 8-byte PSW (bit 12 must be one)."""
    addr = _aligned(_s_addr(cpu, text), 8)
    word0, word1 = struct.unpack(">II", cpu.read(addr, 8))
    if not word0 & 0x00080000:
        raise ProgramInterruption(arch.PGM_SPECIFICATION)
    mask = ((word0 & ~0x00080000) << 32) | ((word1 & 0x80000000) and arch.PSW_BA)
    cpu.load_psw(mask, word1 & 0x7FFFFFFF)
    if not cpu.waiting:
        cpu.recheck()
    return PSW_LOADED


def i_ssm(cpu: Vcpu, text: bytes):
    byte = cpu.read(_s_addr(cpu, text), 1)[0]
    mask, addr = cpu.psw()
    cpu.load_psw((mask & ~(0xFF << 56)) | (byte << 56), addr)
    if byte & ~(mask >> 56) & SYSTEM_MASK_IO_EXT:
        cpu.recheck()
    return None


def _system_mask_op(op: Callable[[int, int], int]):
    def handler(cpu: Vcpu, text: bytes):
        mask = cpu._psw_mask()
        cpu.write(_si_addr(cpu, text), bytes([mask >> 56]))
        byte = op(mask >> 56, text[1])
        _replace_psw_mask(cpu, (mask & ~(0xFF << 56)) | (byte << 56))  # only the system mask
        if byte & ~(mask >> 56) & SYSTEM_MASK_IO_EXT:
            cpu.recheck()
        return None

    return handler


def _lctl(cpu: Vcpu, text: bytes, addr: int, width: int) -> None:
    r1, r3 = text[1] >> 4, text[1] & 0xF
    n = (r3 - r1) % 16 + 1
    data = cpu.read(_aligned(addr, width), n * width)
    for i in range(n):
        reg = (r1 + i) % 16
        value = int.from_bytes(data[i * width:(i + 1) * width], "big")
        if width == 4:
            value = (cpu.engine.cr(reg) & ~0xFFFFFFFF) | value
        cpu.engine.set_cr(reg, value)
    cpu.purge_tlb()
    if any((r1 + i) % 16 in (0, 6, 14) for i in range(n)):  # subclass, I/O, machine-check masks
        cpu.recheck()


def _stctl(cpu: Vcpu, text: bytes, addr: int, width: int) -> None:
    r1, r3 = text[1] >> 4, text[1] & 0xF
    n = (r3 - r1) % 16 + 1
    out = b"".join((cpu.engine.cr((r1 + i) % 16) & ((1 << (8 * width)) - 1)).to_bytes(width, "big")
                   for i in range(n))
    cpu.write(_aligned(addr, width), out)


def i_lctlg(cpu, text):
    _lctl(cpu, text, _rsy_addr(cpu, text), 8)


def i_stctg(cpu, text):
    _stctl(cpu, text, _rsy_addr(cpu, text), 8)


def i_lctl(cpu, text):
    _lctl(cpu, text, _s_addr(cpu, text), 4)


def i_stctl(cpu, text):
    _stctl(cpu, text, _s_addr(cpu, text), 4)


def i_stidp(cpu, text):
    cpu.write(_aligned(_s_addr(cpu, text), 8), cpu.cpu_id.to_bytes(8, "big"))


def i_stap(cpu, text):
    cpu.write(_aligned(_s_addr(cpu, text), 2), cpu.address.to_bytes(2, "big"))


def i_spx(cpu, text):
    """SET PREFIX: bits 1-18 of the word; addressing exception when the 8 KiB are not in storage."""
    value = int.from_bytes(cpu.read(_aligned(_s_addr(cpu, text), 4), 4), "big") & 0x7FFFE000
    if value == cpu.prefix:
        return
    if value + 0x2000 > cpu.memory.size:
        raise ProgramInterruption(arch.PGM_ADDRESSING)
    cpu.set_prefix(value)


def i_stpx(cpu, text):
    cpu.write(_aligned(_s_addr(cpu, text), 4), cpu.prefix.to_bytes(4, "big"))


def i_sckc(cpu, text):
    cpu.clock_comparator = int.from_bytes(cpu.read(_aligned(_s_addr(cpu, text), 8), 8), "big")
    with cpu.lock:
        cpu.external = [p for p in cpu.external if p.code != arch.EXT_CLOCK_COMPARATOR]
    cpu.timer_set()


def i_stckc(cpu, text):
    cpu.write(_aligned(_s_addr(cpu, text), 8), cpu.clock_comparator.to_bytes(8, "big"))


def i_spt(cpu, text):
    value = int.from_bytes(cpu.read(_aligned(_s_addr(cpu, text), 8), 8), "big", signed=True)
    cpu.cpu_timer_deadline = time.monotonic() + value / 4096 / 1e6
    with cpu.lock:
        cpu.external = [p for p in cpu.external if p.code != arch.EXT_CPU_TIMER]
    cpu.timer_set()


def i_stpt(cpu, text):
    cpu.write(_aligned(_s_addr(cpu, text), 8), (cpu.cpu_timer() & MASK64).to_bytes(8, "big"))


def i_servc(cpu, text):
    r1, r2 = text[3] >> 4, text[3] & 0xF
    cc = cpu.hooks.service_call(cpu, cpu.engine.gpr(r1) & 0xFFFFFFFF, cpu.engine.gpr(r2) & 0xFFFFFFFF)
    _set_cc(cpu, cc)


def i_stfl(cpu, text):
    """STFL stores the first 32 facility bits at real location 200 (0xC8)."""
    facilities = getattr(cpu, "facilities", bytes(8))
    cpu.lowcore_write(arch.LC_STFL_FAC_LIST, facilities[:4].ljust(4, b"\0"))


def i_diag(cpu, text):
    r1, r3 = text[1] >> 4, text[1] & 0xF
    code = _s_addr(cpu, text) & 0xFFFF
    if cpu.hooks.diagnose is None:
        raise ProgramInterruption(arch.PGM_SPECIFICATION)
    result = cpu.hooks.diagnose(cpu, code, r1, r3)
    if result is PSW_LOADED:
        return PSW_LOADED
    if result is not None:
        _set_cc(cpu, result)


def i_iske(cpu, text):
    r1, r2 = text[3] >> 4, text[3] & 0xF
    value = cpu.engine.gpr(r1) & ~0xFF
    cpu.engine.set_gpr(r1, value | cpu.storage_keys.get(cpu.engine.gpr(r2) >> 12, 0))


def i_sske(cpu, text):
    r1, r2 = text[3] >> 4, text[3] & 0xF
    cpu.storage_keys[(cpu.engine.gpr(r2) & cpu.addressing_mask()) >> 12] = cpu.engine.gpr(r1) & 0xFE


def i_rrbe(cpu, text):
    r2 = text[3] & 0xF
    frame = cpu.engine.gpr(r2) >> 12
    key = cpu.storage_keys.get(frame, 0)
    cpu.storage_keys[frame] = key & ~0x04
    _set_cc(cpu, (key >> 1) & 3)


def i_sckpf(cpu, text):
    """SET CLOCK PROGRAMMABLE FIELD: R0 bits 48-63 (bits 32-47 must be zero)."""
    value = cpu.engine.gpr(0)
    if value & 0xFFFF0000:
        raise ProgramInterruption(arch.PGM_SPECIFICATION)
    cpu.todpr = value & 0xFFFF


def _purge_all_tlbs(cpu: Vcpu) -> None:
    """A purge every CPU of the configuration sees: the engine's TLB (one instance; a CPU that is
    not running gets a flushed TLB when it next runs) and vmd's own translations of each CPU."""
    for other in cpu.hooks.cpus or [cpu]:
        other.tlb.clear()
    cpu.purge_tlb()


def i_ptlb(cpu, text):
    cpu.purge_tlb()


def _csp(cpu: Vcpu, text: bytes, width: int) -> None:
    """COMPARE AND SWAP AND PURGE (CSP, CSPG): R1 against the operand R2 designates; equal: R1+1 is
    stored, and the TLBs are purged when R2's rightmost bit is one.  cc 0 equal, 1 not (R1 gets
    the operand).  The operand address is logical, as QEMU takes it."""
    r1, r2 = text[3] >> 4, text[3] & 0xF
    if r1 & 1:
        raise ProgramInterruption(arch.PGM_SPECIFICATION)
    value_mask = (1 << (8 * width)) - 1
    reg2 = cpu.engine.gpr(r2)
    addr = reg2 & ~(width - 1) & cpu.addressing_mask()
    expected = cpu.engine.gpr(r1) & value_mask
    current = int.from_bytes(cpu.read(addr, width), "big")
    if current != expected:
        cpu.engine.set_gpr(r1, (cpu.engine.gpr(r1) & ~value_mask) | current)
        _set_cc(cpu, 1)
        return
    cpu.write(addr, (cpu.engine.gpr(r1 + 1) & value_mask).to_bytes(width, "big"))
    if reg2 & 1:
        _purge_all_tlbs(cpu)
    _set_cc(cpu, 0)


def i_csp(cpu, text):
    _csp(cpu, text, 4)


def i_cspg(cpu, text):
    _csp(cpu, text, 8)


def i_ipte(cpu, text):
    """INVALIDATE PAGE TABLE ENTRY: R1 the page-table origin, R2 the page index (bits 44-51 of a
    virtual address); the entry gets its invalid bit, then every CPU's TLB is purged (QEMU purges
    it whole, so does vmd; the local-clearing M4 bit only narrows what must be purged)."""
    r1, r2 = text[3] >> 4, text[3] & 0xF
    entry_at = (cpu.engine.gpr(r1) & dat.SEGMENT_ORIGIN) + ((cpu.engine.gpr(r2) >> 12) & 0xFF) * 8
    try:
        cpu.memory.put_u64(entry_at, cpu.memory.u64(entry_at) | dat.PAGE_INVALID)
    except AddressingError:
        raise ProgramInterruption(arch.PGM_ADDRESSING) from None
    _purge_all_tlbs(cpu)


def i_idte(cpu, text):
    """INVALIDATE DAT TABLE ENTRY (RRF-b: R3, M4, R1, R2).  Unless R2 bit 52 asks for clearing by
    ASCE only, R2 bits 53-63 + 1 entries of the region or segment table R1 designates, from the
    index of R2's virtual address at that level, get their invalid bit; then every TLB is purged
    whole (which also covers the clearing by ASCE, so R3 and M4 change nothing)."""
    r1, r2 = text[3] >> 4, text[3] & 0xF
    designation, reg2 = cpu.engine.gpr(r1), cpu.engine.gpr(r2)
    if reg2 & 0xFF000:  # bits 44-51 must be zero
        raise ProgramInterruption(arch.PGM_SPECIFICATION)
    if not reg2 & 0x800:
        origin = designation & dat.REGION_ORIGIN
        shift, _ = dat.LEVELS[(designation & dat.ASCE_TYPE) >> 2]
        first = (reg2 >> shift) & 0x7FF
        try:
            for i in range((reg2 & 0x7FF) + 1):
                at = origin + ((first + i) & 0x7FF) * 8
                entry = cpu.memory.u64(at)
                if not entry & dat.REGION_INVALID:
                    cpu.memory.put_u64(at, entry | dat.REGION_INVALID)
        except AddressingError:
            raise ProgramInterruption(arch.PGM_ADDRESSING) from None
    _purge_all_tlbs(cpu)


def _lra(cpu: Vcpu, text: bytes, logical: int) -> None:
    """LOAD REAL ADDRESS (QEMU's rules): the address translated in the PSW's address space, cc 0
    and the real address in R1; on a translation exception cc 3 and R1 = 0x80000000 | the code.
    With DAT off the address is its own real address."""
    r1 = text[1] >> 4
    mask = cpu._psw_mask()
    if not mask & arch.PSW_EA and logical >> 32:
        raise ProgramInterruption(dat.PGM_SPECIAL_OPERATION)
    try:
        real = cpu.translate(logical, store_tec=False)
    except ProgramInterruption as exc:
        cpu.engine.set_gpr(r1, 0x80000000 | exc.code)
        _set_cc(cpu, 3)
        return
    cpu.engine.set_gpr(r1, real)
    _set_cc(cpu, 0)


def i_lra(cpu, text):
    _lra(cpu, text, _rx_addr(cpu, text))


def i_lray(cpu, text):  # LRAY and LRAG: RXY
    _lra(cpu, text, _rxy_addr(cpu, text))


def _real_operand(cpu: Vcpu, text: bytes, width: int) -> tuple[int, int]:
    """(R1, real address in R2) of STURA/STURG/LURA/LURAG; the address must be aligned."""
    r1, r2 = text[3] >> 4, text[3] & 0xF
    addr = cpu.engine.gpr(r2) & cpu.addressing_mask()
    if addr % width:
        raise ProgramInterruption(arch.PGM_SPECIFICATION)
    return r1, addr


def _store_using_real(width: int):
    def handler(cpu: Vcpu, text: bytes):
        r1, addr = _real_operand(cpu, text, width)
        cpu.write_real(addr, (cpu.engine.gpr(r1) & ((1 << (8 * width)) - 1)).to_bytes(width, "big"))
    return handler


def _load_using_real(width: int):
    def handler(cpu: Vcpu, text: bytes):
        r1, addr = _real_operand(cpu, text, width)
        value = int.from_bytes(cpu.read_real(addr, width), "big")
        if width == 4:
            value |= cpu.engine.gpr(r1) & ~0xFFFFFFFF
        cpu.engine.set_gpr(r1, value)
    return handler


def i_sic(cpu, text):
    """SET INTERRUPTION CONTROLS (RSY: mode in R1 bits 48-63, ISC in R3 bits 32-34): the
    adapter-interruption suppression mode of an ISC, 0 all interruptions or 1 single.  Only
    suppressible adapters (zPCI) obey it and vmd has none, so it is checked and accepted; any
    other mode is an operation exception, as in QEMU."""
    r1 = text[1] >> 4
    if cpu.engine.gpr(r1) & 0xFFFF not in (SIC_MODE_ALL, SIC_MODE_SINGLE):
        raise ProgramInterruption(arch.PGM_OPERATION)


def i_mc(cpu, text):
    """MONITOR CALL (QEMU 7.2 emulates it; the engine's QEMU 5.0 does not know it): a monitor-event
    program interruption when CR8 enables the class (I2, 0-15), storing the class at real 0x94
    and the first-operand address as the monitor code at 0xB0; otherwise nothing."""
    monitor_class = text[1]
    if monitor_class & 0xF0:
        raise ProgramInterruption(arch.PGM_SPECIFICATION)
    if not cpu.engine.cr(8) & (0x8000 >> monitor_class):
        return None
    cpu.lowcore_write(LC_MONITOR_CLASS, monitor_class.to_bytes(2, "big"))
    cpu.lowcore_write(LC_MONITOR_CODE, _si_addr(cpu, text).to_bytes(8, "big"))
    raise ProgramInterruption(PGM_MONITOR_EVENT)


def _ssf_addr(cpu: Vcpu, base_displacement: bytes) -> int:
    """An SSF operand address from its B/D halfword."""
    b = base_displacement[0] >> 4
    d = ((base_displacement[0] & 0xF) << 8) | base_displacement[1]
    return ((cpu.engine.gpr(b) if b else 0) + d) & cpu.addressing_mask()


def i_mvcos(cpu, text):
    """MOVE WITH OPTIONAL SPECIFICATIONS: up to 4096 bytes (R3 holds the length: more is cc 3,
    the rest cc 0) from operand 2 to operand 1, each in the address space its operand-access
    control in R0 names (bits 32-47 for operand 1, 48-63 for operand 2: key, space, and the
    valid bits K and A), else in the PSW's.  The kernel's copy to and from user space.  Both
    operands are translated before a byte moves, so a translation exception stores nothing.
    Storage keys are not checked (vmd keeps none in force); in the problem state a key the
    PSW-key mask does not permit and the home space are privileged-operation exceptions (QEMU
    refuses every problem-state MVCOS with an addressing exception)."""
    mask = cpu._psw_mask()
    r3 = text[1] >> 4
    gr0 = cpu.engine.gpr(0)
    spaces = []
    for oac in ((gr0 >> 16) & 0xFFFF, gr0 & 0xFFFF):
        space = (oac >> 6) & 3 if oac & 1 else (mask & arch.PSW_ASC) >> 46
        key = oac >> 12 if oac & 2 else (mask & arch.PSW_KEY) >> 52
        if cpu.problem_state and ((oac & 1 and space == dat.ASC_HOME)
                                  or not cpu.engine.cr(3) & (0x80000000 >> key)):
            raise ProgramInterruption(arch.PGM_PRIVILEGED)
        if space == dat.ASC_SECONDARY and not cpu.engine.cr(0) & CR0_SECONDARY_SPACE:
            raise ProgramInterruption(dat.PGM_SPECIAL_OPERATION)
        spaces.append(space)
    length = cpu.engine.gpr(r3)
    if not mask & arch.PSW_EA:
        length &= 0xFFFFFFFF
    cc = 0
    if length > MVCOS_MAX:
        length, cc = MVCOS_MAX, 3
    if length:
        dest, src = _ssf_addr(cpu, text[2:4]), _ssf_addr(cpu, text[4:6])
        cpu.write(dest, cpu.read(src, length, spaces[1]), spaces[0])
    _set_cc(cpu, cc)


def i_lpp(cpu, text):
    """LOAD PROGRAM PARAMETER: the doubleword goes to the program-parameter register, which
    only the CPU-measurement facilities read (vmd has none)."""
    cpu.program_parameter = int.from_bytes(cpu.read(_s_addr(cpu, text), 8), "big")


def i_spka(cpu, text):
    """SET PSW KEY FROM ADDRESS: bits 56-59 of the operand address become the PSW key.  Problem
    state may set the keys its PSW-key mask (CR3 bits 32-47) allows."""
    key = (_s_addr(cpu, text) >> 4) & 0xF
    if cpu.problem_state and not cpu.engine.cr(3) & (0x80000000 >> key):
        raise ProgramInterruption(arch.PGM_PRIVILEGED)
    _replace_psw_mask(cpu, (cpu._psw_mask() & ~arch.PSW_KEY) | (key << 52))


def i_epsw(cpu, text):
    """EPSW (made privileged by vmd's engine patch so the forced problem state stays hidden)."""
    r1, r2 = text[3] >> 4, text[3] & 0xF
    mask, _ = cpu.psw()
    cpu.engine.set_gpr(r1, (cpu.engine.gpr(r1) & ~0xFFFFFFFF) | (mask >> 32))
    if r2:
        cpu.engine.set_gpr(r2, (cpu.engine.gpr(r2) & ~0xFFFFFFFF) | (mask & 0xFFFFFFFF))


#: opcode -> emulation; keys are the first byte, or (first byte, second byte) / (first, last) for
#: two-part opcodes.  SIGP (0xAE) comes from vmd.cpu.sigp, the channel I/O instructions from
#: vmd.cpu.channel_io: each registers itself here when imported.
INSTRUCTIONS: dict = {
    (0x01, 0x07): i_sckpf,
    0x80: i_ssm,
    0x82: i_lpsw,
    0x83: i_diag,
    0xAC: _system_mask_op(lambda old, imm: old & imm),  # STNSM
    0xAD: _system_mask_op(lambda old, imm: old | imm),  # STOSM
    0xB6: i_stctl,
    0xB7: i_lctl,
    0xB1: i_lra,
    (0xB2, 0x02): i_stidp,
    (0xB2, 0x06): i_sckc,
    (0xB2, 0x07): i_stckc,
    (0xB2, 0x08): i_spt,
    (0xB2, 0x09): i_stpt,
    (0xB2, 0x0A): i_spka,
    (0xB2, 0x10): i_spx,
    (0xB2, 0x11): i_stpx,
    (0xB2, 0x0D): i_ptlb,
    (0xB2, 0x12): i_stap,
    (0xB2, 0x21): i_ipte,
    (0xB2, 0x46): _store_using_real(4),  # STURA
    (0xB2, 0x4B): _load_using_real(4),  # LURA
    (0xB2, 0x50): i_csp,
    (0xB2, 0x20): i_servc,
    (0xB2, 0x29): i_iske,
    (0xB2, 0x2A): i_rrbe,
    (0xB2, 0x2B): i_sske,
    (0xB2, 0xB1): i_stfl,
    (0xB2, 0xB2): i_lpswe,
    (0xB2, 0x80): i_lpp,
    (0xB9, 0x8D): i_epsw,
    (0xB9, 0x8A): i_cspg,
    (0xB9, 0x8E): i_idte,
    (0xB9, 0x05): _load_using_real(8),  # LURAG
    (0xB9, 0x25): _store_using_real(8),  # STURG
    (0xE3, 0x03): i_lray,  # LRAG
    (0xE3, 0x13): i_lray,
    (0xEB, 0x25): i_stctg,
    (0xEB, 0x2F): i_lctlg,
    (0xEB, 0xD1): i_sic,
    (0xC8, 0x0): i_mvcos,
}

#: instructions of QEMU 7.2's CPU that the engine (QEMU 5.0) lacks: they end in an operation
#: exception, and vmd carries them out instead (first opcode byte -> handler)
ENGINE_GAPS: dict = {
    0xAF: i_mc,
}


#: instructions the engine traps although problem state may run them: EPSW always, SPKA and
#: MVCOS with the keys the PSW-key mask allows (their handlers check)
UNPRIVILEGED_TRAPS = frozenset({(0xB9, 0x8D), (0xB2, 0x0A), (0xC8, 0x0)})


def _opcode(text: bytes):
    """The key of an instruction in the handler tables: its first opcode byte, or the pair of
    that byte and the second part of the opcode (where the format puts it)."""
    first = text[0]
    if first in (0xB2, 0xB9, 0xB3, 0x01, 0xE5):  # the opcode's second byte follows the first
        return first, text[1]
    if first in (0xEB, 0xE3):  # RSY/RXY: the second opcode byte is the last
        return first, text[5]
    if first == 0xC8:  # SSF: a 4-bit opcode extension in the second byte
        return first, text[1] & 0xF
    return first


def _unprivileged(text: bytes) -> bool:
    return _opcode(text) in UNPRIVILEGED_TRAPS


def lookup(text: bytes, handlers: dict | None = None):
    """The emulation of an instruction in ``handlers`` (default :data:`INSTRUCTIONS`), or None."""
    return (INSTRUCTIONS if handlers is None else handlers).get(_opcode(text))
