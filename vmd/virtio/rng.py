"""virtio-rng (virtio 1.2, section 5.4): entropy for the guest, from the host's kernel.

The driver hands in writable buffers; each gets random bytes, within the
``max-bytes`` per ``period`` budget QEMU's device enforces (by default
unlimited).  Buffers beyond the budget stay queued until the driver kicks the
queue again in a later period.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from vmd.virtio.device import VirtioBackend
from vmd.virtio.ring import Virtqueue

VIRTIO_ID_RNG = 4
#: QEMU's virtio-rng queue size
QUEUE_SIZE = 8


class VirtioRng(VirtioBackend):
    device_id = VIRTIO_ID_RNG
    queue_sizes = (QUEUE_SIZE,)

    def __init__(self, max_bytes: int = (1 << 63) - 1, period_ms: int = 1 << 16,
                 entropy: Callable[[int], bytes] = os.urandom, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.max_bytes = max_bytes
        self.period = period_ms / 1000
        self.entropy = entropy
        self.clock = clock
        self._window_start = clock()
        self._budget = max_bytes

    def _quota(self) -> int:
        now = self.clock()
        if now - self._window_start >= self.period:
            self._window_start = now
            self._budget = self.max_bytes
        return self._budget

    def queue_notify(self, queue: Virtqueue) -> None:
        old_used = queue.used_idx
        while self._quota() > 0:
            chain = queue.pop()
            if chain is None:
                break
            size = min(chain.writable_len, self._budget, 1 << 16)
            written = queue.scatter(chain.writable, self.entropy(size)) if size else 0
            self._budget -= written
            queue.push(chain, written)
        if queue.used_idx != old_used and queue.needs_interrupt(old_used):
            self.notify(queue.index)
