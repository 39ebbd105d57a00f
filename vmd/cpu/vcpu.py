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
    #: the addressing-mode mask while a trapped instruction is emulated (None otherwise)
    _trap_amode: int | None = None
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

    def read_real(self, real: int, length: int) -> bytes:
        try:
            if self.prefix == 0:
                return self.memory.read(real, length)
            return b"".join(self.memory.read(a, n) for _, a, n in self._pieces(real, length))
        except AddressingError:
            raise ProgramInterruption(arch.PGM_ADDRESSING) from None

    def write_real(self, real: int, data: bytes) -> None:
        try:
            if self.prefix == 0:
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
    def dat_context(self) -> dat.Context:
        """What a translation needs from this CPU now (PSW DAT and address-space control, CRs)."""
        mask = self.engine.psw()[0]
        cr0 = self.engine.cr(0)
        edat1 = bool(cr0 & CR0_EDAT) and _facility(self.facilities, FACILITY_EDAT1)
        return dat.Context(bool(mask & arch.PSW_DAT), (mask & arch.PSW_ASC) >> 46,
                           (cr0, self.engine.cr(1), 0, 0, 0, 0, 0, self.engine.cr(7), 0, 0, 0, 0, 0,
                            self.engine.cr(13)),
                           edat1, edat1 and _facility(self.facilities, FACILITY_EDAT2))

    def _table_entry(self, address: int) -> int:
        try:
            return self.memory.u64(address)
        except AddressingError:
            raise dat.TranslationError(arch.PGM_ADDRESSING) from None

    def translate(self, logical: int, store: bool = False, ctx: dat.Context | None = None,
                  asc: int | None = None) -> int:
        """The real address of a logical one; an access exception (with its TEC in the lowcore)
        becomes the program interruption."""
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
            if exc.tec is not None:
                self.lowcore_write(LC_TRANS_EXC_CODE, exc.tec.to_bytes(8, "big"))
            raise ProgramInterruption(exc.code) from None
        if ctx.dat:
            if len(self.tlb) > TLB_ENTRIES:
                self.tlb.clear()
            self.tlb[key] = real & ~0xFFF
        return real

    def _logical_pieces(self, logical: int, length: int, store: bool) -> list[tuple[int, int]]:
        """(real address, length) per page of a logical range; every page is translated (and
        checked) before any is accessed."""
        ctx = self.dat_context()
        mask = self.addressing_mask()
        out, at, left = [], logical, length
        while left > 0:
            n = min(left, 0x1000 - (at & 0xFFF))
            out.append((self.translate(at & mask, store, ctx), n))
            at, left = (at + n) & mask, left - n
        return out

    def read(self, logical: int, length: int) -> bytes:
        """An operand fetch at a logical address (translated when the PSW has DAT on)."""
        pieces = self._logical_pieces(logical, length, False)
        if len(pieces) == 1:
            return self.read_real(pieces[0][0], length)
        return b"".join(self.read_real(r, n) for r, n in pieces)

    def write(self, logical: int, data: bytes) -> None:
        """An operand store at a logical address: translated, low-address and DAT protection."""
        pieces = self._logical_pieces(logical, len(data), True)
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
        mask, addr = self.engine.psw()
        pgm_code, pgm_ilen, svc_code, svc_ilen = self.engine.trap_codes()
        if intno == INTNO_SVC:
            self.svc_interruption(svc_code, svc_ilen or 2, addr)
            return
        if intno != INTNO_PGM:
            return
        if pgm_code != arch.PGM_PRIVILEGED:
            # the engine's own exception: its ILC (from the instruction, or 2 for a failed
            # instruction fetch, whose text cannot be read) and its TEC, already in the lowcore
            self.program_interruption(pgm_code, pgm_ilen or 2, addr)
            return
        first = self.read(addr, 1)[0]
        ilc = arch.ilc_of(first)
        if pgm_code == arch.PGM_PRIVILEGED and (not self.problem_state or _unprivileged(self.read(addr, 2))):
            amode = MASK64 if mask & arch.PSW_EA else (0x7FFFFFFF if mask & arch.PSW_BA else 0xFFFFFF)
            self._trap_amode = amode
            try:
                text = self.read(addr, ilc)
                handler = lookup(text)
                if handler is None:
                    log.debug("no emulation for privileged instruction %s at 0x%x", text.hex(), addr)
                    raise ProgramInterruption(arch.PGM_OPERATION)
                if handler(self, text) is not PSW_LOADED:
                    self.engine.set_pc((addr + ilc) & amode)
            except ProgramInterruption as exc:
                self._trap_amode = None
                self.program_interruption(exc.code, ilc, addr)
            finally:
                self._trap_amode = None
            return
        self.program_interruption(pgm_code, ilc, addr)


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


