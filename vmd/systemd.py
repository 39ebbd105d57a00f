"""systemd service-manager notifications (the sd_notify protocol), stdlib only.

vmd runs as ``Type=notify`` under ``systemd/vmd@.service``.  This module speaks
the notification protocol directly instead of linking libsystemd: a
notification is one datagram of newline-separated ``KEY=VALUE`` assignments
sent over an ``AF_UNIX``/``SOCK_DGRAM`` socket to the address named by
``$NOTIFY_SOCKET``.  That variable holds either a file-system path or, when it
starts with ``@``, a Linux abstract-namespace name (the ``@`` stands for the
leading NUL byte).  Other address kinds (``vsock:CID:PORT``, used by systemd
running inside a VM) are not supported: the notifier is then disabled and a
warning is logged.

Usage from the daemon::

    notifier = Notifier.from_env()
    ...                                   # bind sockets, start the machine
    notifier.ready("running")             # READY=1 + STATUS=running
    wd = asyncio.create_task(watchdog_loop(notifier, daemon.is_healthy))
    ...
    notifier.stopping("shutting down")    # STOPPING=1 + STATUS=...

When ``$NOTIFY_SOCKET`` is unset (not started by systemd, or started by a unit
that is not ``Type=notify``/``notify-reload``) every method is a cheap no-op
returning ``False``.  Sending never raises: an ``OSError`` is logged at debug
level and reported as ``False``; a service manager that is gone must not take
the virtual machine down with it.

Environment handling (the ``unset_environment`` decision)
---------------------------------------------------------
``Notifier.from_env()`` takes a snapshot of ``NOTIFY_SOCKET``,
``WATCHDOG_USEC`` and ``WATCHDOG_PID`` when it is called.  By default it does
*not* remove them from ``os.environ`` (``sd_notify(0, ...)`` semantics), so
that building a second notifier in the same process (tests, an in-process
restart of the daemon) still works.  The unit file sets ``NotifyAccess=main``,
so a child process that inherits ``NOTIFY_SOCKET`` cannot change the unit's
state anyway, and ``WATCHDOG_PID`` (set by systemd to the main PID) makes a
child's ``watchdog_interval()`` come out ``None``.  A caller that spawns
helper programs and wants them not to see the variables at all passes
``from_env(unset_environment=True)``, which removes the three variables from
``os.environ`` after reading them, like ``sd_notify(1, ...)`` plus
``sd_watchdog_enabled(1, ...)``.

Watchdog
--------
``watchdog_interval()`` returns the *timeout* in seconds (``WatchdogSec=``),
following sd_watchdog_enabled(3): it is ``None`` unless ``WATCHDOG_USEC`` is a
positive integer and ``WATCHDOG_PID`` is unset or equals ``os.getpid()``.  The
keep-alive must be sent more often than that; sd_watchdog_enabled(3)
recommends every half of it, which is what ``watchdog_ping_interval()`` and
``watchdog_loop()`` use.  ``watchdog_loop()`` sends ``WATCHDOG=1`` only while
the supplied health check says the daemon is healthy, so a wedged event loop
(the coroutine never runs) or a daemon that reports itself sick stops the
pings and systemd kills and (with ``Restart=on-failure``) restarts it.

This module must import fast and must not import asyncio at module level: the
daemon imports it before choosing an event loop implementation.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping

__all__ = ["Notifier", "watchdog_loop"]

log = logging.getLogger(__name__)

#: Seconds a send may block when the manager's socket buffer is full.  The
#: socket is blocking so a burst of notifications is not silently dropped, but
#: bounded so a stuck manager cannot freeze the daemon's event loop for long.
SEND_TIMEOUT = 1.0

_ENV_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _clean(text: str) -> str:
    """A value safe inside one ``KEY=VALUE`` line (no newlines, no NULs)."""
    return " ".join(text.replace("\0", " ").splitlines())


def _monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends sd_notify(3) messages to the service manager.

    Build one with :meth:`from_env`; the constructor takes the raw values so
    tests can construct one directly.  Every sending method returns ``True``
    when a datagram was handed to the kernel, ``False`` otherwise (disabled
    notifier or send error).
    """

    __slots__ = ("_address", "_socket_name", "_watchdog_usec", "_watchdog_pid")

    def __init__(
        self,
        notify_socket: str | None = None,
        watchdog_usec: str | int | None = None,
        watchdog_pid: str | int | None = None,
    ) -> None:
        self._socket_name = notify_socket or None
        self._address: str | bytes | None = self._parse_address(self._socket_name)
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid

    @classmethod
    def from_env(
        cls,
        environ: MutableMapping[str, str] | None = None,
        *,
        unset_environment: bool = False,
    ) -> Notifier:
        """A notifier for ``$NOTIFY_SOCKET``/``$WATCHDOG_USEC``/``$WATCHDOG_PID``.

        ``environ`` defaults to ``os.environ``.  With ``unset_environment``
        the three variables are removed from it after they were read, so child
        processes do not inherit them (see the module docstring).
        """
        env: MutableMapping[str, str] = os.environ if environ is None else environ
        notifier = cls(env.get("NOTIFY_SOCKET"), env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID"))
        if unset_environment:
            for name in _ENV_VARS:
                env.pop(name, None)
        return notifier

    @staticmethod
    def _parse_address(name: str | None) -> str | bytes | None:
        if not name:
            return None
        if name.startswith("@"):
            # Abstract namespace: leading NUL, no terminator, exact length.
            return b"\0" + name[1:].encode()
        if name.startswith("/"):
            return name
        log.warning("NOTIFY_SOCKET=%r is not a unix socket address; systemd notifications disabled", name)
        return None

    # -- state -----------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """True when there is a service manager to notify."""
        return self._address is not None

    @property
    def socket_name(self) -> str | None:
        """The ``NOTIFY_SOCKET`` value this notifier sends to (None if disabled)."""
        return self._socket_name if self._address is not None else None

    def __repr__(self) -> str:
        return f"Notifier(socket={self.socket_name!r}, watchdog={self.watchdog_interval()!r})"

    # -- sending ---------------------------------------------------------

    def notify(self, *assignments: str, **fields: object) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines.

        Positional arguments are sent as they are (``"READY=1"``); keyword
        arguments become ``KEY=value`` lines with newlines in the value
        replaced by spaces.  Lines keep their order: positionals first.
        """
        if self._address is None:
            return False
        lines = list(assignments)
        lines.extend(f"{key}={_clean(str(value))}" for key, value in fields.items())
        if not lines:
            return False
        payload = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(SEND_TIMEOUT)
                sock.sendto(payload, self._address)
        except OSError as exc:
            log.debug("sd_notify to %s failed: %s", self._socket_name, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up (or reload) finished: ``READY=1`` [+ ``STATUS=``]."""
        if status is None:
            return self.notify("READY=1")
        return self.notify("READY=1", STATUS=status)

    def status(self, text: str) -> bool:
        """Free-form status line shown by ``systemctl status``: ``STATUS=``."""
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        """Watchdog keep-alive: ``WATCHDOG=1``."""
        return self.notify("WATCHDOG=1")

    def watchdog_trigger(self) -> bool:
        """Ask the manager to act as if the watchdog expired: ``WATCHDOG=trigger``."""
        return self.notify("WATCHDOG=trigger")

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun: ``STOPPING=1`` [+ ``STATUS=``]."""
        if status is None:
            return self.notify("STOPPING=1")
        return self.notify("STOPPING=1", STATUS=status)

    def reloading(self, status: str | None = None) -> bool:
        """Reload has begun: ``RELOADING=1`` + ``MONOTONIC_USEC=`` [+ ``STATUS=``].

        ``Type=notify-reload`` (systemd >= 253) requires the CLOCK_MONOTONIC
        timestamp to match the reload to the request; older managers ignore
        the field.  Send :meth:`ready` when the reload is complete.
        """
        fields: dict[str, object] = {"MONOTONIC_USEC": _monotonic_usec()}
        if status is not None:
            fields["STATUS"] = status
        return self.notify("RELOADING=1", **fields)

    def errno(self, n: int) -> bool:
        """Report a failure as an errno value: ``ERRNO=n``."""
        return self.notify(f"ERRNO={int(n)}")

    def extend_timeout(self, usec: int) -> bool:
        """Ask for ``usec`` more microseconds for the current start/stop/reload phase."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(usec)}")

    def mainpid(self, pid: int) -> bool:
        """Tell the manager the daemon's main PID changed: ``MAINPID=``."""
        return self.notify(f"MAINPID={int(pid)}")

    # -- watchdog --------------------------------------------------------

    def watchdog_interval(self) -> float | None:
        """The watchdog timeout in seconds, or None when no keep-alives are expected.

        Per sd_watchdog_enabled(3): ``WATCHDOG_USEC`` must be a positive
        integer and ``WATCHDOG_PID``, when set, must equal this process's PID
        (so a child that inherited the environment does not ping).  Also None
        when there is no ``NOTIFY_SOCKET`` to send to.  Send keep-alives every
        half of this value (:meth:`watchdog_ping_interval`).
        """
        if self._address is None or self._watchdog_usec is None:
            return None
        try:
            usec = int(str(self._watchdog_usec).strip())
        except ValueError:
            log.warning("ignoring invalid WATCHDOG_USEC=%r", self._watchdog_usec)
            return None
        if usec <= 0:
            return None
        if self._watchdog_pid not in (None, ""):
            try:
                pid = int(str(self._watchdog_pid).strip())
            except ValueError:
                log.warning("ignoring invalid WATCHDOG_PID=%r", self._watchdog_pid)
                return None
            if pid <= 0 or pid != os.getpid():
                return None
        return usec / 1_000_000

    def watchdog_ping_interval(self) -> float | None:
        """Half of :meth:`watchdog_interval`: how often to send ``WATCHDOG=1``."""
        timeout = self.watchdog_interval()
        return None if timeout is None else timeout / 2


