"""What every block node shares: the interface devices call, the error type, request checks.

Devices call nodes synchronously from the vCPU thread, so nodes do plain blocking I/O; a
node serves one caller at a time (it takes no locks).
A format node (raw, qcow2) reaches its image through a child node with ``pread``/``pwrite``,
which, unlike the guest-facing ``read``/``write``, may touch bytes past the child's end:
reads there see zeroes and writes grow the file, as a format driver needs.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from vmd.errors import GenericError

#: discard modes (-drive discard=, -blockdev discard=)
DISCARD_IGNORE = "ignore"
DISCARD_UNMAP = "unmap"
#: detect-zeroes modes
DETECT_ZEROES = ("off", "on", "unmap")


class BlockError(GenericError):
    """A block-layer failure; the message is what the user or the guest log should read."""


@dataclass(frozen=True)
class BlockWarning:
    """A warning QEMU prints while opening an image and goes on.

    ``located`` warnings carry QEMU's option prefix (``prog: -drive ...: warning: text``);
    the others are printed as they are (the probing warning is one of those).
    """

    text: str
    located: bool = True

    def render(self, prog: str = "vmd", option: str | None = None) -> str:
        if not self.located:
            return self.text
        where = f"{option}: " if option else ""
        return f"{prog}: {where}warning: {self.text}"


@runtime_checkable
class BlockNode(Protocol):
    """The interface devices (virtio-blk, scsi-hd/cd) see."""

    node_name: str
    size: int
    read_only: bool

    def read(self, offset: int, length: int) -> bytes: ...

    def write(self, offset: int, data: bytes) -> None: ...

    def write_zeroes(self, offset: int, length: int, unmap: bool = False) -> None: ...

    def discard(self, offset: int, length: int) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


_node_counter = itertools.count()


def generated_node_name() -> str:
    """A name for a node the user did not name, in QEMU's form (``#block`` counter, 2 random digits)."""
    return f"#block{next(_node_counter)}{random.randrange(100):02d}"


class Node:
    """Request checks and option handling shared by every driver.

    Subclasses implement ``_read``, ``_write``, ``_write_zeroes``, ``_discard``, ``_flush``
    and ``_close`` on requests already checked against the node's size and mode.
    """

    driver = "?"

    def __init__(self, node_name: str | None, read_only: bool, discard: str = DISCARD_IGNORE,
                 detect_zeroes: str = "off", no_flush: bool = False):
        self.node_name = node_name or generated_node_name()
        self.read_only = read_only
        self.discard_mode = discard
        self.detect_zeroes = detect_zeroes
        self.no_flush = no_flush
        #: flush after every write: -drive cache=writethrough/directsync (a device with WCE off)
        self.writethrough = False
        self.closed = False
        #: children this node opened and closes with itself (not nodes it only refers to)
        self.owned: list[Node] = []

    # --- size -------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self._size()

    def _size(self) -> int:
        raise NotImplementedError

    # --- guest-facing requests ---------------------------------------------------------
    def _check_request(self, offset: int, length: int) -> None:
        if self.closed:
            raise BlockError(f"Node '{self.node_name}' is closed")
        if offset < 0 or length < 0:
            raise BlockError(f"Invalid request on '{self.node_name}': offset {offset}, length {length}")
        size = self.size
        if offset + length > size:
            raise BlockError(f"Request beyond the end of '{self.node_name}': offset {offset}, "
                             f"length {length}, size {size}")

    def _check_writable(self) -> None:
        if self.read_only:
            raise BlockError(f"Node '{self.node_name}' is read-only")

    def read(self, offset: int, length: int) -> bytes:
        self._check_request(offset, length)
        if length == 0:
            return b""
        return self._read(offset, length)

    def write(self, offset: int, data: bytes) -> None:
        self._check_request(offset, len(data))
        self._check_writable()
        if not data:
            return
        if self.detect_zeroes != "off" and not any(data):
            unmap = self.detect_zeroes == "unmap" and self.discard_mode == DISCARD_UNMAP
            self._write_zeroes(offset, len(data), unmap)
        else:
            self._write(offset, bytes(data))
        if self.writethrough:
            self.flush()

    def write_zeroes(self, offset: int, length: int, unmap: bool = False) -> None:
        self._check_request(offset, length)
        self._check_writable()
        if length:
            # the guest may ask to unmap; the node lets it only with discard=unmap
            self._write_zeroes(offset, length, unmap and self.discard_mode == DISCARD_UNMAP)
        if self.writethrough:
            self.flush()

    def discard(self, offset: int, length: int) -> None:
        self._check_request(offset, length)
        self._check_writable()
        if length and self.discard_mode == DISCARD_UNMAP:
            self._discard(offset, length)

    def flush(self) -> None:
        if self.closed or self.read_only or self.no_flush:
            return
        self._flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self.read_only:
                self.flush()
            self._close()
        finally:
            self.closed = True
            for child in self.owned:
                child.close()

    # --- access for a parent format driver ---------------------------------------------
    def pread(self, offset: int, length: int) -> bytes:
        """Bytes for a parent driver; past the end they read as zeroes."""
        size = self.size
        if offset >= size:
            return bytes(length)
        inside = min(length, size - offset)
        data = self._read(offset, inside) if inside else b""
        return data + bytes(length - inside) if inside < length else data

    def pwrite(self, offset: int, data: bytes) -> None:
        """Write for a parent driver; only a growable node accepts bytes past its end."""
        self._check_writable()
        if offset + len(data) > self.size and not self.can_grow():
            raise BlockError(f"Cannot write beyond the end of '{self.node_name}'")
        if data:
            self._write(offset, bytes(data))

    def pwrite_zeroes(self, offset: int, length: int, unmap: bool = False) -> None:
        self._check_writable()
        if offset + length > self.size and not self.can_grow():
            raise BlockError(f"Cannot write beyond the end of '{self.node_name}'")
        if length:
            self._write_zeroes(offset, length, unmap and self.discard_mode == DISCARD_UNMAP)

    def pdiscard(self, offset: int, length: int) -> None:
        """A parent's discard of ranges it no longer uses (qcow2 clusters freed by the guest)."""
        if self.read_only or self.discard_mode != DISCARD_UNMAP or length <= 0:
            return
        end = min(offset + length, self.size)
        if end > offset:
            self._discard(offset, end - offset)

    def can_grow(self) -> bool:
        return False

    def allow_growth(self) -> None:
        """A parent format driver will write past the end (QEMU's RESIZE permission)."""

    def file_name(self) -> str | None:
        """The host file behind this node, for messages and relative backing file names."""
        return None

    # --- driver hooks ------------------------------------------------------------------
    def _read(self, offset: int, length: int) -> bytes:
        raise NotImplementedError

    def _write(self, offset: int, data: bytes) -> None:
        raise NotImplementedError

    def _write_zeroes(self, offset: int, length: int, unmap: bool) -> None:
        step = 1 << 20
        pos, end = offset, offset + length
        while pos < end:
            n = min(step, end - pos)
            self._write(pos, bytes(n))
            pos += n

    def _discard(self, offset: int, length: int) -> None:
        """Advisory: the default keeps the data."""

    def _flush(self) -> None:
        pass

    def _close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.node_name!r} driver={self.driver} size={self.size}>"
