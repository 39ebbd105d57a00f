"""The ``file`` protocol (regular files) and ``host_device``/``host_cdrom`` (block and character devices).

``cache.direct=on`` opens with O_DIRECT; the kernel then wants the buffer, offset and length
aligned, so every request goes through a page-aligned bounce buffer (an anonymous mmap) and
unaligned edges are read, merged and written back whole.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import stat
import struct

from vmd.block.base import DISCARD_IGNORE, BlockError, Node

#: open errors after which an auto-read-only node falls back to a read-only open, as QEMU's does
_READ_ONLY_FALLBACK = (errno.EACCES, errno.EROFS, errno.EPERM, errno.EISDIR, errno.ETXTBSY)
#: O_DIRECT alignment vmd uses for buffers, offsets and lengths (safe for 512e and 4Kn disks)
DIRECT_ALIGNMENT = 4096
#: the bounce buffer of a direct node; longer requests are split
_BOUNCE_SIZE = 1 << 20

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_FALLOC_FL_ZERO_RANGE = 0x10
_BLKDISCARD = 0x1277  # _IO(0x12, 119)
_BLKZEROOUT = 0x127F  # _IO(0x12, 127)

_fallocate = None


def _libc_fallocate():
    """glibc's fallocate(2) wrapper; Python's os module offers only posix_fallocate."""
    global _fallocate
    if _fallocate is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            func = getattr(libc, "fallocate64", None) or libc.fallocate
            func.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
            func.restype = ctypes.c_int
            _fallocate = func
        except (OSError, AttributeError):
            _fallocate = False
    return _fallocate or None


def fallocate(fd: int, mode: int, offset: int, length: int) -> bool:
    """True when the kernel did it; False when the file system cannot (the caller falls back)."""
    func = _libc_fallocate()
    if func is None:
        return False
    if func(fd, mode, offset, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err))


def open_error(filename: str, err: OSError) -> BlockError:
    return BlockError(f"Could not open '{filename}': {os.strerror(err.errno or errno.EIO)}")


class FileNode(Node):
    """A host file or device, read and written with pread/pwrite."""

    def __init__(self, filename: str, driver: str = "file", *, node_name: str | None = None,
                 read_only: bool = False, auto_read_only: bool = False, direct: bool = False,
                 no_flush: bool = False, discard: str = DISCARD_IGNORE, detect_zeroes: str = "off",
                 aio: str = "threads"):
        super().__init__(node_name, read_only, discard, detect_zeroes, no_flush)
        self.driver = driver
        self.filename = filename
        self.direct = direct
        self.growable = False
        self.fd = self._open(filename, read_only, auto_read_only, direct)
        try:
            if aio == "native" and not direct:
                raise BlockError("aio=native was specified, but it requires cache.direct=on, which was not specified.")
            st = os.fstat(self.fd)
            if driver == "file":
                if not stat.S_ISREG(st.st_mode):
                    raise BlockError(f"'file' driver requires '{filename}' to be a regular file")
            elif not (stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode)):
                raise BlockError(f"'{driver}' driver requires '{filename}' to be either "
                                 "a character or block device")
            self.is_block_device = stat.S_ISBLK(st.st_mode)
            self.is_regular = stat.S_ISREG(st.st_mode)
            self._length = self._measure()
        except BaseException:
            os.close(self.fd)
            raise
        self._bounce: mmap.mmap | None = None

    def _open(self, filename: str, read_only: bool, auto_read_only: bool, direct: bool) -> int:
        extra = os.O_CLOEXEC | (os.O_DIRECT if direct else 0)
        if not read_only:
            try:
                return os.open(filename, os.O_RDWR | extra)
            except OSError as err:
                if not (auto_read_only and err.errno in _READ_ONLY_FALLBACK):
                    raise open_error(filename, err) from None
            # auto-read-only: the node is read-only when the file cannot be written
            self.read_only = True
        try:
            return os.open(filename, os.O_RDONLY | extra)
        except OSError as err:
            raise open_error(filename, err) from None

    def _measure(self) -> int:
        if self.is_regular:
            return os.fstat(self.fd).st_size
        try:
            return os.lseek(self.fd, 0, os.SEEK_END)
        except OSError:
            return 0

    def file_name(self) -> str | None:
        return self.filename

    def _size(self) -> int:
        return self._length

    def can_grow(self) -> bool:
        return self.growable and self.is_regular

    def allow_growth(self) -> None:
        self.growable = True

    # --- plain I/O -----------------------------------------------------------------------
    def _read(self, offset: int, length: int) -> bytes:
        if self.direct:
            return self._direct_read(offset, length)
        chunks = []
        pos, end = offset, offset + length
        while pos < end:
            data = self._io(os.pread, self.fd, end - pos, pos)
            if not data:
                break  # past the end of the file: zeroes, as for a format driver's reads
            chunks.append(data)
            pos += len(data)
        out = b"".join(chunks)
        return out + bytes(length - len(out)) if len(out) < length else out

    def _write(self, offset: int, data: bytes) -> None:
        if self.direct:
            self._direct_write(offset, data)
        else:
            view = memoryview(data)
            pos = 0
            while pos < len(view):
                pos += self._io(os.pwrite, self.fd, view[pos:], offset + pos)
        if offset + len(data) > self._length:
            self._length = offset + len(data)

    def _io(self, func, *args):
        try:
            return func(*args)
        except OSError as err:
            raise BlockError(f"I/O error on '{self.filename}': {os.strerror(err.errno or errno.EIO)}") from None

    # --- O_DIRECT --------------------------------------------------------------------------
    def _bounce_buffer(self) -> mmap.mmap:
        if self._bounce is None:
            self._bounce = mmap.mmap(-1, _BOUNCE_SIZE)
        return self._bounce

    def _direct_read(self, offset: int, length: int) -> bytes:
        align = DIRECT_ALIGNMENT
        buf = self._bounce_buffer()
        out = bytearray()
        pos, end = offset, offset + length
        while pos < end:
            start = pos - pos % align
            span = min(_BOUNCE_SIZE, -(-(end - start) // align) * align)
            got = self._io(os.preadv, self.fd, [memoryview(buf)[:span]], start)
            take = min(end, start + span) - pos
            piece = bytes(buf[pos - start:pos - start + take])
            if got < pos - start + take:  # short read at the end of the file
                valid = max(0, got - (pos - start))
                piece = piece[:valid] + bytes(take - valid)
            out += piece
            pos += take
        return bytes(out)

    def _direct_write(self, offset: int, data: bytes) -> None:
        align = DIRECT_ALIGNMENT
        buf = self._bounce_buffer()
        old_length = self._length
        pos, end = offset, offset + len(data)
        while pos < end:
            start = pos - pos % align
            stop = min(start + _BOUNCE_SIZE, -(-end // align) * align)
            span = stop - start
            take = min(end, stop) - pos
            if pos != start or pos + take != stop:
                # unaligned edges: fill the buffer with what is on disk first
                self._io(os.preadv, self.fd, [memoryview(buf)[:span]], start)
                got_end = self._length
                if got_end < stop:
                    zero_from = max(0, got_end - start)
                    buf[zero_from:span] = bytes(span - zero_from)
            buf[pos - start:pos - start + take] = data[pos - offset:pos - offset + take]
            self._io(os.pwritev, self.fd, [memoryview(buf)[:span]], start)
            pos += take
        if self.is_regular and -(-end // align) * align > old_length:
            # the padding of the last block must not lengthen the file
            os.ftruncate(self.fd, max(end, old_length))

    # --- zeroes, discard, flush ------------------------------------------------------------
    def _write_zeroes(self, offset: int, length: int, unmap: bool) -> None:
        try:
            if self.is_regular:
                old_length = self._length
                if offset + length > old_length:
                    os.ftruncate(self.fd, offset + length)  # the new tail reads as zeroes
                    self._length = offset + length
                    length = max(0, old_length - offset)  # what remains is below the old end
                    if length == 0:
                        return
                if unmap and fallocate(self.fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length):
                    return
                if fallocate(self.fd, _FALLOC_FL_ZERO_RANGE, offset, length):
                    return
            elif self.is_block_device:
                try:
                    fcntl.ioctl(self.fd, _BLKZEROOUT, struct.pack("=QQ", offset, length))
                    return
                except OSError:
                    pass
        except OSError as err:
            raise BlockError(f"I/O error on '{self.filename}': {os.strerror(err.errno or errno.EIO)}") from None
        super()._write_zeroes(offset, length, unmap)

    def _discard(self, offset: int, length: int) -> None:
        # advisory: where the host cannot discard, the data simply stays
        try:
            if self.is_regular:
                fallocate(self.fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length)
            elif self.is_block_device:
                fcntl.ioctl(self.fd, _BLKDISCARD, struct.pack("=QQ", offset, length))
        except OSError:
            pass

    def _flush(self) -> None:
        try:
            os.fdatasync(self.fd)
        except OSError as err:
            if err.errno not in (errno.EINVAL, errno.EROFS):  # character devices cannot sync
                raise BlockError(f"I/O error on '{self.filename}': {os.strerror(err.errno)}") from None

    def _close(self) -> None:
        os.close(self.fd)
        if self._bounce is not None:
            self._bounce.close()
