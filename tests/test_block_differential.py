"""The block layer against qemu-system-s390x: the same -drive / -blockdev, the same stderr.

Each row is run by QEMU 7.2 (-S, quit at once over QMP) and by vmd's block layer on the
options vmd's command-line parser makes of it, in the same directory on the same files.
What the user reads must be identical: the error after ``qemu-system-s390x: <option>: ``,
and the warnings printed before it.
"""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import pytest

from conftest import require_peer
from vmd.block import BlockError, create_qcow2, open_blockdev, open_drive
from vmd.cmdline import LIST_DRIVE, keyval_parse, parse_json, parse_opts

pytestmark = pytest.mark.qemu

PROG = "qemu-system-s390x"
QUIT = b'{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n'


def run_qemu(binary: str, cwd: Path, args: list[str]) -> str:
    proc = subprocess.run([binary, "-nodefaults", "-display", "none", "-machine", "s390-ccw-virtio", "-S",
                           "-monitor", "none", "-qmp", "stdio", *args],
                          input=QUIT, capture_output=True, cwd=cwd, timeout=30)
    return proc.stderr.decode().strip()


def run_vmd(cwd: Path, args: list[str]) -> str:
    """The same options through vmd's parsers and block layer; stderr as vmd would print it."""
    lines: list[str] = []
    nodes: dict = {}
    opened = []
    old = os.getcwd()
    os.chdir(cwd)
    try:
        for flag, arg in zip(args[::2], args[1::2]):
            origin = f"{flag} {arg}"
            warn = lambda w, origin=origin: lines.append(w.render(PROG, origin))  # noqa: E731
            try:
                if flag == "-drive":
                    ident, values = parse_opts(arg, lst=LIST_DRIVE, permit_abbrev=False)
                    options = {**({"id": ident} if ident else {}), **values, "origin": origin}
                    node = open_drive(options, warn=warn)
                else:
                    obj = parse_json(arg) if arg.startswith("{") else keyval_parse(arg, "driver")[0]
                    node = open_blockdev({**obj, "origin": origin}, nodes, warn=warn)
            except BlockError as err:
                lines.append(f"{PROG}: {origin}: {err.desc}")
                break
            if node is not None:
                opened.append(node)
    finally:
        for node in opened:
            node.close()
        os.chdir(old)
    return "\n".join(lines).strip()


def qcow2_header(path: Path, **fields) -> None:
    """Overwrite header fields of the qcow2 image at ``path`` (offsets of the qcow2 spec)."""
    layout = {"version": (4, ">I"), "backing_offset": (8, ">Q"), "backing_size": (16, ">I"),
              "cluster_bits": (20, ">I"), "size": (24, ">Q"), "crypt": (32, ">I"), "l1_size": (36, ">I"),
              "l1_offset": (40, ">Q"), "rt_offset": (48, ">Q"), "rt_clusters": (56, ">I"),
              "nb_snapshots": (60, ">I"), "snapshots_offset": (64, ">Q"), "incompatible": (72, ">Q"),
              "refcount_order": (96, ">I"), "header_length": (100, ">I"), "compression_type": (104, ">B")}
    data = bytearray(path.read_bytes())
    for name, value in fields.items():
        offset, fmt = layout[name]
        struct.pack_into(fmt, data, offset, value)
    path.write_bytes(bytes(data))


