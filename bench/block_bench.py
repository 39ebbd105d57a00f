#!/usr/bin/env python3
"""Sequential throughput of vmd's block nodes against ``qemu-img bench`` on the same images.

    python bench/block_bench.py [--mib 128] [--dir /var/tmp]

For raw and qcow2 images, 4 KiB and 64 KiB requests, reads and writes: vmd goes through
a BlockNode (as a device would, one request at a time), qemu-img bench runs with queue
depth 1 and the same cache mode (writeback). Writes into qcow2 start from a fresh image,
so they include cluster allocation for both. Prints MiB/s for each and vmd/QEMU ratios.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vmd.block import open_drive  # noqa: E402


def fresh_image(path: Path, fmt: str, size: int) -> None:
    if path.exists():
        path.unlink()
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), str(size)], check=True)
    # reads measure data, not holes: fill the image once
    subprocess.run(["qemu-io", "-f", fmt, "-c", f"write -P 0x5a 0 {size}", str(path)], check=True,
                   capture_output=True)


def vmd_run(path: Path, fmt: str, size: int, block: int, write: bool) -> float:
    node = open_drive({"file": str(path), "format": fmt, "if": "none"})
    data = b"\xa5" * block
    start = time.perf_counter()
    if write:
        for offset in range(0, size, block):
            node.write(offset, data)
        node.flush()
    else:
        for offset in range(0, size, block):
            node.read(offset, block)
    elapsed = time.perf_counter() - start
    node.close()
    return size / elapsed / (1 << 20)


def qemu_run(path: Path, fmt: str, size: int, block: int, write: bool) -> float:
    args = ["qemu-img", "bench", "-c", str(size // block), "-d", "1", "-f", fmt,
            "-s", str(block), "-S", str(block), "-t", "writeback"]
    if write:
        args += ["-w", "--flush-interval", str(size // block), "--no-drain"]
    proc = subprocess.run([*args, str(path)], check=True, capture_output=True, text=True)
    seconds = float(re.search(r"Run completed in ([0-9.]+) seconds", proc.stdout).group(1))
    return size / seconds / (1 << 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=128, help="bytes moved per measurement, in MiB")
    parser.add_argument("--dir", default=None, help="where the images go (default: a temporary directory)")
    args = parser.parse_args()
    if not shutil.which("qemu-img"):
        sys.exit("qemu-img is needed")
    size = args.mib << 20
    work = Path(tempfile.mkdtemp(dir=args.dir, prefix="block-bench."))
    print(f"{'image':<8}{'request':>9}{'op':>7}{'vmd MiB/s':>12}{'QEMU MiB/s':>12}{'vmd/QEMU':>10}")
    try:
        for fmt in ("raw", "qcow2"):
            for block in (4096, 65536):
                for write in (False, True):
                    results = []
                    for runner in (vmd_run, qemu_run):
                        path = work / f"image.{fmt}"
                        if write and fmt == "qcow2":
                            path.unlink(missing_ok=True)
                            subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), str(size)],
                                           check=True)
                        elif not path.exists() or write:
                            fresh_image(path, fmt, size)
                        results.append(runner(path, fmt, size, block, write))
                    ratio = results[0] / results[1]
                    print(f"{fmt:<8}{block // 1024:>7}KiB{'write' if write else 'read':>7}"
                          f"{results[0]:>12.0f}{results[1]:>12.0f}{ratio:>10.2f}")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