def _si_addr(cpu: Vcpu, text: bytes) -> int:
    b1 = text[2] >> 4
    d1 = ((text[2] & 0xF) << 8) | text[3]
    return ((cpu.engine.gpr(b1) if b1 else 0) + d1) & cpu.addressing_mask()


def _aligned(addr: int, n: int) -> int:
    if addr % n:
        raise ProgramInterruption(arch.PGM_SPECIFICATION)
    return addr


def _set_cc(cpu: Vcpu, cc: int) -> None:
    mask, addr = cpu.engine.psw()
    cpu.engine.set_psw((mask & ~arch.PSW_CC) | (cc << (63 - 19)), addr)


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
        mask, addr = cpu.psw()
        cpu.write(_si_addr(cpu, text), bytes([mask >> 56]))
        byte = op(mask >> 56, text[1])
        cpu.load_psw((mask & ~(0xFF << 56)) | (byte << 56), addr)
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


def i_lpp(cpu, text):
    """LOAD PROGRAM PARAMETER: the doubleword goes to the program-parameter register, which
    only the CPU-measurement facilities read (vmd has none)."""
    cpu.program_parameter = int.from_bytes(cpu.read(_s_addr(cpu, text), 8), "big")


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
    0x80: i_ssm,
    0x82: i_lpsw,
    0x83: i_diag,
    0xAC: _system_mask_op(lambda old, imm: old & imm),  # STNSM
    0xAD: _system_mask_op(lambda old, imm: old | imm),  # STOSM
    0xB6: i_stctl,
    0xB7: i_lctl,
    (0xB2, 0x02): i_stidp,
    (0xB2, 0x06): i_sckc,
    (0xB2, 0x07): i_stckc,
    (0xB2, 0x08): i_spt,
    (0xB2, 0x09): i_stpt,
    (0xB2, 0x10): i_spx,
    (0xB2, 0x11): i_stpx,
    (0xB2, 0x12): i_stap,
    (0xB2, 0x20): i_servc,
    (0xB2, 0x29): i_iske,
    (0xB2, 0x2A): i_rrbe,
    (0xB2, 0x2B): i_sske,
    (0xB2, 0xB1): i_stfl,
    (0xB2, 0xB2): i_lpswe,
    (0xB2, 0x80): i_lpp,
    (0xB9, 0x8D): i_epsw,
    (0xEB, 0x25): i_stctg,
    (0xEB, 0x2F): i_lctlg,
}


#: instructions the engine traps although the architecture lets problem state run them
UNPRIVILEGED_TRAPS = frozenset({(0xB9, 0x8D)})  # EPSW


def _unprivileged(head: bytes) -> bool:
    return (head[0], head[1]) in UNPRIVILEGED_TRAPS


def lookup(text: bytes):
    first = text[0]
    if first in (0xB2, 0xB9, 0xB3):
        return INSTRUCTIONS.get((first, text[1]))
    if first in (0xEB, 0xE3, 0xE5):
        return INSTRUCTIONS.get((first, text[5]))
    return INSTRUCTIONS.get(first)
