"""The human monitor (``-monitor`` / ``-mon mode=readline``): a line-based HMP session.

Each line runs through the ``human-monitor-command`` command of the shared
registry, so HMP and QMP cannot drift apart.  Lines are capped at
:data:`MAX_LINE` bytes; a longer line is dropped with an error.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from vmd.api.registry import Context, Registry
from vmd.errors import VmdError

MAX_LINE = 4096
BANNER = b"QEMU 7.2.0 monitor - type 'help' for more information\r\n"
PROMPT = b"(qemu) "


class HmpSession(asyncio.Protocol):
    def __init__(self, registry: Registry, ctx_factory: Callable[["HmpSession"], Context]):
        self.registry = registry
        self.ctx = ctx_factory(self)
        self.buffer = bytearray()
        self.transport: asyncio.BaseTransport | None = None
        self.writer = None
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if self.writer is None:
            self.writer = transport
        self.writer.write(BANNER + PROMPT)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, _, rest = bytes(self.buffer).partition(b"\n")
            self.buffer = bytearray(rest)
            self._line(line.decode("utf-8", "replace").rstrip("\r"))
        if len(self.buffer) > MAX_LINE:
            self.buffer.clear()
            self.writer.write(b"Error: line too long\r\n" + PROMPT)

    def _line(self, line: str) -> None:
        from vmd.api.commands.hmp import run_hmp

        if line.strip() in ("quit", "q"):
            self.ctx.machine.shutdown("host-qmp-quit", guest=False)
            return
        try:
            out = run_hmp(self.ctx, line)
        except VmdError as err:
            out = f"Error: {err.desc}\r\n"
        self.writer.write(out.encode() + PROMPT)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
