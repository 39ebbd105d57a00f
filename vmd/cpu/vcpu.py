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
machine (QEMU's rules: address ...fff is a clean shutdown, anything else a
guest panic).

Storage operands are real addresses with DAT off (prefixing applied); DAT-on
operand translation comes with the kernel work.
"""

from __future__ import annotations

import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from vmd.cpu import arch
from vmd.cpu.arch import PSW_PROBLEM
from vmd.machine.memory import AddressingError, GuestMemory

MASK64 = (1 << 64) - 1
#: control registers after an initial CPU reset (PoP "Initial CPU Reset")
INITIAL_CR = {0: 0xE0, 14: 0xC2000000}


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
    instructions: int = 0
    traps: int = 0

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
        if mask & arch.PSW_WAIT:
            self.waiting = True
            self.engine.stop()
            if not mask & (arch.PSW_IO | arch.PSW_EXT | arch.PSW_MCHK):
                self.hooks.disabled_wait(self, mask, addr)

    def addressing_mask(self) -> int:
        mask, _ = self.engine.psw()
        if mask & arch.PSW_EA:
            return MASK64
        return 0x7FFFFFFF if mask & arch.PSW_BA else 0xFFFFFF

    def reset(self) -> None:
        """Initial CPU reset (as for an IPL): PSW, prefix, timers, pending interruptions and
        control registers to their initial values; the CPU is left stopped."""
        with self.lock:
            self.external.clear()
        self.operating = False
        self.waiting = False
        self.problem_state = False
        self.prefix = 0
        self.clock_comparator = MASK64
        self.cpu_timer_deadline = None
        for n in range(16):
            self.engine.set_cr(n, INITIAL_CR.get(n, 0))
        self.engine.set_psw(PSW_PROBLEM, 0)
        self.engine.flush_tlb()

    # -- storage --------------------------------------------------------------------------
    def absolute(self, real: int) -> int:
        """Prefixing: real page 0-1 and the prefix area swap places."""
        if real < 0x2000:
            return real + self.prefix
        if self.prefix <= real < self.prefix + 0x2000:
            return real - self.prefix
        return real

    def read(self, real: int, length: int) -> bytes:
        try:
            if self.prefix == 0:
                return self.memory.read(real, length)
            return bytes(self.memory.u8(self.absolute(real + i)) for i in range(length))
        except AddressingError:
            raise ProgramInterruption(arch.PGM_ADDRESSING) from None

    def write(self, real: int, data: bytes) -> None:
        try:
            if self.prefix == 0:
                self.memory.write(real, data)
                return
            for i, b in enumerate(data):
                self.memory.put_u8(self.absolute(real + i), b)
        except AddressingError:
            raise ProgramInterruption(arch.PGM_ADDRESSING) from None

    def lowcore_write(self, offset: int, data: bytes) -> None:
        self.memory.write(self.prefix + offset, data)

    def lowcore_u64(self, offset: int) -> int:
        return self.memory.u64(self.prefix + offset)

    # -- interruptions ---------------------------------------------------------------------
    def swap_psw(self, old_offset: int, new_offset: int, old_addr: int | None = None) -> None:
        mask, addr = self.psw()
        if old_addr is not None:
            addr = old_addr
        self.lowcore_write(old_offset, struct.pack(">QQ", mask & ~arch.PSW_WAIT, addr & MASK64))
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
        """Make the CPU look at its pending interruptions soon (any thread)."""
        self.engine.stop()

    def _subclass_enabled(self, code: int) -> bool:
        cr0 = self.engine.cr(0)
        need = {
            arch.EXT_SERVICE_SIGNAL: arch.CR0_SERVICE_SIGNAL,
            arch.EXT_CLOCK_COMPARATOR: arch.CR0_CLOCK_COMPARATOR,
            arch.EXT_CPU_TIMER: arch.CR0_CPU_TIMER,
            arch.EXT_EXTERNAL_CALL: arch.CR0_EXTERNAL_CALL,
            arch.EXT_EMERGENCY_SIGNAL: arch.CR0_EMERGENCY_SIGNAL,
        }.get(code, 0)
        return bool(cr0 & need)

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

    def deliver_pending(self) -> bool:
        """Deliver one enabled pending interruption; True when one was delivered."""
        mask, _ = self.psw()
        with self.lock:
            self._timers()
            if mask & arch.PSW_EXT:
                for i, pending in enumerate(self.external):
                    if self._subclass_enabled(pending.code):
                        del self.external[i]
                        break
                else:
                    pending = None
            else:
                pending = None
        if pending is None:
            return self._deliver_io(mask)
        if pending.code in (arch.EXT_CLOCK_COMPARATOR,) and self.tod() < self.clock_comparator:
            return False  # the comparator was moved since it fired
        self.lowcore_write(arch.LC_EXT_PARAMS, struct.pack(">IHH", pending.param, pending.cpu_address,
                                                              pending.code))
        self.swap_psw(arch.LC_EXT_OLD_PSW, arch.LC_EXT_NEW_PSW)
        return True

    def _deliver_io(self, mask: int) -> bool:
        """An I/O interruption enabled by the PSW and CR6's ISC mask: subsystem id, parameter, ISC."""
        if self.io is None or not mask & arch.PSW_IO:
            return False
        item = self.io.take(self.engine.cr(6))
        if item is None:
            return False
        self.lowcore_write(arch.LC_SUBCHANNEL_ID, struct.pack(">III", item.sid, item.intparm, item.isc << 27))
        self.swap_psw(arch.LC_IO_OLD_PSW, arch.LC_IO_NEW_PSW)
        return True

    # -- traps ------------------------------------------------------------------------------
    def on_trap(self, intno: int) -> None:
        """Engine callback (CPU thread): emulate a privileged instruction or deliver the exception."""
        from vmd.cpu.unicorn_engine import INTNO_PGM, INTNO_SVC

        self.traps += 1
        _, addr = self.engine.psw()
        pgm_code, _pgm_ilen, svc_code, svc_ilen = self.engine.trap_codes()
        if intno == INTNO_SVC:
            self.svc_interruption(svc_code, svc_ilen or 2, addr)
            return
        if intno != INTNO_PGM:
            return
        first = self.read(addr, 1)[0]
        ilc = arch.ilc_of(first)
        if pgm_code == arch.PGM_PRIVILEGED and (not self.problem_state or _unprivileged(self.read(addr, 2))):
            try:
                text = self.read(addr, ilc)
                handler = lookup(text)
                if handler is None:
                    raise ProgramInterruption(arch.PGM_OPERATION)
                if handler(self, text) is not PSW_LOADED:
                    self.engine.set_psw(self.engine.psw()[0], (addr + ilc) & self.addressing_mask())
            except ProgramInterruption as exc:
                self.program_interruption(exc.code, ilc, addr)
            return
        self.program_interruption(pgm_code, ilc, addr)


