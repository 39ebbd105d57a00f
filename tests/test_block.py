"""The block layer on real image files, with qemu-img and qemu-io as the reference.

Images are made and filled by qemu-img/qemu-io and read by vmd; vmd writes and
``qemu-img check`` must find the image clean and ``qemu-img convert`` must read back
exactly what vmd's model says. Hostile images must give BlockError and nothing else.
"""

from __future__ import annotations

import ast
import json
import os
import random
import struct
import subprocess
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from conftest import ROOT, require_peer
from vmd.block import BlockError, BlockNode, create_qcow2, open_blockdev, open_drive, probe_format
from vmd.block.file import FileNode
from vmd.block.probe import RAW_PROBE_WARNING
from vmd.block.qcow2 import Qcow2Node
from vmd.block.raw import RawNode

KiB, MiB = 1 << 10, 1 << 20


# --- peers ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def qemu_img() -> str:
    return require_peer("qemu-img")


@pytest.fixture(scope="module")
def qemu_io() -> str:
    return require_peer("qemu-io")


def img(*args) -> str:
    proc = subprocess.run(["qemu-img", *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def qio(path, *commands, fmt="qcow2") -> None:
    args = ["qemu-io", "-f", fmt]
    for command in commands:
        args += ["-c", command]
    proc = subprocess.run([*args, str(path)], capture_output=True, text=True)
    assert proc.returncode == 0 and "error" not in proc.stdout.lower(), proc.stdout + proc.stderr


def assert_clean(path) -> dict:
    """qemu-img check finds no corruption, no leak, no error."""
    proc = subprocess.run(["qemu-img", "check", "--output=json", str(path)], capture_output=True, text=True)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert not report.get("corruptions") and not report.get("leaks") and not report.get("check-errors"), report
    return report


def as_raw(path, tmp_path) -> bytes:
    out = tmp_path / f"{Path(path).name}.raw"
    img("convert", "-O", "raw", path, out)
    data = out.read_bytes()
    out.unlink()
    return data


def open_qcow2(path, **extra) -> Qcow2Node:
    node = open_drive({"file": str(path), "format": "qcow2", "if": "none", **extra})
    assert isinstance(node, Qcow2Node)
    return node


def new_image(path, size, *options) -> Path:
    img("create", "-q", "-f", "qcow2", *options, path, size)
    return Path(path)


# --- reading what QEMU wrote -------------------------------------------------------------------
@pytest.mark.parametrize("compat", ["0.10", "1.1"])
@pytest.mark.parametrize("cluster_size", [512, 4 * KiB, 64 * KiB, 2 * MiB])
def test_reads_what_qemu_io_wrote(tmp_path, qemu_img, qemu_io, compat, cluster_size):
    path = new_image(tmp_path / "a.qcow2", 6 * MiB, "-o", f"cluster_size={cluster_size},compat={compat}")
    qio(path, "write -P 0xab 0 1M", "write -P 0xcd 1536k 100k", "write -P 0x11 3000001 77777",
        "write -z 200k 300k", "discard 600k 64k", "write -P 0x22 5M 1M")
    node = open_qcow2(path, readonly="on")
    try:
        assert node.size == 6 * MiB
        assert node.read(0, node.size) == as_raw(path, tmp_path)
        assert node.read(0, 4) == b"\xab" * 4  # a small read inside one cluster
        assert node.read(3000001, 77777) == b"\x11" * 77777
    finally:
        node.close()


def test_reads_compressed_clusters(tmp_path, qemu_img):
    source = tmp_path / "src.raw"
    rng = random.Random(1)
    source.write_bytes(b"".join(bytes([rng.randrange(4)]) * rng.randrange(1, 5000) for _ in range(1500))[:3 * MiB]
                       .ljust(3 * MiB, b"\0"))
    for cluster_size in (512, 64 * KiB):
        path = tmp_path / f"c{cluster_size}.qcow2"
        img("convert", "-c", "-O", "qcow2", "-o", f"cluster_size={cluster_size}", source, path)
        node = open_qcow2(path)
        try:
            assert node.read(0, node.size) == source.read_bytes()
            # writing into compressed clusters copies them out; the rest must stay readable
            node.write(1000, b"\xee" * 5000)
            node.write_zeroes(cluster_size * 7, cluster_size * 3)
            model = bytearray(source.read_bytes())
            model[1000:6000] = b"\xee" * 5000
            model[cluster_size * 7:cluster_size * 10] = bytes(cluster_size * 3)
            assert node.read(0, node.size) == model
        finally:
            node.close()
        assert_clean(path)
        assert as_raw(path, tmp_path) == model


def test_compressed_clusters_are_counted_as_compressed(tmp_path, qemu_img):
    source = tmp_path / "src.raw"
    source.write_bytes(b"abc" * MiB)
    path = tmp_path / "c.qcow2"
    img("convert", "-c", "-O", "qcow2", source, path)
    report = assert_clean(path)
    assert report["compressed-clusters"] > 0
    node = open_qcow2(path)
    assert node.read(0, node.size) == source.read_bytes()
    node.close()


# --- writing: the model-checked state machine ------------------------------------------------------
class Qcow2Machine(RuleBasedStateMachine):
    """Random writes, zeroes and discards against a bytearray; qemu-img judges the result."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root
        self.node = None

    @initialize(cluster_bits=st.sampled_from([9, 10, 12, 16]), compat=st.sampled_from(["0.10", "1.1"]),
                refcount_bits=st.sampled_from([16, 16, 1, 4, 64]), backing=st.booleans(),
                seed=st.integers(0, 2**32))
    def setup(self, cluster_bits, compat, refcount_bits, backing, seed):
        self.dir = Path(tempfile.mkdtemp(dir=self.root))
        if compat == "0.10":
            refcount_bits = 16
        self.size = 1 * MiB + 3 * 512  # not a multiple of the cluster size
        self.cluster = 1 << cluster_bits
        options = ["-o", f"cluster_size={self.cluster},compat={compat},refcount_bits={refcount_bits}"]
        self.backing = bytes(self.size)
        if backing:
            base = self.dir / "base.raw"
            self.backing = random.Random(seed).randbytes(self.size - 512 * 5)  # shorter than the overlay
            base.write_bytes(self.backing)
            self.backing += bytes(self.size - len(self.backing))
            options += ["-b", "base.raw", "-F", "raw"]
        self.path = new_image(self.dir / "top.qcow2", self.size, *options)
        self.v3 = compat == "1.1"
        self.has_backing = backing
        self.model = bytearray(self.backing)
        self.node = open_qcow2(self.path, discard="unmap")

    ranges = st.integers(0, 1 * MiB + 3 * 512 - 1).flatmap(
        lambda off: st.tuples(st.just(off), st.integers(1, min(150 * KiB, 1 * MiB + 3 * 512 - off))))

    @rule(r=ranges, fill=st.one_of(st.integers(0, 255), st.binary(min_size=1, max_size=64)))
    def write(self, r, fill):
        offset, length = r
        data = bytes([fill]) * length if isinstance(fill, int) else (fill * (length // len(fill) + 1))[:length]
        self.node.write(offset, data)
        self.model[offset:offset + length] = data

    @rule(r=ranges, unmap=st.booleans())
    def write_zeroes(self, r, unmap):
        offset, length = r
        self.node.write_zeroes(offset, length, unmap=unmap)
        self.model[offset:offset + length] = bytes(length)

    @rule(r=ranges)
    def discard(self, r):
        offset, length = r
        self.node.discard(offset, length)
        # whole clusters read as zeroes afterwards (v2 with a backing file: as the backing file)
        cs = self.cluster
        first = -(-offset // cs) * cs
        end = offset + length
        last = end if end == self.size else end // cs * cs
        if last > first:
            fill = self.backing[first:last] if (self.has_backing and not self.v3) else bytes(last - first)
            self.model[first:last] = fill

    @rule(r=ranges)
    def read(self, r):
        offset, length = r
        assert self.node.read(offset, length) == self.model[offset:offset + length]

    @rule()
    def reopen(self):
        self.node.close()
        self.node = open_qcow2(self.path, discard="unmap")

    @invariant()
    def size_is_stable(self):
        if self.node is not None:
            assert self.node.size == self.size

    def teardown(self):
        if self.node is None:
            return
        assert self.node.read(0, self.size) == self.model
        self.node.close()
        assert_clean(self.path)
        assert as_raw(self.path, self.dir) == self.model


def test_qcow2_writes_match_the_model(tmp_path, qemu_img, qemu_io):
    run_state_machine_as_test(lambda: Qcow2Machine(tmp_path), settings=settings(
        max_examples=25, stateful_step_count=25, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]))


# --- allocation, reference counts -----------------------------------------------------------------
def test_growth_past_the_first_refcount_block_and_table(tmp_path, qemu_img):
    """512-byte clusters: a refcount block covers 128 KiB, the first table 8 MiB of file."""
    path = new_image(tmp_path / "g.qcow2", 12 * MiB, "-o", "cluster_size=512")
    node = open_qcow2(path)
    first_table = node.rt_offset
    chunk = bytes(range(256)) * 256
    for offset in range(0, 10 * MiB, len(chunk)):
        node.write(offset, chunk)
    assert node.rt_offset != first_table and node.rt_clusters > 1
    node.close()
    assert_clean(path)
    assert as_raw(path, tmp_path) == chunk * 160 + bytes(2 * MiB)


@pytest.mark.parametrize("refcount_bits", [1, 2, 4, 8, 32, 64])
def test_every_refcount_width(tmp_path, qemu_img, refcount_bits):
    path = new_image(tmp_path / "w.qcow2", 2 * MiB, "-o", f"cluster_size=1024,refcount_bits={refcount_bits}")
    node = open_qcow2(path, discard="unmap")
    rng = random.Random(refcount_bits)
    model = bytearray(2 * MiB)
    for _ in range(60):
        offset = rng.randrange(2 * MiB - 10000)
        data = rng.randbytes(rng.randrange(1, 10000))
        node.write(offset, data)
        model[offset:offset + len(data)] = data
    node.discard(0, 512 * KiB)
    model[:512 * KiB] = bytes(512 * KiB)
    node.write(100, b"z" * 3000)
    model[100:3100] = b"z" * 3000
    node.close()
    assert_clean(path)
    assert as_raw(path, tmp_path) == model


def test_discard_frees_clusters_and_the_host_space(tmp_path, qemu_img):
    path = new_image(tmp_path / "d.qcow2", 8 * MiB)
    node = open_qcow2(path, discard="unmap")
    node.write(0, b"\x5a" * 8 * MiB)
    node.flush()
    used = os.stat(path).st_blocks
    node.discard(0, 8 * MiB)
    assert node.read(0, 8 * MiB) == bytes(8 * MiB)
    node.close()
    report = assert_clean(path)
    assert report.get("allocated-clusters", 0) == 0
    assert os.stat(path).st_blocks < used // 4  # the freed clusters were punched out of the file
    # freed clusters are reused: writing again does not grow the file
    size = os.path.getsize(path)
    node = open_qcow2(path)
    node.write(0, b"\x33" * 4 * MiB)
    node.close()
    assert os.path.getsize(path) == size
    assert_clean(path)


def test_discard_ignore_is_a_no_op(tmp_path, qemu_img):
    path = new_image(tmp_path / "i.qcow2", 1 * MiB)
    node = open_qcow2(path)  # QEMU's default: discard=ignore
    node.write(0, b"\x01" * MiB)
    node.discard(0, MiB)
    assert node.read(0, MiB) == b"\x01" * MiB
    node.close()


def test_write_zeroes_unmap_deallocates(tmp_path, qemu_img):
    path = new_image(tmp_path / "z.qcow2", 1 * MiB)
    node = open_qcow2(path, discard="unmap")
    node.write(0, b"\x01" * MiB)
    node.write_zeroes(0, MiB, unmap=True)
    node.close()
    assert assert_clean(path).get("allocated-clusters", 0) == 0
    mapping = json.loads(img("map", "--output=json", path))
    assert all(extent["zero"] for extent in mapping)


def test_detect_zeroes(tmp_path, qemu_img):
    path = new_image(tmp_path / "dz.qcow2", 1 * MiB)
    node = open_qcow2(path, discard="unmap", **{"detect-zeroes": "unmap"})
    node.write(0, b"\x07" * MiB)
    node.write(0, bytes(MiB))  # all zero: becomes an unmapping zero write
    node.close()
    assert assert_clean(path).get("allocated-clusters", 0) == 0


def test_internal_snapshot_survives_writes(tmp_path, qemu_img, qemu_io):
    for compat in ("0.10", "1.1"):
        path = new_image(tmp_path / f"s{compat}.qcow2", 2 * MiB, "-o", f"cluster_size=4096,compat={compat}")
        qio(path, "write -P 0x11 0 2M")
        img("snapshot", "-c", "before", path)
        node = open_qcow2(path, discard="unmap")
        node.write(4096 * 3 + 5, b"\x22" * 20000)
        node.write_zeroes(MiB, 256 * KiB)
        node.discard(1536 * KiB, 256 * KiB)
        node.close()
        assert_clean(path)
        after = as_raw(path, tmp_path)
        assert after[4096 * 3 + 5:4096 * 3 + 20005] == b"\x22" * 20000
        img("snapshot", "-a", "before", path)
        assert_clean(path)
        assert as_raw(path, tmp_path) == b"\x11" * 2 * MiB


def test_bitmaps_are_marked_inconsistent_not_leaked(tmp_path, qemu_img, qemu_io):
    path = new_image(tmp_path / "b.qcow2", 1 * MiB)
    qio(path, "write 0 64k")
    img("bitmap", "--add", path, "b0")
    node = open_qcow2(path)
    node.write(0, b"x" * 4096)
    node.close()
    assert_clean(path)
    info = json.loads(img("info", "--output=json", path))
    (bitmap,) = info["format-specific"]["data"]["bitmaps"]
    assert "in-use" in bitmap["flags"]


# --- backing files -------------------------------------------------------------------------------
def test_backing_chain_reads_through_and_writes_stay_on_top(tmp_path, qemu_img, qemu_io):
    base = tmp_path / "base.raw"
    base.write_bytes(random.Random(2).randbytes(3 * MiB))
    mid = new_image(tmp_path / "mid.qcow2", 3 * MiB, "-b", "base.raw", "-F", "raw", "-o", "cluster_size=4096")
    qio(mid, "write -P 0x44 1M 512k")
    top = new_image(tmp_path / "top.qcow2", 4 * MiB, "-b", "mid.qcow2", "-F", "qcow2")
    qio(top, "write -P 0x55 2M 4k")
    base_before, mid_before = base.read_bytes(), as_raw(mid, tmp_path)
    node = open_qcow2(top)
    try:
        assert isinstance(node.backing, Qcow2Node) and isinstance(node.backing.backing, RawNode)
        assert node.read(0, node.size) == as_raw(top, tmp_path)
        assert node.read(3 * MiB, MiB) == bytes(MiB)  # beyond the backing file: zeroes
        node.write(MiB + 100, b"\x66" * 10000)
        node.write_zeroes(0, 64 * KiB)
        expected = bytearray(as_raw(top, tmp_path))
    finally:
        node.close()
    expected[MiB + 100:MiB + 10100] = b"\x66" * 10000
    expected[:64 * KiB] = bytes(64 * KiB)
    assert_clean(top)
    assert as_raw(top, tmp_path) == expected
    assert base.read_bytes() == base_before and as_raw(mid, tmp_path) == mid_before


def test_backing_file_without_format_is_probed_quietly(tmp_path, qemu_img):
    (tmp_path / "base.raw").write_bytes(b"\x09" * MiB)
    create_qcow2(str(tmp_path / "top.qcow2"), MiB, backing_file="base.raw")
    warnings = []
    node = open_drive({"file": str(tmp_path / "top.qcow2"), "format": "qcow2"}, warn=warnings.append)
    assert node.read(0, 16) == b"\x09" * 16 and warnings == []
    node.close()


def test_cyclic_and_self_backing_are_refused(tmp_path):
    create_qcow2(str(tmp_path / "a.qcow2"), MiB, backing_file="b.qcow2", backing_format="qcow2")
    create_qcow2(str(tmp_path / "b.qcow2"), MiB, backing_file="a.qcow2", backing_format="qcow2")
    create_qcow2(str(tmp_path / "self.qcow2"), MiB, backing_file="self.qcow2", backing_format="qcow2")
    for name in ("a.qcow2", "self.qcow2"):
        with pytest.raises(BlockError, match="Backing file chain loops"):
            open_drive({"file": str(tmp_path / name), "format": "qcow2"})


def test_overlong_backing_chain_is_refused(tmp_path):
    create_qcow2(str(tmp_path / "0.qcow2"), MiB)
    for i in range(1, 300):
        create_qcow2(str(tmp_path / f"{i}.qcow2"), MiB, backing_file=f"{i - 1}.qcow2", backing_format="qcow2")
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(BlockError, match="longer than 256 images"):
        open_drive({"file": str(tmp_path / "299.qcow2"), "format": "qcow2"})
    assert len(os.listdir("/proc/self/fd")) == fds  # everything opened on the way was closed


# --- read-only, dirty, unsupported features -------------------------------------------------------
def test_read_only_refuses_writes(tmp_path, qemu_img):
    path = new_image(tmp_path / "ro.qcow2", MiB)
    before = path.read_bytes()
    for options in ({"readonly": "on"}, {"media": "cdrom"}):
        node = open_qcow2(path, **options)
        assert node.read_only
        for call in (lambda: node.write(0, b"x"), lambda: node.write_zeroes(0, 512), lambda: node.discard(0, 512)):
            with pytest.raises(BlockError, match="is read-only"):
                call()
        node.close()
    assert path.read_bytes() == before


def test_dirty_image_opens_read_only_only(tmp_path, qemu_img, qemu_io):
    path = new_image(tmp_path / "dirty.qcow2", MiB, "-o", "lazy_refcounts=on")
    qio(path, "write -P 0x31 0 64k")
    data = bytearray(path.read_bytes())
    struct.pack_into(">Q", data, 72, struct.unpack_from(">Q", data, 72)[0] | 1)
    path.write_bytes(bytes(data))
    with pytest.raises(BlockError, match="qemu-img check -r all"):
        open_qcow2(path)
    node = open_qcow2(path, readonly="on")
    assert node.read(0, 64 * KiB) == b"\x31" * 64 * KiB
    node.close()


@pytest.mark.parametrize("method, text", [(1, "AES-CBC encrypted qcow2 images is no longer supported"),
                                          (2, "Encrypted qcow2 images \\(LUKS\\) are not supported")])
def test_encryption_is_refused(tmp_path, qemu_img, method, text):
    # the header's crypt_method decides; a real LUKS image needs a PBKDF run qemu-img may fail under load
    path = new_image(tmp_path / "enc.qcow2", MiB)
    data = bytearray(path.read_bytes())
    struct.pack_into(">I", data, 32, method)
    path.write_bytes(bytes(data))
    for options in ({}, {"readonly": "on"}):
        with pytest.raises(BlockError, match=text):
            open_qcow2(path, **options)


@pytest.mark.parametrize("option, text", [("extended_l2=on", "extended L2"),
                                          ("data_file={tmp}/data.raw", "external data file")])
def test_unsupported_features_are_refused(tmp_path, qemu_img, option, text):
    path = tmp_path / "f.qcow2"
    img("create", "-q", "-f", "qcow2", "-o", option.format(tmp=tmp_path), path, "1M")
    with pytest.raises(BlockError, match=text):
        open_qcow2(path)


# --- hostile images ----------------------------------------------------------------------------------
def _sample_image(tmp_path) -> bytes:
    path = new_image(tmp_path / "sample.qcow2", 2 * MiB, "-o", "cluster_size=512")
    qio(path, "write -P 0x41 0 64k", "write -P 0x42 1M 8k", "write -z 1536k 4k")
    img("snapshot", "-c", "s", path)
    qio(path, "write -P 0x43 4k 4k")
    return path.read_bytes()


def _exercise(path) -> None:
    """Open and use an image; anything other than BlockError escapes."""
    for options in ({"readonly": "on"}, {"discard": "unmap"}):
        try:
            node = open_drive({"file": str(path), "format": "qcow2", **options})
        except BlockError:
            continue
        try:
            for offset, length in ((0, 4096), (MiB - 100, 9000), (0, node.size and min(node.size, 2 * MiB))):
                if offset + length <= node.size:
                    try:
                        node.read(offset, length)
                    except BlockError:
                        pass
            if not node.read_only:
                for call in (lambda: node.write(100, b"\x99" * 5000), lambda: node.write_zeroes(64 * KiB, 8192),
                             lambda: node.discard(0, 64 * KiB), lambda: node.write(MiB + 7, b"q" * 1000)):
                    try:
                        call()
                    except BlockError:
                        pass
        finally:
            try:
                node.close()
            except BlockError:
                pass


@pytest.fixture(scope="module")
def sample(tmp_path_factory, qemu_img, qemu_io) -> bytes:
    return _sample_image(tmp_path_factory.mktemp("sample"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hostile_images_give_block_errors_only(tmp_path, sample, data):
    image = bytearray(sample)
    # the metadata lives in the first clusters of this image: damage there is what matters
    for _ in range(data.draw(st.integers(1, 8))):
        kind = data.draw(st.sampled_from(["byte", "u64", "truncate"]))
        if kind == "truncate":
            del image[data.draw(st.integers(0, len(image))):]
        elif kind == "byte" and image:
            image[data.draw(st.integers(0, min(len(image), 8192) - 1))] = data.draw(st.integers(0, 255))
        elif len(image) >= 8:
            pos = data.draw(st.integers(0, min(len(image), 8192) - 8)) & ~7
            value = data.draw(st.one_of(st.integers(0, 2**64 - 1), st.sampled_from(
                [0, 1, 1 << 63, (1 << 63) | 0x200, 1 << 62, 0xFFFFFFFFFFFFFFFF, len(image) + 512, 0x200 | 1])))
            struct.pack_into(">Q", image, pos, value)
    path = tmp_path / "hostile.qcow2"
    path.write_bytes(bytes(image))
    tracemalloc.start()
    try:
        _exercise(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 96 * MiB


@pytest.mark.parametrize("fields, match", [
    ({"l1_entry": 0x7FFF_0000_0000 | (1 << 63)}, "beyond the end of the file"),
    ({"l1_entry": 0x10200 | (1 << 63)}, "unaligned"),
    ({"l1_size": 1 << 22, "size": 1 << 51}, "Active L1 table lies beyond the end"),
    ({"size": 1 << 40}, "L1 table is too small"),
    ({"size": 1 << 62}, "Image is too big"),
])
def test_specific_hostile_headers(tmp_path, qemu_img, qemu_io, fields, match):
    path = new_image(tmp_path / "h.qcow2", MiB)
    qio(path, "write -P 0x41 0 64k")
    data = bytearray(path.read_bytes())
    l1_offset = struct.unpack_from(">Q", data, 40)[0]
    if "l1_entry" in fields:
        struct.pack_into(">Q", data, l1_offset, fields.pop("l1_entry"))
    layout = {"l1_size": (36, ">I"), "size": (24, ">Q"), "cluster_bits": (20, ">I")}
    for name, value in fields.items():
        struct.pack_into(layout[name][1], data, layout[name][0], value)
    path.write_bytes(bytes(data))
    with pytest.raises(BlockError, match=match):
        node = open_qcow2(path, readonly="on")
        try:
            node.read(0, 4096)
        finally:
            node.close()


def test_refcounts_claiming_clusters_past_the_end_are_refused(tmp_path, qemu_img):
    """A refcount block claiming every cluster: allocation stops at the end of the file."""
    path = new_image(tmp_path / "full.qcow2", MiB, "-o", "cluster_size=512")
    data = bytearray(path.read_bytes())
    rt_offset = struct.unpack_from(">Q", data, 48)[0]
    rb_offset = struct.unpack_from(">Q", data, rt_offset)[0]
    data[rb_offset:rb_offset + 512] = b"\x00\x01" * 256
    path.write_bytes(bytes(data))
    node = open_qcow2(path)
    with pytest.raises(BlockError, match="beyond the end of the file but has a reference"):
        node.write(0, b"x" * 512)
    node.close()


def test_garbage_compressed_cluster(tmp_path, qemu_img):
    source = tmp_path / "s.raw"
    source.write_bytes(b"ab" * (MiB // 2))
    path = tmp_path / "c.qcow2"
    img("convert", "-c", "-O", "qcow2", source, path)
    node = open_qcow2(path, readonly="on")
    entry = node._entry(0)
    host = entry & node.coffset_mask
    node.close()
    data = bytearray(path.read_bytes())
    data[host:host + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    node = open_qcow2(path, readonly="on")
    with pytest.raises(BlockError, match="cannot be decompressed|is short"):
        node.read(0, 512)
    node.close()


# --- images vmd creates ---------------------------------------------------------------------------
@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("cluster_size", [512, 65536, 2 * MiB])
def test_created_images_are_valid(tmp_path, qemu_img, version, cluster_size):
    path = tmp_path / "new.qcow2"
    create_qcow2(str(path), 5 * MiB + 512, cluster_size=cluster_size, version=version)
    assert_clean(path)
    info = json.loads(img("info", "--output=json", path))
    assert info["virtual-size"] == 5 * MiB + 512 and info["cluster-size"] == cluster_size
    node = open_qcow2(path)
    node.write(12345, b"k" * 70000)
    node.close()
    assert_clean(path)
    assert as_raw(path, tmp_path)[12345:82345] == b"k" * 70000


def test_created_image_with_large_l1(tmp_path, qemu_img):
    """Metadata for a big, small-cluster image spans several refcount blocks."""
    path = tmp_path / "big.qcow2"
    create_qcow2(str(path), 64 << 30, cluster_size=512)
    assert_clean(path)


# --- raw ---------------------------------------------------------------------------------------------
def test_raw_window(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(range(256)) * 64)  # 16 KiB
    node = open_drive({"file": str(path), "format": "raw", "offset": "1024", "size": "4096"})
    assert node.size == 4096
    assert node.read(0, 4) == bytes([0, 1, 2, 3]) and node.read(4092, 4) == bytes([252, 253, 254, 255])
    node.write(10, b"\xee" * 6)
    with pytest.raises(BlockError, match="beyond the end"):
        node.read(4000, 200)
    with pytest.raises(BlockError, match="beyond the end"):
        node.write(4095, b"ab")
    node.close()
    data = path.read_bytes()
    assert data[1034:1040] == b"\xee" * 6 and len(data) == 16 * KiB


def test_raw_without_size_follows_the_file(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(8192))
    node = open_drive({"file": str(path), "format": "raw", "offset": "512"})
    assert node.size == 8192 - 512
    node.write_zeroes(0, 4096, unmap=True)
    node.close()


def test_read_beyond_end_is_an_error(tmp_path, qemu_img):
    node = open_qcow2(new_image(tmp_path / "e.qcow2", MiB))
    with pytest.raises(BlockError, match="beyond the end"):
        node.read(MiB - 1, 2)
    with pytest.raises(BlockError, match="Invalid request"):
        node.read(-1, 2)
    node.close()


def test_cache_none_uses_o_direct_with_unaligned_requests(tmp_path, qemu_img):
    for fmt in ("raw", "qcow2"):
        path = tmp_path / f"direct.{fmt}"
        if fmt == "raw":
            path.write_bytes(bytes(3 * MiB + 1000))
        else:
            new_image(path, 3 * MiB)
        node = open_drive({"file": str(path), "format": fmt, "cache": "none"})
        child = node.child
        assert isinstance(child, FileNode) and child.direct
        model = bytearray(node.read(0, node.size))
        rng = random.Random(5)
        for _ in range(40):
            offset = rng.randrange(node.size - 1)
            data = rng.randbytes(rng.randrange(1, min(300000, node.size - offset)))
            node.write(offset, data)
            model[offset:offset + len(data)] = data
        assert node.read(0, node.size) == model
        node.close()
        if fmt == "qcow2":
            assert_clean(path)
            assert as_raw(path, tmp_path) == model
        else:
            assert path.read_bytes() == model  # the file did not grow to the next aligned block


def test_cache_modes(tmp_path, monkeypatch):
    path = tmp_path / "c.img"
    path.write_bytes(bytes(MiB))
    syncs = []
    real_fdatasync = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (syncs.append(fd), real_fdatasync(fd)))
    # mode: (O_DIRECT, syncs after three writes and a flush)
    expectations = {"writeback": (False, 1), "none": (True, 1), "writethrough": (False, 4),
                    "directsync": (True, 4), "unsafe": (False, 0)}
    for mode, (direct, expected_syncs) in expectations.items():
        node = open_drive({"file": str(path), "format": "raw", "cache": mode})
        syncs.clear()
        for offset in (0, 4096, 8192):
            node.write(offset, b"m" * 512)
        node.flush()
        assert (node.child.direct, len(syncs)) == (direct, expected_syncs), mode
        node.close()


# --- probing -----------------------------------------------------------------------------------------
def test_probe_format():
    assert probe_format(b"QFI\xfb\0\0\0\x03" + bytes(100)) == "qcow2"
    assert probe_format(b"QFI\xfb\0\0\0\x02") == "qcow2"
    assert probe_format(b"QFI\xfb\0\0\0\x01") == "qcow"
    assert probe_format(b"QFI\xfb\0\0\0\x00") == "raw"
    assert probe_format(b"KDMV") == "vmdk" and probe_format(b"# Disk DescriptorFile\n") == "vmdk"
    assert probe_format(b"conectix") == "vpc" and probe_format(b"vhdxfile") == "vhdx"
    assert probe_format(b"QED\0") == "qed" and probe_format(b"LUKS\xba\xbe\0\x01") == "luks"
    assert probe_format(b"") == "raw" and probe_format(bytes(512), "x.dmg") == "dmg"


def test_probed_raw_warns_and_guards_block_zero(tmp_path):
    path = tmp_path / "p.img"
    path.write_bytes(bytes(MiB))
    warnings = []
    node = open_drive({"file": str(path)}, warn=warnings.append)
    assert isinstance(node, RawNode) and node.probed
    assert [w.render() for w in warnings] == [RAW_PROBE_WARNING.format(filename=str(path))]
    header = b"QFI\xfb\0\0\0\x03" + bytes(504)
    with pytest.raises(BlockError, match="would make it look like qcow2"):
        node.write(0, header)
    with pytest.raises(BlockError, match="look like qcow2"):
        node.write(0, b"QFI\xfb\0\0\0\x03")  # a partial write of block 0 is judged on the whole block
    node.write(0, b"an ordinary boot block")
    node.write(512, header)  # other blocks are the guest's business
    node.close()
    node = open_drive({"file": str(path), "format": "raw"}, warn=warnings.append)
    node.write(0, header)  # with the format given there is no restriction
    node.close()
    assert len(warnings) == 1


def test_probing_finds_qcow2_and_refuses_other_formats(tmp_path, qemu_img):
    node = open_drive({"file": str(new_image(tmp_path / "q.qcow2", MiB))})
    assert isinstance(node, Qcow2Node)
    node.close()
    img("create", "-q", "-f", "vmdk", tmp_path / "v.vmdk", "1M")
    with pytest.raises(BlockError, match="Image format 'vmdk' .* is not supported"):
        open_drive({"file": str(tmp_path / "v.vmdk")})


# --- -drive and -blockdev handling ------------------------------------------------------------------
def test_snapshot_on_writes_to_a_temporary_overlay(tmp_path, monkeypatch, qemu_img):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "t"))
    (tmp_path / "t").mkdir()
    for fmt in ("raw", "qcow2"):
        path = tmp_path / f"base.{fmt}"
        if fmt == "raw":
            path.write_bytes(b"\x10" * MiB)
        else:
            new_image(path, MiB)
            qio(path, "write -P 0x10 0 1M")
        before = path.read_bytes()
        node = open_drive({"file": str(path), "format": fmt, "snapshot": "on"})
        assert isinstance(node, Qcow2Node) and node.backing is not None
        assert os.listdir(tmp_path / "t") == []  # unlinked at once: nothing to leave behind
        node.write(1000, b"\x20" * 5000)
        assert node.read(0, 1000) == b"\x10" * 1000 and node.read(1000, 5000) == b"\x20" * 5000
        node.close()
        assert path.read_bytes() == before


def test_empty_drives(tmp_path):
    assert open_drive({"if": "none", "id": "cd0", "media": "cdrom"}) is None
    assert open_drive({"if": "none", "file": ""}) is None


def test_blockdev_graph(tmp_path, qemu_img):
    base = tmp_path / "base.raw"
    base.write_bytes(b"\x61" * MiB)
    top = new_image(tmp_path / "top.qcow2", MiB, "-b", str(base), "-F", "raw")
    other = tmp_path / "other.raw"
    other.write_bytes(b"\x62" * MiB)
    nodes: dict = {}
    proto = open_blockdev({"driver": "file", "node-name": "f0", "filename": str(other), "read-only": "on"}, nodes)
    raw = open_blockdev({"driver": "raw", "node-name": "b0", "file": "f0"}, nodes)
    assert isinstance(proto, BlockNode) and nodes == {"f0": proto, "b0": raw}
    # backing given by name replaces the image's own backing file
    q = open_blockdev({"driver": "qcow2", "node-name": "q0", "backing": "b0",
                       "file": {"driver": "file", "filename": str(top), "node-name": "qf"}}, nodes)
    assert q.backing is raw and q.read(0, 4) == b"\x62" * 4 and set(nodes) == {"f0", "b0", "q0", "qf"}
    # backing null: no backing at all
    n = open_blockdev({"driver": "qcow2", "node-name": "q1", "backing": None,
                       "file": {"driver": "file", "filename": str(top)}}, nodes, mode="json")
    assert n.backing is None and n.read(0, 4) == bytes(4)
    # flat dotted keys mean the same as nested dicts
    d = open_blockdev({"driver": "raw", "node-name": "d0", "file.driver": "file", "file.filename": str(other),
                       "file.node-name": "d0f", "read-only": True}, nodes)
    assert d.read(0, 2) == b"\x62\x62" and isinstance(nodes["d0f"], FileNode) and nodes["d0f"].read_only
    d.close()
    # writes through a read-only child fail, as the child is read-only
    with pytest.raises(BlockError, match="read-only"):
        raw.write(0, b"x")
    for node in (n, q, raw, proto):
        node.close()


def test_failed_blockdev_leaves_nothing_behind(tmp_path, qemu_img):
    good = tmp_path / "good.raw"
    good.write_bytes(bytes(MiB))
    nodes: dict = {}
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(BlockError, match="Image is not in qcow2 format"):
        open_blockdev({"driver": "qcow2", "node-name": "q", "file": {"driver": "file", "filename": str(good),
                                                                    "node-name": "inner"}}, nodes)
    assert nodes == {} and len(os.listdir("/proc/self/fd")) == fds
    with pytest.raises(BlockError, match="Duplicate nodes with node-name='a'"):
        open_blockdev({"driver": "raw", "node-name": "a", "file": {"driver": "file", "filename": str(good),
                                                                   "node-name": "a"}}, nodes)
    assert len(os.listdir("/proc/self/fd")) == fds


def test_copy_on_read(tmp_path, qemu_img):
    base = tmp_path / "base.raw"
    base.write_bytes(b"\x71" * MiB)
    top = new_image(tmp_path / "top.qcow2", MiB, "-b", str(base), "-F", "raw")
    node = open_drive({"file": str(top), "format": "qcow2", "copy-on-read": "on"})
    assert node.read(0, 200 * KiB) == b"\x71" * 200 * KiB
    node.close()
    base.write_bytes(bytes(MiB))  # the copied clusters no longer need the backing file
    node = open_qcow2(top, readonly="on")
    assert node.read(0, 192 * KiB) == b"\x71" * 192 * KiB
    node.close()
    assert_clean(top)


# --- layering ----------------------------------------------------------------------------------------
def test_block_imports_only_the_standard_library_and_errors():
    import sys

    for path in sorted((ROOT / "vmd" / "block").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top == "vmd":
                    assert name == "vmd.errors" or name.startswith("vmd.block"), (path.name, name)
                else:
                    assert top in sys.stdlib_module_names, (path.name, name)
