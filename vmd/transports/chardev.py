"""Character devices: the byte streams that monitors, terminals and virtio-serial ports attach to.

A chardev is configured once (``-chardev`` / ``[[chardev]]``) and gets a
frontend: a QMP monitor (``-mon``/``-qmp``), a virtio-serial port
(``virtconsole``/``virtserialport``, see :class:`_PortLink`) or, with the 3270
issue, a terminal device.  A socket chardev in server mode listens; unlike
QEMU, a monitor socket serves many clients at once, each with its own
session.  A port talks to one client at a time, as QEMU's socket chardev
does: later clients wait, not read, until the current one leaves.  An SCLP console
(``sclpconsole``, ``sclplmconsole``) attaches the same way.  A multiplexed chardev
(``mon:stdio``, the ``-nographic`` default) carries a human monitor and a console at once,
with QEMU's C-a keys (:class:`_MuxClient`).

Security: unix sockets are created 0600 (umask around bind, so there is no
window in which the socket is more open), and each listener accepts at most
:data:`MAX_CLIENTS` connections at a time.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import stat
import sys
from typing import Any, BinaryIO, Callable

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
        self.frontend: str | None = None  # "monitor", a port's type ("virtconsole"), later "terminal3270"
        #: the virtio-serial port this chardev feeds, if any
        self.port_link: _PortLink | None = None
        #: a port's clients: the one it talks to, and those waiting their turn
        self.active_client: _PortClient | None = None
        self.waiting_clients: collections.deque[_PortClient] = collections.deque()
        self.output_file: BinaryIO | None = None
        self.connections: set[asyncio.BaseProtocol] = set()
        self.server: asyncio.AbstractServer | None = None
        self.bound_address: Any = None
        #: a socket bound before the event loop existed, and clients it already greeted
        #: (see :mod:`vmd.transports.early_monitor`)
        self.presocket: Any = None
        self.early_clients: list[Any] = []
        self.first_client: asyncio.Event | None = None
        #: C-a x on a multiplexed chardev: the machine quits (set by the daemon)
        self.quit_request: Callable[[], None] | None = None

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
        is_open = self.port_link.guest_is_open if self.port_link is not None else self.frontend is not None
        return {"label": self.label, "filename": self.filename(), "frontend-open": is_open}

    def infos(self) -> list[dict]:
        """query-chardev's entries: QEMU shows a multiplexed chardev as the mux ("serial0", filename
        "mux") and the backend under it ("serial0-base")."""
        if not getattr(self.spec, "mux", False):
            return [self.info()]
        base = {"label": f"{self.label}-base", "filename": self.filename(), "frontend-open": True}
        return [{**self.info(), "filename": "mux"}, base]

    # -- a virtio-serial port as the frontend (event loop) ------------------------------
    def attach_device(self, type_name: str, port: Any) -> None:
        """Feed ``port`` (a :class:`vmd.virtio.serial.SerialPort`) from this chardev and take its output."""
        self.frontend = type_name
        self.port_link = _PortLink(self, port)
        try:
            port.to_loop = asyncio.get_running_loop().call_soon_threadsafe
        except RuntimeError:  # no loop (tests driving a machine directly): calls stay on the caller's thread
            pass
        port.link = self.port_link
        spec = self.spec
        if isinstance(spec, (ChardevFile, ChardevStdio)) or self.active_client is not None:
            port.set_host_open(True)  # QEMU: files and stdio are open at once, sockets once a client is in

    def detach_device(self) -> None:
        link = self.port_link
        if link is None:
            return
        link.port.link = None
        self.port_link = None
        self.frontend = None
        if self.active_client is not None:
            self.active_client.resume()

    def write_out(self, data: bytes) -> None:
        """A port's output to wherever this chardev goes; dropped without a client (as QEMU's socket)."""
        spec = self.spec
        if isinstance(spec, ChardevSocket):
            if self.active_client is not None:
                self.active_client.write(data)
        elif isinstance(spec, ChardevFile):
            if self.output_file is not None:
                try:
                    self.output_file.write(data)
                except OSError as err:
                    log.warning("chardev %s: %s; output dropped", self.label, err.strerror)
        elif isinstance(spec, ChardevStdio):
            try:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            except (OSError, ValueError):
                pass

    def _client_came(self, client: "_PortClient") -> None:
        if self.active_client is None:
            self.active_client = client
            if self.port_link is not None:
                self.port_link.port.set_host_open(True)
        else:
            client.pause()
            self.waiting_clients.append(client)

    def _client_data(self, client: "_PortClient", data: bytes) -> None:
        link = self.port_link
        if client is not self.active_client or link is None:
            return
        if not link.port.host_input(data):
            client.pause()  # the port is full: the client's bytes wait in its socket

    def _client_gone(self, client: "_PortClient") -> None:
        if client is not self.active_client:
            if client in self.waiting_clients:
                self.waiting_clients.remove(client)
            return
        self.active_client = None
        link = self.port_link
        if link is not None:
            link.congested = False
            link.port.set_host_open(False)
        if self.waiting_clients:
            self._client_came(self.waiting_clients.popleft())
            self.active_client.resume()

    # -- opening -----------------------------------------------------------------------
    async def open(self, protocol_factory: Callable[[Any], asyncio.Protocol] | None) -> None:
        """Start serving: bind a listening socket (or adopt the pre-bound one), or connect stdio.

        ``protocol_factory(early)`` builds the frontend's protocol for one client;
        ``early`` is the state of a client the early monitor already served, or None.
        """
        spec = self.spec
        loop = asyncio.get_running_loop()
        factory = protocol_factory or self._plain_protocol
        if protocol_factory is not None and self.port_link is not None:
            # a monitor and a console on one multiplexed chardev (mon:stdio): they share each client
            factory = lambda early=None: _MuxClient(self, protocol_factory(early))  # noqa: E731
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
            if isinstance(proto, _MuxClient):
                proto.monitor.writer = _MonitorWriter(proto, _StdoutWriter(self))
            if isinstance(proto, _PortClient):
                # a port writes stdout synchronously, as the console does; stdin feeds it
                try:
                    await _connect_stdin(loop, proto)
                except (OSError, ValueError) as err:
                    log.warning("chardev %s: no input from stdin (%s)", self.label, err)
                return
            # Output first: the session greets from connection_made(), which the read pipe triggers.
            write_transport, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout)
            if hasattr(proto, "writer"):
                proto.writer = write_transport  # type: ignore[attr-defined]
            await _connect_stdin(loop, proto)
            self.connections.add(proto)
        elif isinstance(spec, ChardevFile):
            # opened (created or truncated) now, as QEMU opens it whether a frontend writes or not
            try:
                self.output_file = open(spec.path, "ab" if spec.append else "wb", buffering=0)  # noqa: SIM115
            except OSError as err:
                raise ConfigError(f"Could not open '{spec.path}': {err.strerror}", option=spec.origin) from None
        # null: nothing to open

    def _plain_protocol(self, early: Any = None) -> asyncio.Protocol:
        """A client of a chardev without a monitor: a port's client when a port is attached."""
        if self.port_link is not None:
            return _PortClient(self)
        return _DiscardProtocol()

    def close(self) -> None:
        bound = self.server is not None or self.presocket is not None
        if self.server is not None:
            self.server.close()
        elif self.presocket is not None:
            self.presocket.close()
        for proto in list(self.connections):
            closer = getattr(proto, "close", None)
            if closer:
                closer()
        if self.output_file is not None:
            self.output_file.close()
            self.output_file = None
        spec = self.spec
        if isinstance(spec, ChardevSocket) and spec.path and not spec.abstract and bound:
            try:
                os.unlink(spec.path)
            except OSError:
                pass


