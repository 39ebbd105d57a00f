"""The virtio-ccw transport: a virtio device behind a subchannel (virtio 1.2, section 4.3).

The driver configures the device with channel commands (this module's
:meth:`VirtioCcwTransport.execute_ccw`), kicks queues with DIAGNOSE 0x500
function 3 (:meth:`VirtioCcwTransport.kick`), and hears back either through
*classic* indicators (a 64-bit indicator word plus an I/O interruption on
the device's subchannel) or through *adapter* interruptions (a bit in a
device-indicator area, a summary byte, and one floating interruption per
ISC).  Command by command, lengths, revisions and errors follow QEMU's
``virtio-ccw.c``, because Linux and the s390-ccw firmware were written
against it: a wrong length or a missing data address is a channel program
check, and a command the device refuses is a unit check with "command
reject" sense.
"""

from __future__ import annotations

import logging
import struct
from typing import TYPE_CHECKING

from vmd.machine.channel import ChannelProgramCheck, DataStream, UnitCheck
from vmd.machine.memory import AddressingError, GuestMemory
from vmd.virtio.device import (
    F_ACCESS_PLATFORM,
    F_ANY_LAYOUT,
    F_NOTIFY_ON_EMPTY,
    F_RING_EVENT_IDX,
    F_RING_INDIRECT_DESC,
    F_RING_PACKED,
    F_RING_RESET,
    F_VERSION_1,
    LEGACY_FEATURES,
    STATUS_DRIVER_OK,
    STATUS_FEATURES_OK,
    STATUS_NEEDS_RESET,
    VirtioBackend,
)
from vmd.virtio.ring import MAX_QUEUE_SIZE, Virtqueue, VirtqueueError

if TYPE_CHECKING:
    from vmd.machine.channel import ChannelSubsystemIO
    from vmd.machine.css import Subchannel

log = logging.getLogger("vmd.virtio")

CMD_SET_VQ = 0x13
CMD_VDEV_RESET = 0x33
CMD_READ_FEAT = 0x12
CMD_WRITE_FEAT = 0x11
CMD_READ_CONF = 0x22
CMD_WRITE_CONF = 0x21
CMD_WRITE_STATUS = 0x31
CMD_READ_VQ_CONF = 0x32
CMD_READ_STATUS = 0x72
CMD_SET_IND = 0x43
CMD_SET_CONF_IND = 0x53
CMD_SET_IND_ADAPTER = 0x73
CMD_SET_VIRTIO_REV = 0x83
CCW_SLI = 0x20
CCW_CD = 0x80

#: the queue index that stands for "configuration changed" in notifications
CONFIG_VECTOR = MAX_QUEUE_SIZE
#: classic indicators are one 64-bit word: at most 64 queues
CLASSIC_INDICATOR_BITS = 64
VQ_INFO_LEGACY = struct.Struct(">QIHH")  # queue address, align, index, num
VQ_INFO = struct.Struct(">QIHHQQ")  # desc, reserved, index, num, avail, used
THININT_INFO = struct.Struct(">QQQB")  # summary indicator, device indicators, first bit, ISC


class _Invalid(Exception):
    """QEMU's -EINVAL from a command: channel program check."""


