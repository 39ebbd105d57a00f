"""Events and their fan-out.

An :class:`Event` is what QMP sends as ``{"event", "data", "timestamp"}``.
The :class:`EventBus` hands every listener its own bounded queue (QMP
sessions, HTTP event streams): one slow client never holds up another, and a
client that stops reading loses its oldest events, not the daemon's memory.
The bus keeps a short history so a new listener can catch up.

Every event name is declared with a pydantic data model in
:data:`vmd.api.models.EVENTS`; the schemas in ``schemas/`` come from there.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    data: dict[str, Any] | None
    seconds: int
    microseconds: int

    @classmethod
    def now(cls, name: str, data: dict[str, Any] | None = None) -> "Event":
        ns = time.time_ns()
        return cls(name, data, ns // 1_000_000_000, (ns // 1000) % 1_000_000)

    def to_wire(self) -> dict[str, Any]:
        """QEMU's member order on the wire: timestamp, event, data."""
        out: dict[str, Any] = {
            "timestamp": {"seconds": self.seconds, "microseconds": self.microseconds},
            "event": self.name,
        }
        if self.data is not None:
            out["data"] = self.data
        return out


@dataclass(eq=False)
class EventListener:
    """One consumer's view of the bus: a bounded queue and a wake-up callback."""

    maxlen: int = 1024
    queue: collections.deque = field(default_factory=collections.deque)
    dropped: int = 0
    wake: Callable[[], None] | None = None

    def put(self, event: Event) -> None:
        if len(self.queue) >= self.maxlen:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append(event)
        if self.wake is not None:
            self.wake()

    def drain(self) -> list[Event]:
        items = list(self.queue)
        self.queue.clear()
        return items


class EventBus:
    """Fan-out of events to every listener; each gets its own copy."""

    def __init__(self, history: int = 256):
        self._listeners: list[EventListener] = []
        self.history: collections.deque[Event] = collections.deque(maxlen=history)

    def listen(self, listener: EventListener | None = None) -> EventListener:
        listener = listener or EventListener()
        self._listeners.append(listener)
        return listener

    def unlisten(self, listener: EventListener) -> None:
        try:
            self._listeners.remove(listener)
        except ValueError:
            pass

    def emit(self, name: str, data: dict[str, Any] | None = None) -> Event:
        event = Event.now(name, data)
        self.history.append(event)
        for listener in list(self._listeners):
            listener.put(event)
        return event
