"""qcow2, versions 2 and 3 (QEMU's docs/interop/qcow2.txt).

Guest clusters map to host clusters through a two-level table (L1 -> L2 -> data). Host
clusters are reference counted; a count above one means the cluster is shared with an
internal snapshot, so it is copied before it is written. Every metadata change goes to the
file at once (write-through) in the order that leaves, after a crash, at worst a leaked
cluster: reference counts rise before a table points at a cluster, and fall after it no
longer does. The image is therefore consistent whenever vmd is not inside a request, and
vmd never sets the dirty bit.

Not supported, refused at open with a clear error: encryption, external data files,
extended L2 entries (subclusters), zstd compression. Images with the dirty bit set open
read-only only (QEMU repairs them first; ``qemu-img check -r all`` does the same).
Persistent dirty bitmaps are not kept up to date: a writable open marks them in use, which
QEMU reads as inconsistent, as after a crash.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field

from vmd.block.base import DISCARD_IGNORE, BlockError, Node

MAGIC = b"QFI\xfb"
MIN_CLUSTER_BITS = 9
MAX_CLUSTER_BITS = 21
HEADER_V2_LENGTH = 72
HEADER_V3_MIN_LENGTH = 104
HEADER_V3_LENGTH = 112  # with the compression type byte and its padding, as QEMU writes it
MAX_L1_BYTES = 32 << 20
MAX_REFTABLE_BYTES = 8 << 20
MAX_SNAPSHOTS = 65536
SNAPSHOT_HEADER_LENGTH = 40
MAX_BACKING_NAME = 1023
INT64_MAX = (1 << 63) - 1
INT_MAX = (1 << 31) - 1

OFFSET_MASK = 0x00FF_FFFF_FFFF_FE00
OFLAG_COPIED = 1 << 63
OFLAG_COMPRESSED = 1 << 62
OFLAG_ZERO = 1
REFTABLE_RESERVED = 0x1FF

INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
INCOMPAT_KNOWN = 0x1F

EXT_END = 0
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_TABLE = 0x6803F857
EXT_DATA_FILE = 0x44415441
EXT_BITMAPS = 0x23852875
AUTOCLEAR_BITMAPS = 1 << 0
BITMAP_IN_USE = 1 << 0
MAX_BITMAP_DIRECTORY = 64 << 20

FEATURE_INCOMPATIBLE, FEATURE_COMPATIBLE, FEATURE_AUTOCLEAR = 0, 1, 2
#: the feature name table vmd writes into the images it creates (the names QEMU uses)
FEATURE_NAMES = (
    (FEATURE_INCOMPATIBLE, 0, "dirty bit"),
    (FEATURE_INCOMPATIBLE, 1, "corrupt bit"),
    (FEATURE_INCOMPATIBLE, 2, "external data file"),
    (FEATURE_INCOMPATIBLE, 3, "compression type"),
    (FEATURE_INCOMPATIBLE, 4, "extended L2 entries"),
    (FEATURE_COMPATIBLE, 0, "lazy refcounts"),
    (FEATURE_AUTOCLEAR, 0, "bitmaps"),
    (FEATURE_AUTOCLEAR, 1, "raw external data"),
)

def _zero_entry_table(bits: int) -> bytes:
    """bytes.translate table: 0 for a byte holding a zero ``bits``-wide refcount, else 1."""
    mask = (1 << bits) - 1
    return bytes(0 if any(not (b >> shift) & mask for shift in range(0, 8, bits)) else 1 for b in range(256))


_HAS_ZERO_ENTRY = {bits: _zero_entry_table(bits) for bits in (1, 2, 4)}

# cluster kinds, as an L2 entry describes them
UNALLOCATED, NORMAL, ZERO_PLAIN, ZERO_ALLOC, COMPRESSED = range(5)

#: metadata tables kept in memory, per kind (bounded so hostile images cannot exhaust memory)
CACHE_BYTES = 32 << 20


@dataclass
class Header:
    version: int
    backing_file_offset: int
    backing_file_size: int
    cluster_bits: int
    size: int
    crypt_method: int
    l1_size: int
    l1_table_offset: int
    refcount_table_offset: int
    refcount_table_clusters: int
    nb_snapshots: int
    snapshots_offset: int
    incompatible: int = 0
    compatible: int = 0
    autoclear: int = 0
    refcount_order: int = 4
    header_length: int = HEADER_V2_LENGTH
    compression_type: int = 0
    backing_file: str | None = None
    backing_format: str | None = None
    data_file: str | None = None
    bitmaps: tuple[int, int, int] | None = None  # (count, directory size, directory offset)
    feature_names: dict[tuple[int, int], str] = field(default_factory=dict)


def _validate_table(offset: int, entries: int, entry_len: int, max_bytes: int, name: str,
                    cluster_size: int) -> None:
    if entries > max_bytes // entry_len:
        raise BlockError(f"{name} too large")
    if INT64_MAX - entries * entry_len < offset or offset % cluster_size:
        raise BlockError(f"{name} offset invalid")


def size_to_l1(size: int, cluster_bits: int) -> int:
    shift = cluster_bits + (cluster_bits - 3)
    return (size + (1 << shift) - 1) >> shift


def read_header(child: Node, writable: bool) -> Header:
    """The header and its extensions, checked in QEMU's order and with its texts."""
    raw = child.pread(0, HEADER_V3_LENGTH)
    if raw[:4] != MAGIC:
        raise BlockError("Image is not in qcow2 format")
    (version, backing_off, backing_size, cluster_bits, size, crypt, l1_size, l1_off, rt_off, rt_clusters,
     nb_snapshots, snapshots_off) = struct.unpack_from(">IQIIQIIQQIIQ", raw, 4)
    if version < 2 or version > 3:
        raise BlockError(f"Unsupported qcow2 version {version}")
    if cluster_bits < MIN_CLUSTER_BITS or cluster_bits > MAX_CLUSTER_BITS:
        raise BlockError(f"Unsupported cluster size: 2^{cluster_bits}")
    cluster_size = 1 << cluster_bits
    h = Header(version, backing_off, backing_size, cluster_bits, size, crypt, l1_size, l1_off, rt_off,
               rt_clusters, nb_snapshots, snapshots_off)
    if version == 3:
        h.incompatible, h.compatible, h.autoclear, h.refcount_order, h.header_length = \
            struct.unpack_from(">QQQII", raw, 72)
        if h.header_length < HEADER_V3_MIN_LENGTH:
            raise BlockError("qcow2 header too short")
    if h.header_length > cluster_size:
        raise BlockError("qcow2 header exceeds cluster size")
    if backing_off > cluster_size:
        raise BlockError("Invalid backing file offset")
    ext_end = backing_off or cluster_size
    if h.header_length > HEADER_V3_MIN_LENGTH:
        h.compression_type = raw[104]
    if h.compression_type not in (0, 1):
        raise BlockError(f"qcow2: unknown compression type: {h.compression_type}")
    if h.compression_type == 0 and h.incompatible & INCOMPAT_COMPRESSION:
        raise BlockError("qcow2: Compression type incompatible feature bit must not be set")
    if h.compression_type != 0 and not h.incompatible & INCOMPAT_COMPRESSION:
        raise BlockError("qcow2: Compression type incompatible feature bit must be set")
    if h.incompatible & ~INCOMPAT_KNOWN:
        _read_extensions(child, h, ext_end, tolerant=True)
        raise BlockError(_unsupported_features(h, h.incompatible & ~INCOMPAT_KNOWN))
    if h.incompatible & INCOMPAT_CORRUPT and writable:
        raise BlockError("qcow2: Image is corrupt; cannot be opened read/write")
    if h.incompatible & INCOMPAT_EXTL2:
        raise BlockError("qcow2 images with extended L2 entries (subclusters) are not supported")
    if h.incompatible & INCOMPAT_DATA_FILE:
        raise BlockError("qcow2 images with an external data file are not supported")
    if h.compression_type == 1:
        raise BlockError("qcow2 images with zstd compression are not supported")
    if h.refcount_order > 6:
        raise BlockError("Reference count entry width too large; may not exceed 64 bits")
    if crypt == 1:
        raise BlockError("Use of AES-CBC encrypted qcow2 images is no longer supported in system emulators\n"
                         "You can use 'qemu-img convert' to convert your image to an alternative supported "
                         "format, such as unencrypted qcow2, or raw with the LUKS format instead.")
    if crypt == 2:
        raise BlockError("Encrypted qcow2 images (LUKS) are not supported")
    if crypt:
        raise BlockError(f"Unsupported encryption method {crypt}")
    if rt_clusters == 0:
        raise BlockError("Image does not contain a reference count table")
    _validate_table(rt_off, rt_clusters, cluster_size, MAX_REFTABLE_BYTES, "Reference count table", cluster_size)
    _validate_table(snapshots_off, nb_snapshots, SNAPSHOT_HEADER_LENGTH,
                    SNAPSHOT_HEADER_LENGTH * MAX_SNAPSHOTS, "Snapshot table", cluster_size)
    _validate_table(l1_off, l1_size, 8, MAX_L1_BYTES, "Active L1 table", cluster_size)
    needed = size_to_l1(size, cluster_bits)
    if needed > INT_MAX:
        raise BlockError("Image is too big")
    if l1_size < needed:
        raise BlockError("L1 table is too small")
    _read_extensions(child, h, ext_end, tolerant=False)
    if backing_off:
        if backing_size > min(MAX_BACKING_NAME, cluster_size - backing_off) or backing_size >= 1024:
            raise BlockError("Backing file name too long")
        h.backing_file = child.pread(backing_off, backing_size).decode("utf-8", "surrogateescape")
    if h.incompatible & INCOMPAT_DIRTY and writable:
        raise BlockError("qcow2 image was not closed cleanly (dirty bit set) and needs its reference counts "
                         "repaired: run 'qemu-img check -r all' on it, or open it read-only")
    return h


