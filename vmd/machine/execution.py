"""Guest code execution for a machine: storage, SCLP, the CPUs and their thread, IPL.

The machine owns an :class:`Execution` when it has something to run
(``-kernel`` for now; the firmware IPL follows).  Calls from the CPU thread
that change machine state (console output, shutdown, panic) hop to the event
loop through ``call_soon_threadsafe``; the SCLP itself runs on the CPU thread,
where the guest waits for it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from vmd.cpu import arch
from vmd.cpu.runner import CpuRunner
from vmd.cpu.vcpu import MachineHooks, PendingExternal, Vcpu
from vmd.machine.loader import ImageError, load_elf
from vmd.machine.memory import GuestMemory
from vmd.machine.sclp import Sclp, SclpConfig, ServiceCallException

if TYPE_CHECKING:
    from vmd.machine.machine import Machine

log = logging.getLogger("vmd.cpu")

#: STIDP: version 00, CPU identification = CPU address, machine type 8561 (z15), format 0 (as QEMU)
CPU_TYPE = 0x8561
#: STFLE of QEMU 7.2's default "qemu" CPU model under TCG (read from a guest)
QEMU_MODEL_FACILITIES = bytes.fromhex("f940f6d3f4c45c64" "059c000000000000" "7120280000000000")
#: facilities in that list whose instructions the engine does not execute (operation exception):
#: miscellaneous-instruction-extensions 2 and 3, vector enhancements 1 and 2
ENGINE_LACKS = (58, 61, 135, 148)


def facility_list(base: bytes, without: tuple[int, ...]) -> bytes:
    out = bytearray(base)
    for bit in without:
        out[bit // 8] &= ~(0x80 >> (bit % 8))
    return bytes(out)


DEFAULT_FACILITIES = facility_list(QEMU_MODEL_FACILITIES, ENGINE_LACKS)


def special_wait(addr: int) -> bool:
    """QEMU's quiesce convention: a disabled wait at an address ending in fff is a clean stop."""
    return addr & 0xFFFFF == 0xFFF


class Execution:
    def __init__(self, machine: "Machine", memory_size: int, cpu_count: int,
                 call_soon_threadsafe: Callable, console: Callable[[bytes], None]):
        from vmd.cpu.unicorn_engine import UnicornEngine

        self.machine = machine
        self.call = call_soon_threadsafe
        self.memory = GuestMemory(memory_size)
        self.sclp = Sclp(self.memory, SclpConfig(memory_size, cpu_count),
                         console_output=lambda data: self.call(console, data))
        import vmd.cpu.sigp  # noqa: F401  (registers SIGNAL PROCESSOR)

        self.cpus: list[Vcpu] = []
        hooks = MachineHooks(service_call=self._service_call, disabled_wait=self._disabled_wait,
                             stop_all=self._stopped, cpus=self.cpus)
        # one engine instance for every CPU: translated code is not coherent across instances
        self.engine = UnicornEngine(self.memory)
        self.engine.set_facilities(DEFAULT_FACILITIES)
        for address in range(cpu_count):
            regs = self.engine.add_cpu()
            cpu = Vcpu(address, regs, self.memory, hooks,
                       cpu_id=(address << 32) | (CPU_TYPE << 16), facilities=DEFAULT_FACILITIES)
            regs.on_trap = cpu.on_trap
            cpu.reset()  # initial CPU reset: stopped, CR0 and CR14 at their initial values
            self.cpus.append(cpu)
        self.runner = CpuRunner(self.cpus)
        self.engine.on_kick = self.runner.wake
        self.ended = False
        import vmd.cpu.channel_io  # noqa: F401  (registers the channel I/O instructions)
        from vmd.machine.channel import ChannelSubsystemIO

        self.io = ChannelSubsystemIO(machine.css, self.memory, on_interrupt=self._io_pending)
        for cpu in self.cpus:
            cpu.io = self.io

    # -- IPL -----------------------------------------------------------------------------
    def load_kernel(self, path: str) -> None:
        """-kernel: load an ELF and start the IPL CPU at its entry with a 64-bit PSW.

        :raises ImageError: with the reason.
        """
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            raise ImageError(f"could not load kernel '{path}': {err.strerror}") from err
        self.kernel_image = data
        self._ipl_kernel(path)

    def _ipl_kernel(self, name: str) -> None:
        image = load_elf(self.memory, self.kernel_image, name=name)
        ipl = self.cpus[0]
        ipl.load_psw(arch.PSW_64BIT, image.entry)
        ipl.operating = True

    def reset(self) -> None:
        """system_reset: every CPU reset, interruptions dropped, and the IPL done again.

        Storage is kept (QEMU's system_reset is not a clear reset); the kernel image is
        loaded again, as QEMU restores its ROM copy.
        """
        self.runner.pause()
        for cpu in self.cpus:
            cpu.reset()
        self.io.reset()
        self.sclp.reset()
        self.ended = False
        if getattr(self, "kernel_image", None) is not None:
            self._ipl_kernel("kernel")

    def restart_interrupt(self, address: int) -> None:
        """inject-nmi: the restart interruption (old PSW at 0x120, new at 0x1A0); starts a stopped CPU."""
        cpu = self.cpus[address]
        self.runner.pause()
        cpu.swap_psw(arch.LC_RESTART_OLD_PSW, arch.LC_RESTART_NEW_PSW)
        cpu.operating = True
        self.ended = False
        if self.machine.runstate.running:
            self.runner.resume()

    def request_quiesce(self) -> None:
        """system_powerdown: the SCLP signal-quiesce event, announced by a service signal."""
        if self.sclp.request_quiesce():
            self.cpus[0].queue_external(PendingExternal(arch.EXT_SERVICE_SIGNAL, 1))
            self.runner.wake()

    # -- run control (event loop) ----------------------------------------------------------
    def start(self) -> None:
        if not self.runner.is_alive():
            self.runner.start()

    def resume(self) -> None:
        if not self.ended:
            self.runner.resume()

    def pause(self) -> None:
        self.runner.pause()

    def shutdown(self) -> None:
        self.runner.shutdown()
        self.engine.close()

    # -- hooks (CPU thread) -----------------------------------------------------------------
    def _service_call(self, cpu: Vcpu, command: int, sccb: int) -> int:
        from vmd.cpu.vcpu import ProgramInterruption

        try:
            param = self.sclp.service_call(command, sccb, cpu.prefix)
        except ServiceCallException as exc:
            raise ProgramInterruption(exc.code) from None
        cpu.queue_external(PendingExternal(arch.EXT_SERVICE_SIGNAL, param))
        self.runner.wake()
        return 0

    def _disabled_wait(self, cpu: Vcpu, mask: int, addr: int) -> None:
        if any(c.running() for c in self.cpus):
            return  # QEMU: the CPU stays halted while another one runs
        self.ended = True
        if special_wait(addr):
            self.call(self.machine.shutdown, "guest-shutdown", True)
        else:
            info = {"core": cpu.address, "psw-addr": addr, "reason": "disabled-wait", "psw-mask": mask,
                    "type": "s390"}
            self.call(self.machine.guest_panicked, info)

    def _io_pending(self) -> None:
        for cpu in self.cpus:
            cpu.kick()
        self.runner.wake()

    def _stopped(self, cpu: Vcpu) -> None:
        if not any(c.running() for c in self.cpus):
            self.ended = True
            self.call(self.machine.shutdown, "guest-shutdown", True)
