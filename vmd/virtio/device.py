"""What every virtio device back end implements, whatever the transport.

A back end knows its device type: feature bits, configuration space, queue
sizes and what a request on each queue means.  The transport
(:mod:`vmd.virtio.ccw`) owns the queues, negotiation, byte order and
interruptions, and calls :meth:`VirtioBackend.queue_notify` when the driver
kicks a queue.  Back ends run on the vCPU thread, inside the kick.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from vmd.virtio.ring import Virtqueue

# transport feature bits (virtio 1.2, section 6)
F_NOTIFY_ON_EMPTY = 24
F_ANY_LAYOUT = 27
F_RING_INDIRECT_DESC = 28
F_RING_EVENT_IDX = 29
F_BAD_FEATURE = 30
F_VERSION_1 = 32
F_ACCESS_PLATFORM = 33
F_RING_PACKED = 34
F_RING_RESET = 40
#: features only a legacy driver may see (QEMU's VIRTIO_LEGACY_FEATURES)
LEGACY_FEATURES = (1 << F_BAD_FEATURE) | (1 << F_NOTIFY_ON_EMPTY) | (1 << F_ANY_LAYOUT)

# device status bits
STATUS_ACKNOWLEDGE = 1
STATUS_DRIVER = 2
STATUS_DRIVER_OK = 4
STATUS_FEATURES_OK = 8
STATUS_NEEDS_RESET = 0x40
STATUS_FAILED = 0x80


class VirtioBackend:
    """Base of the device types; subclasses set the class attributes and override the hooks."""

    device_id: int = 0
    #: one entry per virtqueue: its maximum (and initial) size
    queue_sizes: tuple[int, ...] = ()
    #: device feature bits only legacy drivers see
    legacy_features: int = 0

    def __init__(self) -> None:
        self.guest_features = 0
        #: set by the transport: raise the used-buffer notification of queue N if the driver wants it
        self.notify: Callable[[int], None] = lambda index: None
        #: set by the transport: the configuration-change notification
        self.config_changed: Callable[[], None] = lambda: None

    # -- negotiation -----------------------------------------------------------------------
    def features(self) -> int:
        """Device-type feature bits offered (transport bits are added by the transport)."""
        return 0

    @property
    def big_endian(self) -> bool:
        """Legacy devices use the guest's byte order (big-endian); VERSION_1 ones little-endian."""
        return not self.guest_features >> F_VERSION_1 & 1

    def has(self, bit: int) -> bool:
        return bool(self.guest_features >> bit & 1)

    def pack(self, fmt: str, *values) -> bytes:
        return struct.pack((">" if self.big_endian else "<") + fmt, *values)

    def unpack_from(self, fmt: str, data: bytes, offset: int = 0) -> tuple:
        return struct.unpack_from((">" if self.big_endian else "<") + fmt, data, offset)

    # -- configuration space ---------------------------------------------------------------
    def config(self) -> bytes:
        return b""

    def write_config(self, offset: int, data: bytes) -> None:
        """Drivers may write only some fields; the default ignores writes, as QEMU does for read-only ones."""

    # -- life cycle --------------------------------------------------------------------------
    def queue_notify(self, queue: "Virtqueue") -> None:
        """The driver made buffers available on ``queue``."""

    def driver_ok(self) -> None:
        """The driver finished set-up (status DRIVER_OK)."""

    def reset(self) -> None:
        """Device reset: forget everything the driver negotiated."""
        self.guest_features = 0

    def close(self) -> None:
        """The device is unplugged or the machine ends: release host resources."""