def _read_extensions(child: Node, h: Header, end: int, tolerant: bool) -> None:
    offset = h.header_length
    while offset < end:
        ext_type, ext_len = struct.unpack(">II", child.pread(offset, 8))
        offset += 8
        if offset > end - ext_len:
            if tolerant:
                return
            raise BlockError("Header extension too large")
        if ext_type == EXT_END:
            return
        data = child.pread(offset, ext_len)
        if ext_type == EXT_BACKING_FORMAT:
            if ext_len >= 16:
                if tolerant:
                    return
                raise BlockError(f"ERROR: ext_backing_format: len={ext_len} too large (>=16)")
            h.backing_format = data.decode("ascii", "replace")
        elif ext_type == EXT_FEATURE_TABLE:
            for pos in range(0, ext_len - 47, 48):
                kind, bit = data[pos], data[pos + 1]
                name = data[pos + 2:pos + 48].split(b"\0", 1)[0].decode("utf-8", "replace")
                h.feature_names[(kind, bit)] = name
        elif ext_type == EXT_DATA_FILE:
            h.data_file = data.decode("utf-8", "replace")
        elif ext_type == EXT_BITMAPS and ext_len >= 24:
            count, _reserved, dir_size, dir_offset = struct.unpack_from(">IIQQ", data)
            h.bitmaps = (count, dir_size, dir_offset)
        offset += (ext_len + 7) & ~7


