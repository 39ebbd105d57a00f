#!/usr/bin/env python3
"""Firmware IPL and start-up figures: vmd against qemu-system-s390x on the same guests.

    python bench/boot_bench.py [--runs 5]

The disk is written by ``vmctl mkboot`` from the hello guest and sits on a
virtio-blk device with bootindex=1.  Measured from process start, median of
the runs: the first console line (the firmware's, or the guest's under
``-kernel``), the guest's first line (the firmware read the boot map and the
program over virtio and started it), and the exit after the guest powers off.
Machines: QEMU with its own firmware (s390-ccw.img), vmd with QEMU's firmware
(``-bios``), vmd with its own firmware (the default), and both peers starting
the hello guest with ``-kernel`` (no devices: vmd starts such a guest before
its daemon is built).  Ratios are vmd/QEMU times of the same kind of start (<1:
vmd is faster).  "cpu" is the CPU time the process had used when its first
line arrived (all threads; less sensitive to a busy host than the wall time).
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
QEMU_FIRMWARE = Path("/usr/share/qemu/s390-ccw.img")
GUEST_FIRST_LINE = b"vmd test guest: hello"


def vmd_command() -> list[str]:
    venv = ROOT / ".venv" / "bin" / "vmd"
    return [str(venv)] if venv.exists() else [sys.executable, "-m", "vmd"]


def cpu_seconds(pid: int) -> float:
    """CPU time a running process has used so far, all threads (Linux's schedstat; 0 elsewhere)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


def boot_once(cmd: list[str]) -> tuple[float, float, float, float]:
    """(first console line, guest's first line, exit, CPU time at the first line), in seconds."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    first = guest = None
    cpu = 0.0
    for line in proc.stdout:
        now = time.perf_counter() - t0
        if first is None and line.strip():
            first = now
            cpu = cpu_seconds(proc.pid)
        if guest is None and GUEST_FIRST_LINE in line:
            guest = now
    proc.wait()
    end = time.perf_counter() - t0
    if first is None or guest is None:
        raise RuntimeError(f"{cmd[0]} did not boot the guest (exit {proc.returncode})")
    return first, guest, end, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    opts = ap.parse_args()
    qemu = shutil.which("qemu-system-s390x")
    if qemu is None or not QEMU_FIRMWARE.is_file():
        print("qemu-system-s390x (with its s390-ccw firmware) is needed as the peer", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bootbench"))
    disk = work / "disk.img"
    subprocess.run([sys.executable, "-m", "vmd.vmctl", "mkboot", str(disk), "--kernel",
                    str(ROOT / "guests" / "bin" / "hello.elf")], check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    common = ["-M", "s390-ccw-virtio", "-nographic", "-m", "128M", "-nic", "none"]
    disk_args = [*common, "-drive", f"file={disk},format=raw,if=none,id=d0",
                 "-device", "virtio-blk-ccw,drive=d0,bootindex=1"]
    kernel_args = [*common, "-kernel", str(ROOT / "guests" / "bin" / "hello.elf")]
    # name -> (command, the QEMU row it is compared with)
    machines = {
        "qemu + s390-ccw.img": ([qemu, *disk_args], None),
        "vmd + s390-ccw.img": ([*vmd_command(), *disk_args, "-bios", str(QEMU_FIRMWARE),
                                "--runtime-dir", str(work / "run1")], "qemu + s390-ccw.img"),
        "vmd + vmd firmware": ([*vmd_command(), *disk_args, "--runtime-dir", str(work / "run2")],
                               "qemu + s390-ccw.img"),
        "qemu -kernel": ([qemu, *kernel_args], None),
        "vmd -kernel": ([*vmd_command(), *kernel_args, "--runtime-dir", str(work / "run3")], "qemu -kernel"),
    }
    results = {}
    for name, (cmd, _) in machines.items():
        runs = [boot_once(cmd) for _ in range(opts.runs)]
        results[name] = tuple(statistics.median(r[i] for r in runs) for i in range(4))
    print(f"{'machine':<22} {'1st console line':>17} {'(cpu)':>9} {'guest started':>14} {'exit':>8}"
          "   ratios vs QEMU")
    for name, (first, guest, end, cpu) in results.items():
        peer = machines[name][1]
        ratios = ""
        if peer is not None:
            base = results[peer]
            ratios = f"  {first / base[0]:.2f}x {guest / base[1]:.2f}x {end / base[2]:.2f}x"
        print(f"{name:<22} {first * 1000:14.1f} ms {cpu * 1000:6.1f} ms {guest * 1000:11.1f} ms"
              f" {end * 1000:5.0f} ms{ratios}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
