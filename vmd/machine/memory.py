"""Guest storage: one anonymous mapping shared by the CPU engine and every device.

The CPU engine maps the same host buffer (``address`` is its host pointer),
so a device's DMA and the guest see one storage.  Every write vmd makes on
the guest's behalf (loaders, device data) goes through :meth:`write` and is
reported to the ``on_write`` observers, which the engine uses to drop
translated code for the range (code coherence).

Addresses are absolute; accessors are big-endian.  An access outside
storage raises :class:`AddressingError`, which channel programs turn into
a channel program check and instructions into an addressing exception.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
from typing import Callable

PAGE = 4096


class AddressingError(Exception):
    """An absolute address outside guest storage."""

    def __init__(self, address: int, length: int):
        super().__init__(f"address 0x{address:x}+{length} is outside storage")
        self.address = address
        self.length = length


class GuestMemory:
    def __init__(self, size: int):
        if size <= 0 or size % PAGE:
            raise ValueError("guest storage must be a positive multiple of 4 KiB")
        self.size = size
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.view = memoryview(self._map)
        self.address = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        self.on_write: list[Callable[[int, int], None]] = []

    def check(self, address: int, length: int) -> None:
        if address < 0 or length < 0 or address + length > self.size:
            raise AddressingError(address, length)

    def read(self, address: int, length: int) -> bytes:
        self.check(address, length)
        return bytes(self.view[address:address + length])

    def write(self, address: int, data: bytes) -> None:
        self.check(address, len(data))
        self.view[address:address + len(data)] = data
        for observer in self.on_write:
            observer(address, len(data))

    def clear(self) -> None:
        """Zero all storage (a clear reset)."""
        self.view[:] = bytes(self.size)
        for observer in self.on_write:
            observer(0, self.size)

    def u8(self, address: int) -> int:
        self.check(address, 1)
        return self.view[address]

    def u16(self, address: int) -> int:
        self.check(address, 2)
        return struct.unpack_from(">H", self.view, address)[0]

    def u32(self, address: int) -> int:
        self.check(address, 4)
        return struct.unpack_from(">I", self.view, address)[0]

    def u64(self, address: int) -> int:
        self.check(address, 8)
        return struct.unpack_from(">Q", self.view, address)[0]

    def put_u8(self, address: int, value: int) -> None:
        self.write(address, bytes([value & 0xFF]))

    def put_u16(self, address: int, value: int) -> None:
        self.write(address, struct.pack(">H", value & 0xFFFF))

    def put_u32(self, address: int, value: int) -> None:
        self.write(address, struct.pack(">I", value & 0xFFFFFFFF))

    def put_u64(self, address: int, value: int) -> None:
        self.write(address, struct.pack(">Q", value & 0xFFFFFFFFFFFFFFFF))

    def close(self) -> None:
        self.view.release()
        self._map.close()
