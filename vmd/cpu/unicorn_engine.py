"""The Unicorn-backed CPU engine: the only module that touches unicorn.

Trap-and-emulate: the guest always runs in problem state, so every privileged
instruction ends in a program exception that Unicorn reports through its
interrupt hook; :class:`~vmd.cpu.vcpu.Vcpu` emulates it and resumes.  Guest
storage is the machine's :class:`~vmd.machine.memory.GuestMemory`, mapped by
pointer, so devices and the engine share one storage; vmd's own writes drop
translated code for the written range.

Unicorn runs one instance on one thread: emu_start releases the GIL while the
guest runs, and :meth:`stop` (emu_stop) may be called from any thread.
"""

from __future__ import annotations

from typing import Callable

from vmd.cpu import libunicorn
from vmd.machine.memory import GuestMemory

INTNO_SVC = 2
INTNO_PGM = 3


class UnicornEngine:
    def __init__(self, memory: GuestMemory):
        uc_mod = libunicorn.load()
        from unicorn import s390x_const as regs
        from unicorn import unicorn_const as const

        self._uc_mod = uc_mod
        self.regs = regs
        self.const = const
        self.uc = uc_mod.Uc(uc_mod.UC_ARCH_S390X, uc_mod.UC_MODE_BIG_ENDIAN)
        self.uc.mem_map_ptr(0, memory.size, uc_mod.UC_PROT_ALL, memory.address)
        # exits mode: an emu_start "until" would translate until-1 and could write a TEC
        # into the guest lowcore when that address is unmapped
        self.uc.ctl_exits_enabled(True)
        self.uc.ctl_set_exits([])
        self.memory = memory
        memory.on_write.append(self.invalidate)
        self._gpr = [getattr(regs, f"UC_S390X_REG_R{i}") for i in range(16)]
        self._cr = [getattr(regs, f"UC_S390X_REG_CR{i}") for i in range(16)]
        self._ar = [getattr(regs, f"UC_S390X_REG_A{i}") for i in range(16)]
        self._pc = regs.UC_S390X_REG_PC
        self._pswm = regs.UC_S390X_REG_PSWM
        self.on_trap: Callable[[int], None] = lambda intno: None
        self.uc.hook_add(const.UC_HOOK_INTR, self._hook)

    def _hook(self, uc, intno, user_data) -> None:
        self.on_trap(intno)

    # -- registers -------------------------------------------------------------------
    def gpr(self, n: int) -> int:
        return self.uc.reg_read(self._gpr[n])

    def set_gpr(self, n: int, value: int) -> None:
        self.uc.reg_write(self._gpr[n], value & 0xFFFFFFFFFFFFFFFF)

    def cr(self, n: int) -> int:
        return self.uc.reg_read(self._cr[n])

    def set_cr(self, n: int, value: int) -> None:
        self.uc.reg_write(self._cr[n], value & 0xFFFFFFFFFFFFFFFF)

    def ar(self, n: int) -> int:
        return self.uc.reg_read(self._ar[n])

    def set_ar(self, n: int, value: int) -> None:
        self.uc.reg_write(self._ar[n], value & 0xFFFFFFFF)

    def psw(self) -> tuple[int, int]:
        """The engine's PSW (mask with the forced problem-state bit, address)."""
        return self.uc.reg_read(self._pswm), self.uc.reg_read(self._pc)

    def set_psw(self, mask: int, address: int) -> None:
        self.uc.reg_write(self._pswm, mask)
        self.uc.reg_write(self._pc, address)

    def trap_codes(self) -> tuple[int, int, int, int]:
        """(program interruption code, its ILC, SVC number, SVC ILC) of the last trap."""
        return libunicorn.intcodes(self.uc)

    # -- facilities and clocks ---------------------------------------------------------
    def set_facilities(self, facilities: bytes) -> None:
        libunicorn.set_facilities(self.uc, facilities)

    def set_tod_offset(self, offset: int) -> None:
        libunicorn.set_tod_offset(self.uc, offset)

    def tod(self) -> int:
        return libunicorn.get_tod(self.uc)

    # -- execution ---------------------------------------------------------------------
    def run(self, timeout_us: int) -> None:
        """Run from the current PSW until stopped, or for at most ``timeout_us``."""
        self.uc.emu_start(self.uc.reg_read(self._pc), 0, timeout=timeout_us)

    def stop(self) -> None:
        """Preempt the running guest at the next block boundary (any thread)."""
        self.uc.emu_stop()

    def invalidate(self, address: int, length: int) -> None:
        """Drop translated code for a range vmd wrote (loaders, DMA)."""
        self.uc.ctl_remove_cache(address, address + length)

    def flush_tlb(self) -> None:
        self.uc.ctl(self.const.UC_CTL_TLB_FLUSH, self.const.UC_CTL_IO_WRITE)
