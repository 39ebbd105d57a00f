"""Debian's stock s390x kernel under vmd, against qemu-system-s390x on the same image.

The kernel package (linux-image-6.1.*-s390x) and busybox-static are fetched once
with apt-get into .cache/linux/ (the s390x architecture is added to dpkg when
missing, as root).  Without the package archive the tests skip with the reason;
under CI (VMD_REQUIRE_PEERS=1) they fail instead.

The boot tests give both machines the same initramfs: busybox, and an /init that
prints a line and powers off.  The kernel's messages must be QEMU's, the same
lines, and both must reach the init's line and end by themselves.  With "shell"
on the kernel command line the init runs a shell on the console first, which
answers what is typed on vmd's standard input.
"""

from __future__ import annotations

import gzip
import os
import re
import selectors
import shutil
import stat
import subprocess
import sys
import time
from collections import Counter
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
#: what the initramfs's /init prints before it powers the machine off
INIT_LINE = "initramfs: init runs on 6.1.0-"
#: /init: the line, a shell on the console when the command line says "shell", power-off
INIT_SCRIPT = b"""#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox echo "initramfs: init runs on $(/bin/busybox cat /proc/sys/kernel/osrelease)"
/bin/busybox grep -qw shell /proc/cmdline && /bin/busybox sh
/bin/busybox poweroff -f
"""
#: kernel messages that differ between two boots of one machine (timings, clocks), or between
#: QEMU 7.2 and vmd's engine for a known reason: QEMU's CPU has the PRNO true-random-number
#: function, which seeds the kernel's random pool at once (docs/CPU.md)
UNSTABLE = re.compile(r"deferred pages initialised in|audit\(|random: crng init done"
                      r"|hrtimer: interrupt took|sched: RT throttling")  # the last two: host load


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


def fetch_busybox() -> Path:
    """The static s390x busybox of the busybox-static package, downloaded and unpacked once."""
    binary = CACHE / "bb" / "bin" / "busybox"
    if binary.is_file():
        return binary
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        _unavailable("apt-get and dpkg-deb are needed to fetch busybox-static")
    CACHE.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["apt-get", "download", "busybox-static:s390x"], cwd=CACHE, capture_output=True,
                          text=True, timeout=600)
    debs = sorted(CACHE.glob("busybox-static_*_s390x.deb"))
    if proc.returncode or not debs:
        _unavailable(f"apt-get download busybox-static:s390x failed: {proc.stderr.strip()[-300:]}")
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(CACHE / "bb")], check=True, timeout=300)
    if not binary.is_file():
        _unavailable("busybox-static holds no bin/busybox")
    return binary


def cpio_newc(entries: list[tuple[str, int, bytes, int]]) -> bytes:
    """An initramfs archive ("newc" cpio) of (name, mode, data, device) entries."""
    out = bytearray()
    for ino, (name, mode, data, device) in enumerate(entries + [("TRAILER!!!", 0, b"", 0)], start=1):
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, device >> 8, device & 0xFF, len(encoded), 0)
        out += b"070701" + "".join(f"{v:08X}" for v in fields).encode() + encoded
        out += bytes(-len(out) % 4) + data
        out += bytes(-len(out) % 4)
    return bytes(out)


@pytest.fixture(scope="module")
def kernel() -> Path:
    return fetch_kernel()


@pytest.fixture(scope="module")
def initramfs(tmp_path_factory) -> Path:
    """busybox, /dev/console and an /init that prints INIT_LINE and powers off (gzip'd)."""
    busybox = fetch_busybox().read_bytes()
    directory, regular = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o755
    archive = cpio_newc([("dev", directory, b"", 0), ("dev/console", stat.S_IFCHR | 0o600, b"", (5 << 8) | 1),
                         ("bin", directory, b"", 0), ("bin/busybox", regular, busybox, 0),
                         ("proc", directory, b"", 0), ("init", regular, INIT_SCRIPT, 0)])
    path = tmp_path_factory.mktemp("initramfs") / "initrd.gz"
    path.write_bytes(gzip.compress(archive))
    return path


def boot(command: list[str], timeout: float, ended: list | None = None) -> str:
    """Console output of a boot that is stopped after ``timeout`` seconds (or ends by itself:
    then True is appended to ``ended``)."""
    try:
        proc = subprocess.run(command, capture_output=True, timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL)
        out = proc.stdout
        if ended is not None:
            ended.append(True)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or b""
    return out.replace(b"\0", b"").decode(errors="replace")


def vmd_boot(kernel: Path, tmp_path: Path, timeout: float = 20, initrd: Path | None = None,
             ended: list | None = None) -> str:
    extra = ["-initrd", str(initrd)] if initrd else []
    return boot([sys.executable, "-m", "vmd", "-M", "s390-ccw-virtio", "-nographic", "-m", "1G",
                 "-kernel", str(kernel), "-append", "console=ttysclp0", *extra, "--runtime-dir", str(tmp_path)],
                timeout, ended)


