"""The Unicorn-backed CPU engine: the only module that touches unicorn.

Trap-and-emulate: the guest always runs in problem state, so every privileged
instruction ends in a program exception that Unicorn reports through its
interrupt hook; :class:`~vmd.cpu.vcpu.Vcpu` emulates it and resumes.  Guest
storage is the machine's :class:`~vmd.machine.memory.GuestMemory`, mapped by
pointer, so devices and the engine share one storage; vmd's own writes drop
translated code for the range.

One machine, one Unicorn instance.  Translated code is not coherent across
instances (docs/CPU.md, "Several CPUs"), so every vCPU of a machine runs on
the same instance: :class:`UnicornEngine` owns it (storage mapping, translated
code, TLB, the trap hook), and each vCPU has a :class:`CpuEngine`, its
registers.  The registers of the CPU that runs now are the instance's own;
every other CPU's registers live in its saved context (``uc_context_save``
copies ``CPUS390XState`` verbatim), and :class:`CpuEngine` reads and writes
whichever is current, so the same calls work for any CPU at any time.
:meth:`UnicornEngine.activate` switches: it saves the running CPU's context,
restores the next one's and flushes the TLB (prefix and DAT tables differ
per CPU).  With one CPU it never switches.

The prefix register (``env->psa``) has no Unicorn register id; it is written
into the context bytes at an offset calibrated at run time against fields that
do have ids (:class:`EnvLayout`), pinned to unicorn 2.1.4's layout.

Unicorn runs on one thread: emu_start releases the GIL while the guest runs,
and :meth:`UnicornEngine.stop` (emu_stop) may be called from any thread.
Slices are bounded by a persistent timer thread rather than emu_start's
``timeout``, which starts and joins a thread on every call.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import time
from typing import Callable

from vmd.cpu import libunicorn
from vmd.machine.memory import GuestMemory

INTNO_SVC = 2
INTNO_PGM = 3
MASK64 = (1 << 64) - 1


class EngineLayoutError(RuntimeError):
    """The saved-context layout is not unicorn 2.1.4's: vmd cannot reach env->psa."""