# -- instruction decoding -----------------------------------------------------------------
PSW_LOADED = object()  # a handler's answer when it loaded a new PSW itself


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
    return PSW_LOADED


def i_lpsw(cpu: Vcpu, text: bytes):
    """LPSW: an ESA/390-format 8-byte PSW (bit 12 must be one)."""
    addr = _aligned(_s_addr(cpu, text), 8)
    word0, word1 = struct.unpack(">II", cpu.read(addr, 8))
    if not word0 & 0x00080000:
        raise ProgramInterruption(arch.PGM_SPECIFICATION)
    mask = ((word0 & ~0x00080000) << 32) | ((word1 & 0x80000000) and arch.PSW_BA)
    cpu.load_psw(mask, word1 & 0x7FFFFFFF)
    return PSW_LOADED


def i_ssm(cpu: Vcpu, text: bytes):
    byte = cpu.read(_s_addr(cpu, text), 1)[0]
    mask, addr = cpu.psw()
    cpu.load_psw((mask & ~(0xFF << 56)) | (byte << 56), addr)
    return None


def _system_mask_op(op: Callable[[int, int], int]):
    def handler(cpu: Vcpu, text: bytes):
        mask, addr = cpu.psw()
        cpu.write(_si_addr(cpu, text), bytes([mask >> 56]))
        cpu.load_psw((mask & ~(0xFF << 56)) | (op(mask >> 56, text[1]) << 56), addr)
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
    cpu.engine.flush_tlb()


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
    value = int.from_bytes(cpu.read(_aligned(_s_addr(cpu, text), 4), 4), "big") & 0x7FFFE000
    if value + 0x2000 > cpu.memory.size:
        raise ProgramInterruption(arch.PGM_ADDRESSING)
    if value != 0:
        # the engine applies prefixing to guest accesses itself; moving it needs the
        # engine's prefix register, which arrives with SMP support
        raise ProgramInterruption(arch.PGM_SPECIFICATION)
    cpu.prefix = value


