"""The test guests in guests/ under qemu-system-s390x: console transcripts and clean power-off.

Every guest in guests/bin/ boots with `-kernel`, prints on the SCLP (VT220)
console and powers off the way Linux does (SIGP stop of every CPU). The
console transcript must equal guests/expected/<name>.txt byte for byte, and
QEMU must exit 0. `-action panic=exit-failure` turns a guest that gives up
(a disabled wait that is not the power-off) into exit status 1; by default
QEMU 7.2 would exit 0 after GUEST_PANICKED too.

The same command lines (GUESTS below) are what a vmd transcript test runs.

Regenerate the golden files after a deliberate change with
    VMD_UPDATE_GOLDEN=1 pytest tests/test_guests_qemu.py
and review the diff against the Principles of Operation.

test_guests_rebuild_byte_identical needs s390x-linux-gnu-gcc (Debian's
gcc-s390x-linux-gnu) and make; it is skipped without them unless
VMD_REQUIRE_CROSS=1, and carries the `cross` marker so CI can select it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT
from test_virtio_scsi import HD_SERIAL, scsi_cd_image, scsi_hd_image, scsi_script_image

GUESTS_DIR = ROOT / "guests"
BIN = GUESTS_DIR / "bin"
EXPECTED = GUESTS_DIR / "expected"

MACHINE = ["-M", "s390-ccw-virtio", "-nographic"]

# guest name -> the extra QEMU arguments it is meant to run with
GUESTS: dict[str, list[str]] = {
    "hello": ["-m", "128M"],
    "insn": [],
    "pgm": [],
    "timer": [],
    "sigp": ["-smp", "2"],
    "ccw": ["-nic", "none", "-device", "virtio-rng-ccw"],
    "chsc": ["-nic", "none", "-device", "virtio-rng-ccw", "-device", "virtio-rng-ccw,devno=fe.1.0042",
             "-device", "virtio-rng-ccw,devno=2.0.0007"],
    # the "qemu" model without the four facilities vmd's engine lacks (vmd.cpu.models.ENGINE_LACKS)
    "stsi": ["-cpu", "qemu,minste2=off,minste3=off,vxeh=off,vxeh2=off", "-smp", "2,maxcpus=3",
             "-name", "stsi-guest", "-uuid", "d5b0e7a2-1c3e-4f5a-9b8c-7d6e5f4a3b2c"],
    "virtio": ["-nic", "none", "-device", "virtio-rng-ccw,devno=fe.0.0001",
               "-drive", "file=virtio-disk.img,if=none,id=d0,format=raw",
               "-device", "virtio-blk-ccw,drive=d0,devno=fe.0.0002,serial=VMDDISK1"],
    "vserial": ["-nic", "none", "-chardev", "file,id=out,path=vserial-out.txt", "-chardev", "null,id=nul",
                "-device", "virtio-serial-ccw,id=vs0,devno=fe.0.0001", "-device", "virtconsole,chardev=out",
                "-device", "virtserialport,chardev=nul,name=org.vmd.null"],
    "scsi": ["-nic", "none", "-device", "virtio-scsi-ccw,id=scsi0,devno=fe.0.0005",
             "-drive", "file=scsi-hd.img,if=none,id=hd0,format=raw",
             "-device", f"scsi-hd,drive=hd0,bus=scsi0.0,scsi-id=0,lun=0,serial={HD_SERIAL}",
             "-blockdev", "file,node-name=cd0,filename=scsi-cd.iso,read-only=on",
             "-device", "scsi-cd,drive=cd0,scsi-id=0,lun=1", "-device", "scsi-cd,scsi-id=0,lun=3",
             "-drive", "file=scsi-script.img,if=none,id=script,format=raw,readonly=on",
             "-device", "scsi-hd,drive=script,scsi-id=2,lun=5,vendor=VMDVENDORX,product=SCRIPT,ver=1.23456,"
                        "wwn=0x5000c50015ea71ac,port_wwn=0x5000c50015ea71ad,port_index=3,rotation_rate=1,"
                        "removable=on,dpofua=on"],
    # without a loadparm it reads nothing: tests/test_sclp_console.py types lines at it
    "conin": [],
}

TIMEOUT = 60
#: guests built for other tests to run (no transcript of their own): idle waits for ever
SERVICES = ("idle", "chaos")


def virtio_disk() -> bytes:
    """1 MiB whose byte i is (i * 7 + i / 512) mod 256: every sector differs (guests/src/virtio.c)."""
    return bytes((i * 7 + i // 512) & 0xFF for i in range(1 << 20))


#: files a guest's command line names, created in the working directory of each run
GUEST_FILES: dict[str, dict[str, object]] = {
    "virtio": {"virtio-disk.img": virtio_disk},
    "scsi": {"scsi-hd.img": scsi_hd_image, "scsi-cd.iso": scsi_cd_image, "scsi-script.img": scsi_script_image},
}


def prepare_files(name: str, directory: Path) -> None:
    for file_name, make in GUEST_FILES.get(name, {}).items():
        (directory / file_name).write_bytes(make())


def guest_command(qemu: str, name: str) -> list[str]:
    return [qemu, *MACHINE, "-action", "panic=exit-failure", *GUESTS[name],
            "-kernel", str(BIN / f"{name}.elf")]


def test_every_guest_has_a_binary_and_a_golden_file():
    built = {p.stem for p in BIN.glob("*.elf")
             if not p.stem.startswith("bench-") and p.stem not in SERVICES}  # benches: bench/cpu_bench.py
    golden = {p.stem for p in EXPECTED.glob("*.txt")}
    assert built == set(GUESTS)
    assert golden == set(GUESTS)


@pytest.mark.qemu
@pytest.mark.parametrize("name", sorted(GUESTS))
def test_guest_transcript_matches_qemu_golden(qemu_binary: str, name: str, tmp_path: Path):
    prepare_files(name, tmp_path)
    proc = subprocess.run(guest_command(qemu_binary, name), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=TIMEOUT, cwd=tmp_path)
    transcript = proc.stdout
    golden = EXPECTED / f"{name}.txt"
    if os.environ.get("VMD_UPDATE_GOLDEN") == "1" and proc.returncode == 0:
        golden.write_bytes(transcript)
    assert proc.returncode == 0, (
        f"{name}: QEMU exited {proc.returncode}\nstderr: {proc.stderr.decode(errors='replace')}\n"
        f"console:\n{transcript.decode(errors='replace')}")
    assert transcript == golden.read_bytes()
    assert b"MISMATCH" not in transcript and b"FAIL" not in transcript


def _qmp_events_until_exit(qemu: str, args: list[str], tmp_path: Path) -> tuple[list[dict], int, bytes]:
    """Runs QEMU stopped (-S) with a QMP socket, lets it run, collects events until it exits."""
    sock_path = tmp_path / "qmp.sock"
    proc = subprocess.Popen([*args, "-S", "-qmp", f"unix:{sock_path},server=on,wait=off"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 15
        while not sock_path.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no QMP socket: {proc.stderr.read().decode(errors='replace')}")
            time.sleep(0.02)
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(TIMEOUT)
        sock.connect(str(sock_path))
        stream = sock.makefile("rw")
        json.loads(stream.readline())                   # greeting
        stream.write(json.dumps({"execute": "qmp_capabilities"}) + "\n")
        stream.flush()
        assert "return" in json.loads(stream.readline())
        stream.write(json.dumps({"execute": "cont"}) + "\n")
        stream.flush()
        events = []
        for line in stream:
            message = json.loads(line)
            if "event" in message:
                events.append(message)
        sock.close()
        out, _ = proc.communicate(timeout=TIMEOUT)
        return events, proc.returncode, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.qemu
@pytest.mark.parametrize("name", ["hello", "sigp"])
def test_guest_power_off_is_a_guest_shutdown(qemu_binary: str, name: str, tmp_path: Path):
    """SIGP stop of every CPU: SHUTDOWN {"guest": true, "reason": "guest-shutdown"}, no GUEST_PANICKED."""
    events, returncode, out = _qmp_events_until_exit(
        qemu_binary, [qemu_binary, *MACHINE, *GUESTS[name], "-kernel", str(BIN / f"{name}.elf")],
        tmp_path)
    names = [e["event"] for e in events]
    assert "GUEST_PANICKED" not in names
    shutdown = [e for e in events if e["event"] == "SHUTDOWN"]
    assert [e["data"] for e in shutdown] == [{"guest": True, "reason": "guest-shutdown"}]
    assert returncode == 0
    assert out == (EXPECTED / f"{name}.txt").read_bytes()


def _require_cross() -> tuple[str, str]:
    gcc = shutil.which("s390x-linux-gnu-gcc")
    make = shutil.which("make")
    if gcc and make:
        return gcc, make
    missing = "s390x-linux-gnu-gcc (apt-get install gcc-s390x-linux-gnu)" if not gcc else "make"
    if os.environ.get("VMD_REQUIRE_CROSS") == "1":
        pytest.fail(f"{missing} is required (VMD_REQUIRE_CROSS=1) but not installed")
    pytest.skip(f"{missing} is not installed: the committed guests/bin cannot be rebuilt here")


@pytest.mark.cross
def test_guests_rebuild_byte_identical(tmp_path: Path):
    """`make -C guests` from a copy of the sources reproduces the committed binaries exactly."""
    _, make = _require_cross()
    work = tmp_path / "guests"
    work.mkdir()
    shutil.copy2(GUESTS_DIR / "Makefile", work / "Makefile")
    shutil.copytree(GUESTS_DIR / "lib", work / "lib")
    shutil.copytree(GUESTS_DIR / "src", work / "src")
    proc = subprocess.run([make, "-C", str(work), "OUT=out"], capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    for name in [*GUESTS, *SERVICES]:
        rebuilt = (work / "out" / f"{name}.elf").read_bytes()
        assert rebuilt == (BIN / f"{name}.elf").read_bytes(), f"{name}.elf differs from guests/bin"
