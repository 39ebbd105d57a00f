#!/usr/bin/env python3
"""QMP figures of vmd against qemu-system-s390x, measured in one run on the same command line.

    python bench/qmp_bench.py [--seconds 3] [--starts 10]

Prints, for each peer: start to QMP-ready (greeting read, qmp_capabilities
answered), query-status round trips per second on one connection,
device_add + device_del pairs per second (virtio-rng-ccw, each until its
DEVICE_DELETED arrives), and idle RSS; then vmd/QEMU ratios.  The client is a
plain blocking socket so that it costs the same for both peers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MACHINE_ARGS = ["-M", "s390-ccw-virtio", "-nodefaults", "-nographic", "-S", "-no-shutdown"]


def vmd_command() -> list[str]:
    venv = ROOT / ".venv" / "bin" / "vmd"
    return [str(venv)] if venv.exists() else [sys.executable, "-m", "vmd"]


class Client:
    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")
        self.greeting = json.loads(self.file.readline())
        self.call("qmp_capabilities")

    def call(self, name: str, args: dict | None = None) -> dict:
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = json.loads(self.file.readline())
            if "event" not in reply:
                return reply

    def wait_event(self, name: str, device: str) -> None:
        while True:
            msg = json.loads(self.file.readline())
            if msg.get("event") == name and msg.get("data", {}).get("device") == device:
                return

    def close(self) -> None:
        self.sock.close()


def start(cmd: list[str], sock: str, extra: list[str] | None = None) -> tuple[subprocess.Popen, float, Client]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd + MACHINE_ARGS + ["-qmp", f"unix:{sock},server=on,wait=off"] + (extra or []),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while True:
        try:
            client = Client(sock)
            return proc, time.perf_counter() - t0, client
        except (FileNotFoundError, ConnectionRefusedError):
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode())
            time.sleep(0.0005)


def stop(proc: subprocess.Popen, client: Client) -> None:
    try:
        client.call("quit")
    except (OSError, ValueError):
        pass
    client.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(cmd: list[str], seconds: float, starts: int) -> dict:
    tmp = tempfile.mkdtemp(prefix="qmpbench")
    sock = os.path.join(tmp, "qmp.sock")
    times, first = [], []
    for _ in range(starts):
        t0 = time.perf_counter()
        proc, elapsed, client = start(cmd, sock)
        times.append(elapsed)
        client.call("query-status")
        first.append(time.perf_counter() - t0)
        stop(proc, client)
    proc, _, client = start(cmd, sock)
    time.sleep(1.0)
    rss = rss_mib(proc.pid)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        client.call("query-status")
        n += 1
    status_rate = n / (time.perf_counter() - t0)
    pairs, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        dev = f"r{pairs}"
        reply = client.call("device_add", {"driver": "virtio-rng-ccw", "id": dev})
        assert "return" in reply, reply
        client.call("device_del", {"id": dev})
        client.wait_event("DEVICE_DELETED", dev)
        pairs += 1
    pair_rate = pairs / (time.perf_counter() - t0)
    stop(proc, client)
    out = {"start_s": statistics.median(times), "first_s": statistics.median(first), "status_per_s": status_rate,
           "pairs_per_s": pair_rate, "rss_mib": rss}
    if cmd == vmd_command():  # the demo's configuration also runs the HTTP API
        proc, _, client = start(cmd, sock, ["--api-listen", "127.0.0.1:0", "--token-file", os.path.join(tmp, "t")])
        time.sleep(1.0)
        out["rss_api_mib"] = rss_mib(proc.pid)
        stop(proc, client)
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> int:
    import compileall

    compileall.compile_dir(str(ROOT / "vmd"), quiet=1)  # as scripts/setup does: start-up reads .pyc files
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--starts", type=int, default=10)
    opts = ap.parse_args()
    results = {"vmd": measure(vmd_command(), opts.seconds, opts.starts)}
    qemu = shutil.which("qemu-system-s390x")
    if qemu:
        results["qemu"] = measure([qemu], opts.seconds, opts.starts)
    print(f"{'':8} {'start→ready':>12} {'→1st command':>13} {'query-status/s':>15} {'add+del pairs/s':>16}"
          f" {'idle RSS':>10}")
    for name, r in results.items():
        print(f"{name:8} {r['start_s'] * 1000:10.1f}ms {r['first_s'] * 1000:11.1f}ms {r['status_per_s']:15.0f}"
              f" {r['pairs_per_s']:16.1f} {r['rss_mib']:8.1f}MiB")
    print(f"vmd idle RSS with the HTTP API running: {results['vmd']['rss_api_mib']:.1f} MiB")
    if "qemu" in results:
        v, q = results["vmd"], results["qemu"]
        print(f"ratios vmd/qemu: start {v['start_s'] / q['start_s']:.2f}x (target ≤5x), "
              f"query-status {v['status_per_s'] / q['status_per_s']:.2f}x (target ≥2x), "
              f"device pairs {v['pairs_per_s'] / q['pairs_per_s']:.1f}x (target ≥20x), "
              f"idle RSS {v['rss_api_mib']:.1f} MiB with the API (target <60)")
    else:
        print("qemu-system-s390x not installed: no ratios (apt-get install qemu-system-misc)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
