"""Channel-subsystem execution: SCHIBs, start/halt/clear functions, channel programs, I/O interruptions.

The CSS model (:mod:`vmd.machine.css`) gives every device its subchannel
identity; this module gives those subchannels their architected state and
runs channel programs against the devices:

* the path-management control word (PMCW) and subchannel-status word (SCSW)
  of each subchannel, stored by STSCH, changed by MSCH;
* START SUBCHANNEL: the ORB, format-0/1 CCWs, command and data chaining,
  SLI, SKIP, PCI, TIC, and format-1/2 IDAWs; a device sees one CCW at a time
  through :meth:`ChannelDevice.execute_ccw` and a bounded data stream;
* status: channel end and device end, unit check/exception from devices,
  channel program check (cstat 0x20) and protection/addressing checks for bad
  CCWs, and the subchannel's interruption pending until TEST SUBCHANNEL;
* the floating I/O-interruption queue per ISC, which CPUs take when their
  PSW and CR6 enable it.

Channel programs run synchronously in the instruction's context: devices are
in-process and fast; a device that must wait answers later with
:meth:`ChannelSubsystemIO.device_status`.  Semantics follow the z/Architecture
Principles of Operation, chapters 13-16, as QEMU's css.c implements them.
"""

from __future__ import annotations

import collections
import struct
import threading
from dataclasses import dataclass, field
from typing import Protocol

from vmd.machine.css import ChannelReportWord, ChannelSubsystem, Subchannel
from vmd.machine.memory import AddressingError, GuestMemory

# PMCW flags (halfword)
PMCW_ISC_MASK = 0x3800
PMCW_ENABLED = 0x0080
PMCW_LM = 0x0060
PMCW_MME = 0x0018
PMCW_MP = 0x0004
PMCW_TF = 0x0002
PMCW_DNV = 0x0001
PMCW_CHARS_CSENSE = 0x00010000  # concurrent sense
# SCSW function control / activity control / status control
FCTL_START = 0x4000
FCTL_HALT = 0x2000
FCTL_CLEAR = 0x1000
ACTL_START_PEND = 0x0400
ACTL_SUSP = 0x0020
STCTL_ALERT = 0x0010
STCTL_INTERMEDIATE = 0x0008
STCTL_PRIMARY = 0x0004
STCTL_SECONDARY = 0x0002
STCTL_STATUS_PEND = 0x0001
# device status
DEV_ATTENTION = 0x80
DEV_CHANNEL_END = 0x08
DEV_DEVICE_END = 0x04
DEV_UNIT_CHECK = 0x02
DEV_UNIT_EXCEPTION = 0x01
# subchannel (channel) status
SCH_PCI = 0x80
SCH_INCORRECT_LENGTH = 0x40
SCH_PROGRAM_CHECK = 0x20
SCH_PROTECTION_CHECK = 0x10
SCH_CHANNEL_DATA_CHECK = 0x08
SCH_CHAIN_CHECK = 0x01
# CCW flags
CCW_CD = 0x80
CCW_CC = 0x40
CCW_SLI = 0x20
CCW_SKIP = 0x10
CCW_PCI = 0x08
CCW_IDA = 0x04
CCW_SUSPEND = 0x02
CCW_MIDA = 0x01
CCW_CMD_TIC = 0x08
CCW_CMD_NOOP = 0x03
CCW_CMD_SENSE = 0x04
CCW_CMD_SENSE_ID = 0xE4

MAX_CCWS = 1 << 16  # a channel program longer than this is a program check (loop guard)


class ChannelDevice(Protocol):
    """What a device on a subchannel implements for channel programs."""

    def execute_ccw(self, command: int, stream: "DataStream") -> int:
        """Run one CCW; return device status bits beyond channel end/device end (0 when normal).

        Reads and writes guest data only through ``stream``; may raise :class:`UnitCheck`.
        """


class UnitCheck(Exception):
    """A device refuses a command: unit check with these sense bytes."""

    def __init__(self, sense: bytes = b"\x80"):  # byte 0 bit 0: command reject
        super().__init__("unit check")
        self.sense = sense


class ChannelProgramCheck(Exception):
    """A malformed CCW or data address: channel program check."""

    def __init__(self, cstat: int = SCH_PROGRAM_CHECK):
        super().__init__("channel program check")
        self.cstat = cstat


