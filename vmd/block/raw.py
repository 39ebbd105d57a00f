"""The raw format: the child's bytes as they are, optionally a window (``offset``/``size``) of them."""

from __future__ import annotations

from vmd.block.base import DISCARD_IGNORE, BlockError, Node
from vmd.block.probe import PROBE_BYTES, probe_format

SECTOR = 512


class RawNode(Node):
    driver = "raw"

    def __init__(self, child: Node, *, node_name: str | None = None, read_only: bool = False,
                 offset: int = 0, size: int | None = None, probed: bool = False,
                 discard: str = DISCARD_IGNORE, detect_zeroes: str = "off", no_flush: bool = False):
        super().__init__(node_name, read_only, discard, detect_zeroes, no_flush)
        self.child = child
        real_size = child.size
        # QEMU's raw driver checks in this order, with these texts
        if offset > real_size:
            raise BlockError(f"Offset ({offset}) cannot be greater than size of the containing file ({real_size})")
        if size is not None and real_size - offset < size:
            raise BlockError(f"The sum of offset ({offset}) and size ({size}) has to be smaller or equal to the "
                             f" actual size of the containing file ({real_size})")
        if size is not None and size % SECTOR:
            raise BlockError(f"Specified size is not multiple of {SECTOR}")
        self.offset = offset
        self.fixed_size = size
        #: the format was guessed: writes must not turn block 0 into another format's header
        self.probed = probed

    def _size(self) -> int:
        if self.fixed_size is not None:
            return self.fixed_size
        return max(0, self.child.size - self.offset)

    def can_grow(self) -> bool:
        return self.fixed_size is None and self.child.can_grow()

    def allow_growth(self) -> None:
        if self.fixed_size is None:
            self.child.allow_growth()

    def file_name(self) -> str | None:
        return self.child.file_name()

    def _read(self, offset: int, length: int) -> bytes:
        return self.child.pread(self.offset + offset, length)

    def _write(self, offset: int, data: bytes) -> None:
        if self.probed and offset < PROBE_BYTES:
            self._check_probe_write(offset, data)
        self.child.pwrite(self.offset + offset, data)

    def _check_probe_write(self, offset: int, data: bytes) -> None:
        head = bytearray(self.child.pread(self.offset, PROBE_BYTES))
        head[offset:offset + len(data)] = data[:PROBE_BYTES - offset]
        fmt = probe_format(bytes(head[:PROBE_BYTES]))
        if fmt != "raw":
            raise BlockError(f"Write to block 0 of '{self.file_name() or self.node_name}' refused: the image's "
                             f"format was probed as raw and the write would make it look like {fmt}")

    def _write_zeroes(self, offset: int, length: int, unmap: bool) -> None:
        self.child.pwrite_zeroes(self.offset + offset, length, unmap)

    def _discard(self, offset: int, length: int) -> None:
        self.child.pdiscard(self.offset + offset, length)

    def _flush(self) -> None:
        self.child.flush()
