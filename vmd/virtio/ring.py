"""Split virtqueues (virtio 1.2, section 2.7) on guest storage.

A queue is three areas the driver places in guest storage: the descriptor
table, the available ring (driver -> device) and the used ring (device ->
driver).  Legacy devices (virtio-ccw revision 0, no VERSION_1) keep every
field in the guest's byte order, big-endian on s390x; modern ones use
little-endian.  The queue reads and writes storage only through
:class:`~vmd.machine.memory.GuestMemory`, so device writes keep translated
code coherent.

Everything the driver wrote is untrusted: a chain longer than the queue, a
loop, a nested indirect table or an address outside storage makes the
queue *broken* (:class:`VirtqueueError`), as QEMU's ``virtio_error`` does;
the device stops using it until the driver resets it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from vmd.machine.memory import AddressingError, GuestMemory

DESC_F_NEXT = 1
DESC_F_WRITE = 2
DESC_F_INDIRECT = 4
AVAIL_F_NO_INTERRUPT = 1
USED_F_NO_NOTIFY = 1
DESC_SIZE = 16
#: the largest queue the transport accepts (QEMU's VIRTQUEUE_MAX_SIZE)
MAX_QUEUE_SIZE = 1024
LEGACY_ALIGN = 4096


class VirtqueueError(Exception):
    """The driver broke the queue's rules; the message says how."""


@dataclass
class Chain:
    """One request: the head's index and its driver-readable and device-writable areas in order."""

    head: int
    readable: list[tuple[int, int]] = field(default_factory=list)
    writable: list[tuple[int, int]] = field(default_factory=list)

    @property
    def readable_len(self) -> int:
        return sum(n for _a, n in self.readable)

    @property
    def writable_len(self) -> int:
        return sum(n for _a, n in self.writable)