def i_stpx(cpu, text):
    cpu.write(_aligned(_s_addr(cpu, text), 4), cpu.prefix.to_bytes(4, "big"))


def i_sckc(cpu, text):
    cpu.clock_comparator = int.from_bytes(cpu.read(_aligned(_s_addr(cpu, text), 8), 8), "big")
    with cpu.lock:
        cpu.external = [p for p in cpu.external if p.code != arch.EXT_CLOCK_COMPARATOR]


def i_stckc(cpu, text):
    cpu.write(_aligned(_s_addr(cpu, text), 8), cpu.clock_comparator.to_bytes(8, "big"))


def i_spt(cpu, text):
    value = int.from_bytes(cpu.read(_aligned(_s_addr(cpu, text), 8), 8), "big", signed=True)
    cpu.cpu_timer_deadline = time.monotonic() + value / 4096 / 1e6
    with cpu.lock:
        cpu.external = [p for p in cpu.external if p.code != arch.EXT_CPU_TIMER]


def i_stpt(cpu, text):
    if cpu.cpu_timer_deadline is None:
        value = -1
    else:
        value = int((cpu.cpu_timer_deadline - time.monotonic()) * 1e6 * 4096)
    cpu.write(_aligned(_s_addr(cpu, text), 8), (value & MASK64).to_bytes(8, "big"))


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
    cc = cpu.hooks.diagnose(cpu, code, r1, r3)
    if cc is not None:
        _set_cc(cpu, cc)


def i_sigp(cpu, text):
    """SIGP: orders to other CPUs; the machine hooks carry them out (stop for now)."""
    r1, r3 = text[1] >> 4, text[1] & 0xF
    order = _s_addr(cpu, text) & 0xFF
    target = cpu.engine.gpr(r3) & 0xFFFF
    sigp = getattr(cpu.hooks, "sigp", None)
    if sigp is not None:
        cc = sigp(cpu, order, target, r1)
    elif target == cpu.address and order in (SIGP_STOP, SIGP_STOP_AND_STORE):
        cpu.operating = False
        cpu.engine.stop()
        cpu.hooks.stop_all(cpu)
        cc = 0
    else:
        cc = 3  # not operational
    _set_cc(cpu, cc)


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


def i_epsw(cpu, text):
    """EPSW (made privileged by vmd's engine patch so the forced problem state stays hidden)."""
    r1, r2 = text[3] >> 4, text[3] & 0xF
    mask, _ = cpu.psw()
    cpu.engine.set_gpr(r1, (cpu.engine.gpr(r1) & ~0xFFFFFFFF) | (mask >> 32))
    if r2:
        cpu.engine.set_gpr(r2, (cpu.engine.gpr(r2) & ~0xFFFFFFFF) | (mask & 0xFFFFFFFF))


SIGP_STOP = 0x05
SIGP_STOP_AND_STORE = 0x09

#: opcode -> emulation; keys are the first byte, or (first byte, second byte) / (first, last) for
#: two-part opcodes
INSTRUCTIONS: dict = {
    0x80: i_ssm,
    0x82: i_lpsw,
    0x83: i_diag,
    0xAC: _system_mask_op(lambda old, imm: old & imm),  # STNSM
    0xAD: _system_mask_op(lambda old, imm: old | imm),  # STOSM
    0xAE: i_sigp,
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
