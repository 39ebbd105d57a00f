"""The VM run state machine, as a table (QEMU's RunState, ``qapi/run-state.json``).

Rule: every transition the machine may make is listed in :data:`TRANSITIONS`;
anything else is a bug in vmd and raises :class:`IllegalTransition`.  The QMP
commands' behaviour in each state (``cont`` needing a reset after shutdown,
``stop`` being a no-op unless running) follows QEMU's ``qmp_cont``/``qmp_stop``.
"""

from __future__ import annotations

import enum


class RunState(str, enum.Enum):
    PRELAUNCH = "prelaunch"
    RUNNING = "running"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"
    GUEST_PANICKED = "guest-panicked"
    INTERNAL_ERROR = "internal-error"
    DEBUG = "debug"


class IllegalTransition(RuntimeError):
    """A transition not in the table: a bug in vmd, never a client's fault."""


S = RunState
TRANSITIONS: frozenset[tuple[RunState, RunState]] = frozenset(
    {
        (S.PRELAUNCH, S.RUNNING),
        (S.PRELAUNCH, S.PAUSED),
        (S.RUNNING, S.PAUSED),
        (S.RUNNING, S.DEBUG),
        (S.RUNNING, S.SHUTDOWN),
        (S.RUNNING, S.GUEST_PANICKED),
        (S.RUNNING, S.INTERNAL_ERROR),
        (S.DEBUG, S.RUNNING),
        (S.DEBUG, S.PAUSED),
        (S.PAUSED, S.RUNNING),
        (S.PAUSED, S.SHUTDOWN),
        (S.SHUTDOWN, S.PAUSED),
        (S.SHUTDOWN, S.RUNNING),
        (S.GUEST_PANICKED, S.PAUSED),
        (S.GUEST_PANICKED, S.RUNNING),
        (S.INTERNAL_ERROR, S.PAUSED),
        (S.INTERNAL_ERROR, S.RUNNING),
    }
)

#: states from which only a reset leads on (QEMU's runstate_needs_reset)
NEEDS_RESET = frozenset({S.SHUTDOWN, S.GUEST_PANICKED, S.INTERNAL_ERROR})


class RunStateMachine:
    def __init__(self, initial: RunState):
        self.state = initial

    def to(self, new: RunState) -> None:
        if new == self.state:
            return
        if (self.state, new) not in TRANSITIONS:
            raise IllegalTransition(f"invalid runstate transition: '{self.state.value}' -> '{new.value}'")
        self.state = new

    @property
    def running(self) -> bool:
        return self.state is S.RUNNING

    @property
    def needs_reset(self) -> bool:
        return self.state in NEEDS_RESET