def _unsupported_features(h: Header, mask: int) -> str:
    names = []
    for bit in range(64):
        name = h.feature_names.get((FEATURE_INCOMPATIBLE, bit))
        if mask & (1 << bit) and name:
            names.append(name[:46])
            mask &= ~(1 << bit)
    if mask:
        names.append(f"Unknown incompatible feature: {mask:x}")
    return "Unsupported qcow2 feature(s): " + ", ".join(names)


class _LRU(OrderedDict):
    def __init__(self, limit: int):
        super().__init__()
        self.limit = max(4, limit)

    def get_hot(self, key):
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def put(self, key, value) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


class Qcow2Node(Node):
    driver = "qcow2"

    def __init__(self, child: Node, *, node_name: str | None = None, read_only: bool = False,
                 discard: str = DISCARD_IGNORE, detect_zeroes: str = "off", no_flush: bool = False,
                 pass_discard_request: bool | None = None):
        super().__init__(node_name, read_only, discard, detect_zeroes, no_flush)
        self.child = child
        h = read_header(child, writable=not read_only)
        self.header = h
        self.version = h.version
        self.cluster_bits = cb = h.cluster_bits
        self.cluster_size = cs = 1 << cb
        self.l2_bits = cb - 3
        self.l2_entries = cs // 8
        self.virtual_size = h.size - h.size % 512  # QEMU counts whole sectors
        self.backing: Node | None = None
        self.copy_on_read = False
        self.pass_discard_request = discard == "unmap" if pass_discard_request is None else pass_discard_request
        self.refcount_bits = 1 << h.refcount_order
        self.refcount_max = (1 << self.refcount_bits) - 1
        self.refblock_entries = cs * 8 // self.refcount_bits
        self.csize_shift = 62 - (cb - 8)
        self.csize_mask = (1 << (cb - 8)) - 1
        self.coffset_mask = (1 << self.csize_shift) - 1

        self.l1_offset = h.l1_table_offset
        self.l1 = list(self._read_table(h.l1_table_offset, h.l1_size, "Active L1 table"))
        self.rt_offset = h.refcount_table_offset
        self.rt_clusters = h.refcount_table_clusters
        self.reftable = list(self._read_table(self.rt_offset, self.rt_clusters * cs // 8, "Reference count table"))
        cache_entries = CACHE_BYTES // cs
        self._l2_cache = _LRU(cache_entries)
        self._rb_cache = _LRU(cache_entries)
        self._decompressed: tuple[int, bytes] | None = None
        self._free_cursor = 0
        self._alloc_end = 0  # the end of what this session allocated (the file may not reach it yet)
        self._reserved: set[int] = set()
        if not read_only:
            child.allow_growth()
            self._claim_autoclear_features()

    def _claim_autoclear_features(self) -> None:
        """Writing without keeping an autoclear feature up to date must say so in the image.

        Persistent dirty bitmaps stay (their clusters stay referenced, so the image stays
        clean) but are marked in use, which tells QEMU they are inconsistent, as after a crash;
        bits vmd does not know are cleared, as QEMU clears them.
        """
        h = self.header
        keep = 0
        if h.autoclear & AUTOCLEAR_BITMAPS and h.bitmaps is not None:
            self._mark_bitmaps_in_use(*h.bitmaps)
            keep = AUTOCLEAR_BITMAPS
        if h.autoclear & ~keep:
            h.autoclear &= keep
            self.child.pwrite(88, struct.pack(">Q", h.autoclear))

    def _mark_bitmaps_in_use(self, count: int, dir_size: int, dir_offset: int) -> None:
        if dir_size > MAX_BITMAP_DIRECTORY or dir_offset + dir_size > self.child.size or dir_offset % 8:
            raise self._corrupt("invalid bitmap directory")
        directory = self.child.pread(dir_offset, dir_size)
        pos = 0
        for _ in range(count):
            if pos + 24 > dir_size:
                raise self._corrupt("truncated bitmap directory")
            flags, = struct.unpack_from(">I", directory, pos + 12)
            name_size, extra_size = struct.unpack_from(">HI", directory, pos + 18)
            if not flags & BITMAP_IN_USE:
                self.child.pwrite(dir_offset + pos + 12, struct.pack(">I", flags | BITMAP_IN_USE))
            pos += (24 + extra_size + name_size + 7) & ~7

    # --- helpers --------------------------------------------------------------------------
    def _read_table(self, offset: int, entries: int, name: str):
        if entries == 0:
            return ()
        if offset + entries * 8 > self.child.size:
            raise BlockError(f"{name} lies beyond the end of the image file")
        return struct.unpack(f">{entries}Q", self.child.pread(offset, entries * 8))

    def _size(self) -> int:
        return self.virtual_size

    def file_name(self) -> str | None:
        return self.child.file_name()

    def _corrupt(self, what: str) -> BlockError:
        return BlockError(f"qcow2 image '{self.file_name() or self.node_name}' is corrupt: {what}")

    def _protected(self, cluster: int) -> bool:
        """Metadata that must never be handed out, whatever the (possibly damaged) reference counts say."""
        cs = self.cluster_size
        pos = cluster * cs
        if cluster == 0:
            return True
        if self.l1 and self.l1_offset <= pos < self.l1_offset + len(self.l1) * 8:
            return True
        if self.rt_offset <= pos < self.rt_offset + self.rt_clusters * cs:
            return True
        h = self.header
        return bool(h.nb_snapshots) and h.snapshots_offset <= pos < h.snapshots_offset + cs

    # --- L2 tables ----------------------------------------------------------------------------
    def _l2_table(self, l2_offset: int, l1_index: int) -> list[int]:
        table = self._l2_cache.get_hot(l2_offset)
        if table is not None:
            return table
        cs = self.cluster_size
        if l2_offset % cs:
            raise self._corrupt(f"L2 table offset {l2_offset:#x} unaligned (L1 index: {l1_index:#x})")
        if l2_offset + cs > self.child.size:
            raise self._corrupt(f"L2 table offset {l2_offset:#x} lies beyond the end of the file "
                                f"(L1 index: {l1_index:#x})")
        table = list(struct.unpack(f">{self.l2_entries}Q", self.child.pread(l2_offset, cs)))
        self._l2_cache.put(l2_offset, table)
        return table

    def _entry(self, vcluster: int) -> int:
        l1_index = vcluster >> self.l2_bits
        l2_offset = self.l1[l1_index] & OFFSET_MASK
        if not l2_offset:
            return 0
        return self._l2_table(l2_offset, l1_index)[vcluster & (self.l2_entries - 1)]

    def _kind(self, entry: int) -> int:
        if entry & OFLAG_COMPRESSED:
            return COMPRESSED
        host = entry & OFFSET_MASK
        if entry & OFLAG_ZERO:
            return ZERO_ALLOC if host else ZERO_PLAIN
        return NORMAL if host else UNALLOCATED

    def _host(self, entry: int, vcluster: int) -> int:
        host = entry & OFFSET_MASK
        if host % self.cluster_size:
            raise self._corrupt(f"cluster allocation offset {host:#x} unaligned (guest cluster {vcluster:#x})")
        return host

    def _set_l1(self, index: int, value: int) -> None:
        self.child.pwrite(self.l1_offset + index * 8, struct.pack(">Q", value))
        self.l1[index] = value

    def _set_l2(self, l2_offset: int, table: list[int], index: int, value: int) -> None:
        self.child.pwrite(l2_offset + index * 8, struct.pack(">Q", value))
        table[index] = value

    def _writable_l2(self, l1_index: int) -> tuple[int, list[int]]:
        """The L2 table for ``l1_index``, allocated or unshared as needed, ready to be changed."""
        l1e = self.l1[l1_index]
        l2_offset = l1e & OFFSET_MASK
        cs = self.cluster_size
        if not l2_offset:
            new = self._alloc()
            self.child.pwrite(new, bytes(cs))
            table = [0] * self.l2_entries
            self._l2_cache.put(new, table)
            self._set_l1(l1_index, new | OFLAG_COPIED)
            return new, table
        table = self._l2_table(l2_offset, l1_index)
        if l1e & OFLAG_COPIED:
            return l2_offset, table
        refcount = self._refcount(l2_offset // cs)
        if refcount == 0:
            raise self._corrupt(f"L2 table at {l2_offset:#x} is in use but has no reference")
        if refcount == 1:
            self._set_l1(l1_index, l2_offset | OFLAG_COPIED)
            return l2_offset, table
        # shared with a snapshot: the active image gets its own copy
        new = self._alloc()
        copy = list(table)
        self.child.pwrite(new, struct.pack(f">{self.l2_entries}Q", *copy))
        self._l2_cache.put(new, copy)
        self._set_l1(l1_index, new | OFLAG_COPIED)
        self._change_refcount(l2_offset // cs, -1)
        return new, copy

    # --- reference counts -----------------------------------------------------------------------
    def _refblock(self, rt_index: int) -> bytearray | None:
        if rt_index >= len(self.reftable):
            return None
        offset = self.reftable[rt_index]
        if not offset:
            return None
        block = self._rb_cache.get_hot(offset)
        if block is not None:
            return block
        cs = self.cluster_size
        if offset & REFTABLE_RESERVED or offset % cs:
            raise self._corrupt(f"refcount block offset {offset:#x} unaligned (reftable index: {rt_index:#x})")
        if offset + cs > self.child.size:
            raise self._corrupt(f"refcount block at {offset:#x} lies beyond the end of the file")
        block = bytearray(self.child.pread(offset, cs))
        self._rb_cache.put(offset, block)
        return block

    def _get_entry(self, block: bytearray, index: int) -> int:
        bits = self.refcount_bits
        if bits >= 8:
            width = bits // 8
            return int.from_bytes(block[index * width:(index + 1) * width], "big")
        per_byte = 8 // bits
        return (block[index // per_byte] >> ((index % per_byte) * bits)) & ((1 << bits) - 1)

    def _put_entry(self, block: bytearray, index: int, value: int) -> tuple[int, bytes]:
        """Store ``value``; returns the byte range that changed, for the write to the file."""
        bits = self.refcount_bits
        if bits >= 8:
            width = bits // 8
            pos = index * width
            block[pos:pos + width] = value.to_bytes(width, "big")
            return pos, bytes(block[pos:pos + width])
        per_byte = 8 // bits
        pos = index // per_byte
        shift = (index % per_byte) * bits
        mask = ((1 << bits) - 1) << shift
        block[pos] = (block[pos] & ~mask) | (value << shift)
        return pos, bytes(block[pos:pos + 1])

    def _refcount(self, cluster: int) -> int:
        rt_index, index = divmod(cluster, self.refblock_entries)
        block = self._refblock(rt_index)
        return 0 if block is None else self._get_entry(block, index)

    def _change_refcount(self, cluster: int, delta: int) -> int:
        rt_index, index = divmod(cluster, self.refblock_entries)
        block = self._refblock(rt_index)
        current = 0 if block is None else self._get_entry(block, index)
        new = current + delta
        if new < 0:
            raise self._corrupt(f"reference count of cluster {cluster:#x} would drop below zero")
        if new > self.refcount_max:
            raise BlockError(f"qcow2: reference count of cluster {cluster:#x} overflows "
                             f"{self.refcount_bits} bits")
        if block is None:
            block = self._new_refblock(rt_index)
        pos, data = self._put_entry(block, index, new)
        self.child.pwrite(self.reftable[rt_index] + pos, data)
        if new == 0:
            self._free_cursor = min(self._free_cursor, cluster)
            offset = cluster * self.cluster_size
            self._l2_cache.pop(offset, None)
            self._rb_cache.pop(offset, None)
        return new

    def _new_refblock(self, rt_index: int) -> bytearray:
        """Allocate the refcount block for ``rt_index``; it may describe itself."""
        if rt_index >= len(self.reftable):
            self._grow_reftable(rt_index + 1)
            if self.reftable[rt_index]:
                return self._refblock(rt_index)
        cs = self.cluster_size
        cluster = self._find_free(1)
        self._reserved.add(cluster)
        try:
            block = bytearray(cs)
            self.child.pwrite(cluster * cs, bytes(block))
            self._rb_cache.put(cluster * cs, block)
            self.child.pwrite(self.rt_offset + rt_index * 8, struct.pack(">Q", cluster * cs))
            self.reftable[rt_index] = cluster * cs
            self._change_refcount(cluster, +1)
        finally:
            self._reserved.discard(cluster)
        return self._refblock(rt_index)

    def _grow_reftable(self, min_entries: int) -> None:
        cs = self.cluster_size
        per_cluster = cs // 8
        entries = max(min_entries, len(self.reftable) * 3 // 2, len(self.reftable) + 1)
        clusters = -(-entries // per_cluster)
        start = self._find_free(clusters)
        # the new table must also cover the clusters it occupies
        while (start + clusters) // self.refblock_entries >= clusters * per_cluster:
            clusters += 1
            start = self._find_free(clusters)
        if clusters * cs > MAX_REFTABLE_BYTES:
            raise BlockError("qcow2: the reference count table cannot grow any further")
        new_table = self.reftable + [0] * (clusters * per_cluster - len(self.reftable))
        run = range(start, start + clusters)
        self._reserved.update(run)
        try:
            self.child.pwrite(start * cs, struct.pack(f">{len(new_table)}Q", *new_table))
            self.child.flush()
            old_offset, old_clusters = self.rt_offset, self.rt_clusters
            self.child.pwrite(48, struct.pack(">QI", start * cs, clusters))
            self.header.refcount_table_offset, self.header.refcount_table_clusters = start * cs, clusters
            self.rt_offset, self.rt_clusters, self.reftable = start * cs, clusters, new_table
            for cluster in run:
                self._change_refcount(cluster, +1)
        finally:
            self._reserved.difference_update(run)
        for cluster in range(old_offset // cs, old_offset // cs + old_clusters):
            self._change_refcount(cluster, -1)

    def _find_free(self, count: int) -> int:
        """The first run of ``count`` free clusters at or after the free cursor.

        Moves the cursor to the first free cluster seen that the run leaves free (everything
        below the cursor is in use or reserved for a request under way). Past the end of the
        file nothing can be in use: a reference count there means a damaged image, refused
        rather than searched (a hostile refcount table could otherwise claim 2^40 clusters).
        """
        end = -(-max(self.child.size, self._alloc_end) // self.cluster_size)
        cluster = self._free_cursor
        run_start, run_length = cluster, 0
        first_free = None
        while run_length < count:
            if cluster < end and run_length == 0:
                found = self._next_zero_refcount(cluster, end)
                if found != cluster:
                    cluster = found
                    continue
            if cluster in self._reserved or self._protected(cluster):
                run_length = 0
            elif self._refcount(cluster) == 0:
                if run_length == 0:
                    run_start = cluster
                if first_free is None:
                    first_free = cluster
                run_length += 1
            elif cluster >= end:
                raise self._corrupt(f"cluster {cluster:#x} lies beyond the end of the file but has a reference")
            else:
                run_length = 0
            cluster += 1
        self._free_cursor = run_start + count if first_free == run_start else first_free
        self._alloc_end = max(self._alloc_end, (run_start + count) * self.cluster_size)
        return run_start

    def _next_zero_refcount(self, cluster: int, end: int) -> int:
        """The first cluster at or after ``cluster`` (below ``end``) whose count is zero, else ``end``.

        Scans whole refcount blocks with bytes methods, so full blocks cost one C-level search.
        """
        per_block = self.refblock_entries
        bits = self.refcount_bits
        while cluster < end:
            rt_index, index = divmod(cluster, per_block)
            block = self._refblock(rt_index)
            if block is None:
                return cluster
            if bits >= 8:
                width = bits // 8
                zero = bytes(width)
                pos = index * width
                while True:
                    pos = block.find(zero, pos)
                    if pos < 0 or pos % width == 0:
                        break
                    pos += width - pos % width
                if pos >= 0:
                    return min(end, rt_index * per_block + pos // width)
            else:
                per_byte = 8 // bits
                marks = block.translate(_HAS_ZERO_ENTRY[bits])
                pos = index // per_byte
                while True:
                    pos = marks.find(b"\0", pos)
                    if pos < 0:
                        break
                    for sub in range(per_byte):
                        entry = pos * per_byte + sub
                        if entry >= index and not (block[pos] >> (sub * bits)) & ((1 << bits) - 1):
                            return min(end, rt_index * per_block + entry)
                    pos += 1
            cluster = (rt_index + 1) * per_block
        return end

    def _alloc(self, count: int = 1) -> int:
        """Host offset of ``count`` new contiguous clusters, each with a reference count of one."""
        start = self._find_free(count)
        run = range(start, start + count)
        self._reserved.update(run)
        try:
            for cluster in run:
                self._change_refcount(cluster, +1)
        finally:
            self._reserved.difference_update(run)
        return start * self.cluster_size

    def _release(self, entry: int, guest_discard: bool) -> None:
        """Drop the reference an L2 entry held; freed clusters go down to the file on a guest's discard."""
        kind = self._kind(entry)
        cs = self.cluster_size
        if kind == COMPRESSED:
            host = entry & self.coffset_mask
            sectors = ((entry >> self.csize_shift) & self.csize_mask) + 1
            first = (host & ~511) // cs
            last = ((host & ~511) + sectors * 512 - 1) // cs
            clusters = range(first, last + 1)
        elif kind in (NORMAL, ZERO_ALLOC):
            clusters = range((entry & OFFSET_MASK) // cs, (entry & OFFSET_MASK) // cs + 1)
        else:
            return
        for cluster in clusters:
            if self._change_refcount(cluster, -1) == 0 and guest_discard and self.pass_discard_request:
                self.child.pdiscard(cluster * cs, cs)

    # --- data -----------------------------------------------------------------------------------
    def _decompress(self, entry: int) -> bytes:
        if self._decompressed and self._decompressed[0] == entry:
            return self._decompressed[1]
        host = entry & self.coffset_mask
        sectors = ((entry >> self.csize_shift) & self.csize_mask) + 1
        length = sectors * 512 - (host & 511)
        compressed = self.child.pread(host, length)
        try:
            inflater = zlib.decompressobj(-15)
            data = inflater.decompress(compressed, self.cluster_size)
        except zlib.error as err:
            raise self._corrupt(f"compressed cluster at {host:#x} cannot be decompressed ({err})") from None
        if len(data) != self.cluster_size:
            raise self._corrupt(f"compressed cluster at {host:#x} is short")
        self._decompressed = (entry, data)
        return data

    def _backing_read(self, offset: int, length: int) -> bytes:
        backing = self.backing
        if backing is None or offset >= backing.size:
            return bytes(length)
        return backing.pread(offset, length)

    def _read(self, offset: int, length: int) -> bytes:
        if self.copy_on_read and self.backing is not None and not self.read_only:
            self._copy_up(offset, length)
        cs, cb = self.cluster_size, self.cluster_bits
        out: list[bytes] = []
        # a run of requests that one pread can serve: (kind, start, length)
        run_kind, run_start, run_len = None, 0, 0

        def flush_run():
            if run_kind == NORMAL:
                out.append(self.child.pread(run_start, run_len))
            elif run_kind == UNALLOCATED:
                out.append(self._backing_read(run_start, run_len))
            elif run_kind == ZERO_PLAIN:
                out.append(bytes(run_len))

        pos, end = offset, offset + length
        while pos < end:
            vcluster = pos >> cb
            inner = pos & (cs - 1)
            n = min(cs - inner, end - pos)
            entry = self._entry(vcluster)
            kind = self._kind(entry)
            if kind == NORMAL:
                start = self._host(entry, vcluster) + inner
            elif kind == UNALLOCATED:
                start = pos
            elif kind == COMPRESSED:
                flush_run()
                run_kind, run_len = None, 0
                out.append(self._decompress(entry)[inner:inner + n])
                pos += n
                continue
            else:  # both zero kinds read as zeroes
                kind, start = ZERO_PLAIN, 0
            if kind == run_kind and (kind == ZERO_PLAIN or start == run_start + run_len):
                run_len += n
            else:
                flush_run()
                run_kind, run_start, run_len = kind, start, n
            pos += n
        flush_run()
        return b"".join(out)

    def _copy_up(self, offset: int, length: int) -> None:
        cs, cb = self.cluster_size, self.cluster_bits
        for vcluster in range(offset >> cb, ((offset + length - 1) >> cb) + 1):
            if self._kind(self._entry(vcluster)) == UNALLOCATED:
                self._write_cluster(vcluster, 0, self._backing_read(vcluster * cs, cs))

    def _cluster_content(self, vcluster: int, entry: int) -> bytearray:
        cs = self.cluster_size
        kind = self._kind(entry)
        if kind == COMPRESSED:
            return bytearray(self._decompress(entry))
        if kind == NORMAL:
            return bytearray(self.child.pread(self._host(entry, vcluster), cs))
        if kind == UNALLOCATED:
            return bytearray(self._backing_read(vcluster * cs, cs))
        return bytearray(cs)

    def _write(self, offset: int, data: bytes) -> None:
        cs, cb = self.cluster_size, self.cluster_bits
        view = memoryview(data)
        pos, end = offset, offset + len(data)
        while pos < end:
            vcluster = pos >> cb
            inner = pos & (cs - 1)
            n = min(cs - inner, end - pos)
            self._write_cluster(vcluster, inner, view[pos - offset:pos - offset + n])
            pos += n

    def _owned(self, entry: int) -> bool:
        """The host cluster behind ``entry`` belongs to the active image alone (may be written in place)."""
        if entry & OFLAG_COPIED:
            return True
        return self._refcount((entry & OFFSET_MASK) // self.cluster_size) == 1

    def _write_cluster(self, vcluster: int, inner: int, piece) -> None:
        cs = self.cluster_size
        entry = self._entry(vcluster)
        kind = self._kind(entry)
        l1_index, l2_index = vcluster >> self.l2_bits, vcluster & (self.l2_entries - 1)
        if kind in (NORMAL, ZERO_ALLOC) and self._owned(entry):
            host = self._host(entry, vcluster)
            if kind == ZERO_ALLOC and len(piece) < cs:
                content = bytearray(cs)
                content[inner:inner + len(piece)] = piece
                self.child.pwrite(host, bytes(content))
            else:
                self.child.pwrite(host + inner, bytes(piece))
            if entry != host | OFLAG_COPIED:
                l2_offset, table = self._writable_l2(l1_index)
                self._set_l2(l2_offset, table, l2_index, host | OFLAG_COPIED)
            return
        l2_offset, table = self._writable_l2(l1_index)
        entry = table[l2_index]
        if len(piece) == cs:
            content = bytes(piece)
        else:
            merged = self._cluster_content(vcluster, entry)
            merged[inner:inner + len(piece)] = piece
            content = bytes(merged)
        new = self._alloc()
        self.child.pwrite(new, content)
        self._set_l2(l2_offset, table, l2_index, new | OFLAG_COPIED)
        self._release(entry, guest_discard=False)

    # --- zeroes and discard ------------------------------------------------------------------
    def _full_clusters(self, offset: int, length: int) -> tuple[int, int]:
        """The guest clusters wholly inside the range (the image's last cluster may be partial)."""
        cs = self.cluster_size
        first = -(-offset // cs)
        end = offset + length
        last = end // cs if end != self.virtual_size else -(-end // cs)
        return first, max(first, last)

    def _reads_as_zero(self, entry: int) -> bool:
        kind = self._kind(entry)
        return kind in (ZERO_PLAIN, ZERO_ALLOC) or (kind == UNALLOCATED and self.backing is None)

    def _write_zeroes(self, offset: int, length: int, unmap: bool) -> None:
        cs = self.cluster_size
        first, last = self._full_clusters(offset, length)
        head_end = min(offset + length, first * cs)
        tail_start = max(offset, last * cs) if last > first else head_end
        # partial clusters at the edges: plain zero data, unless they already read as zeroes
        for start, stop in ((offset, head_end), (tail_start, offset + length)):
            if stop > start and not self._reads_as_zero(self._entry(start // cs)):
                self._write(start, bytes(stop - start))
        for vcluster in range(first, last):
            self._zero_cluster(vcluster, unmap)

    def _zero_cluster(self, vcluster: int, unmap: bool) -> None:
        entry = self._entry(vcluster)
        kind = self._kind(entry)
        if kind == ZERO_PLAIN or (kind == UNALLOCATED and self.backing is None):
            return
        l1_index, l2_index = vcluster >> self.l2_bits, vcluster & (self.l2_entries - 1)
        if self.version < 3:
            # no zero flag: an unmapped cluster reads as zeroes only without a backing file
            if unmap and self.backing is None:
                l2_offset, table = self._writable_l2(l1_index)
                self._set_l2(l2_offset, table, l2_index, 0)
                self._release(entry, guest_discard=True)
            else:
                self._write_cluster(vcluster, 0, bytes(self.cluster_size))
            return
        l2_offset, table = self._writable_l2(l1_index)
        entry = table[l2_index]
        if kind in (NORMAL, ZERO_ALLOC) and not unmap and self._owned(entry):
            # keep the allocation, mark it as reading zeroes
            self._set_l2(l2_offset, table, l2_index, (entry & OFFSET_MASK) | OFLAG_ZERO | OFLAG_COPIED)
            return
        self._set_l2(l2_offset, table, l2_index, OFLAG_ZERO)
        self._release(entry, guest_discard=unmap)

    def _discard(self, offset: int, length: int) -> None:
        # discard works on whole clusters; partial ones are left alone (discard is advisory)
        first, last = self._full_clusters(offset, length)
        for vcluster in range(first, last):
            entry = self._entry(vcluster)
            kind = self._kind(entry)
            if kind == ZERO_PLAIN or (kind == UNALLOCATED and self.backing is None):
                continue
            if kind == UNALLOCATED and self.version < 3:
                continue
            l1_index, l2_index = vcluster >> self.l2_bits, vcluster & (self.l2_entries - 1)
            l2_offset, table = self._writable_l2(l1_index)
            entry = table[l2_index]
            # a discarded cluster must not show the backing file's data again (v3 can say so)
            self._set_l2(l2_offset, table, l2_index, OFLAG_ZERO if self.version >= 3 else 0)
            self._release(entry, guest_discard=True)

    def _flush(self) -> None:
        self.child.flush()


# --- creating images ----------------------------------------------------------------------------
def create_qcow2(path: str, size: int, *, cluster_size: int = 65536, version: int = 3,
                 backing_file: str | None = None, backing_format: str | None = None,
                 refcount_bits: int = 16) -> None:
    """Create an empty qcow2 image at ``path`` (which must not exist)."""
    cb = cluster_size.bit_length() - 1
    if cluster_size != 1 << cb or not MIN_CLUSTER_BITS <= cb <= MAX_CLUSTER_BITS:
        raise BlockError("Cluster size must be a power of two between 512 and 2048k")
    if refcount_bits not in (1, 2, 4, 8, 16, 32, 64) or (version < 3 and refcount_bits != 16):
        raise BlockError("Refcount width must be a power of two and may not exceed 64 bits")
    size = -(-size // 512) * 512
    cs = cluster_size
    l1_entries = size_to_l1(size, cb)
    l1_clusters = -(-l1_entries * 8 // cs)
    rb_entries = cs * 8 // refcount_bits
    rt_clusters, rb_clusters = 1, 1
    while True:
        total = 1 + rt_clusters + rb_clusters + l1_clusters
        need_rb = -(-total // rb_entries)
        need_rt = -(-need_rb * 8 // cs)
        if (need_rb, need_rt) == (rb_clusters, rt_clusters):
            break
        rb_clusters, rt_clusters = max(rb_clusters, need_rb), max(rt_clusters, need_rt)
    rt_offset = cs
    rb_offset = rt_offset + rt_clusters * cs
    l1_offset = rb_offset + rb_clusters * cs
    total = 1 + rt_clusters + rb_clusters + l1_clusters

    header_length = HEADER_V3_LENGTH if version >= 3 else HEADER_V2_LENGTH
    extensions = b""
    if backing_format:
        name = backing_format.encode()
        extensions += struct.pack(">II", EXT_BACKING_FORMAT, len(name)) + name.ljust(-(-len(name) // 8) * 8, b"\0")
    if version >= 3:
        table = b"".join(struct.pack(">BB46s", kind, bit, name.encode()) for kind, bit, name in FEATURE_NAMES)
        extensions += struct.pack(">II", EXT_FEATURE_TABLE, len(table)) + table
    extensions += struct.pack(">II", EXT_END, 0)
    backing_name = backing_file.encode() if backing_file else b""
    backing_offset = header_length + len(extensions) if backing_file else 0
    if backing_offset + len(backing_name) > cs or len(backing_name) > MAX_BACKING_NAME:
        raise BlockError("Backing file name too long")
    header = MAGIC + struct.pack(">IQIIQIIQQIIQ", version, backing_offset, len(backing_name), cb, size, 0,
                                 l1_entries, l1_offset, rt_offset, rt_clusters, 0, 0)
    if version >= 3:
        order = refcount_bits.bit_length() - 1
        header += struct.pack(">QQQIIB7x", 0, 0, 0, order, header_length, 0)
    cluster0 = (header + extensions + backing_name).ljust(cs, b"\0")

    reftable = bytearray(rt_clusters * cs)
    for i in range(rb_clusters):
        struct.pack_into(">Q", reftable, i * 8, rb_offset + i * cs)
    refblocks = bytearray(rb_clusters * cs)
    for cluster in range(total):
        _set_packed(refblocks, cluster, 1, refcount_bits)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.pwrite(fd, cluster0 + bytes(reftable) + bytes(refblocks), 0)
        os.ftruncate(fd, total * cs)
        os.fsync(fd)
    finally:
        os.close(fd)


def _set_packed(buf: bytearray, index: int, value: int, bits: int) -> None:
    if bits >= 8:
        width = bits // 8
        buf[index * width:(index + 1) * width] = value.to_bytes(width, "big")
    else:
        per_byte = 8 // bits
        shift = (index % per_byte) * bits
        buf[index // per_byte] |= value << shift