async def watchdog_loop(
    notifier: Notifier,
    is_healthy: Callable[[], bool | Awaitable[bool]],
    *,
    interval: float | None = None,
) -> None:
    """Send ``WATCHDOG=1`` every half watchdog timeout while ``is_healthy()``.

    Returns at once when the watchdog is not enabled.  Otherwise runs until
    cancelled: it checks ``is_healthy()`` right away and then every half
    interval, and pings only when the check returns true.  A check that
    raises, returns false, or (if it returns an awaitable) does not finish
    within half an interval counts as unhealthy: that tick sends nothing, and
    if the daemon stays unhealthy for the whole ``WatchdogSec=`` systemd
    kills it.  Pinging resumes if the check becomes healthy again in time.

    ``interval`` overrides the watchdog *timeout* (seconds) taken from the
    environment, mainly for tests; pings are still sent at half of it.
    """
    import asyncio
    import inspect

    timeout = notifier.watchdog_interval() if interval is None else interval
    if timeout is None or timeout <= 0 or not notifier.enabled:
        return
    period = timeout / 2
    loop = asyncio.get_running_loop()
    next_tick = loop.time()
    was_healthy = True
    while True:
        try:
            result = is_healthy()
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, period)
            healthy = bool(result)
        except asyncio.CancelledError:
            raise
        except Exception:  # the check itself failing means: not healthy
            log.exception("watchdog health check failed")
            healthy = False
        if healthy:
            notifier.watchdog()
            if not was_healthy:
                log.warning("daemon healthy again; watchdog keep-alives resumed")
        elif was_healthy:
            log.error("daemon unhealthy; withholding watchdog keep-alives (timeout %.3gs)", timeout)
        was_healthy = healthy
        # Fixed-rate schedule; if we fell behind (slow check, busy loop) skip
        # missed ticks rather than bursting pings.
        next_tick += period
        now = loop.time()
        if next_tick < now:
            next_tick = now
        await asyncio.sleep(next_tick - now)

