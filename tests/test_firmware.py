"""vmd's IPL firmware (firmware/vmd-fw.img): the image, its rebuild, and boots under an emulator.

Every boot runs through ``run_boot(emulator, args, tmp_path)``: the emulator
starts stopped (-S) with a QMP socket, is let run, and the console (stdout of
-nographic) and the QMP events are collected until the guest shuts down or
the firmware stops in a disabled wait (GUEST_PANICKED, whose psw-addr carries
the firmware's wait code, docs/FIRMWARE.md).  ``emulator`` is a fixture
parameter: "qemu" (qemu-system-s390x -bios firmware/vmd-fw.img); "vmd" takes
the same arguments once vmd's virtio-ccw transport is complete (add it to
EMULATORS).

The guests booted are the test guests (guests/bin), on disks that
``vmd.boot.zipl`` writes (docs/BOOTMAP.md) and ISO 9660 images that xorriso
writes with an El Torito boot image: an s390 Linux-layout image (the IPL PSW
and IPL CCWs at 0, as distribution media carry kernels) or a zipl disk image.
What the guest prints after the firmware's lines must equal its golden
transcript (guests/expected), as it does when -kernel starts it.  The same
disks boot under QEMU's own firmware (/usr/share/qemu/s390-ccw.img), which
makes the differential tests.

test_firmware_rebuild_byte_identical needs the s390x cross compiler; it is
skipped without it unless VMD_REQUIRE_CROSS=1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import ROOT, require_peer
from vmd.boot import zipl
from vmd.boot.zipl import BootEntry

FIRMWARE_DIR = ROOT / "firmware"
FIRMWARE = FIRMWARE_DIR / "vmd-fw.img"
QEMU_FIRMWARE = Path("/usr/share/qemu/s390-ccw.img")
BIN = ROOT / "guests" / "bin"
EXPECTED = ROOT / "guests" / "expected"
TIMEOUT = 60
MEMORY = 128 << 20

#: vmd joins once its virtio-ccw transport is complete
EMULATORS = [pytest.param("qemu", marks=pytest.mark.qemu), "vmd"]

BANNER = "vmd firmware 1.0"
BLANK_LOADPARM = "LOADPARM=[        ]"


def wait_code(n: int) -> int:
    """The PSW address of the firmware's final disabled wait for reason n ("vmdf" in the high word)."""
    return 0x766D6466_00000000 | n << 8


WAIT_NO_BOOT_DEVICE = wait_code(1)
WAIT_DEVICE = wait_code(2)
WAIT_IO_ERROR = wait_code(3)
WAIT_BOOT_RECORD = wait_code(4)
WAIT_LOADPARM = wait_code(5)
WAIT_LOAD_RANGE = wait_code(6)
WAIT_UNSUPPORTED = wait_code(10)

#: where QEMU 7.2 and vmd load the firmware with 128 MiB: (min(storage, 2 GiB) - 2 MiB) & ~0xffff
FIRMWARE_BASE = (MEMORY - (2 << 20)) & ~0xFFFF


# --- running a boot ------------------------------------------------------------------------------

@dataclass
class BootRun:
    console: bytes
    events: list[dict] = field(default_factory=list)
    exit_status: int | None = None
    stderr: bytes = b""

    @property
    def text(self) -> str:
        return self.console.decode(errors="replace")

    @property
    def panic_code(self) -> int | None:
        """psw-addr of the disabled wait, when there was one."""
        for event in self.events:
            if event["event"] == "GUEST_PANICKED":
                return event["data"]["info"]["psw-addr"]
        return None

    @property
    def guest_shut_down(self) -> bool:
        return any(e["event"] == "SHUTDOWN" and e["data"].get("reason") == "guest-shutdown"
                   for e in self.events)

    def describe(self) -> str:
        names = [e["event"] for e in self.events]
        return (f"exit {self.exit_status}, events {names}, stderr: {self.stderr.decode(errors='replace')}\n"
                f"console:\n{self.text}")




@pytest.fixture(params=EMULATORS)
def emulator(request) -> str:
    if request.param == "qemu":
        require_peer("qemu-system-s390x")
    return request.param


def emulator_command(emulator: str) -> list[str]:
    if emulator == "qemu":
        return [require_peer("qemu-system-s390x")]
    if emulator == "vmd":
        return [sys.executable, "-m", "vmd"]
    raise ValueError(emulator)


class Qmp:
    def __init__(self, path: Path, proc: subprocess.Popen):
        deadline = time.monotonic() + 15
        while True:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(TIMEOUT)
            try:
                self.sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                # the socket file appears before the emulator listens on it
                self.sock.close()
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"no QMP socket (exit status {proc.poll()})")
                time.sleep(0.02)
        self.stream = self.sock.makefile("rw")
        self.events: list[dict] = []
        json.loads(self.stream.readline())                  # greeting
        self.execute("qmp_capabilities")

    def execute(self, command: str, **arguments) -> dict:
        message = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        try:
            self.stream.write(json.dumps(message) + "\n")
            self.stream.flush()
        except ConnectionError:
            return {}
        while True:
            reply = self.next_message()
            if reply is None or "event" not in reply:
                return reply or {}

    def next_message(self) -> dict | None:
        try:
            line = self.stream.readline()
        except ConnectionError:                     # the emulator is gone
            return None
        if not line:
            return None
        message = json.loads(line)
        if "event" in message:
            self.events.append(message)
        return message

    def wait_for_event(self, names: set[str]) -> bool:
        while not any(e["event"] in names for e in self.events):
            if self.next_message() is None:
                return False
        return True

    def close(self) -> None:
        self.sock.close()


