"""The vCPU thread: runs the guest in slices, delivers interruptions, parks in waits.

One host thread runs every vCPU (Unicorn's TCG is not SMP-safe across
instances); with one CPU, a slice is simply the time between two looks at
pending interruptions.  The asyncio loop controls the thread through
:meth:`pause`, :meth:`resume` and :meth:`shutdown`; each sets a flag and kicks
the engine, and the thread acknowledges.  A stop request that lands between
two engine runs would be lost by Unicorn, so the thread checks the flags
before every run and every run is bounded by :data:`SLICE_US`.
"""

from __future__ import annotations

import logging
import threading

from vmd.cpu.vcpu import Vcpu

log = logging.getLogger("vmd.cpu")

#: longest run between two looks at timers.  Kept long on purpose: an asynchronous stop of a
#: running guest is not always precise in the engine (see docs/CPU.md, "Known problems"), so the
#: thread stops the guest only when something is due: a timer, an interruption, a pause.
SLICE_US = 200_000
IDLE_POLL_S = 0.05


class CpuRunner(threading.Thread):
    def __init__(self, cpus: list[Vcpu]):
        super().__init__(name="vmd-vcpu", daemon=True)
        self.cpus = cpus
        self._cond = threading.Condition()
        self._run_allowed = False
        self._quit = False
        self._parked = True  # acknowledged: not inside the engine
        self.error: BaseException | None = None

    # -- control (any thread) ------------------------------------------------------------
    def resume(self) -> None:
        with self._cond:
            self._run_allowed = True
            self._cond.notify_all()

    def pause(self, timeout: float = 2.0) -> None:
        """Stop running guest code; returns once the thread is out of the engine."""
        with self._cond:
            self._run_allowed = False
            self._cond.notify_all()
        for cpu in self.cpus:
            cpu.kick()
        with self._cond:
            self._cond.wait_for(lambda: self._parked or not self.is_alive(), timeout)

    def shutdown(self) -> None:
        with self._cond:
            self._quit = True
            self._run_allowed = False
            self._cond.notify_all()
        for cpu in self.cpus:
            cpu.kick()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(5)

    def wake(self) -> None:
        """An interruption became pending: leave an enabled wait."""
        with self._cond:
            self._cond.notify_all()

    # -- the thread ------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a bug in vmd: report it, do not take the process down
            self.error = exc
            log.exception("vCPU thread failed")

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._parked = True
                self._cond.notify_all()
                while not self._quit and not self._run_allowed:
                    self._cond.wait()
                if self._quit:
                    return
                self._parked = False
            ran = False
            for cpu in self.cpus:
                if not cpu.operating:
                    continue
                cpu.deliver_pending()
                if cpu.waiting or not cpu.operating:
                    continue
                ran = True
                due = cpu.next_timer()
                slice_us = SLICE_US if due is None else max(50, min(SLICE_US, int(due * 1e6) + 50))
                cpu.engine.run(slice_us)
            if not ran:
                timeout = min((t for t in (c.next_timer() for c in self.cpus if c.operating) if t is not None),
                              default=IDLE_POLL_S)
                with self._cond:
                    if self._run_allowed and not self._quit:
                        self._cond.wait(min(timeout, IDLE_POLL_S))