async def _connect_stdin(loop: asyncio.AbstractEventLoop, proto: asyncio.Protocol) -> None:
    """Feed stdin to ``proto``: a pipe, socket or terminal through the loop's poller; a regular
    file or /dev/null, which the poller refuses (uvloop aborts the process on them), is read in
    chunks from the loop instead, as QEMU reads it."""
    fd = sys.stdin.fileno()
    mode = os.fstat(fd).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd):
        await loop.connect_read_pipe(lambda: proto, sys.stdin)
    else:
        _FileReadTransport(loop, fd, proto)


class _FileReadTransport(asyncio.ReadTransport):
    """A file read as a stream, as fast as its protocol takes it (pause_reading holds it)."""

    CHUNK = 64 * 1024

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, protocol: asyncio.Protocol):
        super().__init__()
        self._loop = loop
        self._fd = fd
        self._protocol = protocol
        self._paused = self._closing = self._scheduled = False
        loop.call_soon(protocol.connection_made, self)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._read)

    def _read(self) -> None:
        self._scheduled = False
        if self._paused or self._closing:
            return
        try:
            data = os.read(self._fd, self.CHUNK)
        except OSError:
            data = b""
        if data:
            self._protocol.data_received(data)
            self._schedule()
            return
        self._protocol.eof_received()
        self.close()

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            self._schedule()

    def is_reading(self) -> bool:
        return not (self._paused or self._closing)

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._loop.call_soon(self._protocol.connection_lost, None)

    def is_closing(self) -> bool:
        return self._closing


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


class _PortLink:
    """A chardev's side of a virtio-serial port (event loop): the port calls these through
    ``to_loop`` when it has output, when its inbox has room again, and when the guest opens it."""

    def __init__(self, chardev: Chardev, port: Any):
        self.chardev = chardev
        self.port = port
        #: the client's socket buffers are full: output waits in the port (which then pushes back)
        self.congested = False
        # an SCLP console opens its chardev for good when it is created, as in QEMU
        self.guest_is_open = bool(getattr(port, "frontend_open", False))

    def output_ready(self) -> None:
        while not self.congested:
            data = self.port.take_output()
            if not data:
                return
            self.chardev.write_out(data)

    def input_space(self) -> None:
        client = self.chardev.active_client
        if client is not None:
            client.resume()

    def guest_open(self, is_open: bool) -> None:
        # QEMU tells the chardev for serial ports only; a console's chardev never looks opened
        if not self.port.is_console:
            self.guest_is_open = is_open