def kernel_messages(console: str) -> Counter:
    """The kernel's printk lines without their timestamps, numbers masked where they vary."""
    lines = Counter()
    for line in console.splitlines():
        match = re.match(r"\[\s*\d+\.\d+\] (.*)", line)
        if match and not UNSTABLE.search(match.group(1)):
            lines[match.group(1).rstrip()] += 1
    return lines


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


@pytest.fixture(scope="module")
def vmd_initramfs_boot(kernel, initramfs, tmp_path_factory) -> tuple[str, bool]:
    """(console, whether vmd ended by itself) of a boot with the initramfs."""
    if not libunicorn.is_patched():
        pytest.skip("the patched libunicorn is not built (scripts/build-libunicorn)")
    ended: list = []
    console = vmd_boot(kernel, tmp_path_factory.mktemp("vmd"), 180, initramfs, ended)
    return console, bool(ended)


@needs_engine
def test_kernel_prints_its_banner(vmd_initramfs_boot):
    """The decompressor's XZ stream survives the slicer's stops (engine patch (g)), and the
    kernel gets through its early set-up to printk's banner."""
    assert BANNER.search(vmd_initramfs_boot[0])


@needs_engine
def test_init_runs_and_powers_off_as_under_qemu(kernel, initramfs, vmd_initramfs_boot):
    """The kernel unpacks the initramfs, runs /init (user space: MVCOS copies, page faults),
    and powers off; every kernel message is the one QEMU's boot prints."""
    qemu = require_peer("qemu-system-s390x")
    ended: list = []
    reference = boot([qemu, "-M", "s390-ccw-virtio", "-nographic", "-m", "1G", "-kernel", str(kernel),
                      "-append", "console=ttysclp0", "-initrd", str(initramfs)], 180, ended)
    assert INIT_LINE in reference and ended, reference[-2000:]
    console, vmd_ended = vmd_initramfs_boot
    assert INIT_LINE in console and vmd_ended, console[-2000:]
    ours, theirs = kernel_messages(console), kernel_messages(reference)
    assert ours == theirs, (ours - theirs, theirs - ours)


def _read_until(proc: subprocess.Popen, marker: bytes, timeout: float, seen: bytearray) -> None:
    """Reads the process's stdout into ``seen`` until ``marker`` appears after what was there."""
    start, deadline = len(seen), time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while marker not in seen[start:]:
            left = deadline - time.monotonic()
            assert left > 0 and selector.select(left), f"no {marker!r} in: {bytes(seen[-2000:])!r}"
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, f"the console ended before {marker!r}: {bytes(seen[-2000:])!r}"
            seen += chunk.replace(b"\0", b"")


