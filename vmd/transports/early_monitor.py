"""The start-up fast path: QMP sockets listen and negotiate before the machine exists.

Building the configuration and the machine means importing pydantic and
every device model, which takes a few hundred milliseconds in Python.  A QMP
client should not wait for that to see the greeting, so right after the
command line is parsed (stdlib only) the QMP sockets are bound and a thread
serves each new client its greeting and answers a plain ``qmp_capabilities``.

The thread stops reading a client as soon as it has negotiated, or at the
first message that is anything else; whatever arrived next stays queued, in
order, and the daemon's own session (:class:`~vmd.transports.qmp_server.QmpSession`)
takes the connection over with that state once the machine is built.  So
every command still runs on the daemon, in order; only the greeting and the
negotiation are early.

If building the machine fails, the daemon exits 1 with QEMU's message and
the early clients see the connection close, as with QEMU, which also opens
its chardevs before it creates devices.
"""

from __future__ import annotations

import selectors
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from vmd.proto import qmp as wire
from vmd.transports.listen import bind_tcp, bind_unix

MAX_EARLY_CLIENTS = 64


@dataclass
class EarlyClient:
    """A connection the fast path greeted; the daemon's session resumes from here."""

    sock: socket.socket
    splitter: Any
    negotiated: bool = False
    oob_enabled: bool = False
    #: parsed items (wire.Message / wire.WireError) not yet handled, in arrival order
    pending: list = field(default_factory=list)
    done: bool = False


def monitor_sockets(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The raw chardev entries of QMP (control mode) monitors on server sockets."""
    control = {m.get("chardev") for m in raw.get("monitor", []) if isinstance(m, dict) and m.get("mode") == "control"}
    out = []
    for chardev in raw.get("chardev", []):
        if (isinstance(chardev, dict) and chardev.get("id") in control and chardev.get("backend") == "socket"
                and chardev.get("server") and (chardev.get("path") or chardev.get("port") is not None)):
            out.append(chardev)
    return out


class EarlyMonitor(threading.Thread):
    """Greets and negotiates on the QMP sockets until the daemon takes them over."""

    def __init__(self, greeting: dict[str, Any]):
        super().__init__(name="vmd-early-qmp", daemon=True)
        self.greeting = wire.encode(greeting)
        self.ok_template = greeting
        self.listeners: dict[str, socket.socket] = {}
        self.clients: dict[str, list[EarlyClient]] = {}
        self._selector = selectors.DefaultSelector()
        self._stopping = threading.Event()
        self._wakeup_r, self._wakeup_w = socket.socketpair()

    def bind(self, chardev: dict[str, Any]) -> None:
        """Bind one monitor socket now.

        :raises ConfigError: QEMU's bind error, naming the option.
        """
        origin = chardev.get("origin")
        if chardev.get("path"):
            sock = bind_unix(chardev["path"], origin)
        else:
            sock = bind_tcp(chardev.get("host"), int(chardev["port"]), origin)
        self.listeners[chardev["id"]] = sock
        self.clients[chardev["id"]] = []
        self._selector.register(sock, selectors.EVENT_READ, ("listen", chardev["id"]))

    def run(self) -> None:
        self._selector.register(self._wakeup_r, selectors.EVENT_READ, ("wakeup", None))
        while not self._stopping.is_set():
            for key, _ in self._selector.select():
                kind, data = key.data
                if kind == "listen":
                    self._accept(key.fileobj, data)
                elif kind == "client":
                    self._read(data)

    def _accept(self, listener: socket.socket, chardev_id: str) -> None:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        if sum(len(c) for c in self.clients.values()) >= MAX_EARLY_CLIENTS:
            conn.close()
            return
        conn.setblocking(True)
        try:
            conn.sendall(self.greeting)
        except OSError:
            conn.close()
            return
        conn.setblocking(False)
        client = EarlyClient(conn, wire.JsonStreamSplitter())
        self.clients[chardev_id].append(client)
        self._selector.register(conn, selectors.EVENT_READ, ("client", client))

    def _read(self, client: EarlyClient) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client left before the daemon took over
            self._selector.unregister(client.sock)
            client.sock.close()
            for clients in self.clients.values():
                if client in clients:
                    clients.remove(client)
            return
        items = client.splitter.feed(data)
        if not items:
            return
        first, rest = items[0], items[1:]
        if self._answer_capabilities(client, first):
            client.pending.extend(rest)
        else:
            client.pending.extend(items)
        client.done = True
        self._selector.unregister(client.sock)

    def _answer_capabilities(self, client: EarlyClient, item: Any) -> bool:
        """Answer a plain qmp_capabilities (no or empty ``enable``, or ``["oob"]``); else leave it."""
        if isinstance(item, wire.WireError):
            return False
        request = wire.parse_request(item.value)
        if isinstance(request, wire.DispatchError) or request.name != "qmp_capabilities" or request.oob:
            return False
        args = request.arguments
        if set(args) - {"enable"} or args.get("enable", []) not in ([], ["oob"]):
            return False
        client.negotiated = True
        client.oob_enabled = args.get("enable") == ["oob"]
        try:
            client.sock.setblocking(True)
            client.sock.sendall(wire.encode(wire.ok({}, request.id)))
            client.sock.setblocking(False)
        except OSError:
            pass
        return True

    def handover(self) -> tuple[dict[str, socket.socket], dict[str, list[EarlyClient]]]:
        """Stop the thread; the listening sockets and greeted clients now belong to the caller."""
        self._stopping.set()
        try:
            self._wakeup_w.send(b"x")
        except OSError:
            pass
        if self.is_alive():
            self.join()
        for key in list(self._selector.get_map().values()):
            self._selector.unregister(key.fileobj)
        self._selector.close()
        self._wakeup_r.close()
        self._wakeup_w.close()
        return self.listeners, self.clients