class _PortClient(asyncio.Protocol):
    """One client of a chardev that feeds a port (a socket connection, or stdin)."""

    def __init__(self, chardev: Chardev):
        self.chardev = chardev
        self.transport: asyncio.BaseTransport | None = None
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.chardev._client_came(self)

    def data_received(self, data: bytes) -> None:
        self.chardev._client_data(self, data)

    def eof_received(self):
        return None  # close our side too: the port's host side is gone

    def connection_lost(self, exc: Exception | None) -> None:
        self.chardev._client_gone(self)

    def pause_writing(self) -> None:
        link = self.chardev.port_link
        if link is not None and self is self.chardev.active_client:
            link.congested = True

    def resume_writing(self) -> None:
        link = self.chardev.port_link
        if link is not None and self is self.chardev.active_client:
            link.congested = False
            link.output_ready()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)  # type: ignore[attr-defined]

    def pause(self) -> None:
        if not self.paused and self.transport is not None and not self.transport.is_closing():
            self.paused = True
            self.transport.pause_reading()  # type: ignore[attr-defined]

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.transport.is_closing():
            self.paused = False
            self.transport.resume_reading()  # type: ignore[attr-defined]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


# -- multiplexed chardevs: a monitor and a console on one stream (mon:stdio) --------------------
ESCAPE = 0x01  # C-a
MUX_HELP = (b"\n\r"
            b"C-a h    print this help\n\r"
            b"C-a x    exit emulator\n\r"
            b"C-a s    save disk data back to file (if -snapshot)\n\r"
            b"C-a t    toggle console timestamps\n\r"
            b"C-a b    send break (magic sysrq)\n\r"
            b"C-a c    switch between console and monitor\n\r"
            b"C-a C-a  sends C-a\n\r")
MUX_TERMINATED = b"QEMU: Terminated\n\r"
#: monitor output held while the console has the input focus
MONITOR_HOLD_LIMIT = 64 * 1024


class _StdoutWriter:
    """Writes as the chardev writes a port's output: synchronously, in order with it."""

    def __init__(self, chardev: Chardev):
        self.chardev = chardev

    def write(self, data: bytes) -> None:
        self.chardev.write_out(data)

    def is_closing(self) -> bool:
        return False


class _MonitorWriter:
    """The monitor's output while the console has the focus is held (bounded, oldest dropped)
    and comes out when the monitor gets it, as QEMU's monitor does behind a mux."""

    def __init__(self, mux: "_MuxClient", out: Any):
        self.mux = mux
        self.out = out
        self.held = bytearray()

    def write(self, data: bytes) -> None:
        if self.mux.console_focused:
            self.held += data
            del self.held[:max(0, len(self.held) - MONITOR_HOLD_LIMIT)]
        else:
            self.out.write(data)

    def release(self) -> None:
        data, self.held = bytes(self.held), bytearray()
        if data:
            self.out.write(data)

    def is_closing(self) -> bool:
        return self.out.is_closing()


class _MuxClient(_PortClient):
    """One client of a multiplexed chardev: QEMU's mux with a monitor and a console.

    Input goes to the one with the focus, the console first (it is attached last).  C-a is the
    escape: C-a c moves the focus, C-a x quits, C-a h lists the keys, C-a C-a is a C-a for
    whoever has the focus; C-a with any other key does nothing here (s, t, b have nothing to act
    on in vmd).
    """

    def __init__(self, chardev: Chardev, monitor: asyncio.Protocol):
        super().__init__(chardev)
        self.monitor: Any = monitor
        self.console_focused = True
        self._escape = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if getattr(self.monitor, "writer", None) is None:
            self.monitor.writer = _MonitorWriter(self, transport)
        super().connection_made(transport)
        self.monitor.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        run = bytearray()
        for byte in data:
            if self._escape:
                self._escape = False
                if byte == ESCAPE:
                    run.append(byte)
                    continue
                self._deliver(run)
                run = bytearray()
                self._command(byte)
            elif byte == ESCAPE:
                self._escape = True
            else:
                run.append(byte)
        self._deliver(run)

    def _deliver(self, run: bytearray) -> None:
        if not run:
            return
        if self.console_focused:
            self.chardev._client_data(self, bytes(run))
        else:
            self.monitor.data_received(bytes(run))

    def _command(self, key: int) -> None:
        if key in (ord("h"), ord("?")):
            self._write(MUX_HELP)
        elif key == ord("x"):
            self._write(MUX_TERMINATED)
            if self.chardev.quit_request is not None:
                self.chardev.quit_request()
        elif key == ord("c"):
            self.console_focused = not self.console_focused
            if self.console_focused:
                self._write(b"\r\n")  # the monitor steps aside on a new line
            elif isinstance(self.monitor.writer, _MonitorWriter):
                self.monitor.writer.release()

    def _write(self, data: bytes) -> None:
        writer = self.monitor.writer
        (writer.out if isinstance(writer, _MonitorWriter) else writer).write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.monitor.connection_lost(exc)
