"""Guest code execution for a machine: storage, SCLP, the CPUs and their thread, IPL.

The machine owns an :class:`Execution` when it has something to run
(``-kernel`` for now; the firmware IPL follows).  Calls from the CPU thread
that change machine state (console output, shutdown, panic) hop to the event
loop through ``call_soon_threadsafe``; the SCLP itself runs on the CPU thread,
where the guest waits for it.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Callable

from vmd.cpu import arch
from vmd.cpu.models import DEFAULT_MODEL, ResolvedModel
from vmd.cpu.runner import CpuRunner
from vmd.cpu.stsi import SystemInformation  # (also registers STORE SYSTEM INFORMATION)
from vmd.cpu.vcpu import MachineHooks, PendingExternal, Vcpu
from vmd.machine import ipl
from vmd.machine.loader import ImageError
from vmd.machine.memory import GuestMemory
from vmd.machine.sclp import Sclp, SclpConfig, ServiceCallException

if TYPE_CHECKING:
    from uuid import UUID

    from vmd.machine.machine import Machine

log = logging.getLogger("vmd.cpu")

#: the facility list of the CPU model without -cpu ("qemu", less what the engine lacks)
DEFAULT_FACILITIES = DEFAULT_MODEL.facilities


#: DIAGNOSE codes vmd answers: the KVM-style hypercall (virtio-ccw notification) and the yield hint
DIAG_HYPERCALL = 0x500
DIAG_YIELD = 0x44
DIAG_IPL = 0x308
DIAG308_MODIFIED_CLEAR = 0
DIAG308_LOAD_NORMAL = 1
DIAG308_LOAD_CLEAR = 3
DIAG308_LOAD_DUMP = 4
DIAG308_SET = 5
DIAG308_STORE = 6
DIAG308_PV_SET = 8
HYPERCALL_VIRTIO_CCW_NOTIFY = 3
EINVAL_RESULT = (-22) & 0xFFFFFFFFFFFFFFFF


def _ebcdic_loadparm_text(loadparm: bytes | None) -> str | None:
    if loadparm is None:
        return None
    table = {v: k for k, v in ipl._ASCII_TO_EBCDIC.items()}
    return "".join(table.get(b, " ") for b in loadparm).rstrip() or None


def special_wait(addr: int) -> bool:
    """QEMU's quiesce convention: a disabled wait at an address ending in fff is a clean stop."""
    return addr & 0xFFFFF == 0xFFF