class DataStream:
    """A CCW's data area: contiguous, or scattered through IDAWs; reads and writes advance it."""

    def __init__(self, memory: GuestMemory, address: int, count: int, ida: bool, idaw_format2: bool,
                 read_only: bool = False, flags: int = 0):
        self.memory = memory
        #: the CCW's data address and flags, for devices that check them as QEMU's do
        self.cda = address
        self.flags = flags
        self.done = 0
        self.read_only = read_only
        self._segments: list[tuple[int, int]] = []
        self.count = 0
        self.extend(address, count, ida, idaw_format2)

    def extend(self, address: int, count: int, ida: bool, idaw_format2: bool) -> None:
        """Add a data area (the next CCW of a data chain)."""
        self.count += count
        if not ida:
            self._segments.append((address, count))
        else:
            self._idaws(address, count, idaw_format2)

    def _idaws(self, list_addr: int, count: int, fmt2: bool) -> None:
        block = 4096 if fmt2 else 2048
        remaining = count
        first = True
        pos = list_addr
        while remaining > 0:
            try:
                data_addr = self.memory.u64(pos) if fmt2 else self.memory.u32(pos)
            except AddressingError:
                raise ChannelProgramCheck() from None
            if not fmt2 and data_addr & 0x80000000:
                raise ChannelProgramCheck()
            size = block - (data_addr % block) if first else block
            if not first and data_addr % block:
                raise ChannelProgramCheck()
            size = min(size, remaining)
            self._segments.append((data_addr, size))
            remaining -= size
            pos += 8 if fmt2 else 4
            first = False

    @property
    def residual(self) -> int:
        return self.count - self.done

    def _walk(self, n: int):
        skip = self.done
        for addr, size in self._segments:
            if skip >= size:
                skip -= size
                continue
            take = min(size - skip, n)
            yield addr + skip, take
            n -= take
            skip = 0
            if n == 0:
                return

    def read(self, n: int) -> bytes:
        n = min(n, self.residual)
        out = bytearray()
        try:
            for addr, take in self._walk(n):
                out += self.memory.read(addr, take)
        except AddressingError:
            raise ChannelProgramCheck() from None
        self.done += len(out)
        return bytes(out)

    def write(self, data: bytes) -> int:
        n = min(len(data), self.residual)
        pos = 0
        try:
            for addr, take in self._walk(n):
                self.memory.write(addr, data[pos:pos + take])
                pos += take
        except AddressingError:
            raise ChannelProgramCheck() from None
        self.done += pos
        return pos


@dataclass
class SubchannelIO:
    """The architected state of one subchannel."""

    intparm: int = 0
    flags: int = PMCW_DNV
    lpm: int = 0x80
    pnom: int = 0
    lpum: int = 0
    pim: int = 0x80
    mbi: int = 0
    pom: int = 0xFF
    pam: int = 0x80
    chpids: bytes = bytes(8)
    chars: int = 0
    # SCSW
    scsw_flags: int = 0
    scsw_ctrl: int = 0
    cpa: int = 0
    dstat: int = 0
    cstat: int = 0
    count: int = 0
    sense: bytes = bytes(32)
    isc: int = 0
    orb_format1: bool = True

    @property
    def enabled(self) -> bool:
        return bool(self.flags & PMCW_ENABLED)

    @property
    def status_pending(self) -> bool:
        return bool(self.scsw_ctrl & STCTL_STATUS_PEND)


@dataclass
class IoInterrupt:
    sid: int
    intparm: int
    isc: int
    #: an adapter interruption (no subchannel: sid and intparm are 0)
    adapter: bool = False

    @property
    def word(self) -> int:
        """The interruption-identification word: the ISC, and the A bit for adapter interruptions."""
        return (0x80000000 if self.adapter else 0) | (self.isc << 27)


