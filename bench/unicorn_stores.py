#!/usr/bin/env python3
"""Guest store cost: stock unicorn 2.1.4 wheel library vs vmd's patched libunicorn.

    .venv/bin/python bench/unicorn_stores.py [--iterations N]

Each loop is hand-encoded s390x code (loop body + BRCTG) run in problem state;
the table gives nanoseconds per iteration (best of 3) under each library, each
measured in its own process (a process binds one libunicorn). A micro-measurement,
not a test: the patch (vmd/cpu/unicorn.patch, hunk d) lets stores to pages
without translated code skip Unicorn's slow path.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CODE, DATA, EXIT = 0x10000, 0x100000, 0x20000
PSW_PROBLEM64 = (1 << 48) | (1 << 32) | (1 << 31)  # P, EA, BA

# name: (loop body hex, what it shows); r3 = data page, r5 = the code page, r4 = 0
LOOPS = {
    "alu":        ("b9080011", "AGR (baseline)"),
    "load":       ("e31030000004", "LG from a data page"),
    "store":      ("e31030000024", "STG to a data page"),
    "store-1MiB": ("e31430000024a74b0008c04b000ffff8", "STG streaming over 1 MiB (+AGHI, NILF)"),
    "mvc-256":    ("d2ff30003100", "MVC 256 bytes"),
    "store-code": ("e31050800024", "STG into the page holding the loop (stays slow)"),
    "stck":       ("b2053000", "STCK to a data page (patched: reads the host clock)"),
}


def loop_code(body_hex: str) -> bytes:
    """body; BRCTG r2,body; BR r10 (r10 = EXIT). The exit sits on a page of its
    own: right after the loop it would end the loop's translation block and
    break its chaining, and an exit invalidates the block before it."""
    body = bytes.fromhex(body_hex)
    rel = (-(len(body) // 2)) & 0xFFFF
    return body + bytes.fromhex("a727") + rel.to_bytes(2, "big") + bytes.fromhex("07fa")


def measure(iterations: int) -> dict:
    """Runs in the child: unicorn is bound to the library LIBUNICORN_PATH names."""
    import unicorn
    from unicorn.s390x_const import (UC_S390X_REG_PC, UC_S390X_REG_PSWM, UC_S390X_REG_R2,
                                     UC_S390X_REG_R3, UC_S390X_REG_R4, UC_S390X_REG_R5,
                                     UC_S390X_REG_R10)
    results = {}
    for name, (body, _) in LOOPS.items():
        code = loop_code(body)
        uc = unicorn.Uc(unicorn.UC_ARCH_S390X, unicorn.UC_MODE_BIG_ENDIAN)
        uc.mem_map(0, 4 << 20)
        uc.mem_write(CODE, code)
        uc.ctl_exits_enabled(True)
        uc.ctl_set_exits([EXIT])
        best = float("inf")
        for _ in range(3):
            for reg, val in ((UC_S390X_REG_R2, iterations), (UC_S390X_REG_R3, DATA),
                             (UC_S390X_REG_R4, 0), (UC_S390X_REG_R5, CODE),
                             (UC_S390X_REG_R10, EXIT),
                             (UC_S390X_REG_PSWM, PSW_PROBLEM64), (UC_S390X_REG_PC, CODE)):
                uc.reg_write(reg, val)
            t0 = time.perf_counter()
            uc.emu_start(CODE, 0)
            best = min(best, time.perf_counter() - t0)
            assert uc.reg_read(UC_S390X_REG_R2) == 0
        results[name] = best / iterations * 1e9
    return results


def child(which: str, iterations: int) -> dict:
    from vmd.cpu import libunicorn
    env = dict(os.environ)
    if which == "patched":
        env["LIBUNICORN_PATH"] = str(libunicorn.library_path().parent)
    else:
        stock = libunicorn.stock_library()
        if stock is None:
            sys.exit("the unicorn wheel is not installed")
        env["LIBUNICORN_PATH"] = str(stock.parent)
    out = subprocess.run([sys.executable, __file__, "--child", "--iterations", str(iterations)],
                         env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5_000_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.iterations)))
        return
    stock = child("stock", args.iterations)
    patched = child("patched", args.iterations)
    print(f"{args.iterations} iterations per loop, ns per iteration (best of 3)")
    print(f"{'loop':<12} {'stock':>8} {'patched':>8} {'speedup':>8}  what")
    for name, (_, what) in LOOPS.items():
        s, p = stock[name], patched[name]
        print(f"{name:<12} {s:8.2f} {p:8.2f} {s / p:7.1f}x  {what}")


if __name__ == "__main__":
    main()