def run_boot(emulator: str, args: list[str], tmp_path: Path, *, firmware: Path = FIRMWARE,
             inspect: Callable[[Qmp], None] | None = None) -> BootRun:
    """Boots with this firmware; the console and the QMP events until the guest shut down or
    something stopped in a disabled wait.  With ``inspect``, the machine stays (-no-shutdown: it
    pauses instead of ending) for QMP commands first."""
    sock_path = tmp_path / f"qmp-{time.monotonic_ns()}.sock"
    machine = [] if "-M" in args else ["-M", "s390-ccw-virtio"]
    cmd = [*emulator_command(emulator), *machine, "-nographic", "-m", str(MEMORY >> 20),
           "-bios", str(firmware), *args, "-S", "-qmp", f"unix:{sock_path},server=on,wait=off"]
    if inspect:
        cmd.append("-no-shutdown")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path)
    output: list[bytes] = []
    errors: list[bytes] = []
    readers = [threading.Thread(target=lambda: output.append(proc.stdout.read()), daemon=True),
               threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)]
    for reader in readers:
        reader.start()
    qmp = None
    try:
        qmp = Qmp(sock_path, proc)
        qmp.execute("cont")
        qmp.wait_for_event({"SHUTDOWN", "GUEST_PANICKED"})
        if inspect:
            inspect(qmp)
            qmp.execute("quit")
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            qmp.execute("quit")
        proc.wait(timeout=TIMEOUT)
        for reader in readers:
            reader.join(timeout=TIMEOUT)
        return BootRun(b"".join(output), qmp.events, proc.returncode, b"".join(errors))
    finally:
        if qmp:
            qmp.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- disks and ISO images ------------------------------------------------------------------------

def guest(name: str) -> bytes:
    return (BIN / f"{name}.elf").read_bytes()


def golden(name: str) -> bytes:
    return (EXPECTED / f"{name}.txt").read_bytes()


def zipl_disk(tmp_path: Path, names: tuple[str, ...] = ("hello",), block_size: int = 512,
              file_name: str = "disk.img") -> Path:
    disk = tmp_path / file_name
    zipl.write_boot_image(disk, [BootEntry(guest(n), name=n) for n in names], block_size=block_size)
    return disk


def runs_loaded(disk: Path, entry: int = 0) -> int:
    """How many data runs entry n loads: the firmware prints one dot per run."""
    return sum(len(load.runs) for load in zipl.read_boot_map(disk).program(entry).loads)


LINUX_IPL_CCWS = bytes.fromhex("0200001860000050 0200006860000050 4040404040404040")


def linux_layout_image(elf: bytes, *, psw_address: int | None = None, size: int = 0,
                       s390ep_branch_to: int | None = None) -> bytearray:
    """An s390 Linux-layout boot image: storage from address 0 on, the 8-byte IPL PSW at 0 and
    Linux's two IPL CCWs at 8 (what firmware recognises El Torito boot images by), the ELF's
    segments at their physical addresses.  With ``s390ep_branch_to`` it also has Linux's entry
    at 0x10000 (here a branch to the guest) and the "S390EP" marker at 0x10008."""
    entry = struct.unpack_from(">Q", elf, 24)[0]
    phoff, phnum = struct.unpack_from(">Q", elf, 32)[0], struct.unpack_from(">H", elf, 56)[0]
    segments = []
    for i in range(phnum):
        kind, _, offset, _, paddr, filesz, _, _ = struct.unpack_from(">IIQQQQQQ", elf, phoff + 56 * i)
        if kind == 1 and filesz:
            segments.append((paddr, elf[offset:offset + filesz]))
    image = bytearray(max(size, max(a + len(d) for a, d in segments)))
    for address, data in segments:
        image[address:address + len(data)] = data
    image[0:8] = struct.pack(">Q", 0x0008_0001_8000_0000 | (entry if psw_address is None else psw_address))
    image[8:32] = LINUX_IPL_CCWS
    if s390ep_branch_to is not None:
        offset = (s390ep_branch_to - 0x10000) // 2
        image[0x10000:0x10006] = bytes.fromhex("c0f4") + struct.pack(">i", offset)   # BRCL 15
        image[0x10008:0x1000E] = b"S390EP"
    return image


