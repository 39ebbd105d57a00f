#!/usr/bin/env python3
"""Guest CPU figures of vmd against qemu-system-s390x (TCG), on the same guest binaries.

    python bench/cpu_bench.py [--runs 3]

Each workload in guests/bin/bench-*.elf runs to its power-off under both; the
work time is the run time minus that peer's time for the hello guest (start-up
and shut-down).  Printed per workload: both work times, the speed ratio
vmd/QEMU (>1 means vmd is faster), and for the trap and ssch workloads the
cost per operation.  Also: start to the first console line (hello).
The guests print a checksum; a mismatch between the peers is reported.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "guests" / "bin"
WORK = {  # name -> (extra arguments, operations the guest performs)
    "loop": ([], None),
    "calls": ([], None),
    "trap": ([], 100_000),
    "ssch": (["-device", "virtio-rng-ccw"], 5_000),
}


def vmd_command() -> list[str]:
    venv = ROOT / ".venv" / "bin" / "vmd"
    return [str(venv)] if venv.exists() else [sys.executable, "-m", "vmd"]


def run(cmd: list[str], elf: Path, extra: list[str]) -> tuple[float, float, str]:
    """(seconds to exit, seconds to the first console line, console output)."""
    full = cmd + ["-M", "s390-ccw-virtio", "-nographic", *extra, "-kernel", str(elf)]
    if cmd[0] != shutil.which("qemu-system-s390x"):
        full += ["--runtime-dir", tempfile.mkdtemp(prefix="cpubench")]
    t0 = time.perf_counter()
    proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    first_line = proc.stdout.readline()
    t_first = time.perf_counter() - t0
    rest = proc.stdout.read()
    proc.wait()
    return time.perf_counter() - t0, t_first, (first_line + rest).decode(errors="replace")


def median_run(cmd, elf, extra, runs):
    results = [run(cmd, elf, extra) for _ in range(runs)]
    return statistics.median(r[0] for r in results), statistics.median(r[1] for r in results), results[0][2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    opts = ap.parse_args()
    qemu = shutil.which("qemu-system-s390x")
    peers = {"vmd": vmd_command()}
    if qemu:
        peers["qemu"] = [qemu]
    base = {}
    for name, cmd in peers.items():
        total, first, _ = median_run(cmd, BIN / "hello.elf", [], opts.runs)
        base[name] = total
        print(f"{name:5} hello: start to first console line {first * 1000:7.1f} ms, whole run {total * 1000:7.1f} ms")
    for work, (extra, ops) in WORK.items():
        times, outputs = {}, {}
        for name, cmd in peers.items():
            total, _, out = median_run(cmd, BIN / f"bench-{work}.elf", extra, opts.runs)
            times[name] = max(total - base[name], 1e-6)
            outputs[name] = out.strip().splitlines()[-1] if out.strip() else "(no output)"
        line = f"{work:6} vmd {times['vmd']:7.3f} s"
        if qemu:
            line += f"  qemu {times['qemu']:7.3f} s  speed vmd/qemu {times['qemu'] / times['vmd']:5.2f}x"
        if ops:
            line += f"  vmd {times['vmd'] / ops * 1e6:6.1f} us/op"
            if qemu:
                line += f" (qemu {times['qemu'] / ops * 1e6:5.1f} us/op)"
        if qemu and outputs["vmd"] != outputs["qemu"]:
            line += f"  CHECKSUM DIFFERS: vmd '{outputs['vmd']}' qemu '{outputs['qemu']}'"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
