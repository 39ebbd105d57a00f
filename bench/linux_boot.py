"""Boot time of Debian's s390x kernel: vmd against qemu-system-s390x (TCG) on the same image.

    .venv/bin/python bench/linux_boot.py [--kernel vmlinuz] [--initrd FILE | --busybox] [--timeout S] [--runs N]

For each run, the time from process start to the first console line, to the kernel's
banner ("Linux version ... (gcc"), and, with an initramfs, to "Run /init" (the kernel's
last word before userspace) and to the line the --busybox init prints.  The kernel is the
one tests/test_linux_boot.py fetched into .cache/linux/ unless --kernel names one;
--busybox builds the initramfs that test uses (busybox-static from .cache/linux/bb, an
/init that prints a line and powers off).
Prints the best of N runs per machine and the vmd/QEMU ratio where both got there.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import selectors
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MILESTONES = {
    "first line": re.compile(rb"\S"),
    "Linux version": re.compile(rb"Linux version \S+ \(.*\(gcc"),
    "userspace": re.compile(rb"Run /init as init process"),
    "init's line": re.compile(rb"initramfs: init runs"),
}


def default_kernel() -> Path | None:
    found = sorted((ROOT / ".cache" / "linux").glob("img/boot/vmlinuz-*-s390x"))
    return found[-1] if found else None


def busybox_initramfs(directory: Path) -> Path | None:
    """A gzip'd newc cpio with .cache/linux/bb's busybox, /dev/console and an /init that
    prints a line and powers off; None without the busybox."""
    busybox = ROOT / ".cache" / "linux" / "bb" / "bin" / "busybox"
    if not busybox.is_file():
        return None
    init = (b"#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n"
            b"/bin/busybox echo initramfs: init runs\n/bin/busybox poweroff -f\n")
    entries = [("dev", stat.S_IFDIR | 0o755, b"", 0), ("dev/console", stat.S_IFCHR | 0o600, b"", 0x501),
               ("bin", stat.S_IFDIR | 0o755, b"", 0), ("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes(), 0),
               ("proc", stat.S_IFDIR | 0o755, b"", 0), ("init", stat.S_IFREG | 0o755, init, 0),
               ("TRAILER!!!", 0, b"", 0)]
    archive = bytearray()
    for ino, (name, mode, data, device) in enumerate(entries, start=1):
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, device >> 8, device & 0xFF, len(encoded), 0)
        archive += b"070701" + "".join(f"{v:08X}" for v in fields).encode() + encoded
        archive += bytes(-len(archive) % 4) + data
        archive += bytes(-len(archive) % 4)
    path = directory / "initrd.gz"
    path.write_bytes(gzip.compress(bytes(archive)))
    return path


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a process has used so far; None where /proc has no answer."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_boot(command: list[str], timeout: float) -> dict[str, tuple[float, float | None]]:
    """(wall seconds from start, CPU seconds used) at each milestone seen on stdout before
    ``timeout``.  The CPU time does not count the time a loaded host made the machine wait."""
    start = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, cwd=ROOT)
    seen: dict[str, tuple[float, float | None]] = {}
    buffer = b""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    try:
        while len(seen) < len(MILESTONES):
            left = timeout - (time.monotonic() - start)
            if left <= 0 or not selector.select(left):
                break
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk.replace(b"\0", b"")
            for name, pattern in MILESTONES.items():
                if name not in seen and pattern.search(buffer):
                    seen[name] = (time.monotonic() - start, cpu_seconds(proc.pid))
    finally:
        proc.kill()
        proc.wait()
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", type=Path, default=default_kernel())
    parser.add_argument("--initrd", type=Path)
    parser.add_argument("--busybox", action="store_true", help="boot the test's busybox initramfs")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.kernel is None or not args.kernel.is_file():
        print("no kernel: run tests/test_linux_boot.py once (it fetches Debian's) or pass --kernel",
              file=sys.stderr)
        return 2
    if args.busybox:
        args.initrd = busybox_initramfs(Path(tempfile.mkdtemp(prefix="vmd-bench-initrd")))
        if args.initrd is None:
            print("no busybox: run tests/test_linux_boot.py once (it fetches busybox-static)", file=sys.stderr)
            return 2
    common = ["-M", "s390-ccw-virtio", "-nographic", "-m", "1G", "-kernel", str(args.kernel),
              "-append", "console=ttysclp0" + (" rdinit=/init" if args.initrd else "")]
    if args.initrd:
        common += ["-initrd", str(args.initrd)]
    machines = {
        "qemu": ["qemu-system-s390x", *common],
        "vmd": [sys.executable, "-m", "vmd", *common, "--runtime-dir", f"/tmp/vmd-bench-{os.getpid()}"],
    }
    best: dict[str, dict[str, list[float]]] = {}  # machine -> milestone -> [wall, cpu]
    for _ in range(args.runs):
        for name, command in machines.items():  # alternating, so that host load hits both alike
            for milestone, (wall, cpu) in timed_boot(command, args.timeout).items():
                row = best.setdefault(name, {}).setdefault(milestone, [wall, cpu])
                row[0] = min(row[0], wall)
                if cpu is not None and row[1] is not None:
                    row[1] = min(row[1], cpu)
    print(f"kernel: {args.kernel.name}, best of {args.runs} runs, timeout {args.timeout:.0f} s")
    for column, title in ((0, "wall clock"), (1, "CPU time (all threads)")):
        print(f"{title:<16}{'qemu (s)':>12}{'vmd (s)':>12}{'vmd/qemu':>10}")
        for milestone in MILESTONES:
            q = best.get("qemu", {}).get(milestone, [None, None])[column]
            v = best.get("vmd", {}).get(milestone, [None, None])[column]
            ratio = f"{v / q:.1f}x" if q and v else "-"
            cells = [f"{t:.2f}" if t is not None else "not reached" for t in (q, v)]
            print(f"  {milestone:<14}{cells[0]:>12}{cells[1]:>12}{ratio:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
