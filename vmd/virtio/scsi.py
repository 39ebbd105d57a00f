"""virtio-scsi (virtio 1.2, section 5.6): a SCSI host adapter with control, event and request queues.

The request queues carry commands: a request header (LUN, tag, task attributes,
CDB), then data to the device, then a response header (sense length, residual,
status, response code, sense data), then data from the device.  The LUN field
addresses a unit as ``01 target LUN-high LUN-low`` (flat space addressing above
255).  The control queue carries task management functions and asynchronous
notification requests; the event queue holds buffers the device fills when units
are plugged in or out.  Sizes, response codes, the configuration space and every
answer follow QEMU 7.2's device, including how it treats headers without
VIRTIO_F_ANY_LAYOUT (the first buffer of each direction is the header, whatever
its length).  A header too short for its request breaks the device until the
driver resets it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from vmd.scsi import cdb as op
from vmd.scsi.bus import ScsiBus, ScsiDevice
from vmd.scsi.sense import GOOD, REPORTED_LUNS_CHANGED
from vmd.virtio.device import F_ANY_LAYOUT, VirtioBackend
from vmd.virtio.ring import Chain, Virtqueue, VirtqueueError

log = logging.getLogger("vmd.virtio")

VIRTIO_ID_SCSI = 8
# feature bits
F_INOUT = 0
F_HOTPLUG = 1
F_CHANGE = 2
F_T10_PI = 3
# queues: control, event, then the request queues
CONTROL_QUEUE = 0
EVENT_QUEUE = 1
FIXED_QUEUES = 2
#: the header sizes the device starts with; a driver may change them in the configuration space
CDB_SIZE = 32
SENSE_SIZE = 96
REQUEST_HEADER = 19  # LUN, tag, task attribute, priority, CRN (the CDB follows)
RESPONSE_HEADER = 12  # sense length, residual, status qualifier, status, response (sense follows)
TMF_REQUEST = 24
TMF_RESPONSE = 1
AN_REQUEST = 16
AN_RESPONSE = 5
EVENT_SIZE = 16
# response codes
S_OK = 0
S_OVERRUN = 1
S_ABORTED = 2
S_BAD_TARGET = 3
S_RESET = 4
S_BUSY = 5
S_TRANSPORT_FAILURE = 6
S_TARGET_FAILURE = 7
S_NEXUS_FAILURE = 8
S_FAILURE = 9
S_FUNCTION_SUCCEEDED = 10
S_FUNCTION_REJECTED = 11
S_INCORRECT_LUN = 12
# control requests
T_TMF = 0
T_AN_QUERY = 1
T_AN_SUBSCRIBE = 2
TMF_ABORT_TASK = 0
TMF_ABORT_TASK_SET = 1
TMF_CLEAR_ACA = 2
TMF_CLEAR_TASK_SET = 3
TMF_I_T_NEXUS_RESET = 4
TMF_LOGICAL_UNIT_RESET = 5
TMF_QUERY_TASK = 6
TMF_QUERY_TASK_SET = 7
# events
T_NO_EVENT = 0
T_TRANSPORT_RESET = 1
T_ASYNC_NOTIFY = 2
T_PARAM_CHANGE = 3
T_EVENTS_MISSED = 0x80000000
EVT_RESET_HARD = 0
EVT_RESET_RESCAN = 1
EVT_RESET_REMOVED = 2


@dataclass
class ScsiSettings:
    """The virtio-scsi-ccw properties that shape what the guest sees."""

    num_queues: int = 1
    virtqueue_size: int = 256
    seg_max_adjust: bool = True
    max_sectors: int = 0xFFFF
    cmd_per_lun: int = 128
    hotplug: bool = True
    param_change: bool = True


class _BadRequest(Exception):
    """QEMU's "wrong size for virtio-scsi headers": the device is broken until reset."""


class _Prepared:
    """A command request that passed the adapter's checks and waits to run."""

    def __init__(self, queue: Virtqueue, chain: Chain, request, data_out: list, data_in: list,
                 data_size: int, response: list, response_size: int):
        self.queue, self.chain, self.request = queue, chain, request
        self.data_out, self.data_in, self.data_size = data_out, data_in, data_size
        self.response, self.response_size = response, response_size