@needs_engine
def test_a_shell_on_the_console_answers_what_is_typed(kernel, initramfs, tmp_path):
    """The SCLP console both ways: the init's shell reads a line typed on vmd's standard input,
    answers on its standard output, and the machine powers off after the shell exits."""
    proc = subprocess.Popen([sys.executable, "-m", "vmd", "-M", "s390-ccw-virtio", "-nographic", "-m", "1G",
                             "-kernel", str(kernel), "-append", "console=ttysclp0 shell", "-initrd", str(initramfs),
                             "--runtime-dir", str(tmp_path)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    seen = bytearray()
    try:
        _read_until(proc, b"/ # ", 180, seen)
        proc.stdin.write(b"echo typed-$((6*7))\n")
        proc.stdin.flush()
        _read_until(proc, b"typed-42", 60, seen)
        proc.stdin.write(b"exit\n")
        proc.stdin.flush()
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        proc.wait()


# -- instructions the kernel issues ------------------------------------------------------------------
WAIT_PSW_AT = 0x9000
PGM_NEW_MARK = 0xDEAD
LPSWE_R6 = "b2b26000"   # lpswe 0(%r6): the enabled wait at WAIT_PSW_AT ends every run


@pytest.fixture
def lone_cpu():
    """One vCPU on its own engine, 1 MiB, with a wait PSW to end runs and a program new PSW
    that waits at PGM_NEW_MARK."""
    import struct

    from vmd.cpu import arch
    from vmd.cpu.unicorn_engine import UnicornEngine
    from vmd.cpu.vcpu import MachineHooks, Vcpu
    from vmd.machine.execution import DEFAULT_FACILITIES
    from vmd.machine.memory import GuestMemory

    if not libunicorn.is_patched():
        pytest.skip("the patched libunicorn is not built (scripts/build-libunicorn)")
    memory = GuestMemory(1 << 20)
    engine = UnicornEngine(memory)
    hooks = MachineHooks(service_call=lambda *a: 0, disabled_wait=lambda *a: None, stop_all=lambda *a: None)
    regs = engine.add_cpu()
    cpu = Vcpu(0, regs, memory, hooks, facilities=DEFAULT_FACILITIES)
    regs.on_trap = cpu.on_trap
    cpu.reset()
    cpu.operating = True
    memory.write(WAIT_PSW_AT, struct.pack(">QQ", arch.PSW_64BIT | arch.PSW_WAIT | arch.PSW_EXT, 0))
    memory.write(arch.LC_PGM_NEW_PSW, struct.pack(">QQ", arch.PSW_64BIT | arch.PSW_WAIT | arch.PSW_EXT,
                                                  PGM_NEW_MARK))
    yield cpu
    engine.close()


def run_code(cpu, code_hex: str, psw_mask: int | None = None, **regs: int) -> int:
    """Runs ``code_hex`` at 0x10000 up to the wait; returns the PSW address it waits at (0, or
    PGM_NEW_MARK after a program interruption)."""
    from vmd.cpu import arch

    cpu.memory.write(0x10000, bytes.fromhex(code_hex + LPSWE_R6))
    for name, value in {"r6": WAIT_PSW_AT, **regs}.items():
        cpu.engine.set_gpr(int(name[1:]), value)
    cpu.load_psw(arch.PSW_64BIT if psw_mask is None else psw_mask, 0x10000)
    cpu.engine.run(2_000_000)
    assert cpu.waiting
    return cpu.psw()[1]


def program_interruption(cpu) -> tuple[int, int]:
    """(code, old PSW address) of the last program interruption."""
    from vmd.cpu import arch

    return cpu.memory.u16(arch.LC_PGM_ILC + 2), cpu.memory.u64(arch.LC_PGM_OLD_PSW + 8)


def test_load_program_parameter_is_emulated(lone_cpu):
    """LPP (0xB280), which the decompressor issues when facility 40 is offered, loads the program
    parameter instead of ending in an operation exception."""
    lone_cpu.memory.put_u64(0x8000, 0x8000_0000_1234_5678)
    assert run_code(lone_cpu, "b2802000", r2=0x8000) == 0          # lpp 0(%r2)
    assert lone_cpu.program_parameter == 0x8000_0000_1234_5678


def test_set_psw_key_from_address(lone_cpu):
    """SPKA (early set-up): bits 56-59 of the address become the PSW key; in the problem state
    only a key the PSW-key mask in CR3 permits."""
    from vmd.cpu import arch

    assert run_code(lone_cpu, "b20a0030" "b98d0070") == 0           # spka 0x30; epsw %r7,%r0
    assert (lone_cpu.engine.gpr(7) >> 20) & 0xF == 3
    lone_cpu.engine.set_cr(3, 0x80000000 >> 9)                      # key 9 permitted
    problem = arch.PSW_64BIT | arch.PSW_PROBLEM
    assert run_code(lone_cpu, "b20a0090" "b20a0030", problem) == PGM_NEW_MARK
    assert program_interruption(lone_cpu) == (arch.PGM_PRIVILEGED, 0x10008)  # key 3: not permitted


def test_set_clock_programmable_field(lone_cpu):
    """SCKPF (TOD-clock set-up): R0 bits 48-63 into the TOD programmable register."""
    from vmd.cpu import arch

    assert run_code(lone_cpu, "0107", r0=0x1234) == 0
    assert lone_cpu.todpr == 0x1234
    assert run_code(lone_cpu, "0107", r0=0x10000) == PGM_NEW_MARK   # bits 32-47 must be zero
    assert program_interruption(lone_cpu) == (arch.PGM_SPECIFICATION, 0x10002)


def test_monitor_call_raises_a_monitor_event_when_the_class_is_enabled(lone_cpu):
    """MC (the kernel's BUG and WARN): QEMU 7.2 knows it, the engine's QEMU 5.0 does not; vmd
    stores the class and code and delivers the monitor event when CR8 enables the class, and
    does nothing otherwise (the kernel tests which at boot)."""
    assert run_code(lone_cpu, "af032000", r2=0x4321) == 0           # mc 0(%r2),3: class 3 off
    lone_cpu.engine.set_cr(8, 0x8000 >> 3)
    assert run_code(lone_cpu, "af032000", r2=0x4321) == PGM_NEW_MARK
    assert program_interruption(lone_cpu) == (0x40, 0x10004)        # completed: the next one
    assert lone_cpu.memory.u16(0x94) == 3 and lone_cpu.memory.u64(0xB0) == 0x4321
    assert run_code(lone_cpu, "af102000") == PGM_NEW_MARK           # class 16: specification
    assert program_interruption(lone_cpu)[0] == 0x06


def test_set_interruption_controls(lone_cpu):
    """SIC (zPCI set-up): the adapter-interruption mode of an ISC, 0 or 1; another mode is an
    operation exception, as in QEMU."""
    sic = "eb23400000d1"                                            # sic %r2,%r3,0(%r4)
    assert run_code(lone_cpu, sic, r2=1, r3=2 << 27) == 0
    assert run_code(lone_cpu, sic, r2=5, r3=2 << 27) == PGM_NEW_MARK
    assert program_interruption(lone_cpu) == (0x01, 0x10006)
