"""QMP monitor sessions over any byte stream (unix socket, TCP, stdio).

Layering: a listener (see :mod:`vmd.transports.chardev`) accepts a connection
and builds a :class:`QmpSession`; the session feeds bytes to the sans-I/O core
(:mod:`vmd.proto.qmp`) and runs requests through the shared command registry.

Negotiation is a table swap, as in QEMU's monitor/qmp.c: a session starts
with a command table holding only ``qmp_capabilities``; accepting
capabilities swaps in the full registry.  Events flow only after that.

Ordering: requests on one session run one at a time, in order.  Synchronous
handlers run inline (the common, fast case); a coroutine handler parks the
queue until it finishes.  Events emitted while a command runs are written
before its reply, as QEMU does (``quit`` sends SHUTDOWN, then ``{"return": {}}``).

Bounds: the core caps message size; at most :data:`MAX_PENDING` requests wait
per session before reading pauses; a client that stops reading loses its
oldest events (per-listener queue), and reading pauses while its write
buffer is above the high-water mark.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any, Callable

from vmd.api.registry import Context, Registry, to_wire
from vmd.errors import CommandNotFound, VmdError
from vmd.events import EventBus, EventListener
from vmd.proto import qmp as wire

log = logging.getLogger("vmd.qmp")

MAX_PENDING = 64
#: requests handled per turn of the event loop before other clients get theirs
BATCH = 16
CAPABILITIES = ["oob"]


class QmpSession(asyncio.Protocol):
    """One QMP client."""

    def __init__(
        self,
        registry: Registry,
        ctx_factory: Callable[["QmpSession"], Context],
        events: EventBus,
        greeting: dict[str, Any],
        *,
        on_close: Callable[["QmpSession"], None] | None = None,
        pretty: bool = False,
        early: Any = None,
        ready: asyncio.Event | None = None,
    ):
        self.registry = registry
        self.events = events
        self.ctx = ctx_factory(self)
        self.greeting = greeting
        self.on_close = on_close
        self.pretty = pretty
        self.splitter = wire.JsonStreamSplitter()
        self.transport: asyncio.BaseTransport | None = None
        self.writer: Any = None  # transport used for output (differs for stdio)
        self.negotiating = True
        self.oob_enabled = False
        self.listener: EventListener | None = None
        self.pending: collections.deque = collections.deque()
        self.busy = False
        self.closed = False
        self.reading_paused = False
        self.writing_paused = False  # the client is not reading: stop producing output for it
        self.eof = False
        self._flush_scheduled = False
        self.loop = asyncio.get_event_loop()
        self.peer = "?"
        #: set once the machine has started; commands wait for it (as QEMU's monitor is not
        #: serviced before its main loop runs)
        self.ready = ready
        self._ready_waiter: asyncio.Task | None = None
        self._drain_scheduled = False
        #: a client the start-up fast path already greeted (and maybe negotiated with)
        self.early = early
        if early is not None:
            self.splitter = early.splitter
            if early.negotiated:
                self._enter_command_mode(early.oob_enabled)

    # -- asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if self.writer is None:
            self.writer = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer) if peer else "local"
        if self.early is None:
            self._send(self.greeting)
        else:
            pending, self.early = self.early.pending, None
            self._handle(pending)

    def data_received(self, data: bytes) -> None:
        self._handle(self.splitter.feed(data))

    def _handle(self, items: list) -> None:
        """Queue what arrived, in order, then run whatever may run now."""
        for item in items:
            self.pending.append(item)
        if len(self.pending) >= MAX_PENDING:
            self._pause_reading()
        if not self.busy:
            self._drain_pending()

    def _step(self, item: Any) -> None:
        """Handle one parsed item: a wire error, a malformed request, or a request to run."""
        if isinstance(item, wire.WireError):
            self._send(wire.err("GenericError", item.desc, wire.ABSENT))
            return
        request = wire.parse_request(item.value, oob_enabled=self.oob_enabled)
        if isinstance(request, wire.DispatchError):
            self._send(wire.err(request.error_class, request.desc, request.id))
            return
        self._run(request)

    def _blocked(self) -> bool:
        """Commands wait until the machine has started (negotiation does not)."""
        return not self.negotiating and self.ready is not None and not self.ready.is_set()

    def _wait_until_ready(self) -> None:
        if self._ready_waiter is None and self.ready is not None:
            async def wait() -> None:
                await self.ready.wait()
                self._ready_waiter = None
                self._drain_pending()

            self._ready_waiter = self.loop.create_task(wait())

    def eof_received(self) -> bool:
        """The client finished sending: answer what it sent, then close (half-close kept)."""
        self.eof = True
        self._close_if_done()
        return True

    def _close_if_done(self) -> None:
        if self.eof and not self.pending and not self.busy and self.transport is not None:
            self._flush_events()
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._ready_waiter is not None:
            self._ready_waiter.cancel()
        if self.listener is not None:
            self.events.unlisten(self.listener)
            self.listener = None
        self.pending.clear()
        if self.on_close is not None:
            self.on_close(self)

    def pause_writing(self) -> None:
        """The client's receive side is full: no more replies or events until it reads."""
        self.writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._flush_events()
        self._drain_pending()

    # -- requests -----------------------------------------------------------------
    def _run(self, request: "wire.Request") -> None:
        if self.negotiating:
            self._negotiate(request)
            return
        try:
            spec = self.registry.get(request.name)
            parsed = self.registry.parse_args(spec, request.arguments)
            if spec.is_async:
                self.busy = True
                task = self.loop.create_task(spec.handler(self.ctx, parsed))
                task.add_done_callback(lambda t, r=request: self._finish_async(r, t))
                return
            result = spec.handler(self.ctx, parsed)
        except VmdError as err:
            self._reply(wire.err(err.error_class, err.desc, request.id))
            return
        except RecursionError:
            self._reply(wire.err("GenericError", "Parameter nesting is too deep", request.id))
            return
        except Exception as err:  # a bug in vmd: answer, log, keep serving
            log.exception("command %s failed", request.name)
            self._reply(wire.err("GenericError", f"internal error: {err}", request.id))
            return
        self._reply(wire.ok(to_wire(result), request.id))

    def _finish_async(self, request: "wire.Request", task: asyncio.Task) -> None:
        self.busy = False
        if self.closed:
            return
        try:
            result = task.result()
        except VmdError as err:
            self._reply(wire.err(err.error_class, err.desc, request.id))
        except Exception as err:
            log.exception("command %s failed", request.name)
            self._reply(wire.err("GenericError", f"internal error: {err}", request.id))
        else:
            self._reply(wire.ok(to_wire(result), request.id))
        self._drain_pending()

    def _drain_pending(self) -> None:
        handled = 0
        while self.pending and not self.busy and not self.closed and not self.writing_paused:
            if self._blocked():
                self._wait_until_ready()
                break
            if handled == BATCH:  # let other clients in; continue on the next turn
                if not self._drain_scheduled:
                    self._drain_scheduled = True
                    self.loop.call_soon(self._drain_again)
                break
            self._step(self.pending.popleft())
            handled += 1
        if len(self.pending) < MAX_PENDING // 2 and not self.writing_paused:
            self._resume_reading()
        self._close_if_done()

    def _drain_again(self) -> None:
        self._drain_scheduled = False
        self._drain_pending()

    def _negotiate(self, request: "wire.Request") -> None:
        if request.name != "qmp_capabilities":
            err = CommandNotFound("Expecting capabilities negotiation with 'qmp_capabilities'")
            self._send(wire.err(err.error_class, err.desc, request.id))
            return
        enable = request.arguments.get("enable", [])
        unexpected = sorted(set(request.arguments) - {"enable"})
        if unexpected:
            self._send(wire.err("GenericError", f"Parameter '{unexpected[0]}' is unexpected", request.id))
            return
        if not isinstance(enable, list) or not all(isinstance(c, str) for c in enable):
            self._send(wire.err("GenericError", "Invalid parameter type for 'enable', expected: array", request.id))
            return
        for cap in enable:
            if cap not in CAPABILITIES:
                # QEMU 7.2 names the list element 'null' here; clients match the text, so vmd does too.
                self._send(wire.err("GenericError", f"Parameter 'null' does not accept value '{cap}'", request.id))
                return
        self._enter_command_mode("oob" in enable)
        self._send(wire.ok({}, request.id))

    def _enter_command_mode(self, oob: bool) -> None:
        """The table swap: from capabilities negotiation to the full registry, events on."""
        self.oob_enabled = oob
        self.negotiating = False
        self.listener = self.events.listen(EventListener(wake=self._schedule_flush))

    # -- output -------------------------------------------------------------------
    def _reply(self, message: dict) -> None:
        self._flush_events()
        self._send(message)

    def _send(self, message: dict) -> None:
        if self.closed or self.writer is None:
            return
        data = wire.encode(message, pretty=self.pretty)
        try:
            self.writer.write(data)
        except (RuntimeError, OSError):
            self.closed = True

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and not self.closed:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush_events)

    def _flush_events(self) -> None:
        self._flush_scheduled = False
        if self.listener is None or self.writing_paused:
            return  # events wait in the listener's bounded queue (oldest dropped)
        for event in self.listener.drain():
            self._send(event.to_wire())

    # -- flow control -------------------------------------------------------------
    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and hasattr(self.transport, "pause_reading"):
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        """Flush what is queued and close (daemon shutdown)."""
        self._flush_events()
        if self.transport is not None:
            self.transport.close()
        if self.writer is not None and self.writer is not self.transport:
            self.writer.close()

