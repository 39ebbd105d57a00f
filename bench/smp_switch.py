#!/usr/bin/env python3
"""Cost of switching the engine between vCPUs (docs/CPU.md, "Several CPUs").

    python bench/smp_switch.py

Prints, best of 5 rounds: UnicornEngine.activate() to another CPU and to the
running one, and a slice that a trap ends (emu_start, LPSWE traps, the hook
stops the engine) run on the same CPU each time or alternating between two.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vmd.cpu.unicorn_engine import UnicornEngine  # noqa: E402
from vmd.machine.memory import GuestMemory  # noqa: E402

PROBLEM_64 = (1 << 48) | (1 << 32) | (1 << 31)
CODE = 0x10000


def best(fn, n: int, per: int = 1) -> float:
    """Best of 5 rounds of n calls, in microseconds per call (divided by per)."""
    rounds = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - t) / n * 1e6 / per)
    return min(rounds)


def main() -> int:
    memory = GuestMemory(16 << 20)
    engine = UnicornEngine(memory)
    a, b = engine.add_cpu(), engine.add_cpu()
    memory.write(CODE, bytes.fromhex("b2b20000"))  # LPSWE 0: privileged in problem state, traps
    for cpu in (a, b):
        cpu.set_psw(PROBLEM_64, CODE)
        cpu.on_trap = lambda intno, cpu=cpu: cpu.stop()

    def flip():
        engine.activate(a)
        engine.activate(b)

    def alternate():
        a.run(20_000)
        b.run(20_000)

    print(f"activate() to another CPU:       {best(flip, 20_000, per=2):6.2f} us")
    print(f"activate() of the running CPU:   {best(lambda: engine.activate(b), 100_000):6.2f} us")
    print(f"trap-ended slice, same CPU:      {best(lambda: a.run(20_000), 3_000):6.2f} us")
    print(f"trap-ended slice, alternating:   {best(alternate, 1_500, per=2):6.2f} us")
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
