"""Character devices: the byte streams that monitors (and later terminals) attach to.

A chardev is configured once (``-chardev`` / ``[[chardev]]``) and gets a
frontend: a QMP monitor (``-mon``/``-qmp``) or, with the 3270 issue, a
terminal device.  A socket chardev in server mode listens; unlike QEMU, a
monitor socket serves many clients at once, each with its own session.

Security: unix sockets are created 0600 (umask around bind, so there is no
window in which the socket is more open), and each listener accepts at most
:data:`MAX_CLIENTS` connections at a time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any, Callable

from vmd.config import ChardevFile, ChardevNull, ChardevSocket, ChardevStdio
from vmd.errors import ConfigError
from vmd.transports.listen import bind_tcp, bind_unix

log = logging.getLogger("vmd.chardev")

MAX_CLIENTS = 64


def _opt(flag: bool, name: str) -> str:
    return f",{name}=on" if flag else ""


class Chardev:
    """A configured character device and what is attached to it."""

    def __init__(self, spec: Any):
        self.spec = spec
        self.label: str = spec.id
        self.frontend: str | None = None  # "monitor", later "terminal3270"
        self.connections: set[asyncio.BaseProtocol] = set()
        self.server: asyncio.AbstractServer | None = None
        self.bound_address: Any = None
        #: a socket bound before the event loop existed, and clients it already greeted
        #: (see :mod:`vmd.transports.early_monitor`)
        self.presocket: Any = None
        self.early_clients: list[Any] = []
        self.first_client: asyncio.Event | None = None

    # -- QEMU's query-chardev "filename" ---------------------------------------------
    def filename(self) -> str:
        spec = self.spec
        if isinstance(spec, ChardevStdio):
            return "stdio"
        if isinstance(spec, ChardevNull):
            return "null"
        if isinstance(spec, ChardevFile):
            return spec.path
        assert isinstance(spec, ChardevSocket)
        if spec.path is not None:
            addr = f"unix:{spec.path}"
        else:
            host, port = self.bound_address or (spec.host or "0.0.0.0", spec.port)
            addr = f"{'telnet' if spec.telnet or spec.tn3270 else 'tcp'}:{host}:{port}"
        addr += _opt(spec.server, "server")
        if self.connections:
            return addr
        return f"disconnected:{addr}"

    def info(self) -> dict:
        return {"label": self.label, "filename": self.filename(), "frontend-open": self.frontend is not None}

    # -- opening -----------------------------------------------------------------------
    async def open(self, protocol_factory: Callable[[Any], asyncio.Protocol] | None) -> None:
        """Start serving: bind a listening socket (or adopt the pre-bound one), or connect stdio.

        ``protocol_factory(early)`` builds the frontend's protocol for one client;
        ``early`` is the state of a client the early monitor already served, or None.
        """
        spec = self.spec
        loop = asyncio.get_running_loop()
        factory = protocol_factory or (lambda early: _DiscardProtocol())
        self.first_client = asyncio.Event()
        if isinstance(spec, ChardevSocket):
            if not spec.server:
                raise ConfigError("client-mode sockets are not supported yet", option=spec.origin)
            sock = self.presocket or (bind_unix(spec.path, spec.origin) if spec.path else bind_tcp(spec.host, spec.port, spec.origin))
            self.bound_address = sock.getsockname() if not spec.path else spec.path

            def tracked(early: Any = None) -> asyncio.Protocol:
                return _Tracked(self, factory(early))

            if spec.path:
                self.server = await loop.create_unix_server(tracked, sock=sock)
            else:
                self.server = await loop.create_server(tracked, sock=sock)
            for early in self.early_clients:
                await loop.connect_accepted_socket(lambda early=early: tracked(early), sock=early.sock)
            self.early_clients = []
        elif isinstance(spec, ChardevStdio):
            proto = factory(None)
            # Output first: the session greets from connection_made(), which the read pipe triggers.
            write_transport, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout)
            if hasattr(proto, "writer"):
                proto.writer = write_transport  # type: ignore[attr-defined]
            await loop.connect_read_pipe(lambda: proto, sys.stdin)
            self.connections.add(proto)
        elif isinstance(spec, ChardevFile):
            pass  # output-only: opened by the frontend that writes to it
        # null: nothing to open

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for proto in list(self.connections):
            closer = getattr(proto, "close", None)
            if closer:
                closer()
        spec = self.spec
        if isinstance(spec, ChardevSocket) and spec.path and not spec.abstract:
            try:
                os.unlink(spec.path)
            except OSError:
                pass


class _Tracked(asyncio.Protocol):
    """Wraps a frontend protocol: counts connections, enforces MAX_CLIENTS."""

    def __init__(self, chardev: Chardev, inner: asyncio.Protocol):
        self.chardev = chardev
        self.inner = inner
        self.refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self.chardev.connections) >= MAX_CLIENTS:
            self.refused = True
            log.warning("chardev %s: refusing connection, %d clients already", self.chardev.label, MAX_CLIENTS)
            transport.close()
            return
        self.chardev.connections.add(self)
        if self.chardev.first_client is not None:
            self.chardev.first_client.set()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.refused:
            self.inner.data_received(data)

    def eof_received(self):
        return None if self.refused else self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            return
        self.chardev.connections.discard(self)
        self.inner.connection_lost(exc)

    def close(self) -> None:
        closer = getattr(self.inner, "close", None)
        if closer:
            closer()


class _DiscardProtocol(asyncio.Protocol):
    """A chardev without a frontend yet: accept and drop input (bounded: nothing is kept)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        self.transport.close()
