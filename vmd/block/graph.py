"""Building node graphs from ``-blockdev`` and ``-drive`` options.

Both forms are first turned into a :class:`NodeSpec` tree (settings resolved, children's
defaults inherited from their parents as QEMU's ``bdrv_inherited_options`` does), then one
opener builds the nodes in QEMU's order: a format node's ``file`` child first, then the node's
own options, its driver, its backing file. Errors carry QEMU 7.2's texts.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import tempfile
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from vmd.block.base import DISCARD_IGNORE, DISCARD_UNMAP, BlockError, BlockWarning, Node
from vmd.block.file import FileNode
from vmd.block.options import (
    FORMAT_DRIVERS, KEYVAL, PROTOCOL_DRIVERS, QEMU_DRIVERS, QEMUOPTS, SIZE_HINT, check_blockdev,
    guess_mode, nest_dotted, parse_bool, parse_number, parse_size,
)
from vmd.block.probe import PROBE_BYTES, RAW_PROBE_WARNING, probe_format
from vmd.block.qcow2 import Qcow2Node, create_qcow2
from vmd.block.raw import RawNode

Warn = Callable[[BlockWarning], None]
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()
#: a longer chain of backing files is refused (each level holds a file descriptor)
MAX_BACKING_DEPTH = 256
NODE_NAME_MAX = 31
_ID_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]*\Z")
#: QEMU protocols spelled as a filename prefix ("nbd:host:port"); vmd opens none of them
KNOWN_PROTOCOLS = ("nbd", "nbd+tcp", "nbd+unix", "http", "https", "ftp", "ftps", "ssh", "iscsi", "gluster",
                   "gluster+tcp", "gluster+unix", "gluster+rdma", "rbd", "nfs", "fat", "blkdebug", "blkverify",
                   "null-co", "null-aio", "nvme", "vvfat", "host_device", "host_cdrom", "file")


@dataclass
class NodeSpec:
    """One node to open, with every setting resolved."""

    driver: str | None  # None: probe the format (``-drive`` without ``format=``)
    origin: str = KEYVAL  # how the options were written: keyval, json or qemuopts
    node_name: str | None = None
    read_only: bool = False
    auto_read_only: bool = False
    direct: bool = False
    no_flush: bool = False
    discard: str = DISCARD_IGNORE
    discard_text: str | None = None  # -drive's discard=, parsed when the node opens
    detect_zeroes: str = "off"
    filename: str | None = None
    aio: str = "threads"
    file: Any = None  # NodeSpec, or the name of an existing node
    backing: Any = MISSING  # NodeSpec, a node name, None (no backing) or MISSING (from the image)
    offset: Any = None
    size: Any = None
    pass_discard_request: bool | None = None
    lazy_refcounts: bool | None = None
    encrypt_format: str | None = None
    data_file: Any = None
    defer_backing: bool = False  # a backing file: the chain below it is opened by the caller
    leftover: tuple = ()  # -drive options not taken yet; those the driver lacks are reported after it opens
    extra_bools: dict = field(default_factory=dict)  # QemuOpts booleans checked at open (-drive)


@dataclass(frozen=True)
class Inherited:
    read_only: bool = False
    auto_read_only: bool = False
    direct: bool = False
    no_flush: bool = False


def id_wellformed(name: str) -> bool:
    return bool(_ID_RE.match(name))


def path_protocol(filename: str) -> str | None:
    """The ``proto`` of ``proto:rest`` when the colon comes before any slash (QEMU's path_has_protocol)."""
    m = re.match(r"([^:/]*):", filename)
    return m.group(1) if m else None


# ----------------------------------------------------------------------------------------------
# -blockdev
# ----------------------------------------------------------------------------------------------
def _spec_from_blockdev(t: dict, inherited: Inherited, role: str, mode: str) -> NodeSpec:
    cache = t.get("cache", {})
    read_only = t.get("read-only", True if role == "backing" else inherited.read_only)
    spec = NodeSpec(
        driver=t["driver"], origin=mode, node_name=t.get("node-name"),
        read_only=read_only,
        auto_read_only=t.get("auto-read-only", False if role == "backing" else inherited.auto_read_only),
        direct=cache.get("direct", inherited.direct), no_flush=cache.get("no-flush", inherited.no_flush),
        # lower layers unmap what their parents let through (QEMU defaults children to discard=unmap)
        discard=t.get("discard", DISCARD_UNMAP if role == "file" else DISCARD_IGNORE),
        detect_zeroes=t.get("detect-zeroes", "off"),
        filename=t.get("filename"), aio=t.get("aio", "threads"),
        offset=t.get("offset"), size=t.get("size"),
        pass_discard_request=t.get("pass-discard-request"), lazy_refcounts=t.get("lazy-refcounts"),
        data_file=t.get("data-file"),
    )
    encrypt = t.get("encrypt")
    if isinstance(encrypt, dict) and isinstance(encrypt.get("format"), str):
        spec.encrypt_format = encrypt["format"]
    child_inherited = Inherited(spec.read_only, spec.auto_read_only, spec.direct, spec.no_flush)
    if "file" in t:
        spec.file = t["file"] if isinstance(t["file"], str) else \
            _spec_from_blockdev(t["file"], child_inherited, "file", mode)
    if "backing" in t:
        backing = t["backing"]
        spec.backing = _spec_from_blockdev(backing, child_inherited, "backing", mode) \
            if isinstance(backing, dict) else backing
    return spec


def open_blockdev(options: dict, nodes: dict[str, Any], *, mode: str | None = None,
                  warn: Warn | None = None) -> Node:
    """Open the node graph of one ``-blockdev`` (or QMP ``blockdev-add``).

    ``options`` is the entry as the configuration keeps it (nested ``file`` dicts, dotted
    ``file.filename`` keys, or ``file=<node-name>`` references into ``nodes``). ``mode`` says how it was written
    (``"keyval"``, ``"json"``); by default it is read from the entry's ``origin``. Every new
    node with a node-name is added to ``nodes`` once the whole graph has opened.
    """
    mode = mode or guess_mode(options)
    tree = {k: v for k, v in options.items() if k != "origin"}
    if any("." in k for k in tree):
        tree = nest_dotted(tree)  # flat "file.filename" keys, as a TOML table may spell them
    typed = check_blockdev(tree, mode)
    spec = _spec_from_blockdev(typed, Inherited(), "top", mode)
    opener = _Opener(nodes, warn)
    return opener.open_root(spec)


# ----------------------------------------------------------------------------------------------
# -drive
# ----------------------------------------------------------------------------------------------
#: -drive cache modes: (cache.writeback, cache.direct, cache.no-flush)
CACHE_MODES = {
    "writeback": (True, False, False),
    "none": (True, True, False),
    "off": (True, True, False),
    "writethrough": (False, False, False),
    "directsync": (False, True, False),
    "unsafe": (True, False, True),
}
#: options drive_settings leaves that still describe an empty drive (no file, no node options)
_DRIVE_ONLY = ("aio", "read-only", "detect-zeroes", "auto-read-only", "force-share")
_LEGACY_THROTTLING = ("iops", "iops_rd", "iops_wr", "iops_max", "iops_rd_max", "iops_wr_max", "iops_size",
                      "bps", "bps_rd", "bps_wr", "bps_max", "bps_rd_max", "bps_wr_max", "iops_max_length",
                      "iops_rd_max_length", "iops_wr_max_length", "bps_max_length", "bps_rd_max_length",
                      "bps_wr_max_length")
_PROTOCOL_KEYS = ("driver", "filename", "node-name", "discard", "cache", "read-only", "auto-read-only",
                  "force-share", "detect-zeroes", "locking", "aio", "aio-max-batch", "pr-manager", "drop-cache",
                  "x-check-cache-dropped")
_FORMAT_KEYS = {
    "raw": ("offset", "size"),
    "qcow2": ("backing", "lazy-refcounts", "pass-discard-request", "pass-discard-snapshot", "pass-discard-other",
              "overlap-check", "cache-size", "l2-cache-size", "l2-cache-entry-size", "refcount-cache-size",
              "cache-clean-interval", "encrypt", "data-file"),
}
_COMMON_KEYS = ("driver", "node-name", "discard", "cache", "read-only", "auto-read-only", "force-share",
                "detect-zeroes", "file")


@dataclass
class DriveSettings:
    """What ``-drive`` says about the drive itself, for the device that takes it."""

    id: str | None
    interface: str | None
    index: int | None
    bus: int | None
    unit: int | None
    media: str
    read_only: bool
    write_cache: bool
    werror: str
    rerror: str
    snapshot: bool
    copy_on_read: bool


def drive_settings(options: dict, warn: Warn | None = None) -> tuple[DriveSettings, dict]:
    """Check the drive-level options of a ``-drive``, in QEMU's order.

    Returns the settings and the remaining options (those of the drive's nodes), with the
    cache mode spelled out as ``cache.direct``/``cache.no-flush`` where not given.
    """
    o = {k: v for k, v in options.items() if k != "origin"}
    for key, value in o.items():
        if not isinstance(value, str):
            o[key] = "on" if value is True else "off" if value is False else str(value)
    if "readonly" in o:
        if "read-only" in o:
            raise BlockError("'read-only' and its alias 'readonly' can't be used at the same time")
        o["read-only"] = o.pop("readonly")
    for key in _LEGACY_THROTTLING:
        o.pop(key, None)  # accepted; vmd does not throttle
    write_cache = True
    if "cache" in o:
        mode = o.pop("cache")
        if mode not in CACHE_MODES:
            raise BlockError("invalid cache option")
        writeback, direct, no_flush = CACHE_MODES[mode]
        o.setdefault("cache.writeback", "on" if writeback else "off")
        o.setdefault("cache.direct", "on" if direct else "off")
        o.setdefault("cache.no-flush", "on" if no_flush else "off")
    numbers = {key: parse_number(o[key], key) for key in ("bus", "unit", "index") if key in o}
    copy_on_read = parse_bool(o["copy-on-read"], "copy-on-read") if "copy-on-read" in o else False
    read_only = parse_bool(o["read-only"], "read-only") if "read-only" in o else False
    media = o.get("media", "disk")
    if media not in ("disk", "cdrom"):
        raise BlockError(f"'{media}' invalid media")
    if read_only and copy_on_read:
        _emit(warn, BlockWarning("disabling copy-on-read on read-only drive"), options)
        copy_on_read = False
    interface = o.get("if")
    if interface is not None and interface not in ("none", "ide", "scsi", "floppy", "pflash", "mtd", "sd",
                                                   "virtio", "xen"):
        raise BlockError(f"unsupported bus type '{interface}'")
    if "index" in numbers and ("bus" in numbers or "unit" in numbers):
        raise BlockError("index cannot be used with bus and unit")
    snapshot = parse_bool(o["snapshot"], "snapshot") if "snapshot" in o else False
    aio = o.get("aio", "threads")
    if aio not in ("threads", "native", "io_uring"):
        raise BlockError("invalid aio option")
    detect = o.get("detect-zeroes", "off")
    if detect not in ("off", "on", "unmap"):
        raise BlockError(f"invalid parameter value: {detect}")
    werror = o.get("werror", "enospc")
    if werror not in ("ignore", "stop", "report", "enospc"):
        raise BlockError(f"'{werror}' invalid write error action")
    rerror = o.get("rerror", "report")
    if rerror not in ("ignore", "stop", "report"):
        raise BlockError(f"'{rerror}' invalid read error action")
    if "cache.writeback" in o:
        write_cache = parse_bool(o["cache.writeback"], "cache.writeback")
    if "format" in o and "driver" in o:
        raise BlockError("Cannot specify both 'driver' and 'format'")
    if media == "cdrom":
        read_only = True
    settings = DriveSettings(o.get("id"), interface, numbers.get("index"), numbers.get("bus"), numbers.get("unit"),
                             media, read_only, write_cache, werror, rerror, snapshot, copy_on_read)
    rest = {k: v for k, v in o.items()
            if k not in ("id", "if", "index", "bus", "unit", "media", "copy-on-read", "werror", "rerror",
                         "snapshot", "cache.writeback", "group")
            and not k.startswith("throttling.") and not k.startswith("stats-")}
    return settings, rest


def open_drive(options: dict, *, warn: Warn | None = None, nodes: dict[str, Any] | None = None) -> Node | None:
    """Open the node graph of one ``-drive``; ``None`` for a drive without a medium.

    The returned node carries the drive's read-only state and, for ``cache=writethrough`` and
    ``directsync``, flushes after every write. ``snapshot=on`` puts a temporary qcow2 overlay
    on top, deleted when the node closes (vmd unlinks it at once, so nothing is left behind
    even if vmd dies). Warnings (the probing warning) go to ``warn``, by default to stderr.
    """
    settings, o = drive_settings(options, warn)
    filename = o.pop("file", None)
    node_keys = [k for k in o if k not in _DRIVE_ONLY]
    if not filename and not node_keys:
        return None
    fmt = o.pop("format", None) or o.pop("driver", None)
    if fmt is not None and fmt not in QEMU_DRIVERS:
        raise BlockError(f"Unknown driver '{fmt}'")
    if "auto-read-only" in o:
        parse_bool(o["auto-read-only"], "auto-read-only")
    for key in ("cache.direct", "cache.no-flush", "force-share"):
        if key in o:
            parse_bool(o[key], key)
    if not filename and not fmt and not any(k == "filename" or k.startswith("file.") for k in o):
        raise BlockError("Must specify either driver or file")
    spec = _spec_from_drive(o, fmt, filename or None, settings)
    opener = _Opener(nodes if nodes is not None else {}, warn)
    node = opener.open_root(spec, probe_warning_name=filename)
    try:
        if settings.copy_on_read and isinstance(node, Qcow2Node):
            node.copy_on_read = True
        if settings.snapshot and not node.read_only:
            node = _temporary_overlay(node)
        node.writethrough = not settings.write_cache
    except BaseException:
        node.close()
        raise
    return node


def _spec_from_drive(o: dict, fmt: str | None, filename: str | None, settings: DriveSettings) -> NodeSpec:
    read_only = settings.read_only
    auto_read_only = parse_bool(o.pop("auto-read-only"), "auto-read-only") if "auto-read-only" in o else True
    direct = parse_bool(o.pop("cache.direct"), "cache.direct") if "cache.direct" in o else False
    no_flush = parse_bool(o.pop("cache.no-flush"), "cache.no-flush") if "cache.no-flush" in o else False
    o.pop("read-only", None)
    o.pop("force-share", None)
    aio = o.pop("aio", "threads")
    detect = o.pop("detect-zeroes", "off")
    tree = nest_dotted(o)
    file_opts = tree.pop("file", {})
    if not isinstance(file_opts, dict):
        file_opts = {}
    inherited = Inherited(read_only, auto_read_only, direct, no_flush)

    if fmt in PROTOCOL_DRIVERS:
        top_filename = tree.pop("filename", None)
        if filename is not None and top_filename is not None:
            raise BlockError("Can't specify 'file' and 'filename' options at the same time")
        spec = _protocol_spec(fmt, filename if filename is not None else top_filename, tree, inherited,
                              role="top", aio=aio)
        spec.detect_zeroes = detect
        return spec

    proto = _protocol_spec(file_opts.pop("driver", None), None, file_opts, inherited, role="file", aio=aio)
    file_filename = proto.filename
    if filename is not None and file_filename is not None:
        raise BlockError("Can't specify 'file' and 'filename' options at the same time")
    proto.filename = filename if filename is not None else file_filename
    spec = NodeSpec(driver=fmt, origin=QEMUOPTS, read_only=read_only, auto_read_only=auto_read_only,
                    direct=direct, no_flush=no_flush, detect_zeroes=detect, file=proto)
    spec.node_name = tree.pop("node-name", None)
    if "discard" in tree:
        spec.discard_text = tree.pop("discard")
    # the format's own options; with a probed format, the format found decides which are valid
    spec.offset, spec.size = tree.pop("offset", None), tree.pop("size", None)
    for key in ("lazy-refcounts", "pass-discard-request"):
        if key in tree:
            spec.extra_bools[key] = tree.pop(key)
    backing = tree.pop("backing", MISSING)
    if isinstance(backing, dict):
        backing = _drive_backing_spec(backing, inherited)
    elif backing == "":
        backing = None
    spec.backing = backing
    encrypt = tree.get("encrypt")
    if isinstance(encrypt, dict) and isinstance(encrypt.get("format"), str):
        spec.encrypt_format = encrypt["format"]
    if "data-file" in tree:
        spec.data_file = tree["data-file"]
    taken = [k for k, v in (("offset", spec.offset), ("size", spec.size)) if v is not None]
    taken += list(spec.extra_bools) + (["backing"] if backing is not MISSING else [])
    spec.leftover = tuple(taken + list(tree))
    if proto.filename is None and proto.driver in (None, "file", "host_device", "host_cdrom"):
        spec.file = None  # reported as QEMU does: a format needs a "file"
    return spec


def _drive_backing_spec(backing: dict, inherited: Inherited) -> NodeSpec:
    """``backing.driver=...,backing.file.filename=...`` on a -drive."""
    driver = backing.get("driver")
    sub = dict(backing)
    sub.pop("driver", None)
    if driver in PROTOCOL_DRIVERS:
        return _protocol_spec(driver, sub.pop("filename", None), sub, replace(inherited, read_only=True), "backing")
    file_opts = sub.pop("file", {})
    proto = _protocol_spec(file_opts.pop("driver", None) if isinstance(file_opts, dict) else None, None,
                           file_opts if isinstance(file_opts, dict) else {},
                           replace(inherited, read_only=True), "file")
    return NodeSpec(driver=driver, origin=QEMUOPTS, read_only=True, direct=inherited.direct,
                    no_flush=inherited.no_flush, file=proto)


def _protocol_spec(driver: str | None, filename: str | None, opts: dict, inherited: Inherited, role: str,
                   aio: str = "threads") -> NodeSpec:
    cache = opts.pop("cache", {}) if isinstance(opts.get("cache"), dict) else {}
    spec = NodeSpec(driver=driver, origin=QEMUOPTS,
                    read_only=parse_bool(opts.pop("read-only"), "read-only") if "read-only" in opts
                    else inherited.read_only,
                    auto_read_only=inherited.auto_read_only,
                    direct=parse_bool(cache["direct"], "cache.direct") if "direct" in cache else inherited.direct,
                    no_flush=parse_bool(cache["no-flush"], "cache.no-flush") if "no-flush" in cache
                    else inherited.no_flush,
                    discard=DISCARD_UNMAP if role == "file" else DISCARD_IGNORE,
                    filename=filename if filename is not None else opts.pop("filename", None),
                    aio=opts.pop("aio", aio))
    spec.node_name = opts.pop("node-name", None)
    if "discard" in opts:
        spec.discard_text = opts.pop("discard")
    if "detect-zeroes" in opts:
        spec.detect_zeroes = opts.pop("detect-zeroes")
    spec.leftover = tuple(opts)
    return spec


def _emit(warn: Warn | None, warning: BlockWarning, options: dict | None = None) -> None:
    if warn is not None:
        warn(warning)
    else:
        option = options.get("origin") if options else None
        sys.stderr.write(warning.render(option=option) + "\n")


def _temporary_overlay(base: Node) -> Node:
    """snapshot=on: a qcow2 overlay in $TMPDIR (else /var/tmp), as QEMU makes one."""
    directory = os.environ.get("TMPDIR") or "/var/tmp"
    path = os.path.join(directory, "vl.XXXXXX")
    try:
        fd, path = tempfile.mkstemp(prefix="vl.", dir=directory)
        os.close(fd)
        os.unlink(path)
        create_qcow2(path, base.size, backing_file=base.file_name(), backing_format=base.driver)
        child = FileNode(path, node_name=None, discard=DISCARD_UNMAP, no_flush=True)
    except OSError as err:
        raise BlockError(f"Could not create temporary overlay '{path}': {os.strerror(err.errno or 0)}") from None
    finally:
        if os.path.exists(path):
            os.unlink(path)
    try:
        overlay = Qcow2Node(child, discard=base.discard_mode, detect_zeroes=base.detect_zeroes, no_flush=True)
    except BaseException:
        child.close()
        raise
    overlay.owned = [child, base]
    overlay.backing = base
    return overlay


# ----------------------------------------------------------------------------------------------
# the opener
# ----------------------------------------------------------------------------------------------
class _Opener:
    def __init__(self, nodes: dict[str, Any], warn: Warn | None):
        self.nodes = nodes
        self.warn = warn
        self.named: dict[str, Node] = {}
        self.opened: list[Node] = []

    def open_root(self, spec: NodeSpec, probe_warning_name: str | None = None) -> Node:
        self.probe_warning_name = probe_warning_name
        try:
            node = self.open(spec, chain=())
        except BaseException:
            for node in reversed(self.opened):
                try:
                    node.close()
                except BlockError:
                    pass
            raise
        self.nodes.update(self.named)
        return node

    def lookup(self, name: str) -> Node:
        node = self.named.get(name) or self.nodes.get(name)
        if node is None:
            raise BlockError(f"Cannot find device='{name}' nor node-name='{name}'")
        return node

    def _name(self, name: str | None) -> None:
        if name is None:
            return
        if not isinstance(name, str) or not id_wellformed(name):
            raise BlockError(f"Invalid node-name: '{name}'")
        if name in self.nodes or name in self.named:
            raise BlockError(f"Duplicate nodes with node-name='{name}'")
        if len(name) > NODE_NAME_MAX:
            raise BlockError("Node name too long")

    def _common(self, spec: NodeSpec) -> None:
        """bdrv_open_common's checks: discard, detect-zeroes, node-name."""
        if spec.discard_text is not None:
            if spec.discard_text in ("off", "ignore"):
                spec.discard = DISCARD_IGNORE
            elif spec.discard_text in ("on", "unmap"):
                spec.discard = DISCARD_UNMAP
            else:
                raise BlockError("Invalid discard option")
        if spec.detect_zeroes not in ("off", "on", "unmap"):
            raise BlockError(f"Parameter 'detect-zeroes' does not accept value '{spec.detect_zeroes}'")
        if spec.detect_zeroes == "unmap" and spec.discard != DISCARD_UNMAP and spec.origin != QEMUOPTS:
            raise BlockError("setting detect-zeroes to unmap is not allowed without setting discard "
                             "operation to unmap")
        self._name(spec.node_name)

    def _register(self, spec: NodeSpec, node: Node) -> Node:
        self.opened.append(node)
        if spec.node_name:
            self.named[spec.node_name] = node
        if isinstance(node, FileNode):
            for key in spec.leftover:
                if key not in _PROTOCOL_KEYS:
                    raise BlockError(f"Block protocol '{node.driver}' doesn't support the option '{key}'")
        else:
            for key in spec.leftover:
                if key not in _FORMAT_KEYS.get(node.driver, ()):
                    raise BlockError(f"Block format '{node.driver}' does not support the option '{key}'")
        return node

    def open(self, spec: NodeSpec, chain: tuple) -> Node:
        driver = spec.driver
        if driver is not None and driver not in PROTOCOL_DRIVERS + FORMAT_DRIVERS:
            if driver not in QEMU_DRIVERS:
                raise BlockError(f"Unknown driver '{driver}'")
            raise BlockError(f"Block driver '{driver}' is not supported")
        if driver in PROTOCOL_DRIVERS or (driver is None and spec.file is None and spec.filename is not None):
            return self._open_protocol(spec)
        return self._open_format(spec, chain)

    def _open_protocol(self, spec: NodeSpec) -> Node:
        filename = spec.filename
        driver = spec.driver
        if filename is None:
            raise BlockError(f"The '{driver or 'file'}' block driver requires a file name")
        if driver is None:
            proto = path_protocol(filename)
            if proto is not None:
                if proto == "json":
                    raise BlockError("json: pseudo-protocol file names are not supported")
                if proto in KNOWN_PROTOCOLS:
                    raise BlockError(f"Protocol '{proto}' is not supported")
                raise BlockError(f"Unknown protocol '{proto}'")
            driver = "file"
            try:
                mode = os.stat(filename).st_mode
                if stat.S_ISBLK(mode) or stat.S_ISCHR(mode):
                    driver = "host_device"  # QEMU picks the device driver for device nodes
            except OSError:
                pass
        self._common(spec)
        node = FileNode(filename, driver, node_name=spec.node_name, read_only=spec.read_only,
                        auto_read_only=spec.auto_read_only, direct=spec.direct, no_flush=spec.no_flush,
                        discard=spec.discard, detect_zeroes=spec.detect_zeroes, aio=spec.aio)
        return self._register(spec, node)

    def _child(self, spec: NodeSpec, chain: tuple) -> tuple[Node, bool]:
        """The ``file`` child: (node, whether this graph owns it)."""
        if spec.file is None:
            raise BlockError('A block device must be specified for "file"')
        if isinstance(spec.file, str):
            return self.lookup(spec.file), False
        return self.open(spec.file, chain), True

    def _open_format(self, spec: NodeSpec, chain: tuple) -> Node:
        child, owned = self._child(spec, chain)
        try:
            driver = spec.driver
            probed = False
            if driver is None:
                driver = probe_format(child.pread(0, PROBE_BYTES), child.file_name())
                probed = True
                if driver == "raw":
                    name = self.probe_warning_name or child.file_name() or child.node_name
                    _emit(self.warn, BlockWarning(RAW_PROBE_WARNING.format(filename=name), located=False))
                elif driver not in FORMAT_DRIVERS:
                    raise BlockError(f"Image format '{driver}' of '{child.file_name()}' is not supported")
            self._common(spec)
            for key, value in spec.extra_bools.items():
                parse_bool(value, key)
            if driver == "raw":
                node = RawNode(child, node_name=spec.node_name, read_only=spec.read_only,
                               offset=self._size_option(spec.offset, "offset", spec.origin) or 0,
                               size=self._size_option(spec.size, "size", spec.origin), probed=probed,
                               discard=spec.discard, detect_zeroes=spec.detect_zeroes, no_flush=spec.no_flush)
            else:
                node = self._open_qcow2(spec, child, chain)
        except BaseException:
            if owned:
                child.close()
            raise
        if owned:
            node.owned.append(child)
        return self._register(spec, node)

    @staticmethod
    def _size_option(value: Any, name: str, origin: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, str):
            return parse_size(value, name)
        if value < 0 or value >= 1 << 64:
            raise BlockError(f"Parameter '{name}' expects a non-negative number below 2^64\n{SIZE_HINT}")
        return value

    def _open_qcow2(self, spec: NodeSpec, child: Node, chain: tuple) -> Qcow2Node:
        pass_discard = spec.pass_discard_request
        if "pass-discard-request" in spec.extra_bools:
            pass_discard = parse_bool(spec.extra_bools["pass-discard-request"], "pass-discard-request")
        node = Qcow2Node(child, node_name=spec.node_name, read_only=spec.read_only, discard=spec.discard,
                         detect_zeroes=spec.detect_zeroes, no_flush=spec.no_flush,
                         pass_discard_request=pass_discard)
        try:
            lazy = spec.lazy_refcounts
            if "lazy-refcounts" in spec.extra_bools:
                lazy = parse_bool(spec.extra_bools["lazy-refcounts"], "lazy-refcounts")
            if lazy and node.version < 3:
                raise BlockError("Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level")
            if spec.encrypt_format is not None:
                raise BlockError(f"No encryption in image header, but options specified format "
                                 f"'{spec.encrypt_format}'")
            if spec.data_file is not None:
                raise BlockError("'data-file' can only be set for images with an external data file")
            self._attach_backing(spec, node, chain)
        except BaseException:
            node.closed = True  # the caller closes the child
            if node.backing is not None and node.backing in node.owned:
                node.backing.close()
            raise
        return node

    def _attach_backing(self, spec: NodeSpec, node: Qcow2Node, chain: tuple) -> None:
        backing = spec.backing
        if spec.defer_backing:
            return  # the caller walks the chain
        try:
            if backing is None:
                return
            if isinstance(backing, str):
                node.backing = self.lookup(backing)
                return
            if isinstance(backing, NodeSpec):
                node.backing = self.open(backing, chain)
                node.owned.append(node.backing)
                return
        except BlockError as err:
            raise BlockError(f"Could not open backing file: {err.desc}") from None
        self._open_header_chain(node, spec, chain)

    def _open_header_chain(self, node: Qcow2Node, spec: NodeSpec, chain: tuple) -> None:
        """The backing files named in the images, one level at a time (chains can be long)."""
        current: Node = node
        identities = chain
        depth = 0
        while isinstance(current, Qcow2Node) and current.header.backing_file:
            depth += 1
            identities += (_identity(current.file_name()),)
            try:
                if len(identities) > MAX_BACKING_DEPTH:
                    raise BlockError(f"Backing chain of '{node.file_name()}' is longer than "
                                     f"{MAX_BACKING_DEPTH} images")
                backing = self._open_backing_file(current, current.header.backing_file, identities, spec)
            except BlockError as err:
                raise BlockError("Could not open backing file: " * depth + err.desc) from None
            current.backing = backing
            current.owned.append(backing)
            current = backing

    def _open_backing_file(self, node: Qcow2Node, name: str, identities: tuple, spec: NodeSpec) -> Node:
        proto_name = path_protocol(name)
        if proto_name is not None:
            if proto_name == "json":
                raise BlockError("json: pseudo-protocol file names are not supported")
            raise BlockError(f"Unknown protocol '{proto_name}'" if proto_name not in KNOWN_PROTOCOLS
                             else f"Protocol '{proto_name}' is not supported")
        base = node.file_name() or ""
        path = name if os.path.isabs(name) else os.path.join(os.path.dirname(base), name)
        me = _identity(path)
        if me is not None and me in identities:
            raise BlockError(f"Backing file chain loops: '{path}' is already part of it")
        proto = NodeSpec(driver=None, origin=spec.origin, read_only=True, direct=spec.direct,
                         no_flush=spec.no_flush, discard=DISCARD_UNMAP, filename=path)
        fmt = node.header.backing_format
        if fmt is not None and fmt not in QEMU_DRIVERS:
            raise BlockError(f"Unknown driver '{fmt}'")
        backing_spec = NodeSpec(driver=fmt, origin=spec.origin, read_only=True, direct=spec.direct,
                                no_flush=spec.no_flush, file=proto, defer_backing=True)
        # a backing file whose format is probed opens without the raw-probing warning, as in QEMU
        saved = self.warn, self.probe_warning_name
        self.warn, self.probe_warning_name = (lambda warning: None), None
        try:
            return self.open(backing_spec, identities)
        finally:
            self.warn, self.probe_warning_name = saved


def _identity(path: str | None) -> tuple[int, int] | None:
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino
