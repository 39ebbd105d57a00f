"""A SCSI bus: logical units by address, and the life of one request on it (SAM-5).

The host adapter hands a CDB for (channel, target, LUN) to :meth:`ScsiBus.request`;
the bus picks who answers it as QEMU's SCSI layer does:

* a pending unit attention condition (the unit's, else the bus's) answers everything
  but INQUIRY, REPORT LUNS, GET CONFIGURATION and GET EVENT STATUS NOTIFICATION (and
  REQUEST SENSE while the unit attention is what the sense data holds); any other
  command that completes clears it;
* the *target* answers REPORT LUNS, REQUEST SENSE with stored sense data, and every
  command for a LUN nobody has (INQUIRY says "no LUN", the rest is LOGICAL UNIT NOT
  SUPPORTED);
* the logical unit itself answers the rest.

Requests complete synchronously.  The adapter offers a data area of ``size`` bytes in
one direction; a command whose transfer does not fit is refused before it runs
(the adapter's overrun), after the request was made, so a unit attention fetched for
it is gone, as in QEMU.  The data area is reached through a :class:`DataArea`
(offsets within it), so a large transfer moves piece by piece and is never held
whole, whatever size the driver claims.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Callable, Protocol

from vmd.scsi import cdb as op
from vmd.scsi import sense as sn
from vmd.scsi.cdb import Command
from vmd.scsi.sense import CHECK_CONDITION, GOOD, Sense

#: the widest address a virtio-scsi bus has (QEMU's VIRTIO_SCSI_MAX_*)
MAX_CHANNEL = 0
MAX_TARGET = 255
MAX_LUN = 16383
#: transfers beyond this are refused with INVALID FIELD IN CDB
MAX_TRANSFER = (1 << 31) - 1
#: the length of the standard INQUIRY data the target builds
INQUIRY_LEN = 36
#: what QEMU's targets and disks call their revision
HW_VERSION = "2.5+"
UNSET = 0xFFFFFFFF


class AddressError(Exception):
    """A unit cannot take the address it asked for; the message is QEMU's."""


class DataArea(Protocol):
    """The driver's data area of a request, by offset: read for data to the device, written for
    data from it.  Offsets and lengths stay within the area's size."""

    def read(self, offset: int, length: int) -> bytes: ...

    def write(self, offset: int, data: bytes) -> None: ...