class Virtqueue:
    def __init__(self, memory: GuestMemory, index: int, max_size: int):
        self.memory = memory
        self.index = index
        self.max_size = max_size
        self.reset()

    def reset(self) -> None:
        self.num = self.max_size
        self.desc = self.avail = self.used = 0
        self.last_avail = 0
        self.used_idx = 0
        self.big_endian = True
        self.event_idx = False
        self.broken = False

    @property
    def ready(self) -> bool:
        return self.desc != 0 and self.num != 0 and not self.broken

    # -- placement ---------------------------------------------------------------------
    def set_legacy(self, address: int, num: int) -> None:
        """Revision 0: one contiguous area, the used ring aligned to 4096 after the available ring."""
        self.desc = address
        if address:
            self.num = num
            self.avail = address + DESC_SIZE * num
            self.used = (self.avail + 6 + 2 * num + LEGACY_ALIGN - 1) & ~(LEGACY_ALIGN - 1)
        else:
            self.avail = self.used = 0
        self.last_avail = self.used_idx = 0
        self.broken = False

    def set_rings(self, desc: int, avail: int, used: int, num: int) -> None:
        self.desc, self.avail, self.used = desc, avail, used
        if desc:
            self.num = num
        self.last_avail = self.used_idx = 0
        self.broken = False

    # -- field access in the queue's byte order -------------------------------------------
    def _u16(self, address: int) -> int:
        return int.from_bytes(self.memory.read(address, 2), "big" if self.big_endian else "little")

    def _put_u16(self, address: int, value: int) -> None:
        self.memory.write(address, (value & 0xFFFF).to_bytes(2, "big" if self.big_endian else "little"))

    def _descriptor(self, table: int, i: int) -> tuple[int, int, int, int]:
        return struct.unpack(">QIHH" if self.big_endian else "<QIHH", self.memory.read(table + DESC_SIZE * i, 16))

    # -- the device's side -----------------------------------------------------------------
    def pending(self) -> bool:
        try:
            return self.ready and self._u16(self.avail + 2) != self.last_avail
        except AddressingError:
            self.broken = True
            return False

    def pop(self) -> Chain | None:
        """The next available chain, or None; raises VirtqueueError (and the queue is broken)."""
        if not self.ready:
            return None
        try:
            avail_idx = self._u16(self.avail + 2)
            if avail_idx == self.last_avail:
                return None
            if (avail_idx - self.last_avail) & 0xFFFF > self.num:
                raise VirtqueueError(f"virtqueue {self.index}: available index {avail_idx} is "
                                     f"{(avail_idx - self.last_avail) & 0xFFFF} ahead (size {self.num})")
            head = self._u16(self.avail + 4 + 2 * (self.last_avail % self.num))
            chain = self._walk(head)
        except AddressingError as err:
            self.broken = True
            raise VirtqueueError(f"virtqueue {self.index}: {err}") from None
        except VirtqueueError:
            self.broken = True
            raise
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        if self.event_idx:
            # avail_event: ask to be notified of every new buffer
            self._put_u16(self.used + 4 + 8 * self.num, self.last_avail)
        return chain

    def _walk(self, head: int) -> Chain:
        if head >= self.num:
            raise VirtqueueError(f"virtqueue {self.index}: head {head} outside the table of {self.num}")
        chain = Chain(head)
        table, size, i = self.desc, self.num, head
        indirect = False
        seen = 0
        while True:
            seen += 1
            if seen > size:
                raise VirtqueueError(f"virtqueue {self.index}: descriptor chain loops or exceeds {size}")
            addr, length, flags, nxt = self._descriptor(table, i)
            if flags & DESC_F_INDIRECT:
                if indirect:
                    raise VirtqueueError(f"virtqueue {self.index}: nested indirect table")
                if flags & DESC_F_NEXT:
                    raise VirtqueueError(f"virtqueue {self.index}: indirect descriptor with NEXT")
                if length == 0 or length % DESC_SIZE or length // DESC_SIZE > MAX_QUEUE_SIZE * 4:
                    raise VirtqueueError(f"virtqueue {self.index}: indirect table of {length} bytes")
                self.memory.check(addr, length)
                table, size, i, seen, indirect = addr, length // DESC_SIZE, 0, 0, True
                continue
            self.memory.check(addr, length)
            if flags & DESC_F_WRITE:
                chain.writable.append((addr, length))
            else:
                if chain.writable:
                    raise VirtqueueError(f"virtqueue {self.index}: readable descriptor after a writable one")
                chain.readable.append((addr, length))
            if not flags & DESC_F_NEXT:
                return chain
            if nxt >= size:
                raise VirtqueueError(f"virtqueue {self.index}: next {nxt} outside the table of {size}")
            i = nxt

    def push(self, chain: Chain, written: int) -> None:
        """Return a chain to the driver with the number of bytes the device wrote."""
        slot = self.used + 4 + 8 * (self.used_idx % self.num)
        order = ">II" if self.big_endian else "<II"
        self.memory.write(slot, struct.pack(order, chain.head, written))
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        self._put_u16(self.used + 2, self.used_idx)

    def needs_interrupt(self, old_used: int) -> bool:
        """Whether the driver asked to hear about the entries pushed since ``old_used``."""
        try:
            if self.event_idx:
                used_event = self._u16(self.avail + 4 + 2 * self.num)
                return (self.used_idx - used_event - 1) & 0xFFFF < (self.used_idx - old_used) & 0xFFFF
            return not self._u16(self.avail) & AVAIL_F_NO_INTERRUPT
        except AddressingError:
            self.broken = True
            return False

    # -- data of a chain ---------------------------------------------------------------------
    def gather(self, areas: list[tuple[int, int]], limit: int | None = None) -> bytes:
        out = bytearray()
        for addr, n in areas:
            if limit is not None:
                n = min(n, limit - len(out))
                if n <= 0:
                    break
            out += self.memory.read(addr, n)
        return bytes(out)

    def scatter(self, areas: list[tuple[int, int]], data: bytes | memoryview) -> int:
        """Write ``data`` across the areas in order; returns the bytes written."""
        pos = 0
        view = memoryview(data)
        for addr, n in areas:
            if pos >= len(view):
                break
            take = min(n, len(view) - pos)
            self.memory.write(addr, view[pos:pos + take])
            pos += take
        return pos
