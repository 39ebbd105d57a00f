"""IPL against qemu-system-s390x: the -kernel/-initrd/-append memory layout, and re-IPL through the firmware.

The kernel here is a Linux-layout raw image built by the test: "S390EP" at 0x10008 makes both
machines start it at 0x10000 and fill in the parameter area (command line at 0x10480, initrd
address and size at 0x10408/0x10410, the initrd at the first MiB boundary above 8 MiB that
clears the kernel).  The code at 0x10000 spins, so storage can be read over QMP afterwards.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, require_peer, wait_for_socket

SPIN = bytes.fromhex("a7f40000")  # j .
PARM_AREA = 0x10400


def linux_image(size: int = 0x12000) -> bytes:
    image = bytearray(size)
    image[0x10000:0x10004] = SPIN
    image[0x10008:0x1000E] = b"S390EP"
    struct.pack_into(">Q", image, 0x10430, 0x1000)  # the kernel's command-line size limit
    return bytes(image)


class Monitor:
    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rb")
        json.loads(self.file.readline())
        self.call("qmp_capabilities")

    def call(self, command: str, **arguments) -> dict:
        self.sock.sendall(json.dumps({"execute": command, "arguments": arguments}).encode() + b"\n")
        while True:
            reply = json.loads(self.file.readline())
            if "event" not in reply:
                return reply


def start(program: list[str], args: list[str], tmp_path: Path, name: str) -> tuple[subprocess.Popen, Monitor]:
    sock = tmp_path / f"{name}.sock"
    extra = ["--runtime-dir", str(tmp_path / name)] if program[0] == sys.executable else []
    proc = subprocess.Popen([*program, "-M", "s390-ccw-virtio", "-nographic", "-m", "128M", *args,
                             "-qmp", f"unix:{sock},server=on,wait=off", *extra],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=tmp_path)
    wait_for_socket(sock, proc)
    return proc, Monitor(sock)


def storage(monitor: Monitor, tmp_path: Path, address: int, size: int) -> bytes:
    out = tmp_path / f"mem-{time.monotonic_ns()}.bin"
    assert monitor.call("pmemsave", val=address, size=size, filename=str(out)) == {"return": {}}
    return out.read_bytes()


def test_kernel_initrd_and_append_land_where_qemu_puts_them(tmp_path):
    qemu = require_peer("qemu-system-s390x")
    kernel = tmp_path / "kernel.img"
    kernel.write_bytes(linux_image())
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(bytes(range(256)) * 64)
    args = ["-kernel", str(kernel), "-initrd", str(initrd), "-append", "root=/dev/vda console=ttysclp0"]
    seen = {}
    for name, program in (("qemu", [qemu]), ("vmd", [sys.executable, "-m", "vmd"])):
        proc, monitor = start(program, args, tmp_path, name)
        try:
            time.sleep(0.3)  # the spin loop runs: the IPL is done
            parm = storage(monitor, tmp_path, PARM_AREA, 0x200)
            start_addr, size = struct.unpack_from(">QQ", parm, 8)
            seen[name] = (parm, start_addr, size, storage(monitor, tmp_path, start_addr, size),
                          monitor.call("query-cpus-fast")["return"][0]["cpu-state"])
        finally:
            proc.kill()
            proc.communicate()
    assert seen["vmd"] == seen["qemu"]
    parm, start_addr, size, data, _state = seen["vmd"]
    assert parm[0x80:0x80 + 31] == b"root=/dev/vda console=ttysclp0\0"
    assert (start_addr, size) == (0x800000, len(initrd.read_bytes())) and data == initrd.read_bytes()


def test_a_command_line_beyond_the_kernels_limit_is_refused_as_qemu_does(tmp_path):
    qemu = require_peer("qemu-system-s390x")
    image = bytearray(linux_image())
    struct.pack_into(">Q", image, 0x10430, 16)
    kernel = tmp_path / "kernel.img"
    kernel.write_bytes(bytes(image))
    args = ["-M", "s390-ccw-virtio", "-nographic", "-S", "-kernel", str(kernel), "-append", "x" * 40]
    theirs = subprocess.run([qemu, *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    ours = subprocess.run([sys.executable, "-m", "vmd", *args, "--runtime-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, cwd=ROOT)
    assert ours.returncode == theirs.returncode == 1
    assert ours.stderr.replace("vmd: ", "") == theirs.stderr.replace(f"{qemu}: ", "").replace(
        "qemu-system-s390x: ", "")
    assert "kernel command line exceeds maximum size: 41 > 16" in ours.stderr


@pytest.mark.parametrize("firmware", ["vmd", "qemu"])
def test_system_reset_ipls_the_boot_device_again_through_the_firmware(tmp_path, firmware):
    """A firmware IPL from a zipl disk, then system_reset: the firmware runs again and boots the guest again."""
    from vmd.boot import zipl
    from vmd.boot.zipl import BootEntry

    disk = tmp_path / "disk.img"
    zipl.write_boot_image(disk, [BootEntry((ROOT / "guests" / "bin" / "hello.elf").read_bytes())])
    args = ["-no-shutdown", "-drive", f"file={disk},format=raw,if=none,id=d0",
            "-device", "virtio-blk-ccw,drive=d0,bootindex=1"]
    if firmware == "qemu":
        require_peer("qemu-system-s390x")
        args += ["-bios", "/usr/share/qemu/s390-ccw.img"]
    proc, monitor = start([sys.executable, "-m", "vmd"], args, tmp_path, "vmd")
    try:
        for _ in range(2):
            deadline = time.monotonic() + 30
            while monitor.call("query-status")["return"]["status"] != "shutdown":
                assert time.monotonic() < deadline, "the guest did not power off"
                time.sleep(0.05)
            monitor.call("system_reset")
            monitor.call("cont")
        while monitor.call("query-status")["return"]["status"] != "shutdown":
            time.sleep(0.05)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert out.count(b"hello: done, powering off") == 3
    assert out.count(b"LOADPARM=[        ]") == 3