class BufferArea:
    """A data area in memory (for tests and adapters that hold the data themselves)."""

    def __init__(self, data: bytes | bytearray = b"", size: int | None = None):
        self.data = bytearray(data)
        if size is not None:
            self.data = self.data[:size].ljust(size, b"\0")

    def read(self, offset: int, length: int) -> bytes:
        return bytes(self.data[offset:offset + length])

    def write(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        if end > len(self.data):
            self.data.extend(bytes(end - len(self.data)))
        self.data[offset:end] = data


@dataclass
class Outcome:
    """What a command did: its status, and the data phase it had.

    ``data`` is what an emulated command returns for the driver (the bus writes it to the
    data area), or None without a data phase to the host; ``consumed`` the bytes taken from
    the driver (host to device).  A ``block_io`` transfer (READ, WRITE) moved ``consumed``
    bytes through the data area itself, either way, and QEMU counts it against the command's
    transfer length rather than the area.
    """

    status: int = GOOD
    sense: Sense | None = None
    data: bytes | None = None
    consumed: int | None = None
    block_io: bool = False


@dataclass
class Completion:
    """A finished request as the adapter reports it."""

    status: int
    #: autosense for CHECK CONDITION: fixed-format sense data
    sense: bytes = b""
    #: what went to the data area, when the request ran without an area of the adapter's
    data: bytes = b""
    #: QEMU's residual: the data area less what moved, or the transfer length less the area
    residual: int = 0
    #: the bytes that went to the data area
    moved: int = 0


class CheckCondition(Exception):
    """A command ends with CHECK CONDITION and this sense."""

    def __init__(self, sense: Sense):
        super().__init__(sense)
        self.sense = sense


class ScsiDevice:
    """A logical unit: its address and the state every unit keeps between commands."""

    device_type = op.TYPE_DISK

    def __init__(self, channel: int = 0, target: int = UNSET, lun: int = UNSET, label: str | None = None):
        self.channel = channel
        self.target = target
        self.lun = lun
        #: the unit's name in QEMU's messages (its id, or "(null)")
        self.label = label
        self.bus: ScsiBus | None = None
        self.unit_attention = sn.NO_SENSE_CODE
        #: sense data of the last command that completed (empty after a GOOD one)
        self.sense = b""
        self.sense_is_ua = False
        self.block_size = 512

    # -- state -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Device reset: pending requests end, a "power on, reset" unit attention waits."""
        self.set_unit_attention(sn.RESET)

    def set_unit_attention(self, condition: Sense) -> None:
        if sn.unit_attention_rank(condition) < sn.unit_attention_rank(self.unit_attention):
            self.unit_attention = condition

    def unit_attention_reported(self) -> None:
        """The driver saw the unit attention condition in sense data."""

    # -- commands ------------------------------------------------------------------------------
    def execute(self, command: Command, size: int, area: DataArea) -> Outcome:
        raise CheckCondition(sn.INVALID_OPCODE)

    def flush(self) -> None:
        """Write back what the unit caches (the bus is reset or the unit leaves)."""


# request kinds: who answers it
_INVALID_OPCODE = "invalid-opcode"
_INVALID_FIELD = "invalid-field"
_UNIT_ATTENTION = "unit-attention"
_TARGET = "target"
_DEVICE = "device"
_UA_EXEMPT = frozenset({op.INQUIRY, op.REPORT_LUNS, op.GET_CONFIGURATION, op.GET_EVENT_STATUS_NOTIFICATION})


class Request:
    """One command for a unit, made by :meth:`ScsiBus.request`; :meth:`run` carries it out once."""

    def __init__(self, bus: "ScsiBus", device: ScsiDevice, lun: int, cdb: bytes):
        self.bus = bus
        self.device = device
        self.lun = lun
        code = cdb[0] if cdb else None
        pending = sn.UNIT_ATTENTION in (device.unit_attention.key, bus.unit_attention.key)
        if (pending and code not in _UA_EXEMPT
                and not (code == op.REQUEST_SENSE and device.sense_is_ua)):
            kind = _UNIT_ATTENTION
        elif lun != device.lun or code == op.REPORT_LUNS or (code == op.REQUEST_SENSE and device.sense):
            kind = _TARGET
        else:
            kind = _DEVICE
        self.command = op.parse(cdb, device.device_type, device.block_size)
        if self.command is None:
            kind = _INVALID_OPCODE
        elif self.command.xfer > MAX_TRANSFER:
            kind = _INVALID_FIELD
        self.kind = kind
        self.fetched: Sense | None = None
        if kind == _UNIT_ATTENTION:
            # taken now, so that the next request does not see it as well (even if this one never runs)
            holder = device if device.unit_attention.key == sn.UNIT_ATTENTION else bus
            self.fetched = holder.unit_attention
            holder.unit_attention = sn.NO_SENSE_CODE

    @property
    def xfer(self) -> int:
        return self.command.xfer if self.command is not None else 0

    @property
    def mode(self) -> int:
        return self.command.mode if self.command is not None else op.XFER_NONE

    def run(self, size: int, area: DataArea | bytes = b"") -> Completion:
        """Carry the command out with the driver's data area of ``size`` bytes: a DataArea, or
        the bytes going to the device (then what comes back is the Completion's ``data``).
        The sense data of a failure is fetched as autosense."""
        own = not hasattr(area, "read")
        if own:
            area = BufferArea(area, size)
        try:
            outcome = self._dispatch(size, area)
        except CheckCondition as failure:
            outcome = Outcome(CHECK_CONDITION, failure.sense)
        completion = self._complete(outcome, size, area)
        if own and completion.status == GOOD and self.mode == op.XFER_FROM_DEV:
            completion.data = bytes(area.data[:completion.moved])
        return completion

    def _clear_unit_attention(self) -> None:
        """A command that completes clears a pending unit attention of its unit, as QEMU 7.2 does
        for HBAs without autosense, except the commands that must leave it (SPC-4 5.14, MMC-6 6.5):
        INQUIRY, GET CONFIGURATION, GET EVENT STATUS NOTIFICATION, and REPORT LUNS unless the
        condition is "reported LUNs data has changed".  A request that was not parsed counts as
        operation code 0."""
        if self.kind == _UNIT_ATTENTION:
            return
        if self.device.unit_attention.key == sn.UNIT_ATTENTION:
            holder = self.device
        elif self.bus.unit_attention.key == sn.UNIT_ATTENTION:
            holder = self.bus
        else:
            return
        code = self.command.opcode if self.command is not None else op.TEST_UNIT_READY
        if code in (op.INQUIRY, op.GET_CONFIGURATION, op.GET_EVENT_STATUS_NOTIFICATION):
            return
        if code == op.REPORT_LUNS and holder.unit_attention != sn.REPORTED_LUNS_CHANGED:
            return
        holder.unit_attention = sn.NO_SENSE_CODE

    def _dispatch(self, size: int, area: DataArea) -> Outcome:
        if self.kind == _INVALID_OPCODE:
            raise CheckCondition(sn.INVALID_OPCODE)
        if self.kind == _INVALID_FIELD:
            raise CheckCondition(sn.INVALID_FIELD)
        if self.kind == _UNIT_ATTENTION:
            raise CheckCondition(self.fetched)
        if self.kind == _TARGET:
            return self.bus.target_command(self)
        return self.device.execute(self.command, size, area)

    def _complete(self, outcome: Outcome, size: int, area: DataArea) -> Completion:
        device = self.device
        stored = outcome.sense.fixed() if outcome.status != GOOD and outcome.sense is not None else b""
        device.sense = stored
        device.sense_is_ua = bool(stored) and self.kind == _UNIT_ATTENTION
        self._clear_unit_attention()
        if outcome.status != GOOD:
            if device.sense_is_ua:
                # autosense reports the unit attention: the unit forgets it
                device.unit_attention_reported()
                device.sense, device.sense_is_ua = b"", False
            return Completion(outcome.status, sense=stored)
        moved = 0
        if outcome.block_io:
            residual = self.xfer - size
            moved = outcome.consumed or 0
        elif outcome.data is not None and self.mode == op.XFER_FROM_DEV and outcome.data:
            data = outcome.data[:size]
            area.write(0, data)
            moved = len(data)
            residual = size - moved
        elif outcome.consumed:
            residual = size - min(outcome.consumed, size)
        else:
            residual = self.xfer
        return Completion(GOOD, residual=residual, moved=moved)


@dataclass
class ScsiBus:
    """The units behind one host adapter, in QEMU's order: the newest first."""

    name: str
    tcq: bool = True
    max_channel: int = MAX_CHANNEL
    max_target: int = MAX_TARGET
    max_lun: int = MAX_LUN
    devices: list[ScsiDevice] = field(default_factory=list)
    #: called with (unit, plugged?) when a unit is hot-plugged or unplugged
    listeners: list[Callable[[ScsiDevice, bool], None]] = field(default_factory=list)
    #: a unit attention condition for every unit, reported by the first that is asked
    unit_attention: Sense = sn.NO_SENSE_CODE
    type_name = "SCSI"

    def set_unit_attention(self, condition: Sense) -> None:
        if sn.unit_attention_rank(condition) < sn.unit_attention_rank(self.unit_attention):
            self.unit_attention = condition

    # -- addresses ---------------------------------------------------------------------------
    def find(self, channel: int, target: int, lun: int) -> ScsiDevice | None:
        """The unit at an address, or the first unit of that target (which answers for a LUN
        it lacks), or None for a target without units."""
        fallback = None
        for device in self.devices:
            if device.channel == channel and device.target == target:
                if device.lun == lun:
                    return device
                if fallback is None:
                    fallback = device
        return fallback

    def _taken(self, channel: int, target: int, lun: int) -> ScsiDevice | None:
        device = self.find(channel, target, lun)
        return device if device is not None and device.lun == lun else None

    def check_address(self, device: ScsiDevice) -> None:
        """QEMU's address rules and texts; raises AddressError."""
        if device.channel > self.max_channel:
            raise AddressError(f"bad scsi channel id: {_c_int(device.channel)}")
        if device.target != UNSET and device.target > self.max_target:
            raise AddressError(f"bad scsi device id: {_c_int(device.target)}")
        if device.lun != UNSET and device.lun > self.max_lun:
            raise AddressError(f"bad scsi device lun: {_c_int(device.lun)}")
        if device.target != UNSET and device.lun != UNSET:
            holder = self._taken(device.channel, device.target, device.lun)
            if holder is not None:
                raise AddressError(f"lun already used by '{holder.label or '(null)'}'")

    def assign_address(self, device: ScsiDevice) -> None:
        """Fill in a target (the lowest free one for its LUN) or a LUN (the lowest free one)."""
        if device.target == UNSET:
            lun = 0 if device.lun == UNSET else device.lun
            for target in range(self.max_target + 1):
                if self._taken(device.channel, target, lun) is None:
                    device.target, device.lun = target, lun
                    return
            raise AddressError("no free target")
        if device.lun == UNSET:
            for lun in range(self.max_lun + 1):
                if self._taken(device.channel, device.target, lun) is None:
                    device.lun = lun
                    return
            raise AddressError("no free lun")

    def attach(self, device: ScsiDevice, hotplugged: bool = False) -> None:
        """Plug a unit in (its address checked and complete); it starts from a reset."""
        device.bus = self
        self.devices.insert(0, device)
        device.reset()
        if hotplugged:
            for listener in list(self.listeners):
                listener(device, True)

    def detach(self, device: ScsiDevice) -> None:
        if device not in self.devices:
            return
        self.devices.remove(device)
        device.flush()
        for listener in list(self.listeners):
            listener(device, False)
        device.bus = None

    def reset(self) -> None:
        """Bus reset: every unit resets."""
        for device in self.devices:
            device.reset()

    # -- requests ------------------------------------------------------------------------------
    def request(self, device: ScsiDevice, lun: int, cdb: bytes) -> Request:
        return Request(self, device, lun, cdb)

    def target_command(self, request: Request) -> Outcome:
        """What the target answers itself: REPORT LUNS, INQUIRY and REQUEST SENSE for LUNs it lacks."""
        command = request.command
        code = command.opcode
        if request.lun != 0 and code not in (op.INQUIRY, op.REQUEST_SENSE):
            raise CheckCondition(sn.LUN_NOT_SUPPORTED)
        if code == op.REPORT_LUNS:
            data = self._report_luns(request)
        elif code == op.INQUIRY:
            data = self._target_inquiry(request)
        elif code == op.REQUEST_SENSE:
            data = self._target_request_sense(request)
        elif code == op.TEST_UNIT_READY:
            data = b""
        else:
            raise CheckCondition(sn.INVALID_OPCODE)
        return Outcome(data=data)

    def _report_luns(self, request: Request) -> bytes:
        command = request.command
        if command.xfer < 16 or command.cdb[2] > 2:
            raise CheckCondition(sn.INVALID_FIELD)
        me = request.device
        entries = [bytes(8)]  # LUN 0 is always there
        for device in self.devices:
            if device.channel == me.channel and device.target == me.target and device.lun != 0:
                entries.append(_lun_entry(device.lun))
        body = b"".join(entries)
        data = struct.pack(">I4x", len(body)) + body
        return data[:min(len(data), command.xfer & ~7)]

    def _target_inquiry(self, request: Request) -> bytes:
        command = request.command
        if command.cdb[1] & 0x2:  # command support data
            raise CheckCondition(sn.INVALID_FIELD)
        if command.cdb[1] & 0x1:
            page = command.cdb[2]
            if page != 0x00:
                raise CheckCondition(sn.INVALID_FIELD)
            # QEMU puts the page code where the device type belongs
            return bytes((page, 0x00, 0x01, 0x00))[:command.xfer]
        if command.cdb[2] != 0:
            raise CheckCondition(sn.INVALID_FIELD)
        length = min(command.xfer, INQUIRY_LEN)
        data = bytearray(INQUIRY_LEN)
        if request.lun != 0:
            data[0] = op.TYPE_NO_LUN
        else:
            data[0] = op.TYPE_NOT_PRESENT | op.TYPE_INACTIVE
            data[2] = 5
            data[3] = 0x12
            data[4] = (length - 5) & 0xFF
            data[7] = 0x10 | (0x02 if self.tcq else 0)
            data[8:16] = b"QEMU    "
            data[16:32] = b"QEMU TARGET     "
            data[32:35] = HW_VERSION.encode()[:3]
        return bytes(data[:length])

    def _target_request_sense(self, request: Request) -> bytes:
        command = request.command
        device = request.device
        fixed = not command.cdb[1] & 1
        if request.lun != 0:
            data = sn.LUN_NOT_SUPPORTED.render(fixed)[:command.xfer]
        else:
            data = sn.convert(device.sense, min(command.xfer, sn.FIXED_SENSE_LEN), fixed)
        if device.sense_is_ua:
            device.unit_attention_reported()
            device.sense, device.sense_is_ua = b"", False
        return data


def _lun_entry(lun: int) -> bytes:
    """A LUN in REPORT LUNS: peripheral addressing below 256, flat space addressing above."""
    if lun < 256:
        return bytes((0, lun)) + bytes(6)
    return bytes((0x40 | lun >> 8, lun & 0xFF)) + bytes(6)


def _c_int(value: int) -> int:
    """A uint32 property printed with %d, as QEMU's messages do."""
    return value - (1 << 32) if value >= 1 << 31 else value