class EnvLayout:
    """Where the ``CPUS390XState`` fields without a register id sit in a saved context.

    unicorn 2.1.4 (``qemu/target/s390x/cpu.h``) orders, from the PSW on::

        PSW psw;                 +0   (mask, addr: PC has a register id)
        cc_src, cc_dst, cc_vr;   +16
        ex_value, __excp_addr;   +40
        uint64_t psa;            +56  (the prefix: no register id)
        int_pgm_code, int_pgm_ilen, int_svc_code, int_svc_ilen;  +64
        per_address, per_perc_atmid;
        uint64_t cregs[16];      +96  (CR0..CR15 have register ids)

    The PSW and CR offsets are found by writing distinct values through
    register ids and searching the context bytes; the program-interruption
    code is then written through the bytes and read back through the patch's
    accessor (``vmd_s390x_get_intcodes``), which pins +64, and with it the psa
    slot just below.  Any other layout raises :class:`EngineLayoutError`.
    """

    PSW_TO_PSA = 56
    PSW_TO_PGM_CODE = 64
    PSW_TO_SVC_CODE = 72
    PSW_TO_CREGS = 96

    def __init__(self, uc, regs) -> None:
        import unicorn

        if unicorn.__version__ != libunicorn.UNICORN_VERSION:
            raise EngineLayoutError(
                f"unicorn {unicorn.__version__}: the context layout is pinned to {libunicorn.UNICORN_VERSION}")
        ctx = uc.context_save()
        magic = {regs.UC_S390X_REG_R0: 0x2B3C_4D5E_6F70_8192, regs.UC_S390X_REG_PC: 0x5D4C_3B2A_1908_F7E6,
                 regs.UC_S390X_REG_CR0: 0x0F1E_2D3C_4B5A_6978, regs.UC_S390X_REG_CR15: 0x7869_5A4B_3C2D_1E0F}
        saved = {r: uc.reg_read(r) for r in magic}
        for reg, value in magic.items():
            uc.reg_write(reg, value)
        uc.context_update(ctx)
        for reg, value in saved.items():
            uc.reg_write(reg, value)
        raw = bytes(ctx)
        env, pc_off, cr0_off, cr15_off = (self._find(raw, magic[r]) for r in magic)
        psw = pc_off - 8
        if cr0_off != psw + self.PSW_TO_CREGS or cr15_off != cr0_off + 15 * 8:
            raise EngineLayoutError(f"unexpected CPUS390XState layout (psw at {psw}, cr0 at {cr0_off})")
        #: the start of CPUS390XState (regs[0]) in a context: the bytes before are Unicorn's header
        self.env = env
        self.psw_mask = psw
        self.psw_addr = pc_off
        self.psa = psw + self.PSW_TO_PSA
        self.pgm_code = psw + self.PSW_TO_PGM_CODE
        self.svc_code = psw + self.PSW_TO_SVC_CODE
        self.cregs = cr0_off
        self.size = ctx.size
        # pin the slots around psa through the patch's accessor
        base = _address(ctx)
        ctypes.c_uint32.from_address(base + self.pgm_code).value = 0x6B5A
        ctypes.c_uint32.from_address(base + self.svc_code).value = 0x4F3E
        live = uc.context_save()
        uc.context_restore(ctx)
        codes = libunicorn.intcodes(uc)
        uc.context_restore(live)
        if codes[0] != 0x6B5A or codes[2] != 0x4F3E:
            raise EngineLayoutError(f"int_pgm_code/int_svc_code not where expected: {codes}")

    @staticmethod
    def _find(raw: bytes, value: int) -> int:
        pattern = value.to_bytes(8, sys.byteorder)
        at = raw.find(pattern)
        if at < 0 or raw.find(pattern, at + 1) >= 0:
            raise EngineLayoutError("cannot calibrate the saved-context layout")
        return at


def _address(ctx) -> int:
    """Host address of a saved context (the uc_context struct the offsets are relative to)."""
    return ctypes.cast(ctx.context, ctypes.c_void_p).value


#: how often the slicer repeats its stop while the run it ends goes on
STOP_RETRY_S = 0.001


class _Slicer(threading.Thread):
    """Ends an engine run when its slice is over (one persistent thread per engine)."""

    def __init__(self, stop: Callable[[], None]):
        super().__init__(name="vmd-vcpu-slicer", daemon=True)
        self._stop_engine = stop
        self._cond = threading.Condition(threading.Lock())
        self._deadline: float | None = None
        self._quit = False

    def arm(self, seconds: float) -> None:
        with self._cond:
            self._deadline = time.monotonic() + seconds
            self._cond.notify()

    def shorten(self, seconds: float) -> None:
        """End the armed slice no later than ``seconds`` from now."""
        with self._cond:
            deadline = time.monotonic() + seconds
            if self._deadline is not None and deadline < self._deadline:
                self._deadline = deadline
                self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._deadline = None

    def close(self) -> None:
        with self._cond:
            self._quit = True
            self._cond.notify()

    def run(self) -> None:
        with self._cond:
            while not self._quit:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                # Unicorn drops a stop that lands before emu_start has set the run up (it
                # clears the request there): keep stopping until the run is over and the
                # engine disarms. A stop that lands just after the run ended is harmless:
                # the next emu_start clears it, or it ends that slice a little early.
                self._deadline = time.monotonic() + STOP_RETRY_S
                self._stop_engine()


