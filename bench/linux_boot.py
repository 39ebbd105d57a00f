"""Boot time of Debian's s390x kernel: vmd against qemu-system-s390x (TCG) on the same image.

    .venv/bin/python bench/linux_boot.py [--kernel vmlinuz] [--initrd FILE] [--timeout S] [--runs N]

For each run, the time from process start to the first console line, to the kernel's
banner ("Linux version ... (gcc"), and, with an initramfs, to the first line its init
prints ("Run /init" is the kernel's last word before userspace).  The kernel is the
one tests/test_linux_boot.py fetched into .cache/linux/ unless --kernel names one.
Prints the best of N runs per machine and the vmd/QEMU ratio where both got there.
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MILESTONES = {
    "first line": re.compile(rb"\S"),
    "Linux version": re.compile(rb"Linux version \S+ \(.*\(gcc"),
    "userspace": re.compile(rb"Run /init as init process"),
}


def default_kernel() -> Path | None:
    found = sorted((ROOT / ".cache" / "linux").glob("img/boot/vmlinuz-*-s390x"))
    return found[-1] if found else None


def timed_boot(command: list[str], timeout: float) -> dict[str, float]:
    """Seconds from start to each milestone seen on stdout before ``timeout``."""
    start = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, cwd=ROOT)
    seen: dict[str, float] = {}
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
                    seen[name] = time.monotonic() - start
    finally:
        proc.kill()
        proc.wait()
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", type=Path, default=default_kernel())
    parser.add_argument("--initrd", type=Path)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.kernel is None or not args.kernel.is_file():
        print("no kernel: run tests/test_linux_boot.py once (it fetches Debian's) or pass --kernel",
              file=sys.stderr)
        return 2
    common = ["-M", "s390-ccw-virtio", "-nographic", "-m", "1G", "-kernel", str(args.kernel),
              "-append", "console=ttysclp0" + (" rdinit=/init" if args.initrd else "")]
    if args.initrd:
        common += ["-initrd", str(args.initrd)]
    machines = {
        "qemu": ["qemu-system-s390x", *common],
        "vmd": [sys.executable, "-m", "vmd", *common, "--runtime-dir", f"/tmp/vmd-bench-{os.getpid()}"],
    }
    best: dict[str, dict[str, float]] = {}
    for name, command in machines.items():
        for _ in range(args.runs):
            for milestone, seconds in timed_boot(command, args.timeout).items():
                best.setdefault(name, {})
                best[name][milestone] = min(seconds, best[name].get(milestone, seconds))
    print(f"kernel: {args.kernel.name}, best of {args.runs} runs, timeout {args.timeout:.0f} s")
    print(f"{'milestone':<16}{'qemu (s)':>12}{'vmd (s)':>12}{'vmd/qemu':>10}")
    for milestone in MILESTONES:
        q = best.get("qemu", {}).get(milestone)
        v = best.get("vmd", {}).get(milestone)
        ratio = f"{v / q:.1f}x" if q and v else "-"
        cells = [f"{t:.2f}" if t is not None else "not reached" for t in (q, v)]
        print(f"{milestone:<16}{cells[0]:>12}{cells[1]:>12}{ratio:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
