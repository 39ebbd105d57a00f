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
import errno
import logging
import os
import socket
import stat
import sys
from typing import Any, Callable

from vmd.config import ChardevFile, ChardevNull, ChardevSocket, ChardevStdio
from vmd.errors import ConfigError

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
    async def open(self, protocol_factory: Callable[[], asyncio.Protocol] | None) -> None:
        """Start serving: bind a listening socket, or connect stdio."""
        spec = self.spec
        loop = asyncio.get_running_loop()
        factory = protocol_factory or _DiscardProtocol
        if isinstance(spec, ChardevSocket):
            if not spec.server:
                raise ConfigError("client-mode sockets are not supported yet", option=spec.origin)
            sock = _bind_unix(spec.path, spec.origin) if spec.path else _bind_tcp(spec, spec.origin)
            self.bound_address = sock.getsockname() if not spec.path else spec.path

            def tracked() -> asyncio.Protocol:
                proto = factory()
                return _Tracked(self, proto)

            if spec.path:
                self.server = await loop.create_unix_server(tracked, sock=sock)
            else:
                self.server = await loop.create_server(tracked, sock=sock)
        elif isinstance(spec, ChardevStdio):
            proto = factory()
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


def _bind_unix(path: str, origin: str | None) -> socket.socket:
    _remove_stale_socket(path, origin)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket file is born 0600
    try:
        sock.bind(path)
    except OSError as err:
        sock.close()
        raise ConfigError(f"Failed to bind socket to {path}: {err.strerror}", option=origin) from err
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _remove_stale_socket(path: str, origin: str | None) -> None:
    """Unlink a socket file nobody listens on any more (left by a crash); never another file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"Failed to bind socket to {path}: Address already in use", option=origin)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as err:
        if err.errno in (errno.ECONNREFUSED, errno.ENOENT):
            os.unlink(path)
            return
        raise ConfigError(f"Failed to bind socket to {path}: {err.strerror}", option=origin) from err
    finally:
        probe.close()
    raise ConfigError(f"Failed to bind socket to {path}: Address already in use", option=origin)


def _bind_tcp(spec: ChardevSocket, origin: str | None) -> socket.socket:
    host = spec.host or "0.0.0.0"
    try:
        infos = socket.getaddrinfo(host, spec.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise ConfigError(f"address resolution failed for {host}:{spec.port}: {err.strerror}", option=origin) from err
    family, socktype, proto, _, addr = infos[0]
    sock = socket.socket(family, socktype, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as err:
        sock.close()
        raise ConfigError(f"Failed to bind socket: {err.strerror}", option=origin) from err
    sock.listen(128)
    sock.setblocking(False)
    return sock
