"""The HTTP API (aiohttp): JSON-RPC 2.0 on POST /rpc, a live event stream, the schemas.

Routes:

* ``POST /rpc`` — JSON-RPC 2.0 (single, batch, notifications); method names and
  arguments are the QMP commands'; errors carry the QMP class in ``data.class``.
* ``GET /events`` — server-sent events: one ``event: NAME`` / ``data: {...}``
  block per QMP event (the QMP wire form as data).
* ``GET /schema`` — every command's argument/result schema and every event's.

Every request needs ``Authorization: Bearer <token>``; the token is generated
at start-up and written to a 0600 file.  Bodies are capped
(:data:`MAX_BODY`), as are concurrent event streams (:data:`MAX_STREAMS`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from vmd.api.registry import Context, Registry
from vmd.errors import RPC_INTERNAL_ERROR, VmdError
from vmd.events import EventBus, EventListener
from vmd.proto import jsonrpc

log = logging.getLogger("vmd.http")

MAX_BODY = 1 << 20
MAX_STREAMS = 32
KEEPALIVE_SECONDS = 15.0
STREAM_POLL_SECONDS = 0.5


def write_token(path: Path) -> str:
    """Create a fresh bearer token in a file only the owner can read."""
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, token.encode() + b"\n")
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return token


class HttpApi:
    def __init__(
        self,
        registry: Registry,
        events: EventBus,
        ctx_factory: Callable[[Any], Context],
        token: str,
        schema: Callable[[], dict],
    ):
        self.registry = registry
        self.events = events
        self.ctx_factory = ctx_factory
        self.token = token
        self.schema = schema
        self.streams = 0
        self.runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None
        self.app = web.Application(client_max_size=MAX_BODY, middlewares=[self._auth])
        self.app.router.add_post("/rpc", self.rpc)
        self.app.router.add_get("/events", self.event_stream)
        self.app.router.add_get("/schema", self.get_schema)

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        offered = value.strip().encode("utf-8", "replace")  # a header may carry any bytes
        if scheme.lower() != "bearer" or not hmac.compare_digest(offered, self.token.encode()):
            return web.json_response(
                {"error": "a valid bearer token is required"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="vmd"'},
            )
        return await handler(request)

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, reuse_address=True)
        await site.start()
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        bound = sockets[0].getsockname() if sockets else (host, port)
        self.address = (bound[0], bound[1])
        return self.address

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # -- POST /rpc -------------------------------------------------------------------
    async def rpc(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise
        parsed = jsonrpc.parse(body)
        if isinstance(parsed, dict):
            return web.json_response(parsed)
        members, is_batch = parsed
        ctx = self.ctx_factory(request)
        responses = []
        for n, member in enumerate(members):
            if n and n % 16 == 0:
                await asyncio.sleep(0)  # a big batch must not hold up other clients
            if isinstance(member, jsonrpc.Reject):
                responses.append(member.response)
                continue
            response = await self._call(member, ctx)
            if not member.is_notification:
                responses.append(response)
        if not responses:
            return web.Response(status=204)
        return web.json_response(responses if is_batch else responses[0])

    async def _call(self, call: jsonrpc.Call, ctx: Context) -> dict:
        reply_id = None if call.is_notification else call.id
        try:
            value = await self.registry.dispatch(call.method, call.params, ctx)
        except VmdError as err:
            return jsonrpc.error(reply_id, err.rpc_code, err.desc, {"class": err.error_class})
        except Exception as err:  # a bug in vmd: answer and keep serving
            log.exception("command %s failed", call.method)
            return jsonrpc.error(reply_id, RPC_INTERNAL_ERROR, f"internal error: {err}", {"class": "GenericError"})
        return jsonrpc.result(reply_id, value)

    # -- GET /events -----------------------------------------------------------------
    async def event_stream(self, request: web.Request) -> web.StreamResponse:
        if self.streams >= MAX_STREAMS:
            return web.json_response({"error": "too many event streams"}, status=503)
        self.streams += 1
        wakeup = asyncio.Event()
        listener = self.events.listen(EventListener(wake=wakeup.set))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        try:
            await response.prepare(request)
            await response.write(b": vmd event stream\n\n")
            idle = 0.0
            while True:
                try:
                    await asyncio.wait_for(wakeup.wait(), STREAM_POLL_SECONDS)
                except asyncio.TimeoutError:
                    # aiohttp does not cancel a handler whose client left: look, and free the slot
                    if request.transport is None or request.transport.is_closing():
                        break
                    idle += STREAM_POLL_SECONDS
                    if idle >= KEEPALIVE_SECONDS:
                        idle = 0.0
                        await response.write(b": keepalive\n\n")
                    continue
                idle = 0.0
                wakeup.clear()
                chunks = []
                for event in listener.drain():
                    data = json.dumps(event.to_wire(), separators=(",", ":"))
                    chunks.append(f"event: {event.name}\ndata: {data}\n\n".encode())
                await response.write(b"".join(chunks))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.events.unlisten(listener)
            self.streams -= 1
        return response

    async def get_schema(self, request: web.Request) -> web.Response:
        return web.json_response(self.schema())