def iso_image(tmp_path: Path, boot_image: bytes, name: str = "boot.iso", boot_path: str = "images/cdboot.img",
              extra_boot_images: tuple[bytes, ...] = ()) -> Path:
    """An ISO 9660 image whose El Torito catalog boots ``boot_image`` (no emulation), as xorriso
    writes distribution media; further boot images become further catalog entries."""
    xorriso = require_peer("xorriso")
    tree = tmp_path / f"{name}.tree"
    (tree / "images").mkdir(parents=True)
    (tree / boot_path).write_bytes(boot_image)
    boot_args = ["-b", boot_path, "-no-emul-boot"]
    for i, extra in enumerate(extra_boot_images):
        (tree / "images" / f"extra{i}.img").write_bytes(extra)
        boot_args += ["-eltorito-alt-boot", "-b", f"images/extra{i}.img", "-no-emul-boot"]
    (tree / "README").write_text("vmd firmware test medium\n")
    iso = tmp_path / name
    proc = subprocess.run([xorriso, "-as", "mkisofs", "-quiet", "-o", str(iso), "-c", "images/boot.cat",
                           *boot_args, str(tree)], capture_output=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return iso


def blk(path: Path, *, bootindex: bool = True, block_size: int = 512, extra: str = "",
        media: str = "disk", drive_id: str = "d0") -> list[str]:
    device = f"virtio-blk-ccw,drive={drive_id}" + (",bootindex=1" if bootindex else "") + extra
    if block_size != 512:
        device += f",logical_block_size={block_size},physical_block_size={block_size}"
    return ["-drive", f"file={path},format=raw,if=none,id={drive_id},media={media}", "-device", device]


def scsi(path: Path, *, device: str = "scsi-hd", bootindex: bool = True, extra: str = "",
         hba_extra: str = "") -> list[str]:
    media = "cdrom" if device == "scsi-cd" else "disk"
    return ["-drive", f"file={path},format=raw,if=none,id=d0,media={media}",
            "-device", f"virtio-scsi-ccw,id=hba{hba_extra}",
            "-device", f"{device},drive=d0,bus=hba.0" + (",bootindex=1" if bootindex else "") + extra]


def firmware_lines(run: BootRun, guest_name: str) -> list[str]:
    """The firmware's lines: the console before the guest's golden transcript, which must end it."""
    expected = golden(guest_name)
    assert run.console.endswith(expected), run.describe()
    assert run.guest_shut_down and run.panic_code is None, run.describe()
    preamble = run.console[:len(run.console) - len(expected)].decode()
    assert preamble.endswith("\r\n"), repr(preamble)
    return preamble[:-2].split("\r\n")


def device_line(devno: str, driver: str, blocks: int, block_size: int, revision: int = 1,
                scsi_unit: str = "") -> str:
    return (f"Boot device {devno}: {driver}, {scsi_unit}{blocks} blocks of {block_size} bytes, "
            f"virtio-ccw revision {revision}")


# --- the image -------------------------------------------------------------------------------------

def test_image_is_a_position_independent_elf_the_bios_loader_takes():
    """ELF64 big-endian s390, ET_DYN linked at 0 with the entry at 0, PT_LOAD segments that fit
    the 2 MiB QEMU 7.2 reserves at the top of storage, and no relocation but R_390_RELATIVE."""
    image = FIRMWARE.read_bytes()
    assert image[:4] == b"\x7fELF" and image[4] == 2 and image[5] == 2
    e_type, e_machine = struct.unpack_from(">HH", image, 16)
    assert (e_type, e_machine) == (3, 22)                   # ET_DYN, EM_S390
    entry, phoff, shoff = struct.unpack_from(">QQQ", image, 24)
    assert entry == 0
    phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from(">HHHHH", image, 54)
    loads = []
    for i in range(phnum):
        kind, flags, offset, vaddr, paddr, filesz, memsz, align = struct.unpack_from(
            ">IIQQQQQQ", image, phoff + phentsize * i)
        assert kind != 3, "PT_INTERP: the firmware is not a program for a dynamic linker"
        if kind == 1:
            assert vaddr == paddr and filesz <= memsz and offset + filesz <= len(image)
            loads.append((paddr, memsz))
    assert loads and loads[0][0] == 0
    assert max(a + m for a, m in loads) <= 1 << 20, "the firmware must stay well inside its 2 MiB"
    for i in range(shnum):
        _, sh_type, _, _, sh_offset, sh_size, _, _, _, sh_entsize = struct.unpack_from(
            ">IIQQQQIIQQ", image, shoff + shentsize * i)
        if sh_type == 4:                                    # SHT_RELA
            for r in range(sh_size // 24):
                _, info, _ = struct.unpack_from(">QQq", image, sh_offset + 24 * r)
                assert info == 12, f"relocation type {info}: only R_390_RELATIVE is applied"


def _require_cross() -> str:
    gcc, make = shutil.which("s390x-linux-gnu-gcc"), shutil.which("make")
    if gcc and make:
        return make
    missing = "s390x-linux-gnu-gcc (apt-get install gcc-s390x-linux-gnu)" if not gcc else "make"
    if os.environ.get("VMD_REQUIRE_CROSS") == "1":
        pytest.fail(f"{missing} is required (VMD_REQUIRE_CROSS=1) but not installed")
    pytest.skip(f"{missing} is not installed: the committed firmware/vmd-fw.img cannot be rebuilt here")


@pytest.mark.cross
def test_firmware_rebuild_byte_identical(tmp_path: Path):
    """`make -C firmware` from a copy of the sources reproduces the committed image exactly."""
    make = _require_cross()
    work = tmp_path / "firmware"
    shutil.copytree(FIRMWARE_DIR, work, ignore=shutil.ignore_patterns("vmd-fw.img", "*.o"))
    proc = subprocess.run([make, "-C", str(work), "OUT=out"], capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert (work / "out" / "vmd-fw.img").read_bytes() == FIRMWARE.read_bytes(), \
        "firmware/vmd-fw.img differs from a rebuild: run make -C firmware and commit the image"


# --- zipl boot maps on virtio-blk ------------------------------------------------------------------

@pytest.mark.parametrize("block_size", [512, 4096])
def test_boots_a_zipl_disk_on_virtio_blk(emulator, tmp_path, block_size):
    disk = zipl_disk(tmp_path, block_size=block_size)
    run = run_boot(emulator, ["-nic", "none", *blk(disk, block_size=block_size)], tmp_path)
    assert firmware_lines(run, "hello") == [
        BANNER, BLANK_LOADPARM,
        device_line("0.0.0000", "virtio-blk", disk.stat().st_size // block_size, block_size),
        "Using virtio-blk.", "Using SCSI scheme.", "." * runs_loaded(disk)]


def test_drives_a_legacy_virtio_device(emulator, tmp_path):
    """A device that refuses SET_VIRTIO_REV (max_revision=0) is driven with the legacy layout."""
    disk = zipl_disk(tmp_path)
    run = run_boot(emulator, ["-nic", "none", *blk(disk, extra=",max_revision=0")], tmp_path)
    lines = firmware_lines(run, "hello")
    assert lines[2] == device_line("0.0.0000", "virtio-blk", disk.stat().st_size // 512, 512, revision=0)


def test_boot_map_block_size_need_not_match_the_device(emulator, tmp_path):
    """Block pointers carry their size: a map written for 4096-byte blocks boots from 512-byte ones."""
    disk = zipl_disk(tmp_path, block_size=4096)
    run = run_boot(emulator, ["-nic", "none", *blk(disk)], tmp_path)
    assert "Using SCSI scheme." in firmware_lines(run, "hello")


@pytest.mark.parametrize("loadparm,name", [("1", "pgm"), ("2", "timer"), ("0", "hello")])
def test_loadparm_selects_the_boot_entry(emulator, tmp_path, loadparm, name):
    disk = zipl_disk(tmp_path, ("hello", "pgm", "timer"))
    run = run_boot(emulator, ["-M", f"s390-ccw-virtio,loadparm={loadparm}", "-nic", "none", *blk(disk)],
                   tmp_path)
    lines = firmware_lines(run, name)
    assert lines[1] == f"LOADPARM=[{loadparm.ljust(8)}]"
    assert lines[-2:] == [f"Booting entry #{loadparm}", "." * runs_loaded(disk, int(loadparm))]


@pytest.mark.parametrize("loadparm,message", [
    ("7", "! Boot entry 7 does not exist. This disk has entries 0 1 !"),
    ("31", "! LOADPARM=[31      ] selects no boot entry: use a number from 0 to 30, "
           "or blanks for the default entry !"),
    ("ABC", "! LOADPARM=[ABC     ] selects no boot entry: use a number from 0 to 30, "
            "or blanks for the default entry !"),
], ids=["empty-slot", "above-30", "not-a-number"])
def test_loadparm_naming_no_entry_stops_with_a_message(emulator, tmp_path, loadparm, message):
    disk = zipl_disk(tmp_path, ("hello", "pgm"))
    run = run_boot(emulator, ["-M", f"s390-ccw-virtio,loadparm={loadparm}", "-nic", "none", *blk(disk)],
                   tmp_path)
    assert run.panic_code == WAIT_LOADPARM, run.describe()
    assert run.text.endswith(f"\r\n{message}\r\n"), run.describe()
    assert b"vmd test guest" not in run.console


def test_without_bootindex_the_first_bootable_device_boots(emulator, tmp_path):
    """No IPL parameter block: every subchannel in turn; the network card and a blank disk are passed."""
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(1 << 20))
    disk = zipl_disk(tmp_path)
    # the network card explicitly: vmd creates no default NIC (QEMU's would be this one)
    run = run_boot(emulator, ["-nic", "none", "-device", "virtio-net-ccw",
                              *blk(blank, bootindex=False, drive_id="d1"),
                              *blk(disk, bootindex=False, drive_id="d2")], tmp_path)
    lines = firmware_lines(run, "hello")
    assert lines[2:6] == [
        device_line("0.0.0001", "virtio-blk", 2048, 512), "Using virtio-blk.",
        "Device 0.0.0001 is not bootable: no zIPL boot record, no El Torito boot image",
        device_line("0.0.0002", "virtio-blk", disk.stat().st_size // 512, 512)]


def test_boot_device_in_another_subchannel_set(emulator, tmp_path):
    """devno fe.1.xxxx: the firmware enables multiple subchannel sets (CHSC) to reach it."""
    disk = zipl_disk(tmp_path)
    run = run_boot(emulator, ["-nic", "none", *blk(disk, extra=",devno=fe.1.0005")], tmp_path)
    assert firmware_lines(run, "hello")[2].startswith("Boot device 0.1.0005: virtio-blk")


# --- virtio-scsi -----------------------------------------------------------------------------------

@pytest.mark.parametrize("bootindex", [True, False], ids=["iplb", "scan"])
@pytest.mark.parametrize("hba", ["", ",max_revision=0"], ids=["virtio1", "legacy"])
def test_boots_a_zipl_disk_on_virtio_scsi(emulator, tmp_path, bootindex, hba):
    """With a bootindex the IPL parameter block names target 3 LUN 2; without, REPORT LUNS finds it."""
    disk = zipl_disk(tmp_path)
    run = run_boot(emulator, ["-nic", "none", *scsi(disk, bootindex=bootindex, extra=",scsi-id=3,lun=2",
                                                     hba_extra=hba)], tmp_path)
    assert firmware_lines(run, "hello") == [
        BANNER, BLANK_LOADPARM,
        device_line("0.0.0000", "virtio-scsi", disk.stat().st_size // 512, 512, revision=0 if hba else 1,
                    scsi_unit="SCSI disk at target 3 LUN 2, "),
        "Using virtio-scsi.", "Using SCSI scheme.", "." * runs_loaded(disk)]


def test_scsi_disk_with_4096_byte_blocks(emulator, tmp_path):
    disk = zipl_disk(tmp_path, block_size=4096)
    run = run_boot(emulator, ["-nic", "none", *scsi(
        disk, extra=",logical_block_size=4096,physical_block_size=4096")], tmp_path)
    assert firmware_lines(run, "hello")[2] == device_line(
        "0.0.0000", "virtio-scsi", disk.stat().st_size // 4096, 4096, scsi_unit="SCSI disk at target 0 LUN 0, ")


def test_scsi_disk_beyond_read_capacity_10(emulator, tmp_path):
    """3 TiB (a qcow2 over the boot disk): READ CAPACITY(10) says 0xffffffff, READ CAPACITY(16) the size."""
    qemu_img = require_peer("qemu-img")
    disk = zipl_disk(tmp_path)
    big = tmp_path / "big.qcow2"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-b", str(disk), "-F", "raw", str(big), "3T"],
                   check=True, timeout=TIMEOUT)
    run = run_boot(emulator, ["-nic", "none", "-drive", f"file={big},format=qcow2,if=none,id=d0",
                              "-device", "virtio-scsi-ccw,id=hba", "-device", "scsi-hd,drive=d0,bus=hba.0"],
                   tmp_path)
    assert firmware_lines(run, "hello")[2] == device_line(
        "0.0.0000", "virtio-scsi", (3 << 40) // 512, 512, scsi_unit="SCSI disk at target 0 LUN 0, ")


def test_scsi_reads_past_block_2_to_the_32(emulator, tmp_path):
    """READ(16) where READ(10)'s 32-bit block number ends: the guest's data runs move to block
    2^32 + their block of a sparse disk (zeros stay behind), and the block list points there."""
    data = bytearray(zipl_disk(tmp_path).read_bytes())
    far = 1 << 32
    big = tmp_path / "far.raw"
    with open(big, "wb") as file:
        for load in zipl.read_boot_map(bytes(data)).program(0).loads:
            (list_block,) = load.list_blocks
            for slot in range(512 // 16 - 1):
                offset = list_block * 512 + 16 * slot
                block, _, count = struct.unpack_from(">QHH", data, offset)
                if block == 0:
                    break
                file.seek((far + block) * 512)
                file.write(data[block * 512:(block + count + 1) * 512])
                struct.pack_into(">Q", data, offset, far + block)
                data[block * 512:(block + count + 1) * 512] = bytes((count + 1) * 512)
        file.seek(0)
        file.write(data)
        file.truncate((far + len(data) // 512) * 512)
    run = run_boot(emulator, ["-nic", "none", *scsi(big)], tmp_path)
    assert firmware_lines(run, "hello")[2] == device_line(
        "0.0.0000", "virtio-scsi", far + len(data) // 512, 512, scsi_unit="SCSI disk at target 0 LUN 0, ")


def test_scsi_adapter_without_a_disk(emulator, tmp_path):
    run = run_boot(emulator, ["-nic", "none", "-device", "virtio-scsi-ccw"], tmp_path)
    assert run.panic_code == WAIT_NO_BOOT_DEVICE, run.describe()
    assert run.text.endswith("virtio-scsi: no disk or CD-ROM found on the adapter\r\n"
                             "Could not find a suitable boot device (none specified)\r\n")


# --- ISO 9660 / El Torito --------------------------------------------------------------------------

def iso_lines(iso_size: int, how: str, image_sector: int, image_size: int, revision: int = 1) -> list[str]:
    if how == "scsi-cd":
        device = ["SCSI CD-ROM detected.",
                  device_line("0.0.0000", "virtio-scsi", iso_size // 2048, 2048, revision,
                              scsi_unit="SCSI CD-ROM at target 0 LUN 0, "),
                  "Using virtio-scsi."]
    else:
        device = [device_line("0.0.0000", "virtio-blk", iso_size // 512, 512, revision), "Using virtio-blk."]
    return [BANNER, BLANK_LOADPARM, *device, "ISO boot image size verified",
            f"Loading the El Torito boot image at sector {image_sector} ({image_size} bytes) to 0x0", ""]


def el_torito_image_sector(iso: Path, entry: int = 0) -> int:
    data = iso.read_bytes()
    catalog = struct.unpack_from("<I", data, 17 * 2048 + 0x47)[0]
    bootable = [c for c in range(1, 64) if data[catalog * 2048 + 32 * c] == 0x88]
    return struct.unpack_from("<I", data, catalog * 2048 + 32 * bootable[entry] + 8)[0]


def media_args(iso: Path, how: str) -> list[str]:
    if how == "cdrom":
        return ["-cdrom", str(iso)]
    return scsi(iso, device="scsi-cd", bootindex=False)


@pytest.mark.parametrize("how", ["cdrom", "scsi-cd"])
def test_boots_a_linux_layout_el_torito_image(emulator, tmp_path, how):
    """The image is loaded at 0 whole (its size from the directory, not the catalog's 4 sectors)
    and started with the IPL PSW at 0, in 64-bit mode as that PSW says."""
    image = linux_layout_image(guest("hello"))
    iso = iso_image(tmp_path, bytes(image))
    run = run_boot(emulator, ["-nic", "none", *media_args(iso, how)], tmp_path)
    assert firmware_lines(run, "hello") == iso_lines(iso.stat().st_size, how, el_torito_image_sector(iso),
                                                     len(image))


@pytest.mark.parametrize("how", ["cdrom", "scsi-cd"])
def test_boots_a_zipl_disk_image_on_iso_media(emulator, tmp_path, how):
    """A `vmctl mkboot` disk image as the El Torito image boots through its boot map."""
    disk = zipl_disk(tmp_path)
    iso = iso_image(tmp_path, disk.read_bytes())
    run = run_boot(emulator, ["-nic", "none", *media_args(iso, how)], tmp_path)
    lines = firmware_lines(run, "hello")
    assert lines[-3:] == [f"El Torito boot image at sector {el_torito_image_sector(iso)} holds a zIPL boot record",
                          "Using SCSI scheme.", "." * runs_loaded(disk)]


def test_loadparm_picks_the_el_torito_entry(emulator, tmp_path):
    """Among the catalog's s390 images, loadparm n > 1 picks the n-th (0 and 1 the first), as QEMU's."""
    iso = iso_image(tmp_path, bytes(linux_layout_image(guest("hello"))),
                    extra_boot_images=(b"not an s390 image".ljust(4096, b"\0"),
                                       bytes(linux_layout_image(guest("pgm")))))
    run = run_boot(emulator, ["-M", "s390-ccw-virtio,loadparm=2", "-nic", "none", "-cdrom", str(iso)], tmp_path)
    assert "Loading the El Torito boot image at sector %d" % el_torito_image_sector(iso, 2) in run.text
    firmware_lines(run, "pgm")
    run = run_boot(emulator, ["-M", "s390-ccw-virtio,loadparm=3", "-nic", "none", "-cdrom", str(iso)], tmp_path)
    assert run.panic_code == WAIT_LOADPARM, run.describe()
    assert "! Boot entry 3 does not exist: the boot catalog has 2 s390 boot images !" in run.text


def read_storage(qmp: Qmp, tmp_path: Path, address: int, size: int) -> bytes:
    dump = tmp_path / f"storage-{address:x}.bin"
    reply = qmp.execute("pmemsave", val=address, size=size, filename=str(dump))
    assert "return" in reply, reply
    return dump.read_bytes()


def test_distribution_layout_with_initrd_and_parameter_line(emulator, tmp_path):
    """Kernel, initrd and parameter line in one image, as distribution media carry them: the
    "S390EP" marker at 0x10008 makes 0x10000 the entry (the IPL PSW at 0 points nowhere here),
    and the initrd at 8 MiB and the parameter area arrive intact."""
    initrd = bytes((i * 13 + i // 4096) & 0xFF for i in range(200_000))
    image = linux_layout_image(guest("hello"), psw_address=0x30000, size=0x800000, s390ep_branch_to=0x20000)
    image[0x10408:0x10418] = struct.pack(">QQ", 0x800000, len(initrd))
    parameters = b"root=/dev/ram0 console=ttyS0 vmd.test=1\0"
    image[0x10480:0x10480 + len(parameters)] = parameters
    image += initrd
    iso = iso_image(tmp_path, bytes(image))
    seen: dict[str, bytes] = {}

    def inspect(qmp: Qmp) -> None:
        seen["parameters"] = read_storage(qmp, tmp_path, 0x10400, 0x100)
        seen["initrd"] = read_storage(qmp, tmp_path, 0x800000, len(initrd))

    run = run_boot(emulator, ["-nic", "none", "-cdrom", str(iso)], tmp_path, inspect=inspect)
    firmware_lines(run, "hello")
    assert seen["parameters"] == bytes(image[0x10400:0x10500])
    assert seen["initrd"] == initrd


def test_the_programs_lowcore_arrives_intact(emulator, tmp_path):
    """An image that brings its own lowcore (here a byte pattern up to 0x200) gets it unchanged
    but for what the IPL itself stores: the IPL parameter block's address at 0x14 and the
    subsystem identification at 0xb8.  The firmware's console output after loading takes
    service-signal interruptions, which store into the lowcore; it must put the bytes back.
    The program stops at once in a disabled wait of its own (address 0xfeed00)."""
    image = bytearray(0x9000)
    image[0x20:0x200] = bytes((i * 7 + 3) & 0xFF for i in range(0x20, 0x200))
    image[0:8] = struct.pack(">Q", 0x0008_0001_8000_0000 | 0x8000)
    image[8:32] = LINUX_IPL_CCWS
    image[0x8000:0x800A] = bytes.fromhex("c01000000008 b2b21000")      # LARL 1,0x8010; LPSWE 0(1)
    image[0x8010:0x8020] = struct.pack(">QQ", 0x0002_0001_8000_0000, 0xFEED00)
    iso = iso_image(tmp_path, bytes(image))
    seen: dict[str, bytes] = {}
    run = run_boot(emulator, ["-nic", "none", "-cdrom", str(iso)], tmp_path,
                   inspect=lambda qmp: seen.setdefault("lowcore", read_storage(qmp, tmp_path, 0, 0x200)))
    assert run.panic_code == 0xFEED00, run.describe()
    lowcore = bytearray(seen["lowcore"])
    assert struct.unpack_from(">I", lowcore, 0xB8)[0] == 0x0001_0000            # subchannel 0.0.0000
    assert lowcore[0xBC:0xC0] == bytes(4)
    lowcore[0x14:0x18] = image[0x14:0x18]
    lowcore[0xB8:0xC0] = image[0xB8:0xC0]
    assert lowcore == image[:0x200]


# --- failures ----------------------------------------------------------------------------------------

def test_no_bootable_device(emulator, tmp_path):
    run = run_boot(emulator, ["-nic", "none"], tmp_path)
    assert run.panic_code == WAIT_NO_BOOT_DEVICE, run.describe()
    assert run.text == f"{BANNER}\r\n{BLANK_LOADPARM}\r\nCould not find a suitable boot device (none specified)\r\n"


def test_named_device_without_a_boot_record(emulator, tmp_path):
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(64 << 10))
    run = run_boot(emulator, ["-nic", "none", *blk(blank)], tmp_path)
    assert run.panic_code == WAIT_BOOT_RECORD, run.describe()
    assert run.text.endswith("\r\n! No zIPL boot record and no bootable ISO 9660 image on 0.0.0000 !\r\n")


def test_named_cd_drive_without_a_medium(emulator, tmp_path):
    run = run_boot(emulator, ["-nic", "none", "-device", "virtio-scsi-ccw,id=hba",
                              "-device", "scsi-cd,bus=hba.0,bootindex=1"], tmp_path)
    assert run.panic_code == WAIT_DEVICE, run.describe()
    assert run.text.endswith("virtio-scsi: target 0 LUN 0 is not ready (no medium?)\r\n\r\n"
                             "! No readable IPL device !\r\n"), run.describe()


def test_named_device_that_is_no_disk(emulator, tmp_path):
    run = run_boot(emulator, ["-nic", "none", "-device", "virtio-rng-ccw", "-device", "virtio-net-ccw,bootindex=1"],
                   tmp_path)
    assert run.panic_code == WAIT_UNSUPPORTED, run.describe()
    assert "! Network boot (virtio-net 0.0.0001) is not supported !" in run.text


def test_read_error_is_reported(emulator, tmp_path):
    """QEMU's blkdebug driver fails the read of the guest's data (block 2 on)."""
    if emulator != "qemu":
        pytest.skip("blkdebug error injection is QEMU's")
    disk = zipl_disk(tmp_path)
    rules = tmp_path / "blkdebug.conf"
    rules.write_text('[inject-error]\nevent = "read_aio"\nerrno = "5"\nsector = "2"\n')
    run = run_boot(emulator, ["-nic", "none", "-drive", f"file=blkdebug:{rules}:{disk},format=raw,if=none,id=d0",
                              "-device", "virtio-blk-ccw,drive=d0,bootindex=1"], tmp_path)
    assert run.panic_code == WAIT_IO_ERROR, run.describe()
    assert re.search(r"\r\nvirtio-blk: reading \d+ blocks at block 2 failed \(status 1\)\r\n\r\n"
                     r"! Failed to read a component from the disk !\r\n$", run.text), run.describe()


# Damaged boot maps: each field, any value the format forbids, gives its message and wait code.

def _locate(disk: bytes) -> dict[str, int]:
    boot_map = zipl.read_boot_map(disk)
    program = boot_map.program(0)
    return {"table": program.table_block * 512, "list": program.loads[0].list_blocks[0] * 512,
            "execute": program.table_block * 512 + 32 * (1 + len(program.loads))}


DAMAGE = {
    # field: (strategy for a forbidden value, how to write it, wait code, message pattern)
    "component table pointer size": (
        st.integers(0, 0xFFFF).filter(lambda v: v not in (512, 1024, 2048, 4096)),
        lambda d, at, v: struct.pack_into(">H", d, 512 + 16 + 8, v),
        WAIT_BOOT_RECORD, r"! Bad block size \d+ in the component table pointer !"),
    "component table magic": (
        st.binary(min_size=4, max_size=4).filter(lambda v: v != b"zIPL"),
        lambda d, at, v: d.__setitem__(slice(at["table"], at["table"] + 4), v),
        WAIT_BOOT_RECORD, r"! No zIPL magic in the component table !"),
    "component type": (
        st.integers(0, 255).filter(lambda v: v not in (1, 2, 3)),
        lambda d, at, v: d.__setitem__(at["table"] + 32 + 23, v),
        WAIT_BOOT_RECORD, r"! Unknown component type \d+ in the boot map !"),
    "program PSW": (
        st.one_of(st.integers(0, 2**64 - 1).map(lambda v: v & ~(1 << 51)),          # not ESA/390 format
                  st.integers(MEMORY, 0x7FFFFFFF).map(lambda a: 0x0008_0001_8000_0000 | a)),
        lambda d, at, v: struct.pack_into(">Q", d, at["execute"] + 24, v),
        WAIT_BOOT_RECORD, r"! Invalid program PSW [0-9a-f]{16} in the boot map !"),
    "load address": (
        st.one_of(st.integers(FIRMWARE_BASE - 0x1000, FIRMWARE_BASE + 0x20000),
                  st.integers(MEMORY - 0x1000, 2**40)),
        lambda d, at, v: struct.pack_into(">Q", d, at["table"] + 32 + 24, v),
        WAIT_LOAD_RANGE, r"! a component at 0x[0-9a-f]+-0x[0-9a-f]+ "
                         r"(is outside storage \(128 MiB\)|overlaps the firmware at 0x[0-9a-f]+-0x[0-9a-f]+) !"),
    "data block number": (
        st.integers(1 << 20, (1 << 40) - 1),
        lambda d, at, v: struct.pack_into(">Q", d, at["list"], v),
        WAIT_IO_ERROR, r"read beyond the end of the disk .*\r\n\r\n! Failed to read a component from the disk !"),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_boot_maps_stop_with_the_fields_message(emulator, tmp_path, data):
    name = data.draw(st.sampled_from(sorted(DAMAGE)), label="field")
    strategy, write, code, message = DAMAGE[name]
    value = data.draw(strategy, label="value")
    disk = bytearray(zipl.make_boot_image([BootEntry(guest("hello"))]))
    write(disk, _locate(bytes(disk)), value)
    path = tmp_path / f"damaged-{time.monotonic_ns()}.img"
    path.write_bytes(disk)
    run = run_boot(emulator, ["-nic", "none", *blk(path)], tmp_path)
    assert run.panic_code == code, f"{name}={value!r}: {run.describe()}"
    assert re.search(message, run.text), f"{name}={value!r}: {run.describe()}"


# --- the same disks under QEMU's own firmware ---------------------------------------------------

DIFFERENTIAL = {
    "virtio-blk 512": lambda tmp: ["-nic", "none", *blk(zipl_disk(tmp))],
    "virtio-blk 4096": lambda tmp: ["-nic", "none", *blk(zipl_disk(tmp, block_size=4096), block_size=4096)],
    "scsi-hd": lambda tmp: ["-nic", "none", *scsi(zipl_disk(tmp), extra=",scsi-id=3,lun=2")],
    "cdrom": lambda tmp: ["-nic", "none", "-cdrom", str(iso_image(tmp, bytes(linux_layout_image(guest("hello")))))],
    "scsi-cd": lambda tmp: ["-nic", "none", *scsi(iso_image(tmp, bytes(linux_layout_image(guest("hello")))),
                                                  device="scsi-cd")],
    "scan": lambda tmp: [*blk(zipl_disk(tmp), bootindex=False)],
}


@pytest.mark.parametrize("case", sorted(DIFFERENTIAL))
@pytest.mark.parametrize("firmware", [FIRMWARE, QEMU_FIRMWARE], ids=["vmd-fw", "s390-ccw"])
def test_both_firmwares_boot_the_same_media(emulator, tmp_path, case, firmware):
    """What the guest prints is its -kernel golden transcript under either firmware."""
    if not firmware.exists():
        pytest.skip(f"{firmware} is not installed (qemu-system-data)")
    run = run_boot(emulator, DIFFERENTIAL[case](tmp_path), tmp_path, firmware=firmware)
    lines = firmware_lines(run, "hello")
    assert lines[0] == (BANNER if firmware == FIRMWARE else BLANK_LOADPARM)


def test_both_firmwares_stop_when_nothing_boots(emulator, tmp_path):
    """QEMU's firmware also ends in a disabled wait; the code in psw-addr is vmd's own."""
    if not QEMU_FIRMWARE.exists():
        pytest.skip(f"{QEMU_FIRMWARE} is not installed (qemu-system-data)")
    theirs = run_boot(emulator, ["-nic", "none"], tmp_path, firmware=QEMU_FIRMWARE)
    ours = run_boot(emulator, ["-nic", "none"], tmp_path)
    assert theirs.panic_code is not None and ours.panic_code == WAIT_NO_BOOT_DEVICE
    assert "Could not find a suitable boot device (none specified)" in theirs.text
    assert "Could not find a suitable boot device (none specified)" in ours.text