class Execution:
    def __init__(self, machine: "Machine", memory_size: int, cpu_count: int,
                 call_soon_threadsafe: Callable, console: Callable[[bytes], None], *,
                 cpu_model: ResolvedModel = DEFAULT_MODEL, name: str | None = None,
                 uuid: "UUID | None" = None, max_cpus: int | None = None):
        from vmd.cpu.unicorn_engine import UnicornEngine

        self.machine = machine
        self.call = call_soon_threadsafe
        self.memory = GuestMemory(memory_size)
        self.sclp = Sclp(self.memory, SclpConfig(memory_size, cpu_count),
                         console_output=lambda data: self.call(console, data))
        import vmd.cpu.sigp  # noqa: F401  (registers SIGNAL PROCESSOR)

        self.cpus: list[Vcpu] = []
        # the CPU model (-cpu) and what STSI tells about the machine (-name, -uuid, -smp)
        self.cpu_model = cpu_model
        system = SystemInformation(cpu_model.cpu_type, cpu_count, max_cpus or cpu_count, name, uuid)
        hooks = MachineHooks(service_call=self._service_call, disabled_wait=self._disabled_wait,
                             stop_all=self._stopped, diagnose=self._diagnose, stsi=system.store,
                             cpus=self.cpus)
        # one engine instance for every CPU: translated code is not coherent across instances
        self.engine = UnicornEngine(self.memory)
        self.engine.set_facilities(cpu_model.facilities)
        for address in range(cpu_count):
            regs = self.engine.add_cpu()
            cpu = Vcpu(address, regs, self.memory, hooks,
                       cpu_id=cpu_model.cpu_id(address), facilities=cpu_model.facilities)
            regs.on_trap = cpu.on_trap
            cpu.reset()  # initial CPU reset: stopped, CR0 and CR14 at their initial values
            self.cpus.append(cpu)
        self.runner = CpuRunner(self.cpus)
        self.ipl = ipl.IplState()
        self.machine_loadparm: str | None = None
        #: a DIAGNOSE 0x308 reset waiting for the loop: (subcode, issuing CPU)
        self._reset_request: tuple[int, Vcpu] | None = None
        self.engine.on_kick = self.runner.wake
        self.ended = False
        import vmd.cpu.channel_io  # noqa: F401  (registers the channel I/O instructions)
        from vmd.machine.channel import ChannelSubsystemIO

        self.io = ChannelSubsystemIO(machine.css, self.memory, on_interrupt=self._io_pending)
        for cpu in self.cpus:
            cpu.io = self.io
        self._wire_channel_reports()
        for device in list(machine.devices.values()):
            self.attach_device(device)

    # -- devices -------------------------------------------------------------------------
    def attach_device(self, device) -> None:
        """Give a realized device its guest I/O: a virtio-ccw transport in front of its back end."""
        if getattr(device, "make_sclp_event", None) is not None:
            self._plug_console(device)
            return
        make_backend = getattr(device, "make_backend", None)
        subchannel = getattr(device, "subchannel", None)
        if make_backend is None or subchannel is None:
            return
        backend = make_backend()
        if backend is None:
            return
        from vmd.virtio.ccw import VirtioCcwTransport

        self.runner.pause()
        try:
            device.io_handler = VirtioCcwTransport(backend, self.memory, self.io, subchannel, device.props)
        finally:
            if self.machine.runstate.running and not self.ended:
                self.runner.resume()

    def detach_device(self, device) -> None:
        if getattr(device, "sclp_event", None) is not None:
            self.runner.pause()
            self.sclp.unplug(device.sclp_event)
            device.sclp_event = None
            if self.machine.runstate.running and not self.ended:
                self.runner.resume()
            return
        transport = getattr(device, "io_handler", None)
        if transport is None:
            return
        self.runner.pause()
        device.io_handler = None
        transport.backend.close()
        if self.machine.runstate.running and not self.ended:
            self.runner.resume()

    # -- SCLP consoles (devices/models/sclp_console.py) -------------------------------------
    def _plug_console(self, device) -> None:
        """Put an SCLP console on the event facility's bus; its host input raises attentions."""
        event = device.make_sclp_event()
        port = event.port
        port.on_input = lambda: self._console_input(event)
        self.runner.pause()
        try:
            self.sclp.plug(event)
            device.sclp_event = event
        finally:
            if self.machine.runstate.running and not self.ended:
                self.runner.resume()
        if port.has_input():  # typed before the console was on the bus
            port.to_loop(port.on_input)

    def _console_input(self, event) -> None:
        """(event loop) Host input reached a console: a line-mode console takes what it can, and
        an event the guest accepts now waiting is announced by an attention, a service signal
        with only the event-pending bit (QEMU's sclp_service_interrupt(0))."""
        absorb = getattr(event, "absorb", None)
        if absorb is not None:
            absorb()
        if self.sclp.event_pending():
            self._service_signal(1)

    def _service_signal(self, param: int, cpu: Vcpu | None = None) -> None:
        """Raise a service signal.  The SCLP keeps one at most: a new one ORs its parameter into
        the one still pending, wherever it waits (as QEMU's interruption controller does), so an
        attention rides on a service call's completion; else it goes to ``cpu`` (CPU 0 if None)."""
        for holder in self.cpus:
            with holder.lock:
                for index, pending in enumerate(holder.external):
                    if pending.code == arch.EXT_SERVICE_SIGNAL:
                        holder.external[index] = PendingExternal(arch.EXT_SERVICE_SIGNAL, pending.param | param)
                        return
        (cpu or self.cpus[0]).queue_external(PendingExternal(arch.EXT_SERVICE_SIGNAL, param))
        self.runner.wake()
    # --

    def _transports(self):
        for device in list(self.machine.devices.values()):
            transport = getattr(device, "io_handler", None)
            if transport is not None:
                yield transport

    # -- IPL -----------------------------------------------------------------------------
    def configure_ipl(self, kernel: str | None = None, initrd: str | None = None, append: str = "",
                      bios: str | None = None, machine_loadparm: str | None = None) -> None:
        """What IPL loads and starts: ``-kernel`` (with ``-initrd``/``-append``) or the firmware.

        :raises ImageError: with QEMU's text.
        """
        self.machine_loadparm = machine_loadparm
        if bios is not None or kernel is None:
            entry, roms = ipl.load_firmware(bios or self.default_firmware(), self.memory.size)
            self.ipl.bios_start = entry
            self.ipl.roms += roms
        if kernel is not None:
            start, roms = ipl.load_kernel(kernel, self.memory, append, initrd)
            self.ipl.kernel_start = start
            self.ipl.roms += roms
        self.ipl.iplb = self._initial_iplb()
        if self.ipl.iplb is not None:
            self.ipl.qipl_flags |= ipl.QIPL_FLAG_BM_OPTS_ZIPL  # no -boot menu: the boot map's menu settings
        self._ipl(self.cpus[0])

    @staticmethod
    def default_firmware() -> str:
        from vmd.firmware import default_firmware_path

        return default_firmware_path()

    def _boot_device(self):
        """The device with the lowest bootindex, as QEMU's get_boot_device(0): a channel device, or
        a SCSI device behind a controller on one."""
        candidates = [d for d in self.machine.devices.values()
                      if getattr(d.props, "bootindex", None) is not None
                      and (getattr(d, "subchannel", None) or getattr(getattr(d, "bus_owner", None), "subchannel", None))]
        return min(candidates, key=lambda d: d.props.bootindex, default=None)

    def _initial_iplb(self) -> bytes | None:
        device = self._boot_device()
        if device is None or (self.ipl.kernel_start is not None and self.ipl.bios_start is None):
            return None
        unit = getattr(device, "unit", None)  # a SCSI device: its controller is on the channel subsystem
        channel_device = device.bus_owner if unit is not None else device
        loadparm = getattr(channel_device.props, "loadparm", None) or self.machine_loadparm or ""
        sch = channel_device.subchannel
        if unit is not None:  # QEMU's private IPLB type for a SCSI device behind virtio-scsi
            return ipl.build_scsi_iplb(sch.devno, sch.ssid, unit.lun, unit.target, unit.channel,
                                       ipl.loadparm_ebcdic(loadparm))
        return ipl.build_ccw_iplb(sch.devno, sch.ssid, ipl.loadparm_ebcdic(loadparm))

    def _ipl(self, cpu: Vcpu) -> None:
        """Put the images in storage and start ``cpu`` at the kernel or, with an IPLB, the firmware."""
        self.ipl.load_roms(self.memory)
        start = self.ipl.kernel_start
        if start is None or (self.ipl.iplb is not None and self.ipl.bios_start is not None):
            start = self.ipl.bios_start
        self.ipl.write_qipl(self.memory)
        lp = ipl.iplb_loadparm(self.ipl.iplb) if self.ipl.iplb else None
        self.sclp.config.loadparm = lp or ipl.loadparm_ebcdic(self.machine_loadparm)
        cpu.load_psw(arch.PSW_64BIT, start)
        cpu.operating = True

    def reset(self) -> None:
        """system_reset, or the reset a DIAGNOSE 0x308 asked for.

        A system reset resets every CPU and device and IPLs again; storage is kept (QEMU's
        system_reset is not a clear reset), the images are copied in again as QEMU restores
        its ROMs.  Load-normal resets keep storage and restart the CPU from the PSW at 0.
        """
        self.runner.pause()
        request, self._reset_request = self._reset_request, None
        kind, issuer = request if request is not None else (None, self.cpus[0])
        self.io.reset()
        self._reset_channel_reports()
        for transport in self._transports():
            transport.system_reset()
        self.ended = False
        if kind in (DIAG308_LOAD_NORMAL, DIAG308_MODIFIED_CLEAR):
            for cpu in self.cpus:
                if cpu is not issuer:
                    cpu.reset(initial=kind == DIAG308_MODIFIED_CLEAR)
            issuer.reset()
            self._load_normal(issuer)
            return
        for cpu in self.cpus:
            cpu.reset()
        self.sclp.reset()
        if self.ipl.roms:
            self._ipl(issuer)

    def _load_normal(self, cpu: Vcpu) -> None:
        """Start ``cpu`` from the ESA/390-format IPL PSW at absolute 0 (bit 12 set there)."""
        short = self.memory.u64(0)
        mask = (short & 0xFFFFFFFF80000000) ^ 0x0008000000000000
        addr = short & 0x7FFFFFFF
        if mask & arch.PSW_EA and not mask & arch.PSW_BA:
            mask |= arch.PSW_BA
        cpu.load_psw(mask, addr)
        cpu.operating = True

    # -- DIAGNOSE 0x308 (CPU thread) --------------------------------------------------------
    def _diag308(self, cpu: Vcpu, r1: int, r3: int):
        from vmd.cpu.vcpu import ProgramInterruption

        subcode = cpu.engine.gpr(r3)
        address = cpu.engine.gpr(r1)
        if subcode & ~0xFFFF or subcode >= DIAG308_PV_SET:
            raise ProgramInterruption(arch.PGM_SPECIFICATION)  # no protected virtualization facility
        if subcode in (DIAG308_MODIFIED_CLEAR, DIAG308_LOAD_NORMAL, DIAG308_LOAD_CLEAR, DIAG308_LOAD_DUMP):
            # the CPU stops here; the reset itself runs on the loop, as QEMU's reset request does
            self._reset_request = (subcode, cpu)
            cpu.operating = False
            cpu.engine.stop()
            self.call(self.machine.reset, "guest-reset", True)
            return None
        if subcode in (DIAG308_SET, DIAG308_STORE):
            if r1 & 1 or address & 0xFFF:
                raise ProgramInterruption(arch.PGM_SPECIFICATION)
            if address + ipl.IPLB_SIZE > self.memory.size:
                raise ProgramInterruption(arch.PGM_ADDRESSING)
            if subcode == DIAG308_STORE:
                if self.ipl.iplb is None:
                    cpu.engine.set_gpr(r1 + 1, ipl.RC_NO_CONF)
                    return None
                self.memory.write(address, self.ipl.iplb)
                cpu.engine.set_gpr(r1 + 1, ipl.RC_OK)
                return None
            length = self.memory.u32(address)
            if length > ipl.IPLB_SIZE:
                cpu.engine.set_gpr(r1 + 1, ipl.RC_INVALID)
                return None
            block = self.memory.read(address, max(length, 16))
            if not ipl.iplb_valid(block):
                cpu.engine.set_gpr(r1 + 1, ipl.RC_INVALID)
                return None
            self.ipl.iplb = block[:length]
            self.machine_loadparm = _ebcdic_loadparm_text(ipl.iplb_loadparm(block))
            cpu.engine.set_gpr(r1 + 1, ipl.RC_OK)
            return None
        raise ProgramInterruption(arch.PGM_SPECIFICATION)

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
            self._service_signal(1)

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
        for transport in self._transports():
            transport.backend.close()
        self.engine.close()

    # -- hooks (CPU thread) -----------------------------------------------------------------
    def _service_call(self, cpu: Vcpu, command: int, sccb: int) -> int:
        from vmd.cpu.vcpu import ProgramInterruption

        try:
            param = self.sclp.service_call(command, sccb, cpu.prefix)
        except ServiceCallException as exc:
            raise ProgramInterruption(exc.code) from None
        self._service_signal(param, cpu)
        return 0

    def _diagnose(self, cpu: Vcpu, code: int, r1: int, r3: int) -> int | None:
        """DIAGNOSE as QEMU's TCG machine answers it; anything else is a specification exception."""
        from vmd.cpu.vcpu import ProgramInterruption

        if code == DIAG_HYPERCALL:
            function = cpu.engine.gpr(1)
            if function != HYPERCALL_VIRTIO_CCW_NOTIFY:
                raise ProgramInterruption(arch.PGM_SPECIFICATION)
            cpu.engine.set_gpr(2, self._virtio_notify(cpu.engine.gpr(2), cpu.engine.gpr(3)))
            return None
        if code == DIAG_YIELD:
            return None
        if code == DIAG_IPL:
            return self._diag308(cpu, r1, r3)
        raise ProgramInterruption(arch.PGM_SPECIFICATION)

    def _virtio_notify(self, sid: int, data: int) -> int:
        """Function 3: kick queue ``data`` of the subchannel ``sid``; 0, or -EINVAL as QEMU returns."""
        sch = self.io.lookup_sid(sid & 0xFFFFFFFF)
        transport = getattr(getattr(sch, "owner", None), "io_handler", None)
        if transport is None or not transport.kick(data & 0xFFFF):
            return EINVAL_RESULT
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
        if threading.current_thread() is not self.runner:
            for cpu in self.cpus:
                cpu.kick()
            self.runner.wake()
            return
        # raised by the running guest itself (SSCH, a virtio kick): only a CPU that can take an
        # I/O interruption now leaves the engine; the others look when their masks change
        # (SSM, LPSW, LCTL recheck), which spares a slice end per I/O for polling drivers
        for cpu in self.cpus:
            if cpu.operating and self._io_deliverable(cpu):
                cpu.kick()
                return

    def _io_deliverable(self, cpu: Vcpu) -> bool:
        if not cpu.engine.psw()[0] & arch.PSW_IO:
            return False
        cr6 = cpu.engine.cr(6)
        with self.io.lock:
            return any(queue and cr6 & (0x80000000 >> isc) for isc, queue in enumerate(self.io.pending))

    # -- channel report words: CHSC and the channel-report machine check ---------------------
    def _wire_channel_reports(self) -> None:
        """CHANNEL SUBSYSTEM CALL for the CPUs, and the floating machine check the channel
        subsystem raises when it queues a channel report word (a hot-plug or unplug)."""
        import vmd.cpu.chsc  # noqa: F401  (registers CHANNEL SUBSYSTEM CALL)
        from vmd.cpu.chsc import MachineCheckLine

        self.machine_checks = MachineCheckLine()
        for cpu in self.cpus:
            cpu.machine_checks = self.machine_checks
        self.machine.css.on_crw_pending = self._crw_pending

    def _crw_pending(self) -> None:
        """A channel report word the guest has not been told about (any thread): the machine
        check becomes pending, and every CPU looks (one waiting enabled for it wakes)."""
        self.machine_checks.raise_channel_report()
        self._io_pending()

    def _reset_channel_reports(self) -> None:
        """Subsystem reset (QEMU css_reset and the interruption controller's reset): no channel
        report words, no pending machine check, MCSS-E and MSS off again."""
        self.machine_checks.clear()
        self.machine.css.reset()

    def _stopped(self, cpu: Vcpu) -> None:
        if not any(c.running() for c in self.cpus):
            self.ended = True
            self.call(self.machine.shutdown, "guest-shutdown", True)