class UnicornEngine:
    """The machine's Unicorn instance: storage, translated code, TLB, the trap hook, the run loop."""

    def __init__(self, memory: GuestMemory):
        uc_mod = libunicorn.load()
        from unicorn import s390x_const as regs
        from unicorn import unicorn_const as const

        self._uc_mod = uc_mod
        self.regs = regs
        self.const = const
        self.uc = uc_mod.Uc(uc_mod.UC_ARCH_S390X, uc_mod.UC_MODE_BIG_ENDIAN)
        from unicorn.unicorn_py3 import unicorn as binding  # bound to the patched library by load()

        self.c_reg_read = binding.uclib.uc_reg_read
        self.c_reg_write = binding.uclib.uc_reg_write
        self.uc_error = binding.UcError
        self.uc.mem_map_ptr(0, memory.size, uc_mod.UC_PROT_ALL, memory.address)
        # exits mode: an emu_start "until" would translate until-1 and could write a TEC
        # into the guest lowcore when that address is unmapped
        self.uc.ctl_exits_enabled(True)
        self.uc.ctl_set_exits([])
        self.memory = memory
        memory.on_write.append(self.invalidate)
        self._invalidate_code = libunicorn.code_invalidator(self.uc)
        self.trap_state = libunicorn.trap_state_reader(self.uc)
        self.layout = EnvLayout(self.uc, regs)
        self._pristine = self.uc.context_save()  # a fresh CPU's registers
        self.cpus: list[CpuEngine] = []
        self.current: CpuEngine | None = None
        #: called by :meth:`kick` (any thread): the runner's wake-up
        self.on_kick: Callable[[], None] = lambda: None
        self.switches = 0
        self._slicer: _Slicer | None = None
        self.uc.hook_add(const.UC_HOOK_INTR, self._hook)

    def add_cpu(self) -> "CpuEngine":
        """Registers for one more vCPU (a fresh CPU's); the first one is the running one."""
        cpu = CpuEngine(self, self.uc.context_save() if self.current is None else self._copy(self._pristine))
        self.cpus.append(cpu)
        if self.current is None:
            self.current = cpu
            cpu._regs = self.uc
        return cpu

    def _copy(self, ctx):
        """A new context holding ``ctx``'s CPU state (the header stays the new one's)."""
        out = self.uc.context_save()
        env = self.layout.env
        ctypes.memmove(_address(out) + env, _address(ctx) + env, ctx.size - env)
        return out

    def _hook(self, uc, intno, user_data) -> None:
        self.current.on_trap(intno)

    # -- CPU switching ---------------------------------------------------------------------
    def activate(self, cpu: "CpuEngine") -> None:
        """Make ``cpu`` the one the instance runs (CPU thread, never from inside a run)."""
        current = self.current
        if current is cpu:
            return
        uc = self.uc
        if current is not None:
            uc.context_update(current.ctx)
            current._regs = current.ctx
        uc.context_restore(cpu.ctx)
        cpu._regs = uc
        self.current = cpu
        # the TLB holds the previous CPU's translations (its prefix, its DAT tables)
        self.flush_tlb()
        self.switches += 1

    # -- execution ---------------------------------------------------------------------------
    def run(self, cpu: "CpuEngine", timeout_us: int) -> None:
        """Run ``cpu`` from its PSW until stopped, or for at most ``timeout_us``."""
        self.activate(cpu)
        slicer = self._slicer
        if slicer is None:
            slicer = self._slicer = _Slicer(self.uc.emu_stop)
            slicer.start()
        slicer.arm(timeout_us / 1e6)
        try:
            self.uc.emu_start(self.uc.reg_read(self.regs.UC_S390X_REG_PC), 0)
        finally:
            slicer.disarm()

    def stop(self) -> None:
        """Preempt the running guest at the next block boundary (any thread)."""
        self.uc.emu_stop()

    def shorten(self, seconds: float) -> None:
        """End the running slice no later than ``seconds`` from now (a timer became due sooner)."""
        if self._slicer is not None:
            self._slicer.shorten(seconds)

    def kick(self) -> None:
        """Something changed for some CPU: end the running slice and wake the runner (any thread)."""
        self.uc.emu_stop()
        self.on_kick()

    def close(self) -> None:
        if self._slicer is not None:
            self._slicer.close()

    # -- storage and translation ------------------------------------------------------------
    def invalidate(self, address: int, length: int) -> None:
        """Drop translated code for an absolute range vmd wrote (loaders, DMA, emulated stores).

        Through the patch's export, which takes absolute addresses: Unicorn's ctl_remove_cache
        translates its address through the running CPU's DAT tables."""
        if length > 0:
            self._invalidate_code(address, address + length)

    def flush_tlb(self) -> None:
        self.uc.ctl(self.const.UC_CTL_TLB_FLUSH, self.const.UC_CTL_IO_WRITE)

    # -- instance-wide clocks and facilities (the patch keeps them outside the context) -----
    def set_facilities(self, facilities: bytes) -> None:
        libunicorn.set_facilities(self.uc, facilities)

    def set_tod_offset(self, offset: int) -> None:
        libunicorn.set_tod_offset(self.uc, offset)

    def tod(self) -> int:
        return libunicorn.get_tod(self.uc)