class VirtioCcwTransport:
    """Negotiation, queues and interruptions of one virtio-ccw device."""

    def __init__(self, backend: VirtioBackend, memory: GuestMemory, io: "ChannelSubsystemIO",
                 subchannel: "Subchannel", props) -> None:
        self.backend = backend
        self.memory = memory
        self.io = io
        self.subchannel = subchannel
        self.max_revision = int(getattr(props, "max_revision", 2))
        self.host_features = self._offered(props)
        if not self.host_features >> F_VERSION_1 & 1:
            self.max_revision = 0
        self.queues = [Virtqueue(memory, i, size) for i, size in enumerate(backend.queue_sizes)]
        backend.notify = self.notify
        backend.config_changed = lambda: self.notify(CONFIG_VECTOR)
        self._reset_state()
        self.revision = -1

    def _offered(self, props) -> int:
        bits = {F_RING_INDIRECT_DESC: "indirect_desc", F_RING_EVENT_IDX: "event_idx",
                F_NOTIFY_ON_EMPTY: "notify_on_empty", F_ANY_LAYOUT: "any_layout",
                F_ACCESS_PLATFORM: "iommu_platform", F_RING_RESET: "queue_reset"}
        features = 0
        for bit, name in bits.items():
            if getattr(props, name, False):
                features |= 1 << bit
        if getattr(props, "packed", False):
            raise ValueError("packed virtqueues are not supported")
        if self.max_revision >= 1:
            features |= 1 << F_VERSION_1
        return features | self.backend.features()

    def _reset_state(self) -> None:
        self.status = 0
        self.indicators = 0  # classic: address of the 64-bit queue indicators; adapter: indicator area
        self.config_indicators = 0
        self.summary_indicator = 0
        self.indicator_bit = 0
        self.adapter_isc = 0
        self.thinint = False
        for queue in self.queues:
            queue.reset()
        self.backend.reset()

    # -- guest-visible identity -------------------------------------------------------------
    @property
    def legacy(self) -> bool:
        return self.revision < 1

    def subchannel_disabled(self) -> None:
        """MSCH turned the subchannel off: the next driver negotiates the revision afresh (as QEMU)."""
        self.revision = -1

    def system_reset(self) -> None:
        self._reset_state()
        self.revision = -1

    # -- channel commands -------------------------------------------------------------------
    def execute_ccw(self, command: int, stream: DataStream) -> int:
        check_len = not (stream.flags & CCW_SLI and not stream.flags & CCW_CD)
        if self.revision < 0 and command != CMD_SET_VIRTIO_REV:
            self.revision = 0  # a driver that starts with anything else is a legacy driver (QEMU)
        handler = self._COMMANDS.get(command)
        if handler is None:
            raise UnitCheck()
        try:
            handler(self, stream, check_len)
        except _Invalid:
            raise ChannelProgramCheck() from None
        return 0

    @staticmethod
    def _need(stream: DataStream, length: int, check_len: bool) -> None:
        """A command's data area: exactly ``length`` bytes, or at least that with SLI; and an address."""
        if (stream.count != length) if check_len else (stream.count < length):
            raise _Invalid()
        if not stream.cda:
            raise ChannelProgramCheck()

    def _set_vq(self, stream: DataStream, check_len: bool) -> None:
        legacy = self.legacy
        layout = VQ_INFO_LEGACY if legacy else VQ_INFO
        self._need(stream, layout.size, check_len)
        raw = stream.read(layout.size)
        if legacy:
            desc, align, index, num = layout.unpack(raw)
            avail = used = 0
        else:
            desc, _res, index, num, avail, used = layout.unpack(raw)
            align = 0
        if index >= MAX_QUEUE_SIZE:
            raise _Invalid()
        if legacy and desc and align != 4096:
            raise _Invalid()
        queue = self.queues[index] if index < len(self.queues) else None
        if queue is None:
            # QEMU ignores addresses for a queue the device lacks, but rejects a size for it
            if desc and (not legacy and num > 0):
                raise _Invalid()
            return
        big_endian = self.backend.big_endian
        queue.big_endian = big_endian
        queue.event_idx = self.backend.has(F_RING_EVENT_IDX)
        if legacy:
            if desc and queue.num > num:
                raise _Invalid()  # the driver's ring is too small for the device's queue
            queue.set_legacy(desc, queue.num)
        else:
            if desc and num > queue.max_size:
                raise _Invalid()
            queue.set_rings(desc, avail, used, num if desc and num else queue.num)

    def _vdev_reset(self, stream: DataStream, check_len: bool) -> None:
        self._reset_state()

    def _read_feat(self, stream: DataStream, check_len: bool) -> None:
        self._need(stream, 5, check_len)
        stream.done = 4
        index = stream.read(1)[0]
        if index == 0:
            bits = self.host_features & 0xFFFFFFFF
            if not self.legacy:
                bits &= ~(LEGACY_FEATURES | self.backend.legacy_features)
        elif index == 1 and not self.legacy:
            bits = self.host_features >> 32 & 0xFFFFFFFF
        else:
            bits = 0
        stream.done = 0
        stream.write(struct.pack("<I", bits))
        stream.done = 5

    def _write_feat(self, stream: DataStream, check_len: bool) -> None:
        self._need(stream, 5, check_len)
        bits, index = struct.unpack("<IB", stream.read(5))
        current = self.backend.guest_features
        if index == 0:
            wanted = (current & ~0xFFFFFFFF) | bits
        elif index == 1 and not self.legacy:
            wanted = (current & 0xFFFFFFFF) | (bits << 32)
        else:
            if bits:
                log.debug("virtio-ccw %s: driver sets features[%d]=%#x", self._name(), index, bits)
            return
        # as QEMU's virtio_set_features: only what the device offers sticks
        self.backend.guest_features = wanted & self.host_features

    def _read_conf(self, stream: DataStream, check_len: bool) -> None:
        config = self.backend.config()
        if check_len and stream.count > len(config):
            raise _Invalid()
        if not stream.cda:
            raise ChannelProgramCheck()
        length = min(stream.count, len(config))
        stream.write(config[:length])
        stream.done = length

    def _write_conf(self, stream: DataStream, check_len: bool) -> None:
        size = len(self.backend.config())
        if check_len and stream.count > size:
            raise _Invalid()
        if not stream.cda:
            raise ChannelProgramCheck()
        length = min(stream.count, size)
        self.backend.write_config(0, stream.read(length))
        stream.done = length

    def _read_status(self, stream: DataStream, check_len: bool) -> None:
        self._need(stream, 1, check_len)
        stream.write(bytes([self.status]))

    def _write_status(self, stream: DataStream, check_len: bool) -> None:
        self._need(stream, 1, check_len)
        status = stream.read(1)[0]
        if (self.backend.has(F_VERSION_1) and status & STATUS_FEATURES_OK
                and not self.status & STATUS_FEATURES_OK):
            pass  # the back ends accept every subset of what they offer
        self.status = status
        if status == 0:
            self._reset_state()
            return
        if status & STATUS_DRIVER_OK:
            for queue in self.queues:
                queue.big_endian = self.backend.big_endian
                queue.event_idx = self.backend.has(F_RING_EVENT_IDX)
            self.backend.driver_ok()

    def _set_ind(self, stream: DataStream, check_len: bool) -> None:
        self._need_len_only(stream, 8, check_len)
        if self.thinint or len(self.queues) > CLASSIC_INDICATOR_BITS:
            raise UnitCheck()
        if not stream.cda:
            raise ChannelProgramCheck()
        self.indicators = struct.unpack(">Q", stream.read(8))[0]

    def _set_conf_ind(self, stream: DataStream, check_len: bool) -> None:
        self._need(stream, 8, check_len)
        self.config_indicators = struct.unpack(">Q", stream.read(8))[0]

    def _read_vq_conf(self, stream: DataStream, check_len: bool) -> None:
        self._need(stream, 4, check_len)
        index = struct.unpack(">H", stream.read(2))[0]
        if index >= MAX_QUEUE_SIZE:
            raise _Invalid()
        num = self.queues[index].num if index < len(self.queues) else 0
        stream.write(struct.pack(">H", num))

    def _set_ind_adapter(self, stream: DataStream, check_len: bool) -> None:
        self._need(stream, THININT_INFO.size, check_len)
        if self.indicators and not self.thinint:
            raise UnitCheck()
        summary, indicators, first_bit, isc = THININT_INFO.unpack(stream.read(THININT_INFO.size))
        self.summary_indicator, self.indicators = summary, indicators
        self.indicator_bit, self.adapter_isc = first_bit, isc & 7
        self.thinint = True

    def _set_virtio_rev(self, stream: DataStream, check_len: bool) -> None:
        if stream.count < 4:
            raise _Invalid()
        if not stream.cda:
            raise ChannelProgramCheck()
        revision, length = struct.unpack(">HH", stream.read(4))
        if stream.count < 4 + length or (check_len and stream.count > 4 + length):
            raise _Invalid()
        if self.revision >= 0 or revision > self.max_revision:
            raise UnitCheck()  # the driver retries with a lower revision
        stream.done = 4 + length
        self.revision = revision

    def _need_len_only(self, stream: DataStream, length: int, check_len: bool) -> None:
        if (stream.count != length) if check_len else (stream.count < length):
            raise _Invalid()

    _COMMANDS = {
        CMD_SET_VQ: _set_vq, CMD_VDEV_RESET: _vdev_reset, CMD_READ_FEAT: _read_feat,
        CMD_WRITE_FEAT: _write_feat, CMD_READ_CONF: _read_conf, CMD_WRITE_CONF: _write_conf,
        CMD_READ_STATUS: _read_status, CMD_WRITE_STATUS: _write_status, CMD_SET_IND: _set_ind,
        CMD_SET_CONF_IND: _set_conf_ind, CMD_READ_VQ_CONF: _read_vq_conf,
        CMD_SET_IND_ADAPTER: _set_ind_adapter, CMD_SET_VIRTIO_REV: _set_virtio_rev,
    }

    # -- notifications ------------------------------------------------------------------------
    def kick(self, index: int) -> bool:
        """DIAGNOSE 0x500 function 3: the driver made buffers available; False for an index beyond any queue."""
        if index >= MAX_QUEUE_SIZE:
            return False
        if index >= len(self.queues):
            return True  # QEMU 7.2 accepts a kick for a queue the device lacks, and ignores it
        queue = self.queues[index]
        if not queue.ready:
            return True
        try:
            self.backend.queue_notify(queue)
        except VirtqueueError as err:
            self._broken(str(err))
        return True

    def _broken(self, reason: str) -> None:
        log.warning("virtio-ccw %s: %s; the device needs a reset", self._name(), reason)
        if not self.legacy:
            self.status |= STATUS_NEEDS_RESET
            self.notify(CONFIG_VECTOR)

    def _name(self) -> str:
        return getattr(self.subchannel, "dev_id", "?")

    def notify(self, vector: int) -> None:
        """Tell the driver that queue ``vector`` (or the configuration, CONFIG_VECTOR) has news."""
        try:
            if vector < CONFIG_VECTOR:
                if not self.indicators:
                    return
                if self.thinint:
                    bit = self.indicator_bit + vector
                    self._set_bits(self.indicators + bit // 8, 0x80 >> (bit % 8))
                    if not self._set_bits(self.summary_indicator, 0x01):
                        self.io.adapter_interrupt(self.adapter_isc)
                    return
                self._or_u64(self.indicators, 1 << vector)
            else:
                if not self.config_indicators:
                    return
                self._or_u64(self.config_indicators, 1)
            self.io.conditional_interrupt(self.subchannel)
        except AddressingError:
            log.debug("virtio-ccw %s: indicator outside storage", self._name())

    def _set_bits(self, address: int, bits: int) -> int:
        """OR ``bits`` into a byte of storage; returns the byte's previous value."""
        old = self.memory.u8(address)
        if old | bits != old:
            self.memory.put_u8(address, old | bits)
        return old

    def _or_u64(self, address: int, bits: int) -> None:
        self.memory.put_u64(address, self.memory.u64(address) | bits)