def add_extension(path: Path, ext_type: int, payload: bytes, declared: int | None = None) -> None:
    """Put one header extension right after a v3 header (replacing the ones qemu-img wrote)."""
    data = bytearray(path.read_bytes())
    header_length = struct.unpack_from(">I", data, 100)[0]
    ext = struct.pack(">II", ext_type, len(payload) if declared is None else declared) + payload
    ext = ext.ljust(-(-len(ext) // 8) * 8, b"\0") + bytes(8)
    data[header_length:header_length + len(ext)] = ext
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    qemu_img = require_peer("qemu-img")
    d = tmp_path_factory.mktemp("blockdiff")
    (d / "r.img").write_bytes(bytes(1 << 20))
    (d / "dir").mkdir()
    (d / "tiny.img").write_bytes(b"x" * 100)
    run = lambda *a: subprocess.run([qemu_img, *a], check=True, capture_output=True, cwd=d)  # noqa: E731
    run("create", "-q", "-f", "qcow2", "q.qcow2", "1M")
    run("create", "-q", "-f", "qcow2", "-b", "r.img", "-F", "raw", "ov.qcow2")
    run("create", "-q", "-f", "qcow2", "-u", "-b", "missing.img", "-F", "raw", "ovmissing.qcow2", "1M")
    create_qcow2(str(d / "ovbadfmt.qcow2"), 1 << 20, backing_file="r.img", backing_format="foo")
    create_qcow2(str(d / "ovnofmt.qcow2"), 1 << 20, backing_file="r.img")
    run("create", "-q", "-f", "qcow2", "-o", "compat=0.10", "v2.qcow2", "1M")
    run("create", "-q", "-f", "vmdk", "v.vmdk", "1M")
    (d / "trunc.qcow2").write_bytes((d / "q.qcow2").read_bytes()[:100])
    hostile = {
        "version5": {"version": 5}, "version1": {"version": 1}, "cbits8": {"cluster_bits": 8},
        "cbits22": {"cluster_bits": 22}, "hlen50": {"header_length": 50}, "hlenbig": {"header_length": 70000},
        "backoff": {"backing_offset": 70000}, "feature40": {"incompatible": 1 << 40},
        "corrupt": {"incompatible": 2}, "rcorder7": {"refcount_order": 7}, "aes": {"crypt": 1},
        "crypt9": {"crypt": 9}, "nort": {"rt_clusters": 0}, "rtunaligned": {"rt_offset": 65536 + 8},
        "rthuge": {"rt_clusters": 1 << 20}, "snaps": {"nb_snapshots": 70000},
        "snapoff": {"nb_snapshots": 1, "snapshots_offset": 12345}, "l1huge": {"l1_size": 1 << 23},
        "l1unaligned": {"l1_offset": 196608 + 512}, "l1small": {"size": 1 << 40},
        "toobig": {"cluster_bits": 9, "size": 1 << 50, "l1_size": 1 << 20},
        "ctype5": {"compression_type": 5}, "ctypebit": {"incompatible": 8},
        "zstdnobit": {"compression_type": 1}, "namelong": {"backing_offset": 512, "backing_size": 2000},
    }
    for name, fields in hostile.items():
        path = d / f"{name}.qcow2"
        path.write_bytes((d / "q.qcow2").read_bytes())
        qcow2_header(path, **fields)
    for name, ext_type, payload, declared in (("extbig", 0xE2792ACA, b"raw", 60000),
                                              ("fmtlong", 0xE2792ACA, b"x" * 20, None)):
        path = d / f"{name}.qcow2"
        path.write_bytes((d / "q.qcow2").read_bytes())
        add_extension(path, ext_type, payload, declared)
    return d


DRIVE_ROWS = [
    "file=missing.img,if=none",
    "file=r.img,if=none",
    "file=r.img,if=none,format=raw",
    "file=tiny.img,if=none",
    "file=r.img,if=none,format=foo",
    "file=r.img,if=none,format=qcow2",
    "file=r.img,if=none,format=raw,foo=bar",
    "file=r.img,if=none,foo=bar",
    "file=r.img,if=none,format=raw,file.foo=bar",
    "file=q.qcow2,if=none,format=qcow2,foo=1",
    "file=r.img,if=none,format=raw,cache=bogus",
    "file=r.img,if=none,format=raw,cache=none",
    "file=r.img,if=none,format=raw,cache=unsafe",
    "file=r.img,if=none,format=raw,discard=xx",
    "file=r.img,if=none,format=raw,discard=on",
    "file=r.img,if=none,format=raw,aio=native",
    "file=r.img,if=none,format=raw,aio=native,cache=none",
    "file=r.img,if=none,format=raw,cache=none,cache.direct=off,aio=native",
    "file=r.img,if=none,format=raw,aio=bad",
    "file=r.img,if=none,format=raw,detect-zeroes=bad",
    "file=r.img,if=none,format=raw,detect-zeroes=unmap",
    "file=r.img,if=none,format=raw,readonly=maybe",
    "file=r.img,if=none,format=raw,readonly=on,read-only=on",
    "file=r.img,if=none,format=raw,snapshot=x",
    "file=r.img,if=none,format=raw,snapshot=on",
    "file=r.img,if=none,format=raw,media=floppy",
    "file=r.img,if=none,format=raw,media=cdrom",
    "file=r.img,if=none,format=raw,werror=bad",
    "file=r.img,if=none,format=raw,rerror=enospc",
    "file=r.img,if=none,format=raw,index=x",
    "file=r.img,if=none,format=raw,copy-on-read=on,readonly=on",
    "file=r.img,if=none,format=raw,cache.direct=maybe",
    "file=r.img,if=none,format=raw,node-name=1x",
    "file=r.img,if=none,format=raw,node-name=n0",
    "file=r.img,if=none,format=raw,offset=4096,size=8192",
    "file=r.img,if=none,format=raw,offset=2M",
    "file=r.img,if=none,format=raw,size=2M",
    "file=r.img,if=none,format=raw,size=4097",
    "file=r.img,if=none,format=raw,offset=-1",
    "file=r.img,if=none,format=raw,file.driver=foo",
    "file=r.img,if=none,format=raw,file.driver=host_device",
    "file=r.img,if=none,format=raw,file.locking=off,file.aio=threads",
    "file=r.img,if=none,format=raw,group=g,throttling.iops-total=100,bps=4096,stats-account-failed=on",
    "file=dir,if=none",
    "file=/dev/null,if=none,format=raw",
    "file=/dev/zero,if=none,format=raw,readonly=on",
    "file=dir,if=none,format=raw",
    "if=none,format=qcow2",
    "if=none,cache=none",
    "if=none,media=cdrom,id=cd0",
    "if=none,driver=file",
    "if=none,driver=file,filename=r.img",
    "if=none,driver=file,file=r.img",
    "if=none,driver=file,file=r.img,filename=r.img",
    "if=none,driver=raw,format=raw,file=r.img",
    "if=none,format=raw,file=r.img,file.filename=r.img",
    "if=none,format=raw,file.filename=r.img,file.driver=file",
    "if=none,file=foo:bar",
    "if=none,file=./foo:bar",
    "if=none,file=q.qcow2",
    "if=none,file=q.qcow2,format=qcow2,readonly=on",
    "if=none,file=q.qcow2,format=qcow2,lazy-refcounts=x",
    "if=none,file=v2.qcow2,format=qcow2,lazy-refcounts=on",
    "if=none,file=ov.qcow2",
    "if=none,file=ovmissing.qcow2,format=qcow2",
    "if=none,file=ovbadfmt.qcow2,format=qcow2",
    "if=none,file=ovnofmt.qcow2,format=qcow2",
    "if=none,file=trunc.qcow2",
    "if=none,file=trunc.qcow2,format=qcow2",
    "if=none,file=v.vmdk,format=raw",
]

HOSTILE = ["version5", "version1", "cbits8", "cbits22", "hlen50", "hlenbig", "backoff", "feature40", "corrupt",
           "rcorder7", "aes", "nort", "rtunaligned", "rthuge", "snaps", "snapoff", "l1huge",
           "l1unaligned", "l1small", "toobig", "ctype5", "ctypebit", "namelong", "extbig", "fmtlong"]
DRIVE_ROWS += [f"file={name}.qcow2,if=none,format=qcow2" for name in HOSTILE]
DRIVE_ROWS += ["file=corrupt.qcow2,if=none,format=qcow2,readonly=on"]

BLOCKDEV_ROWS = [
    "driver=raw,node-name=n,file.driver=file,file.filename=r.img",
    "driver=raw,node-name=n,file.driver=file,file.filename=missing.img",
    "driver=raw,node-name=n,file=nonode",
    "driver=qcow2,node-name=n,file.driver=file,file.filename=r.img",
    "driver=raw,node-name=n,file.driver=file,file.filename=r.img,read-only=maybe",
    "driver=raw,node-name=n,file.driver=file,file.filename=r.img,offset=abc",
    "driver=raw,node-name=n,file.driver=file,file.filename=r.img,offset=-1",
    "driver=raw,node-name=n,file.driver=file,file.filename=r.img,offset=2097152",
    "driver=raw,node-name=n,file.driver=file,file.filename=r.img,size=4097",
    "driver=raw,node-name=n,file.driver=file,file.filename=r.img,cache.direct=maybe",
    "driver=raw,node-name=n,file.driver=file,file.filename=r.img,discard=bad",
    "driver=raw,node-name=n,file.driver=file,file.filename=r.img,detect-zeroes=unmap",
    "driver=raw,node-name=n,file.driver=file,file.filename=r.img,detect-zeroes=unmap,discard=unmap",
    "driver=raw,node-name=n,file.driver=file,file.filename=missing.img,detect-zeroes=unmap",
    "driver=raw,node-name=n,file.driver=file,file.filename=r.img,file.aio=native",
    "driver=raw,node-name=n,file.driver=file,file.filename=r.img,file.aio=native,file.cache.direct=on",
    "driver=raw,node-name=n,file.driver=file,file.filename=r.img,cache.direct=on,file.aio=native",
    "driver=raw,node-name=n,file.driver=file,file.filename=r.img,file.bogus=1",
    "driver=raw,node-name=n,file.filename=r.img",
    "driver=raw,node-name=n,file.driver=file,file.filename=r.img,file.node-name=1x",
    "driver=file,node-name=n,filename=dir",
    "driver=file,node-name=n,filename=dir,read-only=on",
    "driver=file,node-name=n,filename=dir,aio=native,read-only=on",
    "driver=file,node-name=n,filename=missing.img,aio=native",
    "driver=file,node-name=n,filename=missing.img,detect-zeroes=unmap",
    "driver=file,node-name=n,filename=r.img,aio=native,detect-zeroes=unmap",
    "driver=host_device,node-name=n,filename=r.img",
    "driver=host_device,node-name=n,filename=/dev/null",
    "driver=file,node-name=n,filename=/dev/null",
    "driver=host_cdrom,node-name=n,filename=r.img",
    "driver=qcow2,node-name=n,file.driver=file,file.filename=ov.qcow2",
    "driver=qcow2,node-name=n,file.driver=file,file.filename=ovmissing.qcow2",
    '{"driver":"raw","node-name":"n","file":{"driver":"file","filename":"r.img"},"read-only":"on"}',
    '{"driver":"raw","node-name":"n","file":{"driver":"file","filename":"r.img"},"offset":"4"}',
    '{"driver":"raw","node-name":"n","file":{"driver":"file","filename":"r.img"},"offset":-4}',
    '{"driver":"raw","node-name":"n","file":{"driver":"file","filename":"r.img"},"cache":{"direct":1}}',
    '{"driver":"raw","node-name":"n","file":{"driver":"file","filename":"r.img"},"cache":{"bogus":true}}',
    '{"driver":"raw","node-name":"n","file":{"driver":"file","filename":5}}',
    '{"driver":"raw","node-name":"n","file":5}',
    '{"driver":"qcow2","node-name":"n","file":{"driver":"file","filename":"q.qcow2"},"backing":null}',
    '{"driver":"qcow2","node-name":"n","file":{"driver":"file","filename":"q.qcow2"},"backing":"zz"}',
    '{"driver":"qcow2","node-name":"n","file":{"driver":"file","filename":"q.qcow2"},'
    '"encrypt":{"format":"luks","key-secret":"s"}}',
    '{"driver":"qcow2","node-name":"n","file":{"driver":"file","filename":"q.qcow2"},"lazy-refcounts":"x"}',
    '{"driver":"qcow2","node-name":"n","file":{"driver":"file","filename":"ovmissing.qcow2"},"backing":null}',
]
BLOCKDEV_ROWS += [f"driver=qcow2,node-name=n,file.driver=file,file.filename={name}.qcow2" for name in HOSTILE]

# several options in a row: references between nodes
CHAINS = [
    ["-blockdev", "driver=file,node-name=f,filename=r.img,read-only=on", "-blockdev", "driver=raw,node-name=r,file=f"],
    ["-blockdev", "driver=file,node-name=f,filename=r.img", "-blockdev", "driver=raw,node-name=r,file=f",
     "-blockdev", "driver=raw,node-name=r2,file=f"],
    ["-blockdev", "driver=file,node-name=f,filename=r.img", "-blockdev", "driver=raw,node-name=f2,file=f",
     "-blockdev", "driver=qcow2,node-name=q,file.driver=file,file.filename=q.qcow2,backing=f2"],
    ["-blockdev", "driver=file,node-name=f,filename=r.img", "-blockdev",
     "driver=raw,node-name=r,file.driver=file,file.filename=r.img,file.node-name=f"],
]


@pytest.fixture(scope="module")
def qemu(workdir) -> str:
    return require_peer(PROG)


@pytest.mark.parametrize("arg", DRIVE_ROWS)
def test_drive_matches_qemu(qemu, workdir, arg):
    args = ["-drive", arg]
    assert run_vmd(workdir, args) == run_qemu(qemu, workdir, args)


@pytest.mark.parametrize("arg", BLOCKDEV_ROWS)
def test_blockdev_matches_qemu(qemu, workdir, arg):
    args = ["-blockdev", arg]
    assert run_vmd(workdir, args) == run_qemu(qemu, workdir, args)


@pytest.mark.parametrize("args", CHAINS, ids=lambda a: " ".join(a[1::2]))
def test_node_references_match_qemu(qemu, workdir, args):
    assert run_vmd(workdir, args) == run_qemu(qemu, workdir, args)


def test_rows_include_errors_and_successes(qemu, workdir):
    """The table exercises both outcomes (a table of successes only would compare nothing)."""
    outcomes = [run_qemu(qemu, workdir, ["-drive", row]) for row in DRIVE_ROWS[:12]]
    assert any(o == "" for o in outcomes) and any("Could not open" in o for o in outcomes)
