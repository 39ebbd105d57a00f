"""Debian's stock s390x kernel under vmd, against qemu-system-s390x on the same image.

The kernel package (linux-image-6.1.*-s390x) is fetched once with apt-get into
.cache/linux/ (the s390x architecture is added to dpkg when missing, as root).
Without the package archive the tests skip with the reason; under CI
(VMD_REQUIRE_PEERS=1) they fail instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, require_peer
from vmd.cpu import libunicorn

CACHE = ROOT / ".cache" / "linux"
PACKAGE_PATTERN = re.compile(r"^linux-image-(6\.1\.0-\d+)-s390x$")
#: what the decompressor prints first (its early SCLP console), under QEMU and vmd alike
FIRST_LINE = "KASLR disabled: CPU has no PRNG"
#: the kernel's own banner (printk), with the compiler: the decompressor's fault report prints
#: "Linux version" too, but without "(gcc"
BANNER = re.compile(r"Linux version 6\.1\.\S+ \(debian-kernel@lists\.debian\.org\) \(gcc")


def _unavailable(reason: str):
    if os.environ.get("VMD_REQUIRE_PEERS") == "1":
        pytest.fail(f"the Debian s390x kernel is required (VMD_REQUIRE_PEERS=1): {reason}")
    pytest.skip(f"the Debian s390x kernel is not available: {reason}")


def _apt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["apt-get", *args], capture_output=True, text=True, timeout=600)


def _newest_package() -> str | None:
    out = subprocess.run(["apt-cache", "search", "--names-only", r"^linux-image-6\.1\.0-[0-9]+-s390x$"],
                         capture_output=True, text=True, timeout=120).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    names = [n for n in names if PACKAGE_PATTERN.match(n)]
    return max(names, key=lambda n: int(n.split("-")[3]), default=None)


def fetch_kernel() -> Path:
    """vmlinuz from the newest linux-image-6.1.0-N-s390x, downloaded and unpacked once."""
    found = sorted(CACHE.glob("img/boot/vmlinuz-*-s390x"))
    if found:
        return found[-1]
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        _unavailable("apt-get and dpkg-deb are needed to fetch it")
    package = _newest_package()
    if package is None and os.geteuid() == 0:
        subprocess.run(["dpkg", "--add-architecture", "s390x"], capture_output=True, timeout=60)
        _apt("update", "-q")
        package = _newest_package()
    if package is None:
        _unavailable("no linux-image-6.1.0-*-s390x in the package lists (dpkg --add-architecture s390x; "
                     "apt-get update)")
    CACHE.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["apt-get", "download", package], cwd=CACHE, capture_output=True, text=True,
                          timeout=600)
    debs = sorted(CACHE.glob(f"{package}_*.deb"))
    if proc.returncode or not debs:
        _unavailable(f"apt-get download {package} failed: {proc.stderr.strip()[-300:]}")
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(CACHE / "img")], check=True, timeout=300)
    for deb in debs:
        deb.unlink()  # only the kernel image is kept (the package is mostly modules)
    found = sorted(CACHE.glob("img/boot/vmlinuz-*-s390x"))
    if not found:
        _unavailable(f"{package} holds no vmlinuz")
    return found[-1]


@pytest.fixture(scope="module")
def kernel() -> Path:
    return fetch_kernel()


def boot(command: list[str], timeout: float) -> str:
    """Console output of a boot that is stopped after ``timeout`` seconds (or ends by itself)."""
    try:
        proc = subprocess.run(command, capture_output=True, timeout=timeout, cwd=ROOT)
        out = proc.stdout
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or b""
    return out.replace(b"\0", b"").decode(errors="replace")


def vmd_boot(kernel: Path, tmp_path: Path, timeout: float = 20) -> str:
    return boot([sys.executable, "-m", "vmd", "-M", "s390-ccw-virtio", "-nographic", "-m", "1G",
                 "-kernel", str(kernel), "-append", "console=ttysclp0", "--runtime-dir", str(tmp_path)],
                timeout)


needs_engine = pytest.mark.skipif(not libunicorn.is_patched(),
                                  reason="the patched libunicorn is not built (scripts/build-libunicorn)")


@needs_engine
def test_decompressor_starts_and_talks_on_the_sclp_console_as_under_qemu(kernel, tmp_path):
    """The decompressor's first line (early SCLP console, STFLE, LPP, the IPL parameters) is
    the one QEMU prints."""
    qemu = require_peer("qemu-system-s390x")
    reference = boot([qemu, "-M", "s390-ccw-virtio", "-nographic", "-m", "1G", "-kernel", str(kernel),
                      "-append", "console=ttysclp0"], 4)
    assert reference.splitlines()[0] == FIRST_LINE
    assert vmd_boot(kernel, tmp_path, 10).splitlines()[0] == FIRST_LINE


@needs_engine
@pytest.mark.xfail(strict=True, reason="the kernel does not print its banner under vmd yet: the XZ "
                   "decompression is corrupted intermittently after an asynchronous engine stop, and "
                   "a decompressed kernel ends in an early disabled wait")
def test_kernel_prints_its_banner(kernel, tmp_path):
    assert BANNER.search(vmd_boot(kernel, tmp_path, 30))


# -- instructions the kernel issues ------------------------------------------------------------------
@needs_engine
def test_load_program_parameter_is_emulated():
    """LPP (0xB280), which the decompressor issues when facility 40 is offered, loads the program
    parameter instead of ending in an operation exception."""
    import struct

    from vmd.cpu import arch
    from vmd.cpu.unicorn_engine import UnicornEngine
    from vmd.cpu.vcpu import MachineHooks, Vcpu
    from vmd.machine.execution import DEFAULT_FACILITIES
    from vmd.machine.memory import GuestMemory

    memory = GuestMemory(1 << 20)
    engine = UnicornEngine(memory)
    try:
        hooks = MachineHooks(service_call=lambda *a: 0, disabled_wait=lambda *a: None, stop_all=lambda *a: None)
        regs = engine.add_cpu()
        cpu = Vcpu(0, regs, memory, hooks, facilities=DEFAULT_FACILITIES)
        regs.on_trap = cpu.on_trap
        cpu.reset()
        cpu.operating = True
        memory.write(0x9000, struct.pack(">QQ", arch.PSW_64BIT | arch.PSW_WAIT | arch.PSW_EXT, 0))
        memory.write(arch.LC_PGM_NEW_PSW, struct.pack(">QQ", arch.PSW_64BIT | arch.PSW_WAIT | arch.PSW_EXT, 0xDEAD))
        memory.put_u64(0x8000, 0x8000_0000_1234_5678)
        memory.write(0x10000, bytes.fromhex("b2802000" "b2b26000"))  # lpp 0(%r2); lpswe 0(%r6)
        cpu.engine.set_gpr(2, 0x8000)
        cpu.engine.set_gpr(6, 0x9000)
        cpu.load_psw(arch.PSW_64BIT, 0x10000)
        cpu.engine.run(2_000_000)
        assert cpu.waiting and cpu.psw()[1] == 0
        assert cpu.program_parameter == 0x8000_0000_1234_5678
    finally:
        engine.close()