@dataclass
class ChannelSubsystemIO:
    css: ChannelSubsystem
    memory: GuestMemory
    #: floating I/O interruptions by ISC (0..7)
    pending: list[collections.deque] = field(default_factory=lambda: [collections.deque() for _ in range(8)])
    lock: threading.Lock = field(default_factory=threading.Lock)
    on_interrupt: object = None  # called (no args) when an I/O interruption becomes pending

    def io(self, sch: Subchannel) -> SubchannelIO:
        state = getattr(sch, "io", None)
        if state is None:
            state = SubchannelIO(chpids=bytes([sch.chpid]) + bytes(7))
            state.flags = PMCW_DNV
            sch.io = state  # type: ignore[attr-defined]
        return state

    def lookup_sid(self, sid: int) -> Subchannel | None:
        """The subchannel a subsystem-identification word names, or None (malformed or absent)."""
        if not sid & 0x00010000:
            return None
        m = bool(sid & 0x00080000)
        cssid = sid >> 24
        if cssid and not m:
            return None
        return self.css.lookup_guest(cssid, (sid >> 17) & 3, sid & 0xFFFF, m)

    def sid(self, sch: Subchannel) -> int:
        """The subsystem-identification word the guest uses for this subchannel."""
        view_cssid = 0 if (sch.cssid == self.css.default_cssid and not self.css.mcsse_enabled) else sch.cssid
        m = 0x00080000 if self.css.mcsse_enabled else 0
        return (view_cssid << 24) | m | (sch.ssid << 17) | 0x00010000 | sch.schid

    def reset(self) -> None:
        """Subsystem reset: every subchannel disabled and idle, no interruption pending."""
        with self.lock:
            for queue in self.pending:
                queue.clear()
        for sch in self.css.subchannels():
            if getattr(sch, "io", None) is not None:
                sch.io = SubchannelIO(chpids=bytes([sch.chpid]) + bytes(7))  # type: ignore[attr-defined]

    # -- STSCH / MSCH --------------------------------------------------------------------
    def store_schib(self, sch: Subchannel) -> bytes:
        st = self.io(sch)
        flags = (st.flags & ~PMCW_ISC_MASK) | (st.isc << 11)
        pmcw = struct.pack(">IHHBBBBHBB8sI", st.intparm, flags, sch.devno, st.lpm, st.pnom, st.lpum, st.pim,
                           st.mbi, st.pom, st.pam, st.chpids, st.chars)
        scsw = struct.pack(">HHIBBH", st.scsw_flags, st.scsw_ctrl, st.cpa, st.dstat, st.cstat, st.count)
        return pmcw + scsw + bytes(12)  # measurement-block address and model area

    def modify(self, sch: Subchannel, schib: bytes) -> int:
        """MSCH: cc 0 done, 1 status pending, 2 busy."""
        st = self.io(sch)
        if st.status_pending:
            return 1
        if st.scsw_ctrl & (FCTL_START | FCTL_HALT | FCTL_CLEAR):
            return 2
        intparm, flags = struct.unpack_from(">IH", schib, 0)
        lpm = schib[8]
        mbi = struct.unpack_from(">H", schib, 12)[0]
        pom = schib[14]
        st.intparm = intparm
        st.isc = (flags & PMCW_ISC_MASK) >> 11
        if st.enabled and not flags & PMCW_ENABLED:
            handler = getattr(sch.owner, "io_handler", None)
            if handler is not None:
                handler.subchannel_disabled()
        st.flags = (st.flags & ~(PMCW_ENABLED | PMCW_LM | PMCW_MME | PMCW_MP)) | (
            flags & (PMCW_ENABLED | PMCW_LM | PMCW_MME | PMCW_MP))
        st.lpm, st.mbi, st.pom = lpm, mbi, pom
        return 0

    # -- functions -------------------------------------------------------------------------
    def start(self, sch: Subchannel, orb: bytes) -> int:
        """SSCH: cc 0 started (and here: completed), 1 status pending, 2 busy, 3 not operational."""
        st = self.io(sch)
        if not st.enabled:
            return 3
        if st.status_pending:
            return 1
        if st.scsw_ctrl & (FCTL_START | FCTL_HALT | FCTL_CLEAR):
            return 2
        intparm, ctrl0, ctrl1, cpa = struct.unpack_from(">IHHI", orb, 0)
        st.intparm = intparm
        key = ctrl0 >> 12
        fmt1 = bool(ctrl0 & 0x0080)  # ORB word 1 bit 8: format-1 CCWs
        idaw_fmt2 = bool(ctrl0 & 0x0002)  # bit 14: format-2 (64-bit) IDAWs
        st.scsw_flags = key << 12
        st.scsw_ctrl = FCTL_START
        st.dstat = st.cstat = 0
        self._run_program(sch, st, cpa & 0x7FFFFFFF, fmt1, idaw_fmt2)
        return 0

    def halt(self, sch: Subchannel) -> int:
        st = self.io(sch)
        if not st.enabled:
            return 3
        if st.scsw_ctrl & STCTL_STATUS_PEND and not st.scsw_ctrl & STCTL_INTERMEDIATE:
            return 1
        if st.scsw_ctrl & (FCTL_HALT | FCTL_CLEAR):
            return 2
        st.scsw_ctrl = FCTL_HALT | STCTL_PRIMARY | STCTL_STATUS_PEND
        st.dstat = DEV_CHANNEL_END | DEV_DEVICE_END
        self._post(sch, st)
        return 0

    def clear(self, sch: Subchannel) -> int:
        st = self.io(sch)
        if not st.enabled:
            return 3
        st.scsw_ctrl = FCTL_CLEAR | STCTL_STATUS_PEND
        st.dstat = st.cstat = 0
        self._post(sch, st)
        return 0

    def cancel(self, sch: Subchannel) -> int:
        """XSCH: nothing is ever start-pending here, so there is nothing to cancel (cc 2)."""
        st = self.io(sch)
        if not st.enabled:
            return 3
        if st.status_pending:
            return 1
        return 2

    def resume(self, sch: Subchannel) -> int:
        """RSCH: no channel program is ever suspended here (cc 2), unless status is pending."""
        st = self.io(sch)
        if not st.enabled:
            return 3
        return 1 if st.status_pending else 2

    def test(self, sch: Subchannel) -> tuple[int, bytes]:
        """TSCH: (cc, IRB).  cc 0 status was pending (now cleared), 1 none pending."""
        st = self.io(sch)
        scsw = struct.pack(">HHIBBH", st.scsw_flags, st.scsw_ctrl, st.cpa, st.dstat, st.cstat, st.count)
        esw = bytes(20)
        # sense bytes ride in the ECW only with concurrent sense, which virtual devices lack (as
        # in QEMU): the driver issues SENSE
        ecw = (st.sense[:32].ljust(32, b"\0") if st.dstat & DEV_UNIT_CHECK and st.chars & PMCW_CHARS_CSENSE
               else bytes(32))
        irb = scsw + esw + ecw + bytes(32)
        if not st.status_pending:
            return 1, irb
        st.scsw_ctrl = 0  # the status stays in the SCSW until the next start function (as QEMU)
        self._unqueue(sch)
        return 0, irb

    # -- channel programs ------------------------------------------------------------------
    def _fetch(self, address: int, fmt1: bool) -> tuple[int, int, int, int]:
        if address % 8:
            raise ChannelProgramCheck()
        try:
            raw = self.memory.read(address, 8)
        except AddressingError:
            raise ChannelProgramCheck() from None
        if fmt1:
            cmd, flags, count, cda = struct.unpack(">BBHI", raw)
            if cda & 0x80000000:
                raise ChannelProgramCheck()
        else:
            cmd = raw[0]
            cda = int.from_bytes(raw[1:4], "big")
            flags = raw[4]
            count = struct.unpack_from(">H", raw, 6)[0]
        return cmd, flags, count, cda

    def _run_program(self, sch: Subchannel, st: SubchannelIO, cpa: int, fmt1: bool, idaw_fmt2: bool) -> None:
        device = sch.owner
        address = cpa
        tic_ok = True
        executed = 0
        status = DEV_CHANNEL_END | DEV_DEVICE_END
        cstat = 0
        try:
            while True:
                executed += 1
                if executed > MAX_CCWS:
                    raise ChannelProgramCheck()
                cmd, flags, count, cda = self._fetch(address, fmt1)
                if cmd & 0x0F == CCW_CMD_TIC:
                    if not tic_ok or flags or (cda & 7):
                        raise ChannelProgramCheck()
                    tic_ok = False  # a TIC may not follow a TIC
                    address = cda
                    continue
                tic_ok = True
                # QEMU's checks: a command code ending in 0 is invalid, and only format-0 CCWs must
                # have a non-zero count (format-1 commands such as virtio's reset carry no data)
                if cmd & 0x0F == 0 or (not fmt1 and count == 0):
                    raise ChannelProgramCheck()
                if flags & CCW_MIDA:
                    raise ChannelProgramCheck()
                stream = DataStream(self.memory, cda, 0 if flags & CCW_SKIP else count, bool(flags & CCW_IDA),
                                    idaw_fmt2, flags=flags)
                # data chaining: the following CCWs only add data areas to this one operation
                last_flags, last_count = flags, count
                while last_flags & CCW_CD:
                    address += 8
                    executed += 1
                    if executed > MAX_CCWS:
                        raise ChannelProgramCheck()
                    _cmd, last_flags, last_count, cda = self._fetch(address, fmt1)
                    if _cmd & 0x0F == CCW_CMD_TIC:
                        raise ChannelProgramCheck()  # (TIC inside a data chain is not modelled)
                    stream.extend(cda, 0 if last_flags & CCW_SKIP else last_count, bool(last_flags & CCW_IDA),
                                  idaw_fmt2)
                extra = self._execute(device, sch, st, cmd, stream)
                residual = stream.residual if not last_flags & CCW_SKIP else 0
                st.count = min(residual, last_count)
                st.cpa = address + 8
                if flags & CCW_PCI:
                    cstat |= SCH_PCI
                if extra & DEV_UNIT_CHECK:
                    status = DEV_UNIT_CHECK  # a command reject ends the program with unit check alone
                    break
                if extra & DEV_UNIT_EXCEPTION:
                    status |= extra
                    break
                if residual and not last_flags & CCW_SLI and cmd != CCW_CMD_NOOP:
                    cstat |= SCH_INCORRECT_LENGTH
                    break
                if last_flags & CCW_CC:
                    address += 8
                    continue
                break
        except ChannelProgramCheck as check:
            cstat |= check.cstat
            st.cpa = address + 8
            status = 0
        st.dstat = status
        st.cstat = cstat
        st.scsw_ctrl = FCTL_START | STCTL_PRIMARY | STCTL_SECONDARY | STCTL_STATUS_PEND
        if cstat & (SCH_PROGRAM_CHECK | SCH_PROTECTION_CHECK | SCH_CHANNEL_DATA_CHECK | SCH_CHAIN_CHECK):
            st.scsw_ctrl |= STCTL_ALERT
            st.scsw_ctrl &= ~STCTL_SECONDARY
        self._post(sch, st)

    def _execute(self, device, sch: Subchannel, st: SubchannelIO, cmd: int, stream: DataStream) -> int:
        try:
            if cmd == CCW_CMD_SENSE_ID and hasattr(device, "sense_id"):
                return self._sense_id(device, stream)
            if cmd == CCW_CMD_SENSE:
                stream.write(st.sense[:stream.count])
                return 0
            if cmd == CCW_CMD_NOOP:
                return 0
            # a device with a transport (virtio-ccw) lets it run the commands
            handler = getattr(getattr(device, "io_handler", None) or device, "execute_ccw", None)
            if handler is None:
                raise UnitCheck()
            return handler(cmd, stream) or 0
        except UnitCheck as check:
            st.sense = check.sense.ljust(32, b"\0")
            return DEV_UNIT_CHECK

    @staticmethod
    def _sense_id(device, stream: DataStream) -> int:
        """SENSE ID: up to 256 bytes; byte 0 is 0xff only when bytes 0-3 fit (as QEMU)."""
        data = bytearray(device.sense_id().ljust(256, b"\0"))
        if stream.count < 4:
            data[0] = 0
        stream.write(bytes(data[:stream.count]))
        return 0

    # -- interruptions ---------------------------------------------------------------------
    def conditional_interrupt(self, sch: Subchannel) -> None:
        """A device's unsolicited alert (virtio's classic notification): status pending unless it already is."""
        st = self.io(sch)
        if not st.enabled or st.status_pending:
            return
        st.scsw_ctrl = STCTL_ALERT | STCTL_STATUS_PEND  # device and channel status stay as they were
        self._post(sch, st)

    def adapter_interrupt(self, isc: int) -> None:
        """A floating adapter interruption for ``isc``; one pending per ISC is enough (they carry no data)."""
        with self.lock:
            queue = self.pending[isc]
            if any(item.adapter for item in queue):
                return
            queue.append(IoInterrupt(0, 0, isc, adapter=True))
        if callable(self.on_interrupt):
            self.on_interrupt()

    def _post(self, sch: Subchannel, st: SubchannelIO) -> None:
        with self.lock:
            self.pending[st.isc].append(IoInterrupt(self.sid(sch), st.intparm, st.isc))
        if callable(self.on_interrupt):
            self.on_interrupt()

    def _unqueue(self, sch: Subchannel) -> None:
        sid = self.sid(sch)
        with self.lock:
            for queue in self.pending:
                for item in list(queue):
                    if item.sid == sid:
                        queue.remove(item)

    def take(self, cr6: int) -> IoInterrupt | None:
        """Dequeue the first pending interruption whose ISC CR6 enables (bits 32-39 of CR6)."""
        with self.lock:
            for isc in range(8):
                if cr6 & (0x80000000 >> isc) and self.pending[isc]:
                    return self.pending[isc].popleft()
        return None

    def pop_crw(self) -> ChannelReportWord | None:
        return self.css.pop_crw()