class VirtioScsi(VirtioBackend):
    device_id = VIRTIO_ID_SCSI

    def __init__(self, bus: ScsiBus, settings: ScsiSettings | None = None):
        super().__init__()
        self.bus = bus
        self.settings = settings or ScsiSettings()
        s = self.settings
        self.queue_sizes = (s.virtqueue_size,) * (FIXED_QUEUES + s.num_queues)
        self.cdb_size = CDB_SIZE
        self.sense_size = SENSE_SIZE
        self.events_dropped = False
        self.driver_ready = False
        self.broken = False
        #: the event queue, known once the driver kicked it (events need its buffers)
        self.event_queue: Virtqueue | None = None
        bus.listeners.append(self._unit_plugged)

    # -- negotiation and configuration -------------------------------------------------------------
    def features(self) -> int:
        s = self.settings
        return (s.hotplug << F_HOTPLUG) | (s.param_change << F_CHANGE)

    def config(self) -> bytes:
        s = self.settings
        seg_max = s.virtqueue_size - 2 if s.seg_max_adjust else 128 - 2
        return self.pack("IIIIIIIHHI", s.num_queues, seg_max & 0xFFFFFFFF, s.max_sectors, s.cmd_per_lun,
                         EVENT_SIZE, self.sense_size, self.cdb_size, self.bus.max_channel, self.bus.max_target,
                         self.bus.max_lun)

    def write_config(self, offset: int, data: bytes) -> None:
        """The driver may change the sense and CDB sizes (the other fields are read-only)."""
        current = bytearray(self.config())
        current[offset:offset + len(data)] = data[:max(0, len(current) - offset)]
        sense_size, cdb_size = self.unpack_from("II", bytes(current), 20)
        if sense_size >= 65536 or cdb_size >= 256:
            log.warning("virtio-scsi: bad data written to virtio-scsi configuration space")
            return
        self.sense_size, self.cdb_size = sense_size, cdb_size

    # -- life cycle ------------------------------------------------------------------------------------
    def driver_ok(self) -> None:
        self.driver_ready = True

    def reset(self) -> None:
        super().reset()
        self.bus.reset()
        self.cdb_size, self.sense_size = CDB_SIZE, SENSE_SIZE
        self.events_dropped = False
        self.driver_ready = False
        self.broken = False

    def close(self) -> None:
        if self._unit_plugged in self.bus.listeners:
            self.bus.listeners.remove(self._unit_plugged)

    # -- queues ------------------------------------------------------------------------------------------
    def queue_notify(self, queue: Virtqueue) -> None:
        if self.broken:
            return
        old_used = queue.used_idx
        try:
            if queue.index == CONTROL_QUEUE:
                self._control_queue(queue)
            elif queue.index == EVENT_QUEUE:
                self.event_queue = queue
                if self.events_dropped:
                    self._push_event(T_NO_EVENT, 0, None, notify=False)
            else:
                self._request_queue(queue)
        except _BadRequest:
            self.broken = True
            raise VirtqueueError("wrong size for virtio-scsi headers") from None
        finally:
            if queue.used_idx != old_used and queue.needs_interrupt(old_used):
                self.notify(queue.index)

    def _split(self, chain: Chain, request_size: int, response_size: int) -> tuple[list, list, list, list]:
        """QEMU's header parse: (request areas, response areas, data out, data in); raises _BadRequest."""
        if chain.readable_len < request_size or chain.writable_len < response_size:
            raise _BadRequest()
        out_skip, in_skip = request_size, response_size
        if not self.has(F_ANY_LAYOUT):
            # old firmware padded its headers: the first buffer of each direction is the header
            if chain.readable:
                out_skip = chain.readable[0][1]
            if chain.writable:
                in_skip = chain.writable[0][1]
        return (chain.readable, _take(chain.writable, response_size), _skip(chain.readable, out_skip),
                _skip(chain.writable, in_skip))

    # -- commands -------------------------------------------------------------------------------------------
    def _request_queue(self, queue: Virtqueue) -> None:
        prepared = []
        while True:
            chain = queue.pop()
            if chain is None:
                break
            ready = self._prepare(queue, chain)
            if ready is not None:
                prepared.append(ready)
        for ready in prepared:
            self._submit(ready)

    def _prepare(self, queue: Virtqueue, chain: Chain) -> _Prepared | None:
        request_size = REQUEST_HEADER + self.cdb_size
        response_size = RESPONSE_HEADER + self.sense_size
        head_areas, response, data_out, data_in = self._split(chain, request_size, response_size)
        header = queue.gather(head_areas, request_size)
        out_size, in_size = _size(data_out), _size(data_in)
        if out_size and in_size:
            self._finish_command(queue, chain, response, S_FAILURE, out_size + in_size, response_size)
            return None
        lun = header[0:8]
        device = self._unit(lun)
        data_size = out_size or in_size
        if device is None:
            self._finish_command(queue, chain, response, S_BAD_TARGET, data_size, response_size)
            return None
        request = self.bus.request(device, _lun_number(lun), header[REQUEST_HEADER:REQUEST_HEADER + self.cdb_size])
        direction = op.XFER_TO_DEV if out_size else op.XFER_FROM_DEV if in_size else op.XFER_NONE
        if request.mode != op.XFER_NONE and (request.mode != direction or request.xfer > data_size):
            self._finish_command(queue, chain, response, S_OVERRUN, data_size, response_size)
            return None
        return _Prepared(queue, chain, request, data_out, data_in, data_size, response, response_size)

    def _submit(self, ready: _Prepared) -> None:
        queue = ready.queue
        area = _GuestArea(queue, ready.data_out or ready.data_in)
        completion = ready.request.run(ready.data_size, area)
        sense = b""
        if completion.status != GOOD:
            sense = completion.sense[:max(0, ready.response_size - RESPONSE_HEADER)]
            residual = 0
        else:
            residual = completion.residual & 0xFFFFFFFF
        head = self.pack("IIHBB", len(sense), residual, 0, completion.status, S_OK)
        queue.scatter(ready.response, head + sense)
        queue.push(ready.chain, ready.data_size + ready.response_size)

    def _finish_command(self, queue: Virtqueue, chain: Chain, response: list, code: int, data_size: int,
                        response_size: int) -> None:
        """A request the adapter answers itself: only the response code is set."""
        queue.scatter(response, self.pack("IIHBB", 0, 0, 0, 0, code))
        queue.push(chain, data_size + response_size)

    def _unit(self, lun: bytes) -> ScsiDevice | None:
        """The unit a LUN field addresses (format 01 target LUN), or None."""
        if lun[0] != 1:
            return None
        if lun[2] != 0 and not 0x40 <= lun[2] < 0x80:
            return None
        return self.bus.find(0, lun[1], _lun_number(lun))

    # -- control requests -----------------------------------------------------------------------------
    def _control_queue(self, queue: Virtqueue) -> None:
        while True:
            chain = queue.pop()
            if chain is None:
                break
            if chain.readable_len < 4:
                raise _BadRequest()
            kind = self.unpack_from("I", queue.gather(chain.readable, 4))[0]
            if kind == T_TMF:
                head_areas, response, data_out, data_in = self._split(chain, TMF_REQUEST, TMF_RESPONSE)
                body = queue.gather(head_areas, TMF_REQUEST)
                if _size(data_out) and _size(data_in):
                    raise _BadRequest()
                code = self._task_management(body)
                queue.scatter(response, bytes((code,)))
                queue.push(chain, _size(data_out) + _size(data_in) + TMF_RESPONSE)
            elif kind in (T_AN_QUERY, T_AN_SUBSCRIBE):
                head_areas, response, data_out, data_in = self._split(chain, AN_REQUEST, AN_RESPONSE)
                if _size(data_out) and _size(data_in):
                    raise _BadRequest()
                queue.scatter(response, self.pack("I", 0) + bytes((S_OK,)))
                queue.push(chain, _size(data_out) + _size(data_in) + AN_RESPONSE)
            else:
                queue.push(chain, 0)  # QEMU answers nothing for a request type it does not know

    def _task_management(self, body: bytes) -> int:
        subtype = self.unpack_from("I", body, 4)[0]
        lun = body[8:16]
        device = self._unit(lun)
        if subtype == TMF_I_T_NEXUS_RESET:
            for unit in list(self.bus.devices):
                if unit.channel == 0 and unit.target == lun[1]:
                    unit.reset()
            return S_OK
        if subtype not in (TMF_ABORT_TASK, TMF_QUERY_TASK, TMF_LOGICAL_UNIT_RESET, TMF_ABORT_TASK_SET,
                           TMF_CLEAR_TASK_SET, TMF_QUERY_TASK_SET):
            return S_FUNCTION_REJECTED
        if device is None:
            return S_BAD_TARGET
        if device.lun != _lun_number(lun):
            return S_INCORRECT_LUN
        if subtype == TMF_LOGICAL_UNIT_RESET:
            device.reset()
        # requests complete as they are submitted: there is never a task to abort or find
        return S_OK

    # -- events ------------------------------------------------------------------------------------------
    def _unit_plugged(self, device: ScsiDevice, plugged: bool) -> None:
        """A rescan event for the unit, and "reported LUNs data has changed" for the next command."""
        if self.has(F_HOTPLUG):
            self._push_event(T_TRANSPORT_RESET, EVT_RESET_RESCAN if plugged else EVT_RESET_REMOVED, device)
            self.bus.set_unit_attention(REPORTED_LUNS_CHANGED)

    def _push_event(self, event: int, reason: int, device: ScsiDevice | None, notify: bool = True) -> None:
        if not self.driver_ready or self.broken:
            return
        queue = self.event_queue
        chain = queue.pop() if queue is not None and queue.ready else None
        if chain is None:
            self.events_dropped = True
            return
        old_used = queue.used_idx
        if self.events_dropped:
            event |= T_EVENTS_MISSED
            self.events_dropped = False
        try:
            _head, response, data_out, data_in = self._split(chain, 0, EVENT_SIZE)
            if _size(data_out) and _size(data_in):
                raise _BadRequest()
        except _BadRequest:
            self.broken = True
            log.warning("virtio-scsi: wrong size for virtio-scsi headers (event)")
            return
        lun = bytes(8)
        if event != T_EVENTS_MISSED and device is not None:
            high = (device.lun >> 8 | 0x40) if device.lun >= 256 else 0
            lun = bytes((1, device.target & 0xFF, high, device.lun & 0xFF)) + bytes(4)
        queue.scatter(response, self.pack("I", event) + lun + self.pack("I", reason))
        queue.push(chain, _size(data_out) + _size(data_in) + EVENT_SIZE)
        if notify and queue.needs_interrupt(old_used):
            self.notify(queue.index)


class _GuestArea:
    """A request's data area in guest storage, by offset (the driver's buffers in order)."""

    def __init__(self, queue: Virtqueue, areas: list[tuple[int, int]]):
        self.queue, self.areas = queue, areas

    def _span(self, offset: int, length: int) -> list[tuple[int, int]]:
        return _take(_skip(self.areas, offset), length)

    def read(self, offset: int, length: int) -> bytes:
        return self.queue.gather(self._span(offset, length))

    def write(self, offset: int, data: bytes) -> None:
        self.queue.scatter(self._span(offset, len(data)), data)


def _lun_number(lun: bytes) -> int:
    return (lun[2] << 8 | lun[3]) & 0x3FFF


def _size(areas: list[tuple[int, int]]) -> int:
    return sum(n for _a, n in areas)


def _skip(areas: list[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    out = []
    for addr, size in areas:
        if n >= size:
            n -= size
            continue
        out.append((addr + n, size - n))
        n = 0
    return out


def _take(areas: list[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    out = []
    for addr, size in areas:
        if n <= 0:
            break
        out.append((addr, min(size, n)))
        n -= size
    return out