class CpuEngine:
    """One vCPU's registers in the engine: live in the instance while it runs, else its saved context."""

    def __init__(self, engine: UnicornEngine, ctx):
        self.engine = engine
        self.ctx = ctx
        self._ctx_base = _address(ctx)
        self._regs = ctx  # the Uc while this CPU is the current one
        r = engine.regs
        self._gpr = [getattr(r, f"UC_S390X_REG_R{i}") for i in range(16)]
        self._cr = [getattr(r, f"UC_S390X_REG_CR{i}") for i in range(16)]
        self._ar = [getattr(r, f"UC_S390X_REG_A{i}") for i in range(16)]
        self._fpr = [getattr(r, f"UC_S390X_REG_F{i}") for i in range(32)]
        self._fpr_hi = [getattr(r, f"UC_S390X_REG_F{i}_HI") for i in range(32)]
        self._fpc = r.UC_S390X_REG_FPC
        self._pc = r.UC_S390X_REG_PC
        self._pswm = r.UC_S390X_REG_PSWM
        self._buf = ctypes.c_uint64()
        self._buf_ref = ctypes.byref(self._buf)
        self.on_trap: Callable[[int], None] = lambda intno: None
        #: counts control-register writes, so that what was derived from them can tell it is
        #: current (only vmd writes them: every instruction that does traps)
        self.cr_writes = 0

    @property
    def live(self) -> bool:
        """Whether this CPU's registers are the instance's (it runs, or runs next)."""
        return self._regs is self.engine.uc

    # -- registers -------------------------------------------------------------------
    # The binding's generic reg_read/reg_write cost about 1 µs each; the trap path reads a
    # handful per trap, so 64-bit registers of the live CPU go straight to the C API.
    def _fast_read(self, regid: int) -> int:
        if self._regs is not self.engine.uc:
            return self._regs.reg_read(regid)
        err = self.engine.c_reg_read(self.engine.uc._uch, regid, self._buf_ref)
        if err:
            raise self.engine.uc_error(err)
        return self._buf.value

    def _fast_write(self, regid: int, value: int) -> None:
        if self._regs is not self.engine.uc:
            self._regs.reg_write(regid, value)
            return
        self._buf.value = value
        err = self.engine.c_reg_write(self.engine.uc._uch, regid, self._buf_ref)
        if err:
            raise self.engine.uc_error(err)

    def gpr(self, n: int) -> int:
        return self._fast_read(self._gpr[n])

    def set_gpr(self, n: int, value: int) -> None:
        self._fast_write(self._gpr[n], value & MASK64)

    def cr(self, n: int) -> int:
        return self._fast_read(self._cr[n])

    def set_cr(self, n: int, value: int) -> None:
        self._fast_write(self._cr[n], value & MASK64)
        self.cr_writes += 1

    def ar(self, n: int) -> int:
        return self._regs.reg_read(self._ar[n])

    def set_ar(self, n: int, value: int) -> None:
        self._regs.reg_write(self._ar[n], value & 0xFFFFFFFF)

    def fpr(self, n: int) -> int:
        """Floating-point register n (the leftmost doubleword of vector register n)."""
        return self._regs.reg_read(self._fpr[n])

    def set_fpr(self, n: int, value: int) -> None:
        self._regs.reg_write(self._fpr[n], value & MASK64)

    def vr(self, n: int) -> int:
        """Vector register n (0-31), 128 bits."""
        return (self._regs.reg_read(self._fpr[n]) << 64) | self._regs.reg_read(self._fpr_hi[n])

    def set_vr(self, n: int, value: int) -> None:
        self._regs.reg_write(self._fpr[n], (value >> 64) & MASK64)
        self._regs.reg_write(self._fpr_hi[n], value & MASK64)

    def fpc(self) -> int:
        return self._regs.reg_read(self._fpc) & 0xFFFFFFFF

    def set_fpc(self, value: int) -> None:
        self._regs.reg_write(self._fpc, value & 0xFFFFFFFF)

    def psw(self) -> tuple[int, int]:
        """The engine's PSW (mask with the forced problem-state bit, address)."""
        return self._fast_read(self._pswm), self._fast_read(self._pc)

    def set_psw(self, mask: int, address: int) -> None:
        self._fast_write(self._pswm, mask)
        self._fast_write(self._pc, address)

    def set_psw_mask(self, mask: int) -> None:
        """Change the PSW mask only (a condition code set by an emulated instruction)."""
        self._fast_write(self._pswm, mask)

    def set_pc(self, address: int) -> None:
        """Move the instruction address only (the end of an emulated instruction)."""
        self._fast_write(self._pc, address)

    def trap_state(self) -> tuple[int, int, int, int, int, int]:
        """(PSW mask, PSW address, program interruption code, its ILC, SVC number, SVC ILC) of the
        last trap, in one engine call (running CPU)."""
        return self.engine.trap_state()

    def trap_codes(self) -> tuple[int, int, int, int]:
        """(program interruption code, its ILC, SVC number, SVC ILC) of the last trap (running CPU)."""
        return libunicorn.intcodes(self.engine.uc)

    # -- the prefix register (no register id: through the context bytes) ------------------
    def prefix(self) -> int:
        if self.live:
            self.engine.uc.context_update(self.ctx)
        return ctypes.c_uint64.from_address(self._ctx_base + self.engine.layout.psa).value

    def set_prefix(self, value: int) -> None:
        """Move this CPU's lowcore; the engine applies it to every guest access from now on."""
        engine = self.engine
        slot = ctypes.c_uint64.from_address(self._ctx_base + engine.layout.psa)
        if self.live:
            engine.uc.context_update(self.ctx)
            slot.value = value
            engine.uc.context_restore(self.ctx)
            engine.flush_tlb()
        else:
            slot.value = value  # the TLB is flushed when this CPU becomes the current one

    # -- facilities and clocks (shared by every CPU of the instance) -------------------------
    def set_facilities(self, facilities: bytes) -> None:
        self.engine.set_facilities(facilities)

    def set_tod_offset(self, offset: int) -> None:
        self.engine.set_tod_offset(offset)

    def tod(self) -> int:
        return self.engine.tod()

    # -- execution ---------------------------------------------------------------------
    def run(self, timeout_us: int) -> None:
        """Run this CPU from its PSW until stopped, or for at most ``timeout_us``."""
        self.engine.run(self, timeout_us)

    def stop(self) -> None:
        """Leave the engine at the next block boundary, when this CPU is the one running."""
        if self.live:
            self.engine.stop()

    def shorten(self, seconds: float) -> None:
        """End this CPU's running slice no later than ``seconds`` from now."""
        if self.live:
            self.engine.shorten(seconds)

    def kick(self) -> None:
        """This CPU has something to look at (an interruption, a state change): any thread."""
        self.engine.kick()

    def invalidate(self, address: int, length: int) -> None:
        self.engine.invalidate(address, length)

    def flush_tlb(self) -> None:
        if self.live:
            self.engine.flush_tlb()
