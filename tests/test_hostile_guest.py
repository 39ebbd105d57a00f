"""A hostile guest (guests/src/chaos.c): random channel programs, virtio set-up commands with random
payloads, kicks for random subchannels and queues, SIGP orders to random CPUs with random parameters.

vmd must give every one of them an architected answer, keep its monitor answering while the guest
runs, and end normally when the guest powers off; the guest's transcript is the same as under
qemu-system-s390x (it is deterministic: its random numbers come from a fixed seed).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

from conftest import ROOT, require_peer, wait_for_socket

CHAOS = ROOT / "guests" / "bin" / "chaos.elf"
DISK_BYTES = 1 << 20
ARGS = ["-M", "s390-ccw-virtio", "-nographic", "-smp", "2", "-nic", "none",
        "-device", "virtio-rng-ccw", "-drive", "file=disk.img,format=raw,if=none,id=d0",
        "-device", "virtio-blk-ccw,drive=d0", "-device", "virtio-serial-ccw", "-device", "virtio-scsi-ccw",
        "-kernel", str(CHAOS)]


def test_a_hostile_guest_gets_answers_and_the_monitor_stays_responsive(tmp_path):
    (tmp_path / "disk.img").write_bytes(bytes(DISK_BYTES))
    sock_path = tmp_path / "q.sock"
    proc = subprocess.Popen([sys.executable, "-m", "vmd", *ARGS, "-qmp", f"unix:{sock_path},server=on,wait=off",
                             "--runtime-dir", str(tmp_path / "run")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    wait_for_socket(sock_path, proc)
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)  # a monitor that stops answering while the guest runs fails here
    sock.connect(str(sock_path))
    stream = sock.makefile("rb")
    json.loads(stream.readline())
    answered = 0
    try:
        sock.sendall(b'{"execute":"qmp_capabilities"}\n')
        while proc.poll() is None:
            try:
                sock.sendall(b'{"execute":"query-status"}\n')
                while True:
                    line = stream.readline()
                    if not line:
                        break
                    reply = json.loads(line)
                    if "return" in reply and "status" in reply["return"]:
                        answered += 1
                        break
            except (BrokenPipeError, ConnectionResetError):
                break  # the guest powered off and vmd ended between two queries
            time.sleep(0.02)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        sock.close()
    assert proc.returncode == 0, err.decode(errors="replace")
    assert b"chaos: survived 3000 rounds" in out
    assert answered >= 3


def test_the_hostile_guest_ends_as_under_qemu(tmp_path):
    qemu = require_peer("qemu-system-s390x")
    (tmp_path / "disk.img").write_bytes(bytes(DISK_BYTES))
    theirs = subprocess.run([qemu, *ARGS], capture_output=True, timeout=120, stdin=subprocess.DEVNULL, cwd=tmp_path)
    (tmp_path / "disk.img").write_bytes(bytes(DISK_BYTES))
    ours = subprocess.run([sys.executable, "-m", "vmd", *ARGS, "--runtime-dir", str(tmp_path / "run")],
                          capture_output=True, timeout=120, stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert theirs.returncode == ours.returncode == 0
    assert ours.stdout == theirs.stdout
