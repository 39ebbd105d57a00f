"""The vCPU thread: runs the guest in slices, delivers interruptions, parks in waits.

One host thread runs every vCPU (Unicorn's TCG is not SMP-safe across
instances), all on one engine instance.  The operating CPUs take turns, round
robin in address order: before its turn a CPU takes what is pending for it,
then, unless it waits, runs until its slice ends, it waits, or something
happens that another CPU must see (a SIGP, an interruption for a waiting CPU:
the engine's kick).  Switching CPUs is the engine's context switch
(:meth:`~vmd.cpu.unicorn_engine.UnicornEngine.activate`); with one CPU, or one
CPU with work, the slices simply follow each other with no switch.  A slice is
long (:data:`SLICE_US`) while one CPU has work, :data:`SMP_SLICE_US` while
several do, and never longer than the running CPU's next timer.
The asyncio loop controls the thread through
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

#: longest run of a lone CPU between two looks at timers.  The thread stops the guest only when
#: something is due (a timer, an interruption, a pause, another CPU's turn); every stop costs a
#: new emu_start.  (Asynchronous stops are precise since patch (f), docs/CPU.md.)
SLICE_US = 200_000
#: the slice while another CPU has work too: how long one CPU may keep the others waiting
SMP_SLICE_US = 10_000
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
                slice_us = SLICE_US
                if len(self.cpus) > 1 and any(c.operating and not c.waiting for c in self.cpus if c is not cpu):
                    slice_us = SMP_SLICE_US
                due = cpu.next_timer()
                if due is not None and due > 0:  # a timer due now is masked: deliver_pending just ran
                    slice_us = max(50, min(slice_us, int(due * 1e6) + 50))
                cpu.engine.run(slice_us)
            if not ran:
                timeout = min((t for t in (c.next_timer() for c in self.cpus if c.operating)
                               if t is not None and t > 0), default=IDLE_POLL_S)
                with self._cond:
                    if self._run_allowed and not self._quit:
                        self._cond.wait(min(timeout, IDLE_POLL_S))
