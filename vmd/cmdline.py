"""QEMU's command line, the s390x subset, and vmd's own options.

``vmd`` accepts the options of ``qemu-system-s390x`` that describe a machine
(``-M``, ``-m``, ``-smp``, ``-cpu``, ``-chardev``, ``-mon``, ``-qmp``,
``-device`` ...), with QEMU's syntax and QEMU's error texts, and turns them into
the raw input of :class:`vmd.config.Config` (the dict whose keys are the JSON
and TOML keys).  The same Config comes out of ``vmd --config vm.toml``.

Two entry points:

* :func:`parse_argv` reads argv.  It needs only the standard library at import
  time (this module is on the start-up path); pydantic-based modules are
  imported inside the functions that need them.
* :func:`build_config` validates the result into a :class:`~vmd.config.Config`
  and checks every ``-device`` against the device registry, so bad drivers and
  properties fail at start-up.

Errors are :class:`~vmd.errors.ConfigError` (rendered ``vmd: <option>: <text>``);
the CLI prints ``err.render()`` (or :func:`render_error`) to stderr and exits 1.

Three syntaxes live on QEMU's command line and all three are here:

* QemuOpts (``-device``, ``-chardev``, ``-mon``, ``-m``, ``-name``, ``-drive``,
  ``-netdev``, ``-object``, ``-accel``, ``-global``): ``key=value`` pairs
  separated by ``,``; ``,,`` is a literal comma; the first value may omit its
  key (the *implied* key: ``-device DRIVER``); a bare ``key`` means ``key=on``
  and ``nokey`` means ``key=off`` (deprecated: a warning is printed).
* keyval (``-M``, ``-smp``, ``-boot``, ``-display``, ``-blockdev``): like
  QemuOpts, but dotted keys build nested objects, a bare key is an error, and the
  implied value ends at the first comma.
* JSON (``-device``, ``-blockdev``, ``-netdev``, ``-object`` when the argument
  starts with ``{``), QEMU's dialect: single-quoted strings are allowed.
"""

from __future__ import annotations

import re
import socket
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, TextIO

from vmd.errors import ConfigError, VmdError

PROG = "vmd"

# ----------------------------------------------------------------------------------
# Facts about QEMU 7.2 (qemu-system-s390x)
# ----------------------------------------------------------------------------------

#: Every option qemu-system-s390x knows, and whether it takes an argument.
QEMU_OPTIONS: dict[str, bool] = {
    "h": False, "help": False, "version": False, "machine": True, "M": True, "cpu": True,
    "accel": True, "smp": True, "numa": True, "add-fd": True, "set": True, "global": True,
    "boot": True, "m": True, "mem-path": True, "mem-prealloc": False, "k": True,
    "audio-help": False, "audio": True, "audiodev": True, "device": True, "name": True,
    "uuid": True, "fda": True, "fdb": True, "hda": True, "hdb": True, "hdc": True,
    "hdd": True, "cdrom": True, "blockdev": True, "drive": True, "mtdblock": True,
    "sd": True, "pflash": True, "snapshot": False, "fsdev": True, "virtfs": True,
    "iscsi": True, "usb": False, "usbdevice": True, "display": True, "nographic": False,
    "spice": True, "portrait": False, "rotate": True, "vga": True, "full-screen": False,
    "vnc": True, "netdev": True, "nic": True, "net": True, "chardev": True, "tpmdev": True,
    "bios": True, "kernel": True, "append": True, "initrd": True, "dtb": True,
    "compat": True, "fw_cfg": True, "serial": True, "parallel": True, "monitor": True,
    "qmp": True, "qmp-pretty": True, "mon": True, "debugcon": True, "pidfile": True,
    "singlestep": False, "preconfig": False, "S": False, "overcommit": True, "gdb": True,
    "s": False, "d": True, "D": True, "dfilter": True, "seed": True, "L": True,
    "enable-kvm": False, "no-reboot": False, "no-shutdown": False, "action": True,
    "loadvm": True, "daemonize": False, "option-rom": True, "rtc": True, "icount": True,
    "watchdog-action": True, "echr": True, "incoming": True, "only-migratable": False,
    "nodefaults": False, "chroot": True, "runas": True, "sandbox": True, "readconfig": True,
    "no-user-config": False, "trace": True, "plugin": True, "async-teardown": False,
    "msg": True, "dump-vmstate": True, "enable-sync-profile": False, "object": True, "qtest": True,
    "qtest-log": True,
}
#: Options QEMU knows for other targets only ("Option not supported for this target").
OTHER_TARGET_OPTIONS: dict[str, bool] = {
    "no-acpi": False, "semihosting": False, "no-hpet": False, "win2k-hack": False,
    "no-fd-bootchk": False, "old-param": False, "xen-attach": False,
    "xen-domid-restrict": False, "smbios": True, "acpitable": True,
    "semihosting-config": True, "g": True, "prom-env": True, "xen-domid": True,
}
#: vmd's own options (no QEMU counterpart); the value says whether they take an argument.
VMD_OPTIONS: dict[str, bool] = {
    "config": True, "print-config": False, "api-listen": True, "token-file": True, "runtime-dir": True,
    "tn3270-listen": True,
}

#: The chardev option table of QEMU 7.2 (name -> QemuOpts type), as ``-chardev null,help`` lists it.
CHARDEV_KEYS: dict[str, str] = {
    "abstract": "bool", "append": "bool", "backend": "str", "chardev": "str", "clipboard": "bool",
    "cols": "number", "debug": "number", "delay": "bool", "fd": "str", "height": "number",
    "host": "str", "ipv4": "bool", "ipv6": "bool", "localaddr": "str", "localport": "str",
    "logappend": "bool", "logfile": "str", "mouse": "bool", "mux": "bool", "name": "str",
    "nodelay": "bool", "path": "str", "port": "str", "reconnect": "number", "rows": "number",
    "server": "bool", "signal": "bool", "size": "size", "telnet": "bool", "tight": "bool",
    "tls-authz": "str", "tls-creds": "str", "tn3270": "bool", "to": "number", "wait": "bool",
    "websocket": "bool", "width": "number",
}
#: Chardev backends vmd implements (QEMU has more; the others are "not a valid char driver name").
CHARDEV_BACKENDS = ("file", "null", "socket", "stdio")

#: s390x CPU models of QEMU 7.2, in ``-cpu help`` order: (name, description, flags).
_GENERATIONS = (
    ("z900", "IBM zSeries 900 GA1"), ("z900.2", "IBM zSeries 900 GA2"), ("z900.3", "IBM zSeries 900 GA3"),
    ("z800", "IBM zSeries 800 GA1"), ("z990", "IBM zSeries 990 GA1"), ("z990.2", "IBM zSeries 990 GA2"),
    ("z990.3", "IBM zSeries 990 GA3"), ("z890", "IBM zSeries 880 GA1"), ("z990.4", "IBM zSeries 990 GA4"),
    ("z890.2", "IBM zSeries 880 GA2"), ("z990.5", "IBM zSeries 990 GA5"), ("z890.3", "IBM zSeries 880 GA3"),
    ("z9EC", "IBM System z9 EC GA1"), ("z9EC.2", "IBM System z9 EC GA2"), ("z9BC", "IBM System z9 BC GA1"),
    ("z9EC.3", "IBM System z9 EC GA3"), ("z9BC.2", "IBM System z9 BC GA2"),
    ("z10EC", "IBM System z10 EC GA1"), ("z10EC.2", "IBM System z10 EC GA2"),
    ("z10BC", "IBM System z10 BC GA1"), ("z10EC.3", "IBM System z10 EC GA3"),
    ("z10BC.2", "IBM System z10 BC GA2"), ("z196", "IBM zEnterprise 196 GA1"),
    ("z196.2", "IBM zEnterprise 196 GA2"), ("z114", "IBM zEnterprise 114 GA1"),
    ("zEC12", "IBM zEnterprise EC12 GA1"), ("zEC12.2", "IBM zEnterprise EC12 GA2"),
    ("zBC12", "IBM zEnterprise BC12 GA1"), ("z13", "IBM z13 GA1"), ("z13.2", "IBM z13 GA2"),
    ("z13s", "IBM z13s GA1"), ("z14", "IBM z14 GA1"), ("z14.2", "IBM z14 GA2"),
    ("z14ZR1", "IBM z14 Model ZR1 GA1"), ("gen15a", "IBM z15 T01 GA1"), ("gen15b", "IBM z15 T02 GA1"),
    ("gen16a", "IBM 3931 GA1"), ("gen16b", "IBM 3932 GA1"),
)
CPU_MODELS: tuple[tuple[str, str, str], ...] = (
    ("qemu", "the model of the TCG emulator", "migration-safe"),
    ("max", "every feature the accelerator offers", ""),
    *((f"{n}{suffix}", d, flags) for n, d in _GENERATIONS
      for suffix, flags in (("-base", "static, migration-safe"), ("", "migration-safe"))),
)
#: "host" is valid with KVM only; vmd records it for the CPU model layer to decide.
CPU_MODEL_NAMES = frozenset(["host", *(m[0] for m in CPU_MODELS)])

#: ``-d`` log items of QEMU 7.2 (names only; the descriptions are vmd's).
LOG_ITEMS: dict[str, str] = {
    "out_asm": "generated host code of each translation block",
    "in_asm": "guest code of each translation block",
    "op": "micro ops of each translation block",
    "op_opt": "micro ops after optimisation",
    "op_ind": "micro ops before indirect lowering",
    "int": "interrupts and exceptions, one line each",
    "exec": "each executed translation block",
    "cpu": "CPU registers before each translation block",
    "fpu": "floating-point registers too (with cpu)",
    "mmu": "MMU activity",
    "pcall": "x86 only: protected-mode far calls",
    "cpu_reset": "CPU state before each CPU reset",
    "unimp": "unimplemented functionality the guest used",
    "guest_errors": "invalid things the guest did (e.g. accessing a non-existent register)",
    "page": "pages at the start of user-mode emulation",
    "nochain": "no chaining of translation blocks (complete exec/cpu traces)",
    "plugin": "output of TCG plugins",
}

DISPLAY_TYPES = ("default", "none", "gtk", "sdl", "egl-headless", "curses", "cocoa", "spice-app", "dbus")
_DISPLAY_COMMON = {"full-screen": "bool", "window-close": "bool", "show-cursor": "bool", "gl": "gl"}
_DISPLAY_EXTRA: dict[str, dict[str, str]] = {
    "gtk": {"grab-on-hover": "bool", "zoom-to-fit": "bool", "show-tabs": "bool"},
    "sdl": {"grab-mod": "str"},
    "egl-headless": {"rendernode": "str"},
    "curses": {"charset": "str"},
    "cocoa": {"left-command-key": "bool", "full-grab": "bool", "swap-opt-cmd": "bool"},
    "dbus": {"rendernode": "str", "addr": "str", "p2p": "bool", "audiodev": "str"},
}

#: QAPI BlockdevDriver of QEMU 7.2.
BLOCKDEV_DRIVERS = frozenset((
    "blkdebug", "blklogwrites", "blkreplay", "blkverify", "bochs", "cloop", "compress",
    "copy-before-write", "copy-on-read", "dmg", "file", "snapshot-access", "ftp", "ftps",
    "gluster", "host_cdrom", "host_device", "http", "https", "io_uring", "iscsi", "luks",
    "nbd", "nfs", "null-aio", "null-co", "nvme", "nvme-io_uring", "parallels", "preallocate",
    "qcow", "qcow2", "qed", "quorum", "raw", "rbd", "replication", "ssh", "throttle", "vdi",
    "vhdx", "vmdk", "vpc", "vvfat",
))
_BLOCKDEV_NEEDS_FILENAME = frozenset(("file", "host_cdrom", "host_device"))
_BLOCKDEV_NEEDS_FILE = frozenset((
    "raw", "qcow2", "qcow", "qed", "vdi", "vhdx", "vmdk", "vpc", "luks", "parallels", "bochs",
    "cloop", "dmg", "copy-on-read", "preallocate", "compress",
))
_BLOCKDEV_BASE_KEYS = ("driver", "node-name", "discard", "cache", "read-only", "auto-read-only", "force-share",
                      "detect-zeroes")
_BLOCKDEV_FILE_KEYS = ("filename", "pr-manager", "locking", "aio", "aio-max-batch", "drop-cache",
                       "x-check-cache-dropped")
#: the members QEMU 7.2 accepts for the drivers the seeds use (other drivers: not checked)
BLOCKDEV_KEYS: dict[str, frozenset[str]] = {
    "file": frozenset(_BLOCKDEV_BASE_KEYS + _BLOCKDEV_FILE_KEYS),
    "host_device": frozenset(_BLOCKDEV_BASE_KEYS + _BLOCKDEV_FILE_KEYS),
    "host_cdrom": frozenset(_BLOCKDEV_BASE_KEYS + _BLOCKDEV_FILE_KEYS),
    "raw": frozenset(_BLOCKDEV_BASE_KEYS + ("file", "offset", "size")),
    "qcow2": frozenset(_BLOCKDEV_BASE_KEYS + (
        "file", "backing", "lazy-refcounts", "pass-discard-request", "pass-discard-snapshot",
        "pass-discard-other", "overlap-check", "cache-size", "l2-cache-size", "l2-cache-entry-size",
        "refcount-cache-size", "cache-clean-interval", "encrypt", "data-file")),
}
NETDEV_TYPES = ("socket", "stream", "dgram", "hubport", "tap", "user", "l2tpv3", "vde",
                "bridge", "vhost-user", "vhost-vdpa")
#: -object types vmd accepts (its own s390-pv-guest and the QEMU 7.2 user-creatable types).
OBJECT_TYPES = (
    "authz-list", "authz-list-file", "authz-simple", "colo-compare", "cryptodev-backend",
    "cryptodev-backend-builtin", "cryptodev-vhost-user", "dbus-vmstate", "filter-buffer",
    "filter-dump", "filter-mirror", "filter-redirector", "filter-replay", "filter-rewriter",
    "input-barrier", "input-linux", "iothread", "main-loop", "memory-backend-file",
    "memory-backend-memfd", "memory-backend-ram", "pr-manager-helper", "rng-builtin",
    "rng-egd", "rng-random", "s390-pv-guest", "secret", "secret_keyring", "thread-context",
    "throttle-group", "tls-cipher-suites", "tls-creds-anon", "tls-creds-psk", "tls-creds-x509",
)
DRIVE_INTERFACES = ("none", "ide", "scsi", "floppy", "pflash", "mtd", "sd", "virtio", "xen")
ACCELERATORS = ("tcg", "kvm")
#: ``-accel help`` lists what vmd runs; "kvm" is accepted and recorded for the machine to judge.
ACCEL_HELP = ("tcg",)
S390_MAX_CPUS = 248
MACHINE_ALIAS = "s390-ccw-virtio"
MACHINE_DEFAULT_VERSION = "7.2"

_SIZE_HINT = ("Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
              "and exabytes, respectively.")
_ID_HINT = "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter."
_ID_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]*\Z")
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_TRUE = ("on", "yes", "true", "y")
_FALSE = ("off", "no", "false", "n")


# ----------------------------------------------------------------------------------
# Errors and warnings
# ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConfigWarning:
    """A warning QEMU prints and goes on (``<prog>: <option>: warning: <text>``)."""

    text: str
    option: str | None = None

    def render(self, prog: str = PROG) -> str:
        where = f"{self.option}: " if self.option else ""
        return f"{prog}: {where}warning: {self.text}"

    def __str__(self) -> str:
        return self.render()


class CmdlineError(ConfigError):
    """A command-line error, rendered exactly as QEMU prints it.

    ``before`` holds lines QEMU prints ahead of the final one (``-qmp foo`` gets
    "'foo' is not a valid char driver", then "parse error: foo"), each as
    (option, text); ``warnings`` are the warnings printed before the error.
    """

    def __init__(self, desc: str, option: str | None = None, *,
                 before: Iterable[tuple[str | None, str]] = (), warnings: Iterable[ConfigWarning] = ()):
        super().__init__(desc, option)
        self.before = list(before)
        self.warnings = list(warnings)

    def render(self, prog: str = PROG) -> str:
        lines = [w.render(prog) for w in self.warnings]
        lines += [ConfigError(desc, opt).render(prog) for opt, desc in self.before]
        lines.append(super().render(prog))
        return "\n".join(lines)


def render_error(err: BaseException, prog: str = PROG) -> str:
    """The text the CLI prints to stderr for an error (then it exits 1)."""
    if isinstance(err, ConfigError):
        return err.render(prog)
    if isinstance(err, VmdError):
        return f"{prog}: {err.desc}"
    pydantic = sys.modules.get("pydantic")  # a ValidationError means pydantic is loaded
    if pydantic is not None and isinstance(err, pydantic.ValidationError):
        return f"{prog}: {_validation_text(err)[0]}"
    return f"{prog}: {err}"


def _err(desc: str, option: str | None = None, **kw) -> CmdlineError:
    return CmdlineError(desc, option, **kw)


# ----------------------------------------------------------------------------------
# Value parsers (QEMU's rules)
# ----------------------------------------------------------------------------------
def parse_bool(text: str) -> bool | None:
    """QEMU's qapi_bool_parse: on/yes/true/y and off/no/false/n; None if neither."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def parse_number(text: str) -> int | None:
    """QEMU's qemu_strtou64(base 0): decimal, 0x hex, 0 octal; a '-' wraps around. None if bad."""
    t = text.lstrip(" \t\n\r\f\v")
    m = re.fullmatch(r"([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", t)
    if not m:
        return None
    sign, digits = m.groups()
    if digits[:2].lower() == "0x":
        n = int(digits, 16)
    elif digits.startswith("0"):
        n = int(digits, 8)
    else:
        n = int(digits)
    if n >= 1 << 64:
        return None
    return (-n) % (1 << 64) if sign == "-" else n


def parse_int(text: str) -> int | None:
    """A QAPI integer from a keyval string (decimal, 0x hex or 0 octal, signed). None if bad."""
    t = text.lstrip(" \t\n\r\f\v")
    m = re.fullmatch(r"([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", t)
    if not m:
        return None
    sign, digits = m.groups()
    n = int(digits, 16) if digits[:2].lower() == "0x" else int(digits, 8) if digits.startswith("0") else int(digits)
    return -n if sign == "-" else n


_SIZE_RE = re.compile(r"[ \t\n\r\f\v]*\+?(?:(0[xX][0-9a-fA-F]+)|(\d+)(?:\.(\d*))?)([bBkKmMgGtTpPeE]?)")
_SIZE_MUL = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50, "e": 1 << 60}


def qemu_strtosz(text: str, default_suffix: str = "") -> tuple[int | None, str | None]:
    """QEMU 7.2's qemu_strtosz: (bytes, None), or (None, "invalid"/"range"), or (bytes,
    "hex-suffix") for a hex number with a multiplier (accepted with a deprecation warning)."""
    m = _SIZE_RE.fullmatch(text)
    if not m:
        return None, "invalid"
    hexa, whole, frac, suffix = m.groups()
    mul = _SIZE_MUL[(suffix or default_suffix).lower()]
    note = None
    if hexa is not None:
        value = int(hexa, 16) * mul
        note = "hex-suffix" if suffix else None
    else:
        fraction = float("0." + frac) if frac else 0.0
        if mul == 1 and fraction:
            return None, "invalid"
        value = int(whole) * mul + int(fraction * mul)
    if value >= 1 << 64:
        return None, "range"
    return value, note


def parse_size(text: str, default_suffix: str = "") -> int | None:
    """A size in bytes (``4G``, ``512M``, ``1.5G``, ``0x1000``), or None when not one."""
    return qemu_strtosz(text, default_suffix)[0]


def id_wellformed(ident: str) -> bool:
    """QEMU's id_wellformed(): a letter, then letters, digits, '-', '.', '_'."""
    return bool(_ID_RE.match(ident))


def _size_error(name: str) -> str:
    return f"Parameter '{name}' expects a non-negative number below 2^64\n{_SIZE_HINT}"


# ----------------------------------------------------------------------------------
# QemuOpts
# ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class OptsList:
    """A QemuOptsList: its name (for messages), implied key, and key types (None: any key)."""

    name: str
    implied: str | None = None
    desc: dict[str, str] | None = None
    merge: bool = False


LIST_CHARDEV = OptsList("chardev", "backend", CHARDEV_KEYS)
LIST_DEVICE = OptsList("device", "driver")
LIST_MON = OptsList("mon", "chardev", {"mode": "str", "chardev": "str", "pretty": "bool"})
LIST_MEMORY = OptsList("memory", "size", {"size": "size", "slots": "number", "maxmem": "size"}, merge=True)
LIST_NAME = OptsList("name", "guest", {"guest": "str", "process": "str", "debug-threads": "bool"}, merge=True)
LIST_GLOBAL = OptsList("global", None, {"driver": "str", "property": "str", "value": "str"})
LIST_ACCEL = OptsList("accel", "accel")
LIST_DRIVE = OptsList("drive", None)
LIST_NETDEV = OptsList("netdev", "type")
LIST_OBJECT = OptsList("object", "qom-type")

_HELP_TYPES = {"str": "str", "bool": "bool (on/off)", "number": "num", "size": "size"}


def opts_list_help(lst: OptsList) -> str:
    """The text of ``qemu_opts_print_help``: ``<list> options:`` and one line per key."""
    rows = sorted(f"  {key}=<{_HELP_TYPES[kind]}>" for key, kind in (lst.desc or {}).items())
    return "\n".join([f"{lst.name} options:", *rows]) + "\n"


def _opt_value(params: str, pos: int) -> tuple[str, int]:
    """A value up to the next single comma; ``,,`` is a literal comma."""
    out = []
    n = len(params)
    while pos < n:
        ch = params[pos]
        if ch == ",":
            if pos + 1 < n and params[pos + 1] == ",":
                out.append(",")
                pos += 2
                continue
            break
        out.append(ch)
        pos += 1
    return "".join(out), pos


def _name_value(params: str, pos: int, firstname: str | None):
    """One ``name=value``, implied value or flag, as QEMU's get_opt_name_value reads it.

    Returns (name, value, next_pos, flag) where flag is None or the flag's prefix
    ("" or "no").
    """
    n = len(params)
    end = pos
    while end < n and params[end] not in "=,":
        end += 1
    flag = None
    if end >= n or params[end] != "=":
        if firstname:
            name = firstname
            value, pos = _opt_value(params, pos)
        else:
            name = params[pos:end]
            pos = end
            if name.startswith("no"):
                name, value, flag = name[2:], "off", "no"
            else:
                value, flag = "on", ""
    else:
        name = params[pos:end]
        value, pos = _opt_value(params, end + 1)
    if pos < n and params[pos] == ",":
        pos += 1
    return name, value, pos, flag


def _flag_warning(prefix: str, name: str, value: str) -> str:
    if name == "delay":
        hint = f"Please use nodelay={'on' if prefix else 'off'} instead"
    else:
        hint = f"Please use {name}={value} instead"
    return f"short-form boolean option '{prefix}{name}' deprecated\n{hint}"


def _check_opt_value(lst: OptsList, name: str, value: str) -> str | None:
    """QemuOpts' opt_validate: the error text for a bad key or value, else None."""
    if lst.desc is None:
        return None
    kind = lst.desc.get(name)
    if kind is None:
        return f"Invalid parameter '{name}'"
    if kind == "bool" and parse_bool(value) is None:
        return f"Parameter '{name}' expects 'on' or 'off'"
    if kind == "number" and parse_number(value) is None:
        return f"Parameter '{name}' expects a number"
    if kind == "size":
        size, note = qemu_strtosz(value)
        if note == "range":
            return f"Value '{value}' is out of range for parameter '{name}'"
        if size is None:
            return _size_error(name)
    return None


class _HelpWanted(Exception):
    pass


def _opts_do_parse(lst: OptsList, params: str, values: dict[str, str], option: str | None,
                   warnings: list[ConfigWarning] | None, *, firstname: str | None,
                   warn_on_flag: bool, help_ok: bool) -> None:
    pos = 0
    while pos < len(params):
        name, value, pos, flag = _name_value(params, pos, firstname)
        is_help = flag == "" and name in ("help", "?")
        if flag is not None and not is_help and warn_on_flag and warnings is not None:
            warnings.append(ConfigWarning(_flag_warning(flag, name, value), option))
        if is_help and help_ok and lst.desc is not None:
            raise _HelpWanted()
        firstname = None
        if name == "id":
            continue
        problem = _check_opt_value(lst, name, value)
        if problem:
            raise _err(problem, option)
        if lst.desc is not None and lst.desc.get(name) == "size" and warnings is not None \
                and qemu_strtosz(value)[1] == "hex-suffix":
            warnings.append(ConfigWarning(f"Using a multiplier suffix on hex numbers is deprecated: {value}", option))
        values[name] = value


def _opts_parse_id(params: str) -> str | None:
    pos = 0
    while pos < len(params):
        name, value, pos, _flag = _name_value(params, pos, None)
        if name == "id":
            return value
    return None


def parse_opts(params: str, implied: str | None = None, *, lst: OptsList | None = None,
               option: str | None = None, warnings: list[ConfigWarning] | None = None,
               permit_abbrev: bool = True) -> tuple[str | None, dict[str, str]]:
    """Parse a QemuOpts string: returns (id, {key: value}).  Later keys win.

    ``lst`` gives the list's name, implied key and key types (default: any key,
    ``implied`` as the implied key).

    :raises CmdlineError: with QEMU's text.
    :raises _HelpWanted: when ``help`` is given to a list with known keys.
    """
    lst = lst or OptsList("opts", implied)
    ident = _opts_parse_id(params)
    if ident is not None and lst.merge:
        raise _err("Invalid parameter 'id'", option)
    if ident is not None and not id_wellformed(ident):
        raise _err(f"Parameter 'id' expects an identifier\n{_ID_HINT}", option)
    values: dict[str, str] = {}
    _opts_do_parse(lst, params, values, option, warnings,
                   firstname=lst.implied if permit_abbrev else None, warn_on_flag=True, help_ok=True)
    return ident, values


def format_opts(values: dict[str, str], implied: str | None = None) -> str:
    """Render ``{key: value}`` as a QemuOpts/keyval string, doubling commas in values.

    With ``implied``, that key's value comes first without ``key=``.
    """
    parts = []
    items = list(values.items())
    if implied is not None and implied in values:
        parts.append(values[implied].replace(",", ",,"))
        items = [(k, v) for k, v in items if k != implied]
    parts += [f"{k}={v.replace(',', ',,')}" for k, v in items]
    return ",".join(parts)


# ----------------------------------------------------------------------------------
# keyval
# ----------------------------------------------------------------------------------
def _qapi_name_len(s: str, pos: int) -> int:
    """Length of a QAPI name at ``pos`` (QEMU's parse_qapi_name with complete=false), or 0."""
    p = pos
    n = len(s)
    if p < n and s[p] == "_":
        p += 1
        if p >= n or s[p] != "_":
            return 0
        p += 1
        while p < n and (s[p].isascii() and (s[p].isalnum() or s[p] in "-.")):
            p += 1
        if p >= n or s[p] != "_":
            return 0
        p += 1
    if p >= n or not (s[p].isascii() and s[p].isalpha()):
        return 0
    p += 1
    while p < n and s[p].isascii() and (s[p].isalnum() or s[p] in "-_"):
        p += 1
    return p - pos


def _keyval_put(cur: dict, key: str, value: Any, full_key: str, start: int, upto: int, option: str | None):
    old = cur.get(key)
    if old is not None:
        if isinstance(old, dict) != (value is None):
            raise _err(f"Parameters '{full_key[start:upto]}.*' used inconsistently", option)
        if value is None:
            return old
    new = {} if value is None else value
    cur[key] = new
    return new


def _keyval_parse_one(qdict: dict, params: str, pos: int, implied: str | None,
                      allow_help: bool, option: str | None) -> tuple[int, bool]:
    n = len(params)
    end = pos
    while end < n and params[end] not in "=,":
        end += 1
    length = end - pos
    key_text = params
    key_start = pos
    val_end = None
    if length and (end >= n or params[end] != "="):
        if allow_help and params[pos:end] in ("help", "?"):
            return (end + 1 if end < n else end), True
        if implied:
            key_text, key_start, val_end = implied, 0, end
            length = len(implied)
    key_end = key_start + length
    cur = qdict
    s = key_start
    key_in_cur = None
    while True:
        if s != key_start and s < len(key_text) and key_text[s].isdigit():
            m = re.match(r"\d+", key_text[s:])
            flen = m.end() if m else 0
        else:
            flen = _qapi_name_len(key_text, s)
        if not flen or (s + flen < key_end and key_text[s + flen] != "."):
            raise _err(f"Invalid parameter '{key_text[key_start:key_end]}'", option)
        if flen >= 128:
            frag = " fragment" if s != key_start or s + flen != key_end else ""
            raise _err(f"Parameter{frag} '{key_text[s:s + flen]}' is too long", option)
        if key_in_cur is not None:
            cur = _keyval_put(cur, key_in_cur, None, key_text, key_start, s - 1, option)
        key_in_cur = key_text[s:s + flen]
        s += flen
        if s >= key_end or key_text[s] != ".":
            break
        s += 1
    if val_end is not None:
        value = params[pos:val_end]
        s = val_end + 1 if val_end < n and params[val_end] == "," else val_end
    else:
        if s >= n or params[s] != "=":
            raise _err(f"Expected '=' after parameter '{params[key_start:s]}'", option)
        value, s = _opt_value(params, s + 1)
        if s < n and params[s] == ",":
            s += 1
    _keyval_put(cur, key_in_cur, value, key_text, key_start, key_end, option)  # type: ignore[arg-type]
    return s, False


def _keyval_listify(cur: dict, path: list[str], option: str | None) -> Any:
    has_index = has_member = False
    for key, value in list(cur.items()):
        if key.isdigit():
            has_index = True
        else:
            has_member = True
        if isinstance(value, dict):
            cur[key] = _keyval_listify(value, [*path, key], option)
    if has_index and has_member:
        raise _err(f"Parameters '{''.join(p + '.' for p in path)}*' used inconsistently", option)
    if not has_index:
        return cur
    items = {int(k): v for k, v in cur.items()}
    for i in range(len(items)):
        if i not in items:
            raise _err(f"Parameter '{''.join(p + '.' for p in path)}{i}' missing", option)
    return [items[i] for i in range(len(items))]


def keyval_parse(params: str, implied: str | None = None, *, option: str | None = None,
                 allow_help: bool = False) -> tuple[dict, bool]:
    """Parse a keyval string (QEMU's keyval_parse): returns (nested dict, help wanted).

    Dotted keys build nested dicts, all-numeric fragments lists; later values win.
    """
    qdict: dict = {}
    pos = 0
    help_wanted = False
    while pos < len(params):
        pos, wanted = _keyval_parse_one(qdict, params, pos, implied, allow_help, option)
        help_wanted = help_wanted or wanted
        implied = None
    return _keyval_listify(qdict, [], option), help_wanted


# ----------------------------------------------------------------------------------
# JSON, QEMU's dialect (single-quoted strings too)
# ----------------------------------------------------------------------------------
class _JsonError(Exception):
    pass


_JSON_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")


class _Json:
    def __init__(self, text: str):
        self.s = text
        self.i = 0

    def ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t\r\n":
            self.i += 1

    def peek(self) -> str:
        self.ws()
        if self.i >= len(self.s):
            raise _JsonError("JSON parse error, premature EOI")
        return self.s[self.i]

    def value(self) -> Any:
        ch = self.peek()
        if ch == "{":
            return self.obj()
        if ch == "[":
            return self.arr()
        if ch in "\"'":
            return self.string()
        if ch == "-" or ch.isdigit():
            m = _JSON_NUMBER.match(self.s, self.i)
            if not m:
                raise _JsonError(f"JSON parse error, stray '{ch}'")
            self.i = m.end()
            text = m.group()
            return float(text) if any(c in text for c in ".eE") else int(text)
        if ch.isalpha():
            m = re.compile(r"[A-Za-z]+").match(self.s, self.i)
            word = m.group()  # type: ignore[union-attr]
            self.i = m.end()  # type: ignore[union-attr]
            if word in ("true", "false", "null"):
                return {"true": True, "false": False, "null": None}[word]
            raise _JsonError(f"JSON parse error, invalid keyword '{word}'")
        if ch in "}],:":
            raise _JsonError("JSON parse error, expecting value")
        raise _JsonError(f"JSON parse error, stray '{ch}'")

    def string(self) -> str:
        quote = self.s[self.i]
        self.i += 1
        out = []
        while True:
            if self.i >= len(self.s):
                raise _JsonError("JSON parse error, premature EOI")
            ch = self.s[self.i]
            if ch == quote:
                self.i += 1
                return "".join(out)
            if ch == "\\":
                nxt = self.s[self.i + 1: self.i + 2]
                if nxt in _JSON_ESCAPES:
                    out.append(_JSON_ESCAPES[nxt])
                    self.i += 2
                    continue
                if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", self.s[self.i + 2:self.i + 6]):
                    code = int(self.s[self.i + 2:self.i + 6], 16)
                    self.i += 6
                    low = self.s[self.i:self.i + 6]
                    if 0xD800 <= code < 0xDC00 and re.fullmatch(r"\\u[dD][c-fC-F][0-9a-fA-F]{2}", low):
                        code = 0x10000 + ((code - 0xD800) << 10) + (int(low[2:], 16) - 0xDC00)
                        self.i += 6
                    out.append(chr(code))
                    continue
                if not nxt:
                    raise _JsonError("JSON parse error, premature EOI")
                raise _JsonError("JSON parse error, invalid escape sequence in string")
            out.append(ch)
            self.i += 1

    def obj(self) -> dict:
        self.i += 1
        out: dict = {}
        if self.peek() == "}":
            self.i += 1
            return out
        while True:
            if self.peek() not in "\"'":
                if self.peek() in "}],:":
                    raise _JsonError("JSON parse error, expecting value")
                self.value()
                raise _JsonError("JSON parse error, key is not a string in object")
            key = self.string()
            if self.peek() != ":":
                raise _JsonError("JSON parse error, missing : in object pair")
            self.i += 1
            out[key] = self.value()
            ch = self.peek()
            self.i += 1
            if ch == "}":
                return out
            if ch != ",":
                raise _JsonError("JSON parse error, expected separator in dict")

    def arr(self) -> list:
        self.i += 1
        out: list = []
        if self.peek() == "]":
            self.i += 1
            return out
        while True:
            out.append(self.value())
            ch = self.peek()
            self.i += 1
            if ch == "]":
                return out
            if ch != ",":
                raise _JsonError("JSON parse error, expected separator in list")


def _json_lex_check(text: str) -> None:
    """QEMU's lexer runs ahead of its parser: stray characters, bad escapes and an
    unterminated string are reported before any grammar error."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "\"'":
            j = i + 1
            while j < n and text[j] != ch:
                if text[j] == "\\":
                    nxt = text[j + 1:j + 2]
                    if nxt and nxt not in _JSON_ESCAPES and nxt != "u":
                        raise _JsonError("JSON parse error, invalid escape sequence in string")
                    j += 1
                j += 1
            if j >= n:
                raise _JsonError(f"JSON parse error, stray '{text[i:]}'")
            i = j + 1
            continue
        if not (ch in " \t\r\n{}[],:+-." or ch.isascii() and ch.isalnum()):
            raise _JsonError(f"JSON parse error, stray '{ch}'")
        i += 1


def parse_json(text: str, option: str | None = None) -> Any:
    """One JSON value in QEMU's dialect, with QEMU's parse-error texts."""
    parser = _Json(text)
    try:
        _json_lex_check(text)
        value = parser.value()
        parser.ws()
        if parser.i < len(text):
            raise _JsonError("Expecting at most one JSON value")
    except _JsonError as err:
        raise _err(str(err), option) from None
    return value


# ----------------------------------------------------------------------------------
# The result
# ----------------------------------------------------------------------------------
@dataclass
class Action:
    """Something to print instead of starting a VM: help, version, the resolved config.

    ``text`` goes to stdout, then vmd exits with ``exit_code``.  For
    ``print-config`` the text is made by :func:`perform_actions` (it needs the
    validated Config).
    """

    kind: str
    text: str = ""
    exit_code: int = 0
    #: makes the text when it is printed (the device registry imports pydantic)
    make: Callable[[], str] | None = field(default=None, repr=False)

    def render(self) -> str:
        return self.make() if self.make is not None else self.text


@dataclass
class ParsedCommandLine:
    """What :func:`parse_argv` found.

    * ``raw``: the Config input (alias keys, as in JSON/TOML); empty when
      ``is_empty``.
    * ``actions``: help/version/print-config requests, in the order to honour
      them; only the first is performed.
    * ``vmd_options``: vmd's own long options as given (``config``,
      ``print-config``, ``api-listen``, ``token-file``, ``runtime-dir``).
    * ``is_empty``: no machine option at all (neither QEMU options nor
      ``--config``): vmd runs its embedded demo VM (:func:`vmd.config.embedded_default`).
    * ``warnings``: deprecation warnings to print to stderr (``str(w)``).
    """

    raw: dict[str, Any] = field(default_factory=dict)
    actions: list[Action] = field(default_factory=list)
    vmd_options: dict[str, Any] = field(default_factory=dict)
    is_empty: bool = True
    warnings: list[ConfigWarning] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------
# The parser
# ----------------------------------------------------------------------------------
class _Stop(Exception):
    """An option that prints something and ends parsing at once (``-M help``)."""

    def __init__(self, action: Action):
        self.action = action


@dataclass
class _Chardev:
    ident: str | None
    opts: dict[str, str]
    origin: str


class _Parser:
    def __init__(self) -> None:
        self.warnings: list[ConfigWarning] = []
        self.deferred: list[Action] = []
        self.machine: dict[str, Any] = {}
        self.machine_origin: str | None = None
        self.machine_accel_origin: str | None = None
        self.memory: dict[str, str] = {}
        self.memory_origin: str | None = None
        self.smp_origin: str | None = None
        self.name: dict[str, str] = {}
        self.accels: list[tuple[str | None, str]] = []
        self.cpu: tuple[str, str] | None = None
        self.chardevs: list[_Chardev] = []
        self.chardev_ids: set[str] = set()
        self.monitors: list[dict[str, Any]] = []
        self.monitor_ids: set[str] = set()
        self.monitor_index = 0
        self.serials: list[tuple[str, str]] = []
        self.serial_monitors: list[dict[str, Any]] = []
        #: a monitor option was given, "-monitor none" too: no default monitor (with_default_consoles)
        self.monitor_given = False
        self.devices: list[dict[str, Any]] = []
        self.json_devices: list[dict[str, Any]] = []
        self.device_ids: set[str] = set()
        self.drives: list[dict[str, Any]] = []
        self.drive_ids: set[str] = set()
        self.blockdevs: list[dict[str, Any]] = []
        self.netdevs: list[dict[str, Any]] = []
        self.netdev_ids: set[str] = set()
        self.objects: list[dict[str, Any]] = []
        self.object_ids: set[str] = set()
        self.globals: list[dict[str, Any]] = []
        self.top: dict[str, Any] = {}

    # -- helpers -------------------------------------------------------------
    def opts(self, lst: OptsList, arg: str, option: str, *, permit_abbrev: bool = True,
             known_ids: set[str] | None = None) -> tuple[str | None, dict[str, str]]:
        try:
            ident, values = parse_opts(arg, lst=lst, option=option, warnings=self.warnings,
                                       permit_abbrev=permit_abbrev)
        except _HelpWanted:
            raise _Stop(Action("opts-help", opts_list_help(lst), 1)) from None
        if ident is not None and known_ids is not None:
            if ident in known_ids:
                raise _err(f"Duplicate ID '{ident}' for {lst.name}", option)
            known_ids.add(ident)
        return ident, values

    def keyval_machine(self, subkey: str | None, arg: str, option: str, implied: str,
                       help_list: OptsList | None) -> None:
        """A keyval option that QEMU merges into the machine options (-smp, -boot)."""
        parsed, wanted = keyval_parse(arg, implied, option=option, allow_help=True)
        if wanted and help_list is not None:
            raise _Stop(Action("opts-help", opts_list_help(help_list), 0))
        _keyval_merge(self.machine, parsed if subkey is None else {subkey: parsed}, [], option)

    # -- option handlers -----------------------------------------------------
    def handle(self, name: str, arg: str | None, option: str) -> None:
        handler = getattr(self, "opt_" + name.replace("-", "_"), None)
        if handler is None:
            raise _err("Option not supported in this build", option)
        handler(arg, option)

    def opt_nic(self, arg, option):
        """-nic none: no default network card (vmd creates none anyway); NICs come with netboot."""
        if arg.split(",", 1)[0] != "none":
            raise _err("Option not supported in this build", option)

    def opt_h(self, arg, option):
        raise _Stop(Action("help", help_text()))

    opt_help = opt_h

    def opt_version(self, arg, option):
        raise _Stop(Action("version", version_text()))

    def opt_machine(self, arg: str, option: str) -> None:
        parsed, wanted = keyval_parse(arg, "type", option=option, allow_help=True)
        _keyval_merge(self.machine, parsed, [], option)
        self.machine_origin = option
        if wanted:
            raise _Stop(Action("machine-help", machine_help(self.machine.get("type"))))
        if "accel" in parsed:
            self.machine_accel_origin = option

    opt_M = opt_machine

    def opt_cpu(self, arg: str, option: str) -> None:
        if arg in ("help", "?"):
            # QEMU answers -cpu help before -device help, wherever it stands
            self.deferred.insert(0, Action("cpu-list", cpu_help()))
            return
        self.cpu = (arg, option)

    def opt_accel(self, arg: str, option: str) -> None:
        _ident, values = self.opts(LIST_ACCEL, arg, option)
        accel = values.get("accel")
        if accel is None or accel in ("help", "?"):
            raise _Stop(Action("accel-help", "Accelerators supported in vmd:\n"
                               + "".join(f"{a}\n" for a in ACCEL_HELP)))
        self.accels.append((option, accel))

    def opt_enable_kvm(self, arg, option):
        self.machine["accel"] = "kvm"
        self.machine_accel_origin = option

    def opt_smp(self, arg: str, option: str) -> None:
        self.keyval_machine("smp", arg, option, "cpus", OptsList(
            "smp-opts", "cpus", {k: "number" for k in ("cpus", "sockets", "dies", "clusters", "cores",
                                                       "threads", "maxcpus")}))
        self.smp_origin = option

    def opt_boot(self, arg: str, option: str) -> None:
        self.keyval_machine("boot", arg, option, "order", OptsList("boot-opts", "order", {
            "order": "str", "once": "str", "menu": "bool", "splash": "str", "splash-time": "number",
            "reboot-timeout": "number", "strict": "bool"}))

    def opt_m(self, arg: str, option: str) -> None:
        _ident, values = self.opts(LIST_MEMORY, arg, option)
        self.memory.update(values)
        self.memory_origin = option

    def opt_name(self, arg: str, option: str) -> None:
        _ident, values = self.opts(LIST_NAME, arg, option)
        self.name.update(values)

    def opt_uuid(self, arg: str, option: str) -> None:
        if not _UUID_RE.match(arg):
            raise _err("failed to parse UUID string: wrong format", option)
        self.top["uuid"] = arg.lower()

    def opt_global(self, arg: str, option: str) -> None:
        m = re.match(r"([^.=]{1,63})\.([^=]{1,63})=", arg)
        if m:
            self.globals.append({"driver": m.group(1), "property": m.group(2), "value": arg[m.end():],
                                 "origin": option})
            return
        _ident, values = self.opts(LIST_GLOBAL, arg, option, permit_abbrev=False)
        if not all(k in values for k in ("driver", "property", "value")):
            raise _err("options 'driver', 'property', and 'value' are required", option)
        self.globals.append({**{k: values[k] for k in ("driver", "property", "value")}, "origin": option})

    def opt_device(self, arg: str, option: str) -> None:
        if arg.startswith("{"):
            obj = parse_json(arg, option)
            if not isinstance(obj, dict):  # pragma: no cover - QEMU asserts here
                raise _err("Parameter 'driver' is missing", option)
            self.json_devices.append({**obj, "origin": option})
            return
        ident, values = self.opts(LIST_DEVICE, arg, option, known_ids=self.device_ids)
        driver = values.pop("driver", None)
        wants_help = values.get("help") == "on" or values.get("?") == "on"
        if driver in ("help", "?"):
            self.deferred.append(Action("device-list", make=_devices_help))
            return
        if driver is not None and wants_help:
            self.deferred.append(Action("device-help", make=lambda: _device_help(driver, option)))
            return
        entry: dict[str, Any] = {}
        if driver is not None:
            entry["driver"] = driver
        if ident is not None:
            entry["id"] = ident
        entry.update(values)
        entry["origin"] = option
        self.devices.append(entry)

    def opt_chardev(self, arg: str, option: str) -> None:
        ident, values = self.opts(LIST_CHARDEV, arg, option, known_ids=self.chardev_ids)
        if values.get("backend") in ("help", "?"):
            text = "Available chardev backend types: " + "".join(f"\n  {b}" for b in CHARDEV_BACKENDS) + "\n"
            self.deferred.append(Action("chardev-list", text))
            return
        self.chardevs.append(_Chardev(ident, values, option))

    def opt_mon(self, arg: str, option: str) -> None:
        self.monitor_given = True
        ident, values = self.opts(LIST_MON, arg, option, known_ids=self.monitor_ids)
        self.monitors.append({"values": values, "origin": option, "ident": ident})

    def _monitor(self, arg: str, option: str, mode: str, pretty: bool) -> None:
        self.monitor_given = True
        if arg.startswith("chardev:"):
            label = arg[len("chardev:"):]
        else:
            label = f"compat_monitor{self.monitor_index}"
            self._compat_chardev(label, arg, option, after=f"parse error: {arg}")
        if label in self.monitor_ids:
            raise _err(f"Duplicate ID '{label}' for mon", option)
        self.monitor_ids.add(label)
        values = {"mode": mode, "chardev": label}
        if mode == "control":
            values["pretty"] = "on" if pretty else "off"
        self.monitors.append({"values": values, "origin": option, "ident": label})
        self.monitor_index += 1

    def opt_qmp(self, arg: str, option: str) -> None:
        self._monitor(arg, option, "control", False)

    def opt_qmp_pretty(self, arg: str, option: str) -> None:
        self._monitor(arg, option, "control", True)

    def opt_monitor(self, arg: str, option: str) -> None:
        self.monitor_given = True
        if not arg.startswith("none"):  # QEMU compares the first four characters only
            self._monitor(arg, option, "readline", False)

    def opt_serial(self, arg: str, option: str) -> None:
        self.serials.append((arg, option))

    def _compat_chardev(self, label: str, spec: str, option: str, *, after: str) -> None:
        """QEMU's legacy chardev syntax (``unix:PATH,server=on``, ``tcp:HOST:PORT``, ``stdio`` ...)."""
        if label in self.chardev_ids:
            raise _err(after, option, before=[(option, f"Duplicate ID '{label}' for chardev")])
        values = compat_chardev_opts(spec, option, after)
        self.chardev_ids.add(label)
        self.chardevs.append(_Chardev(label, values, option))

    def opt_drive(self, arg: str, option: str) -> None:
        ident, values = self.opts(LIST_DRIVE, arg, option, permit_abbrev=False, known_ids=self.drive_ids)
        entry: dict[str, Any] = {}
        if ident is not None:
            entry["id"] = ident
        entry.update(values)
        self.drives.append({**entry, "origin": option})

    def _legacy_drive(self, arg: str, option: str, index: int, media: str) -> None:
        """-hda..-hdd and -cdrom: QEMU's shorthand for ``-drive file=ARG,index=N,media=M``."""
        self.drives.append({"file": arg, "index": str(index), "media": media, "origin": option})

    def opt_hda(self, arg: str, option: str) -> None:
        self._legacy_drive(arg, option, 0, "disk")

    def opt_hdb(self, arg: str, option: str) -> None:
        self._legacy_drive(arg, option, 1, "disk")

    def opt_hdc(self, arg: str, option: str) -> None:
        self._legacy_drive(arg, option, 2, "disk")

    def opt_hdd(self, arg: str, option: str) -> None:
        self._legacy_drive(arg, option, 3, "disk")

    def opt_cdrom(self, arg: str, option: str) -> None:
        self._legacy_drive(arg, option, 2, "cdrom")

    def opt_blockdev(self, arg: str, option: str) -> None:
        if arg.startswith("{"):
            obj = parse_json(arg, option)
            if not isinstance(obj, dict):
                raise _err("Invalid parameter type for 'None', expected: object", option)
        else:
            obj, _wanted = keyval_parse(arg, "driver", option=option)
        driver = obj.get("driver")
        if driver is None:
            raise _err("Parameter 'driver' is missing", option)
        if not isinstance(driver, str) or driver not in BLOCKDEV_DRIVERS:
            raise _err(f"Parameter 'driver' does not accept value '{driver}'", option)
        if driver in _BLOCKDEV_NEEDS_FILENAME and "filename" not in obj:
            raise _err("Parameter 'filename' is missing", option)
        if driver in _BLOCKDEV_NEEDS_FILE and "file" not in obj:
            raise _err("Parameter 'file' is missing", option)
        allowed = BLOCKDEV_KEYS.get(driver)
        for key in obj:
            if allowed is not None and key not in allowed:
                raise _err(f"Parameter '{key}' is unexpected", option)
        node = obj.get("node-name")
        if node is None:
            raise _err("'node-name' must be specified for the root node", option)
        if not isinstance(node, str) or not id_wellformed(node):
            raise _err(f"Invalid node-name: '{node}'", option)
        if any(b.get("node-name") == node for b in self.blockdevs):
            raise _err(f"Duplicate nodes with node-name='{node}'", option)
        if len(node) >= 32:
            raise _err("Node name too long", option)
        self.blockdevs.append({**obj, "origin": option})

    def opt_netdev(self, arg: str, option: str) -> None:
        if arg.startswith("{"):
            obj = parse_json(arg, option)
            values = dict(obj) if isinstance(obj, dict) else {}
            ident = values.pop("id", None)
        elif arg.split(",", 1)[0] in ("stream", "dgram", "type=stream", "type=dgram"):
            # QEMU 7.2 parses the new stream and dgram backends with keyval
            values, _wanted = keyval_parse(arg, "type", option=option)
            ident = values.pop("id", None)
        else:
            ident, values = self.opts(LIST_NETDEV, arg, option)
        if ident is not None and ident in self.netdev_ids:
            raise _err(f"Duplicate ID '{ident}' for netdev", option)
        ntype = values.get("type")
        if ntype in ("help", "?"):
            raise _Stop(Action("netdev-list", "Available netdev backend types:\n"
                               + "".join(f"{t}\n" for t in NETDEV_TYPES)))
        if ntype is None:
            raise _err("Parameter 'type' is missing", option)
        if ntype not in NETDEV_TYPES:
            raise _err(f"Parameter 'type' does not accept value '{ntype}'", option)
        if ident is None:
            raise _err("Parameter 'id' is missing", option)
        if ntype == "stream" and "addr" not in values:
            raise _err("Parameter 'addr' is missing", option)
        self.netdev_ids.add(ident)
        self.netdevs.append({"type": ntype, "id": ident,
                             **{k: v for k, v in values.items() if k != "type"}, "origin": option})

    def opt_object(self, arg: str, option: str) -> None:
        if arg.startswith("{"):
            obj = parse_json(arg, option)
            values = dict(obj) if isinstance(obj, dict) else {}
            ident = values.pop("id", None)
        else:
            ident, values = self.opts(LIST_OBJECT, arg, option, known_ids=self.object_ids)
        qom_type = values.get("qom-type")
        if qom_type is None:
            raise _err("Parameter 'qom-type' is missing", option)
        if qom_type in ("help", "?"):
            raise _Stop(Action("object-list", "List of user creatable objects:\n"
                               + "".join(f"  {t}\n" for t in OBJECT_TYPES)))
        if values.get("help") == "on" or values.get("?") == "on":
            raise _Stop(Action("object-help", f"There are no options for {qom_type}.\n"))
        if qom_type not in OBJECT_TYPES:
            raise _err(f"Parameter 'qom-type' does not accept value '{qom_type}'", option)
        if ident is None:
            raise _err("Parameter 'id' is missing", option)
        self.objects.append({"qom-type": qom_type, "id": ident,
                             **{k: v for k, v in values.items() if k != "qom-type"}, "origin": option})

    def opt_display(self, arg: str, option: str) -> None:
        if arg in ("help", "?"):
            raise _Stop(Action("display-list", "Available display backend types:\nnone\n"))
        if arg.startswith("vnc"):
            if not arg.startswith("vnc="):
                raise _err("VNC requires a display argument vnc=<display>", option)
            raise _err("VNC support is disabled", option)
        values, _wanted = keyval_parse(arg, "type", option=option)
        dtype = values.get("type")
        if dtype is None:
            raise _err("Parameter 'type' is missing", option)
        if dtype not in DISPLAY_TYPES:
            raise _err(f"Parameter 'type' does not accept value '{dtype}'", option)
        allowed = {**_DISPLAY_COMMON, **_DISPLAY_EXTRA.get(dtype, {})}
        for key, value in values.items():
            if key == "type":
                continue
            kind = allowed.get(key)
            if kind is None:
                raise _err(f"Parameter '{key}' is unexpected", option)
            if kind == "bool" and (not isinstance(value, str) or parse_bool(value) is None):
                raise _err(f"Parameter '{key}' expects 'on' or 'off'", option)
            if kind == "gl" and value not in ("off", "on", "core", "es"):
                raise _err(f"Parameter '{key}' does not accept value '{value}'", option)
        self.top["display"] = values

    def opt_nographic(self, arg, option):
        self.machine["graphics"] = "off"
        self.top["nographic"] = True
        self.top["display"] = {"type": "none"}

    def opt_S(self, arg, option):
        self.top["start-paused"] = True

    def opt_no_shutdown(self, arg, option):
        self.top["no-shutdown"] = True

    def opt_nodefaults(self, arg, option):
        self.top["nodefaults"] = True

    def opt_no_user_config(self, arg, option):
        pass  # vmd reads no default configuration file

    def opt_kernel(self, arg, option):
        self.machine["kernel"] = arg

    def opt_initrd(self, arg, option):
        self.machine["initrd"] = arg

    def opt_append(self, arg, option):
        self.machine["append"] = arg

    def opt_bios(self, arg, option):
        self.machine["firmware"] = arg

    def opt_D(self, arg, option):
        self.top["log-file"] = arg

    def opt_d(self, arg, option):
        self.top["log-items"] = (arg, option)

    # -- the end of the command line -----------------------------------------
    def early_checks(self) -> None:
        """What QEMU checks right after reading argv, before answering -cpu/-device help."""
        if "kernel" not in self.machine:
            if "append" in self.machine:
                raise _err("-append only allowed with -kernel option")
            if "initrd" in self.machine:
                raise _err("-initrd only allowed with -kernel option")
        log = self.top.get("log-items")
        if log is not None:
            items = log[0].split(",")
            if not all(i in LOG_ITEMS or (i.startswith("trace:") and len(i) > 6) for i in items):
                raise _Stop(Action("log-help", log_help(), 1))

    def finish(self) -> dict[str, Any]:
        """Turn what the options said into Config input, with QEMU's later checks in QEMU's order."""
        raw: dict[str, Any] = {}
        top = dict(self.top)
        log = top.pop("log-items", None)
        if log is not None:
            raw["log-items"] = log[0].split(",")
        display = top.pop("display", None)
        raw.update(top)
        if "guest" in self.name:
            raw["name"] = self.name["guest"]
        mdict = dict(self.machine)
        if self.memory:
            # QEMU's parse_memory_options: a size without a suffix is in MiB; 0 means the default
            mem: dict[str, Any] = {}
            size = self.memory.get("size")
            if size is not None and parse_size(size):
                mem["size"] = size + "M" if size[-1:].isdigit() else size
            if "maxmem" in self.memory:
                mem["max-size"] = self.memory["maxmem"]
            if "slots" in self.memory:
                mem["slots"] = self.memory["slots"]
            _keyval_merge(mdict, {"memory": mem}, [], None)
        mtype = mdict.get("type")
        if mtype is not None and (not isinstance(mtype, str) or not machine_type_ok(mtype)):
            raise _err("unsupported machine type\nUse -machine help to list supported machines")
        if display is not None:
            raw["display"] = _display_type(display)
        chardevs = self._finish_chardevs()
        machine, extra = machine_dict_to_raw(mdict, self.machine_origin)
        if "memory" in extra and (self.memory_origin or self.machine_origin):
            extra["memory"]["origin"] = self.memory_origin or self.machine_origin
        if "smp" in extra:
            if self.smp_origin or self.machine_origin:
                extra["smp"]["origin"] = self.smp_origin or self.machine_origin
            extra["smp"] = resolve_smp(extra["smp"], mtype, self.warnings)
        if "boot" in extra:
            self._check_boot(extra["boot"])
        raw.update(extra)
        self._finish_accel(machine)
        if machine:
            raw["machine"] = machine
        monitors = self._finish_monitors()
        check_monitors(chardevs, monitors)
        serial = self._finish_serials(chardevs)
        monitors += self.serial_monitors
        if self.cpu is not None:
            raw["cpu"] = parse_cpu_option(*self.cpu)
        for drive in self.drives:
            iface = drive.get("if")
            if iface is not None and iface not in DRIVE_INTERFACES:
                raise _err(f"unsupported bus type '{iface}'", drive["origin"])
            if iface not in (None, "none", "virtio"):
                # the s390-ccw-virtio machine has no IDE, SCSI, floppy or flash controller to put it on
                bus, unit = drive.get("bus", "0"), drive.get("unit", drive.get("index", "0"))
                raise _err(f"machine type does not support if={iface},bus={bus},unit={unit}", drive["origin"])
        # QEMU's default interface on this machine is virtio: each such drive gets its own
        # virtio-blk device, after the -device ones; unnamed ones are virtio<unit>, the unit being
        # the index given or the first one free
        implicit = []
        units: set[int] = set()
        for drive in self.drives:
            if drive.get("if", "virtio") != "virtio":
                continue
            given = drive.get("index", drive.get("unit"))
            unit = int(given) if given is not None and str(given).isdigit() else min(
                set(range(len(units) + 1)) - units)
            units.add(unit)
            if "id" not in drive:
                drive["id"] = f"virtio{unit}"
            implicit.append({"driver": "virtio-blk", "drive": drive["id"], "origin": drive["origin"]})
        # QEMU creates the -device KEY=VALUE devices first, then the JSON ones
        devices = [*self.devices, *self.json_devices, *implicit]
        for entry in devices:
            if "driver" not in entry:
                raise _err("Parameter 'driver' is missing", entry["origin"])
        for key, items in (("chardev", chardevs), ("monitor", monitors), ("serial", serial),
                           ("device", devices), ("drive", self.drives), ("blockdev", self.blockdevs),
                           ("netdev", self.netdevs), ("object", self.objects), ("global", self.globals)):
            if items:
                raw[key] = items
        # -serial (even "none") and the monitor options turn QEMU's -nographic consoles off, so
        # the configuration says they were given although they add nothing
        if self.serials:
            raw.setdefault("serial", serial)
        if self.monitor_given:
            raw.setdefault("monitor", monitors)
        return raw

    def _check_boot(self, boot: dict[str, Any]) -> None:
        """-boot on s390x: the IPL device is the one with the lowest bootindex (docs: bootdevices.rst).

        once= fails with QEMU 7.2's text; order= QEMU ignores silently, which vmd says.
        """
        if "once" in boot:
            raise _err("no function defined to set boot device list for this architecture")
        if "order" in boot:
            self.warnings.append(ConfigWarning(
                "boot order is not supported on s390x and is ignored; mark the IPL device with bootindex=N",
                f"-boot order={boot['order']}"))

    def _finish_chardevs(self) -> list[dict[str, Any]]:
        out = []
        stdio_users = 0
        for chardev in self.chardevs:
            entry = chardev_to_raw(chardev.ident, chardev.opts, chardev.origin)
            if entry["backend"] == "stdio":
                stdio_users += 1
                if stdio_users > 1:
                    raise _err("cannot use stdio by multiple character devices", chardev.origin)
            out.append(entry)
        return out

    def _finish_serials(self, chardevs: list[dict[str, Any]]) -> list[str]:
        """-serial: chardevs serial0, serial1 ... made after all the others (QEMU's order)."""
        ids: list[str] = []
        for spec, option in self.serials:
            if spec == "none":
                continue
            if spec.startswith("chardev:"):
                cid = spec[len("chardev:"):]
                if not any(c["id"] == cid for c in chardevs):
                    raise _err(f"could not connect serial device to character backend '{spec}'", option)
                ids.append(cid)
                continue
            label = f"serial{len(ids)}"
            after = f"could not connect serial device to character backend '{spec}'"
            if any(c["id"] == label for c in chardevs):
                raise _err(after, option, before=[(option, f"Duplicate ID '{label}' for chardev")])
            values = compat_chardev_opts(spec, option, after)
            try:
                entry = chardev_to_raw(label, values, option)
            except CmdlineError as err:
                raise _err(after, option, before=[(option, err.desc)]) from None
            if entry["backend"] == "stdio" and any(c["backend"] == "stdio" for c in chardevs):
                raise _err(after, option, before=[(option, "cannot use stdio by multiple character devices")])
            chardevs.append(entry)
            ids.append(label)
            if values.get("mux") == "on":
                # "mon:DEV": QEMU puts an HMP monitor on the muxed chardev
                self.serial_monitors.append({"chardev": label, "mode": "readline", "pretty": False,
                                             "origin": option})
        return ids

    def _finish_monitors(self) -> list[dict[str, Any]]:
        out = []
        for mon in self.monitors:
            values, origin = mon["values"], mon["origin"]
            mode = values.get("mode", "readline")
            if mode not in ("readline", "control"):
                raise _err(f"Parameter 'mode' does not accept value '{mode}'", origin)
            if "chardev" not in values:
                raise _err("Parameter 'chardev' is missing", origin)
            pretty = bool(parse_bool(values.get("pretty", "off")))
            out.append({"chardev": values["chardev"], "mode": mode, "pretty": pretty, "origin": origin})
        return out

    def _finish_accel(self, machine: dict[str, Any]) -> None:
        if self.accels and self.machine_accel_origin is not None:
            raise _err('The -accel and "-machine accel=" options are incompatible')
        if self.accels:
            for option, accel in self.accels:
                if accel not in ACCELERATORS:
                    raise _err(f"invalid accelerator {accel}", option)
            machine["accel"] = ":".join(a for _o, a in self.accels)


def _display_type(display: dict[str, Any]) -> str:
    """The display vmd runs: "none" only (QEMU's texts for the others)."""
    dtype = display.get("type", "none")
    if dtype == "default":
        dtype = "none"
    if dtype != "none":
        raise _err(f"Display '{dtype}' is not available.")
    if display.get("gl", "off") != "off":
        raise _err("OpenGL is not supported by the display")
    return dtype


def check_monitors(chardevs: list[dict[str, Any]], monitors: list[dict[str, Any]]) -> None:
    """Each monitor's chardev must exist and be free (or muxed); pretty is for QMP only."""
    by_id = {c.get("id"): c for c in chardevs}
    used: dict[str, int] = {}
    for mon in monitors:
        cid, origin = mon.get("chardev"), mon.get("origin")
        if cid not in by_id:
            raise _err(f'chardev "{cid}" not found', origin)
        if mon.get("pretty") and mon.get("mode", "readline") == "readline":
            raise _err("'pretty' is not compatible with HMP monitors", origin)
        used[cid] = used.get(cid, 0) + 1
        if used[cid] > 1 and not by_id[cid].get("mux"):
            raise _err(f"Device '{cid}' is in use", origin)


def _keyval_merge(dst: dict, src: dict, path: list[str], option: str | None) -> None:
    """QEMU's keyval_merge: nested dicts merge, later scalars win, shapes must agree."""
    for key, value in src.items():
        old = dst.get(key)
        if isinstance(value, dict):
            if old is None:
                dst[key] = {}
                old = dst[key]
            elif not isinstance(old, dict):
                raise _err(f"Parameters '{''.join(p + '.' for p in path)}{key}.*' used inconsistently", option)
            _keyval_merge(old, value, [*path, key], option)
        else:
            if isinstance(old, dict):
                raise _err(f"Parameters '{''.join(p + '.' for p in path)}{key}.*' used inconsistently", option)
            dst[key] = value


def _devices_help() -> str:
    from vmd.devices import registry  # pydantic-based: import lazily

    return registry.devices_help()


def _device_help(driver: str, option: str) -> str:
    from vmd.devices import registry

    try:
        cls = registry.lookup(driver)
    except VmdError as err:
        raise CmdlineError(err.desc, option) from None
    return registry.device_help(cls)


# ----------------------------------------------------------------------------------
# Legacy chardev syntax and chardev options
# ----------------------------------------------------------------------------------
def compat_chardev_opts(spec: str, option: str | None, after: str | None) -> dict[str, str]:
    """QEMU's qemu_chr_parse_compat: the chardev options a legacy spec stands for.

    :raises CmdlineError: "'X' is not a valid char driver" (then ``after``, as QEMU
        prints "parse error: X" for -qmp/-monitor).
    """
    def fail(first: str | None = None) -> CmdlineError:
        before = [(option, first)] if first else []
        return _err(after or "parse error", option, before=before)

    values: dict[str, str] = {}
    filename = spec
    if filename.startswith("mon:"):
        filename = filename[4:]
        values["mux"] = "on"
        if filename == "stdio":
            values["signal"] = "off"
    if filename in ("null", "pty", "msmouse", "wctablet", "braille", "testdev", "stdio"):
        values["backend"] = filename
        return values
    if filename.startswith("vc"):
        values["backend"] = "vc"
        rest = filename[2:]
        if rest.startswith(":"):
            m = re.match(r"(\d{1,7})x(\d{1,7})", rest[1:])
            mc = re.match(r"(\d{1,7})Cx(\d{1,7})C", rest[1:])
            if m:
                values.update(width=m.group(1), height=m.group(2))
            elif mc:
                values.update(cols=mc.group(1), rows=mc.group(2))
            else:
                raise fail()
        return values
    if filename == "con:":
        return {**values, "backend": "console"}
    if filename.startswith("COM"):
        return {**values, "backend": "serial", "path": filename}
    for prefix, backend in (("file:", "file"), ("pipe:", "pipe"), ("pty:", "pty")):
        if filename.startswith(prefix):
            return {**values, "backend": backend, "path": filename[len(prefix):]}
    for prefix in ("tcp:", "telnet:", "tn3270:", "websocket:"):
        if filename.startswith(prefix):
            p = filename[len(prefix):]
            m = re.match(r"([^:]{1,64}):([^,]{1,32})", p)
            if m:
                host, port, pos = m.group(1), m.group(2), m.end()
            else:
                m = re.match(r":([^,]{1,32})", p)
                if not m:
                    raise fail()
                host, port, pos = "", m.group(1), m.end()
            values.update(backend="socket", host=host, port=port)
            if pos < len(p) and p[pos] == ",":
                try:
                    _opts_do_parse(LIST_CHARDEV, p[pos + 1:], values, option, None,
                                   firstname=None, warn_on_flag=False, help_ok=False)
                except CmdlineError as err:
                    raise fail(err.desc) from None
            if prefix != "tcp:":
                values[prefix[:-1]] = "on"
            return values
    if filename.startswith("udp:"):
        values["backend"] = "udp"
        p = filename[4:]
        m = re.match(r"([^:]{1,64}):([^@,]{1,32})", p) or re.match(r"():([^@,]{1,32})", p)
        if not m:
            raise fail()
        values.update(host=m.group(1), port=m.group(2))
        return values
    if filename.startswith("unix:"):
        values["backend"] = "socket"
        try:
            _opts_do_parse(LIST_CHARDEV, filename[5:], values, option, None,
                           firstname="path", warn_on_flag=False, help_ok=False)
        except CmdlineError as err:
            raise fail(err.desc) from None
        return values
    if filename.startswith(("/dev/parport", "/dev/ppi")):
        return {**values, "backend": "parallel", "path": filename}
    if filename.startswith("/dev/"):
        return {**values, "backend": "serial", "path": filename}
    raise fail(f"'{filename}' is not a valid char driver")


_UNSUPPORTED_CHARDEV_KEYS = {
    "socket": ("fd", "to", "tls-authz", "logfile", "logappend", "localaddr", "localport"),
    "stdio": ("logfile", "logappend"),
    "null": ("logfile", "logappend"),
    "file": ("logfile", "logappend"),
}


def _port_number(host: str, port: str, option: str | None) -> int:
    if port.isdigit() and int(port) <= 65535:
        return int(port)
    if not port.isdigit():
        try:
            return socket.getservbyname(port, "tcp")
        except OSError:
            pass
    raise _err(f"address resolution failed for {host}:{port}: Servname not supported for ai_socktype", option)


def chardev_to_raw(ident: str | None, values: dict[str, str], origin: str | None) -> dict[str, Any]:
    """Chardev options (strings, as parsed) -> a Config ``chardev`` entry, with QEMU's creation errors."""
    if ident is None:
        raise _err("chardev: no id specified", origin)
    backend = values.get("backend")
    if backend is None:
        raise _err(f'chardev: "{ident}" missing backend', origin)
    if backend not in CHARDEV_BACKENDS:
        raise _err(f"'{backend}' is not a valid char driver name", origin)

    def flag(key: str, default: bool | None = None) -> bool | None:
        return default if key not in values else parse_bool(values[key])

    for key in _UNSUPPORTED_CHARDEV_KEYS[backend]:
        if key in values:
            raise _err(f"Parameter '{key}' is not supported by vmd's {backend} chardev", origin)
    entry: dict[str, Any] = {"backend": backend, "id": ident}
    if flag("mux"):
        entry["mux"] = True
    if backend == "socket":
        path, host, port = values.get("path"), values.get("host"), values.get("port")
        if (path is not None) + (host is not None) + ("fd" in values) > 1:
            raise _err("None or one of 'path', 'fd' or 'host' option required.", origin)
        if host is not None and port is None:
            raise _err("chardev: socket: no port given", origin)
        if "delay" in values and "nodelay" in values:
            raise _err("'delay' and 'nodelay' are mutually exclusive", origin)
        if path is None and host is None:
            raise _err("Unable to parse FD number ", origin)
        server = bool(flag("server", False))
        reconnect = parse_number(values["reconnect"]) if "reconnect" in values else None
        if reconnect and server:
            raise _err("'reconnect' option is incompatible with socket in server listen mode", origin)
        if path is not None:
            entry["path"] = path
            if flag("abstract"):
                entry["abstract"] = True
        else:
            entry["host"] = host
            entry["port"] = _port_number(host, port, origin)  # type: ignore[arg-type]
            for key in ("ipv4", "ipv6"):
                if key in values:
                    entry[key] = flag(key)
        entry["server"] = server
        entry["wait"] = bool(flag("wait", True))
        for key in ("telnet", "tn3270", "websocket"):
            if flag(key):
                entry[key] = True
        if "nodelay" in values or "delay" in values:
            entry["nodelay"] = bool(flag("nodelay", False)) or flag("delay", True) is False
        if reconnect:
            entry["reconnect"] = reconnect
        if "tls-creds" in values:
            entry["tls-creds"] = values["tls-creds"]
    elif backend == "file":
        if "path" not in values:
            raise _err("chardev: file: no filename given", origin)
        entry["path"] = values["path"]
        if flag("append"):
            entry["append"] = True
    elif backend == "stdio":
        if "signal" in values:
            entry["signal"] = bool(flag("signal"))
    entry["origin"] = origin
    return entry


# ----------------------------------------------------------------------------------
# -M and the machine properties (-m, -smp, -boot, -kernel ... land here too)
# ----------------------------------------------------------------------------------
_MACHINE_BOOL_PROPS = ("aes-key-wrap", "dea-key-wrap", "dump-guest-core", "mem-merge", "graphics", "usb",
                       "zpcii-disable")
_MACHINE_STR_PROPS = ("confidential-guest-support", "memory-backend")
_MACHINE_IGNORED = ("suppress-vmdesc",)
_MACHINE_UNSUPPORTED = ("dtb", "dumpdtb", "dt-compatible", "phandle-start", "memory-encryption")
_BOOT_KEYS = {"order": "str", "once": "str", "menu": "bool", "splash": "str", "splash-time": "int",
              "reboot-timeout": "int", "strict": "bool"}
_SMP_KEYS = ("cpus", "sockets", "dies", "clusters", "cores", "threads", "maxcpus")


def machine_versions() -> tuple[str, ...]:
    from vmd.config import MACHINE_VERSIONS  # pydantic-based module: import lazily

    return MACHINE_VERSIONS


def machine_class_name(mtype: str | None) -> str:
    """QEMU's machine name behind a type or alias (``s390-ccw-virtio`` -> ``s390-ccw-virtio-7.2``)."""
    if mtype in (None, MACHINE_ALIAS):
        return f"{MACHINE_ALIAS}-{MACHINE_DEFAULT_VERSION}"
    return mtype  # type: ignore[return-value]


def machine_type_ok(mtype: str) -> bool:
    return mtype == MACHINE_ALIAS or mtype in machine_versions()


def _dashify(mdict: dict) -> dict:
    out: dict = {}
    for key, value in mdict.items():
        new = key.replace("_", "-")
        if new != key and new in mdict:
            raise _err(f"Conflict between '{key}' and '{new}'")
        out[new] = value
    return out


def _machine_loadparm(value: str) -> str:
    """The s390 machine's loadparm: the first 8 characters, upper-cased, from [A-Z0-9. ]."""
    out = value[:8].upper()
    for ch in out:
        if not (ch.isascii() and (ch.isalnum() or ch in ". ")):
            raise _err(f"LOADPARM: invalid character '{ch}' (ASCII 0x{ord(ch):02x})")
    return out


def machine_dict_to_raw(mdict: dict, origin: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The merged machine options -> (Config ``machine`` entry, other Config keys).

    Errors are QEMU's texts for machine properties (printed without an option:
    QEMU applies them after reading the whole command line).
    """
    mdict = dict(mdict)
    mtype = mdict.pop("type", None)
    if mtype is not None and (not isinstance(mtype, str) or not machine_type_ok(mtype)):
        raise _err("unsupported machine type\nUse -machine help to list supported machines")
    cls = f"{machine_class_name(mtype)}-machine"
    mdict = _dashify(mdict)
    machine: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if mtype is not None:
        machine["type"] = mtype
    for key, value in mdict.items():
        if key == "accel":
            accels = value.split(":") if isinstance(value, str) else []
            for accel in accels:
                if accel not in ACCELERATORS:
                    raise _err(f"invalid accelerator {accel}")
            machine["accel"] = value
        elif key in _MACHINE_BOOL_PROPS:
            if not isinstance(value, str):
                raise _err(f"Invalid parameter type for '{key}', expected: boolean")
            b = parse_bool(value)
            if b is None:
                raise _err(f"Parameter '{key}' expects 'on' or 'off'")
            machine[key] = b
        elif key in _MACHINE_STR_PROPS or key == "loadparm":
            if not isinstance(value, str):
                raise _err(f"Invalid parameter type for '{key}', expected: string")
            machine[key] = _machine_loadparm(value) if key == "loadparm" else value
        elif key in ("kernel", "initrd", "append", "firmware"):
            if not isinstance(value, str):
                raise _err(f"Invalid parameter type for '{key}', expected: string")
            extra["bios" if key == "firmware" else key] = value
        elif key == "boot":
            extra["boot"] = _struct(value, "boot", _BOOT_KEYS, "BootConfiguration", keep_text=True)
        elif key == "smp":
            extra["smp"] = _struct(value, "smp", {k: "int" for k in _SMP_KEYS}, "SMPConfiguration")
        elif key == "memory":
            mem = _struct(value, "memory", {"size": "size", "max-size": "size", "slots": "int"},
                          "MemorySizeConfiguration")
            out = {}
            if "size" in mem:
                out["size"] = mem["size"]
            if "max-size" in mem:
                out["maxmem"] = mem["max-size"]
            if "slots" in mem:
                out["slots"] = mem["slots"]
            if out:
                extra["memory"] = out
        elif key in _MACHINE_IGNORED:
            pass
        elif key in _MACHINE_UNSUPPORTED:
            raise _err(f"Property '{cls}.{key}' is not supported by vmd")
        else:
            raise _err(f"Property '{cls}.{key}' not found")
    if machine and origin is not None:
        machine["origin"] = origin
    return machine, extra


def _struct(value: Any, name: str, keys: dict[str, str], qapi_type: str, *,
            keep_text: bool = False) -> dict[str, Any]:
    """A keyval sub-dict visited as a QAPI struct: unknown keys and bad values fail QEMU's way.

    Values come back converted (int, size), or as the text given with ``keep_text``.
    """
    if not isinstance(value, dict):
        raise _err(f"Invalid parameter type for '{name}', expected: {qapi_type}")
    out: dict[str, Any] = {}
    for key, text in value.items():
        kind = keys.get(key)
        path = f"{name}.{key}"
        if kind is None:
            raise _err(f"Parameter '{path}' is unexpected")
        if not isinstance(text, str):
            raise _err(f"Invalid parameter type for '{path}', expected: {kind}")
        if kind == "int":
            n = parse_int(text)
            if n is None:
                raise _err(f"Parameter '{path}' expects integer")
            out[key] = text if keep_text else n
        elif kind == "size":
            n = parse_size(text)
            if n is None:
                raise _err(f"Parameter '{path}' expects size")
            out[key] = n
        elif kind == "bool":
            b = parse_bool(text)
            if b is None:
                raise _err(f"Parameter '{path}' expects 'on' or 'off'")
            out[key] = text
        else:
            out[key] = text
    return out


def parse_cpu_option(arg: str, option: str | None = None) -> dict[str, Any]:
    """``-cpu MODEL[,feat=on|off...]`` -> a Config ``cpu`` entry (QEMU 7.2's s390x rules)."""
    model, _, rest = arg.partition(",")
    if model not in CPU_MODEL_NAMES:
        raise _err(f"unable to find CPU model '{model}'")
    features: dict[str, bool] = {}
    for token in rest.split(","):
        if not token:
            continue
        if "=" not in token:
            raise _err(f"Expected key=value format, found {token}.")
        feat, _, value = token.partition("=")
        b = parse_bool(value)
        if b is None:
            raise _err(f"can't apply global {model}-s390x-cpu.{feat}={value}: "
                       f"Parameter '{feat}' expects 'on' or 'off'")
        features[feat] = b
    entry: dict[str, Any] = {"model": model}
    if features:
        entry["features"] = features
    if option is not None:
        entry["origin"] = option
    return entry


# ----------------------------------------------------------------------------------
# Checks shared by the command line and TOML (they see Config input, typed)
# ----------------------------------------------------------------------------------
def resolve_smp(smp: dict[str, Any], machine_type: str | None,
                warnings: list[ConfigWarning]) -> dict[str, Any]:
    """QEMU 7.2's CPU topology rules for s390x: fill in what was omitted, check the rest.

    Returns the resolved Config ``smp`` entry (cpus, maxcpus, sockets, cores, threads).
    """
    given = {k: v for k, v in smp.items() if k != "origin" and v is not None}
    if not given:
        return dict(smp)
    origin = smp.get("origin")
    vals = {k: int(given[k]) % (1 << 32) if isinstance(given[k], int) else given[k] for k in given}
    if any(v == 0 for v in vals.values() if isinstance(v, int)):
        warnings.append(ConfigWarning("Deprecated CPU topology (considered invalid): "
                                      "CPU topology parameters must be greater than zero"))
    for level in ("dies", "clusters"):
        if vals.get(level, 0) > 1:
            raise _err(f"{level} not supported by this machine's CPU topology")
    cpus, maxcpus = vals.get("cpus", 0), vals.get("maxcpus", 0)
    sockets, cores, threads = vals.get("sockets", 0), vals.get("cores", 0), vals.get("threads", 0)
    # Beyond QEMU 7.2 (TOML only): drawers and books multiply like sockets do.
    outer = vals.get("drawers", 0) or 1
    outer *= vals.get("books", 0) or 1
    name = machine_class_name(machine_type)
    prefer_sockets = _machine_version(name) < (6, 2)
    if cpus == 0 and maxcpus == 0:
        sockets, cores, threads = sockets or 1, cores or 1, threads or 1
    else:
        maxcpus = maxcpus or cpus
        if prefer_sockets:
            if sockets == 0:
                cores, threads = cores or 1, threads or 1
                sockets = maxcpus // (outer * cores * threads)
            elif cores == 0:
                threads = threads or 1
                cores = maxcpus // (outer * sockets * threads)
        else:
            if cores == 0:
                sockets, threads = sockets or 1, threads or 1
                cores = maxcpus // (outer * sockets * threads)
            elif sockets == 0:
                threads = threads or 1
                sockets = maxcpus // (outer * cores * threads)
        if threads == 0:
            threads = maxcpus // (outer * sockets * cores)
    maxcpus = maxcpus or outer * sockets * cores * threads
    cpus = cpus or maxcpus
    topo = f"sockets ({sockets}) * cores ({cores}) * threads ({threads})"
    if outer * sockets * cores * threads != maxcpus:
        raise _err(f"Invalid CPU topology: product of the hierarchy must match maxcpus: "
                   f"{topo} != maxcpus ({maxcpus})")
    if maxcpus < cpus:
        raise _err(f"Invalid CPU topology: maxcpus must be equal to or greater than smp: "
                   f"{topo} == maxcpus ({maxcpus}) < smp_cpus ({cpus})")
    if maxcpus > S390_MAX_CPUS:
        shown = maxcpus - (1 << 32) if maxcpus >= 1 << 31 else maxcpus
        raise _err(f"Invalid SMP CPUs {shown}. The max CPUs supported by machine '{name}' is {S390_MAX_CPUS}")
    if threads > 1:
        raise _err("S390 does not support more than 1 threads.")
    out: dict[str, Any] = {"cpus": cpus, "maxcpus": maxcpus, "sockets": sockets, "cores": cores,
                           "threads": threads}
    # anything else (drawers, books, or a key Config rejects) passes through unchanged
    out.update({k: v for k, v in given.items()
                if k not in ("cpus", "maxcpus", "sockets", "cores", "threads", "dies", "clusters")})
    if origin is not None:
        out["origin"] = origin
    return out


def _machine_version(name: str) -> tuple[int, int]:
    m = re.search(r"-(\d+)\.(\d+)$", name)
    return (int(m.group(1)), int(m.group(2))) if m else (99, 0)


def check_raw(raw: dict[str, Any], warnings: list[ConfigWarning]) -> dict[str, Any]:
    """QEMU's cross-option checks on Config input (typed), from the command line or TOML.

    The command line passed most of them already, in QEMU's order; a TOML file
    meets them here.  Returns the input with the CPU topology resolved.
    """
    raw = dict(raw)
    if not raw.get("kernel"):
        if raw.get("append"):
            raise _err("-append only allowed with -kernel option")
        if raw.get("initrd"):
            raise _err("-initrd only allowed with -kernel option")
    machine = raw.get("machine") if isinstance(raw.get("machine"), dict) else {}
    mtype = machine.get("type")
    if mtype is not None and (not isinstance(mtype, str) or not machine_type_ok(mtype)):
        raise _err("unsupported machine type\nUse -machine help to list supported machines", machine.get("origin"))
    chardevs = _dicts(raw.get("chardev"))
    seen: set[Any] = set()
    stdio = 0
    for entry in chardevs:
        cid, origin = entry.get("id"), entry.get("origin")
        if cid in seen:
            raise _err(f"Duplicate ID '{cid}' for chardev", origin)
        seen.add(cid)
        if entry.get("backend") == "stdio":
            stdio += 1
            if stdio > 1:
                raise _err("cannot use stdio by multiple character devices", origin)
        if entry.get("backend") == "socket" and entry.get("reconnect") and entry.get("server"):
            raise _err("'reconnect' option is incompatible with socket in server listen mode", origin)
    smp = raw.get("smp")
    if isinstance(smp, dict) and all(isinstance(v, int) and not isinstance(v, bool)
                                     for k, v in smp.items() if k != "origin" and v is not None):
        raw["smp"] = resolve_smp(smp, mtype, warnings)
    check_monitors(chardevs, _dicts(raw.get("monitor")))
    for sid in raw.get("serial") or []:
        if sid not in seen:
            raise _err(f"could not connect serial device to character backend 'chardev:{sid}'")
    cpu = raw.get("cpu")
    if isinstance(cpu, dict) and isinstance(cpu.get("model"), str) and cpu["model"] not in CPU_MODEL_NAMES:
        raise _err(f"unable to find CPU model '{cpu['model']}'")
    ids: set[str] = set()
    for dev in _dicts(raw.get("device")):
        did = dev.get("id")
        if did is not None:
            if did in ids:
                raise _err(f"Duplicate device ID '{did}'", dev.get("origin"))
            ids.add(did)
    return raw


def _dicts(items: Any) -> list[dict]:
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


# ----------------------------------------------------------------------------------
# argv
# ----------------------------------------------------------------------------------
def _lookup(arg: str) -> tuple[str, str | None]:
    """(option name, inline value) for ``-opt``/``--opt`` (and ``--vmd-opt=value``)."""
    name = arg[2:] if arg.startswith("--") else arg[1:]
    if "=" in name:
        head, _, value = name.partition("=")
        if head in VMD_OPTIONS and VMD_OPTIONS[head] and arg.startswith("--"):
            return head, value
    return name, None


def parse_argv(argv: list[str]) -> ParsedCommandLine:
    """Parse vmd's command line (``argv`` without the program name).

    :raises ConfigError: (a :class:`CmdlineError`) with QEMU's text.
    """
    result = ParsedCommandLine(argv=list(argv))
    parser = _Parser()
    # First pass, as QEMU's: every option must exist and have its argument.
    items: list[tuple[str, str | None, str]] = []
    i = 0
    qemu_seen = False
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-"):
            items.append(("", arg, arg))
            qemu_seen = True
            i += 1
            continue
        name, inline = _lookup(arg)
        if name in VMD_OPTIONS:
            takes = VMD_OPTIONS[name]
        elif name in QEMU_OPTIONS:
            takes = QEMU_OPTIONS[name]
            qemu_seen = qemu_seen or name not in ("h", "help", "version")
        elif name in OTHER_TARGET_OPTIONS:
            takes = OTHER_TARGET_OPTIONS[name]
        else:
            raise _err("invalid option", arg)
        if takes and inline is None:
            if i + 1 >= len(argv):
                raise _err("requires an argument", arg)
            value: str | None = argv[i + 1]
            option = f"{arg} {value}"
            i += 2
        else:
            value = inline
            option = arg
            i += 1
        items.append((name, value, option))

    # Second pass: the options themselves, in order.
    try:
        for name, value, option in items:
            if name == "":
                raise _err("a disk image argument is not supported by vmd; use -blockdev and -device", option)
            if name in VMD_OPTIONS:
                if name == "print-config":
                    result.vmd_options[name] = True
                else:
                    result.vmd_options[name] = value
                continue
            if name in OTHER_TARGET_OPTIONS:
                raise _err("Option not supported for this target", option)
            parser.handle(name, value, option)
    except _Stop as stop:
        result.actions.append(stop.action)
        result.warnings = parser.warnings
        return result
    except CmdlineError as err:
        err.warnings = parser.warnings + err.warnings
        raise
    result.warnings = parser.warnings

    config_file = result.vmd_options.get("config")
    try:
        if config_file is not None and qemu_seen:
            first = next(o for n, _v, o in items if n not in VMD_OPTIONS)
            raise _err(f"cannot be combined with QEMU options (here: {first}); "
                       "describe the whole machine in the file", f"--config {config_file}")
        parser.early_checks()
        if parser.deferred:
            result.actions.extend(parser.deferred)
            return result
        if config_file is not None:
            raw = load_toml(config_file)
            result.is_empty = False
        elif qemu_seen:
            raw = parser.finish()
            result.is_empty = False
        else:
            raw = {}
        _apply_vmd_options(raw, result.vmd_options)
        if not result.is_empty:
            raw = check_raw(raw, result.warnings)
    except _Stop as stop:
        result.actions.append(stop.action)
        return result
    except CmdlineError as err:
        err.warnings = result.warnings + err.warnings
        raise
    result.raw = raw
    if result.vmd_options.get("print-config"):
        result.actions.append(Action("print-config"))
    return result


def _apply_vmd_options(raw: dict[str, Any], opts: dict[str, Any]) -> None:
    if opts.get("api-listen") is not None or opts.get("token-file") is not None:
        api = raw.setdefault("api", {})
        if not isinstance(api, dict):
            return
        if opts.get("api-listen") is not None:
            api["listen"] = opts["api-listen"]
        if opts.get("token-file") is not None:
            api["token_file"] = opts["token-file"]
    if opts.get("runtime-dir") is not None:
        raw["runtime-dir"] = opts["runtime-dir"]


# ----------------------------------------------------------------------------------
# TOML
# ----------------------------------------------------------------------------------
_TOML_LISTS = ("chardev", "monitor", "device", "drive", "blockdev", "netdev", "object", "global")
_TOML_TABLES = ("machine", "cpu", "memory", "smp")


def load_toml(path: str) -> dict[str, Any]:
    """A TOML file -> Config input, each entry's ``origin`` set to ``FILE: section[i]``."""
    import tomllib

    option = f"--config {path}"
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as err:
        raise _err(f"Could not open '{path}': {err.strerror}", option) from None
    except tomllib.TOMLDecodeError as err:
        raise _err(str(err), option) from None
    for key in _TOML_LISTS:
        items = data.get(key)
        if isinstance(items, list):
            for index, item in enumerate(items):
                if isinstance(item, dict):
                    item.setdefault("origin", f"{path}: {key}[{index}]")
    for key in _TOML_TABLES:
        if isinstance(data.get(key), dict):
            data[key].setdefault("origin", f"{path}: {key}")
    return data


# ----------------------------------------------------------------------------------
# Validation into a Config
# ----------------------------------------------------------------------------------
_LIST_SECTIONS = {"chardev", "monitor", "device", "drive", "blockdev", "netdev", "object", "global"}
_TYPE_NAMES = {"string_type": "string", "int_type": "integer", "bool_type": "boolean",
               "dict_type": "object", "list_type": "array", "model_type": "object",
               "float_type": "number", "model_attributes_type": "object"}


def _validation_text(err) -> tuple[str, tuple]:
    """The first pydantic error as one QEMU-like sentence, and its location."""
    first = err.errors(include_url=False)[0]
    loc = tuple(first.get("loc", ()))
    section = loc[0] if loc else ""
    rest = list(loc[1:])
    if section == "chardev" and len(rest) >= 2 and isinstance(rest[0], int):
        del rest[1]  # the discriminated union puts the backend into the location
    names = [p for p in rest if isinstance(p, str)]
    name = ".".join(names) if names else str(section)
    etype = first.get("type", "")
    ctx = first.get("ctx") or {}
    value = first.get("input")
    if etype == "missing":
        text = f"Parameter '{name}' is missing"
    elif etype == "extra_forbidden":
        text = f"Invalid parameter '{name}'"
    elif etype in ("bool_parsing",):
        text = f"Parameter '{name}' expects 'on' or 'off'"
    elif etype in ("int_parsing", "int_from_float"):
        text = f"Parameter '{name}' expects integer"
    elif etype in _TYPE_NAMES:
        text = f"Invalid parameter type for '{name}', expected: {_TYPE_NAMES[etype]}"
    elif etype == "literal_error":
        text = f"Parameter '{name}' does not accept value '{value}'"
    elif etype == "union_tag_invalid":
        tag = ctx.get("tag", value)
        text = f"'{tag}' is not a valid char driver name" if loc[:1] == ("chardev",) else \
            f"Parameter '{ctx.get('discriminator', name)}' does not accept value '{tag}'"
    elif etype == "union_tag_not_found":
        text = "Parameter 'backend' is missing" if loc[:1] == ("chardev",) else f"Parameter '{name}' is missing"
    elif etype.startswith("uuid"):
        text = "failed to parse UUID string: wrong format"
    elif etype in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        limit = ctx.get("gt", ctx.get("ge", ctx.get("lt", ctx.get("le"))))
        relation = {"greater_than": "greater than", "greater_than_equal": "at least",
                    "less_than": "less than", "less_than_equal": "at most"}[etype]
        text = f"Parameter '{name}' expects a value {relation} {limit}"
    elif etype == "value_error":
        text = str(ctx.get("error", first.get("msg", "")))
    else:
        msg = first.get("msg", "")
        text = f"Parameter '{name}': {msg[:1].lower()}{msg[1:]}" if name else msg
    return text, loc


def _origin_for(raw: dict[str, Any], loc: tuple) -> str | None:
    if not loc:
        return None
    section = loc[0]
    value = raw.get(section)
    if section in _LIST_SECTIONS and len(loc) > 1 and isinstance(loc[1], int) and isinstance(value, list):
        if 0 <= loc[1] < len(value) and isinstance(value[loc[1]], dict):
            return value[loc[1]].get("origin")
    if isinstance(value, dict):
        return value.get("origin")
    return None


def build_config(parsed: ParsedCommandLine, *, check_devices: bool = True):
    """Validate the parsed command line (or TOML file) into a :class:`vmd.config.Config`.

    With no machine option at all (``parsed.is_empty``) this is vmd's embedded
    demo VM, with the vmd options (``--api-listen`` ...) applied.  Every
    ``-device`` is checked against the device registry (driver and properties)
    unless ``check_devices`` is false.

    :raises ConfigError: with QEMU's text, naming the option it came from.
    """
    from pydantic import ValidationError

    from vmd.config import Config

    raw = effective_raw(parsed)
    try:
        config = Config.model_validate(raw)
    except ValidationError as err:
        text, loc = _validation_text(err)
        origin = _origin_for(raw, loc) or _vmd_option_for(loc, parsed)
        raise CmdlineError(text, origin) from None
    if check_devices:
        from vmd.devices import registry

        for dev in config.devices:
            try:
                cls = registry.lookup(dev.driver)
                registry.validate_props(cls, dev.props)
            except VmdError as err:
                raise CmdlineError(err.desc, dev.origin) from None
    return config


# -- -nographic's consoles (QEMU's default serial and monitor) ---------------------------------------
def with_default_consoles(config):
    """The configuration with the consoles QEMU adds under -nographic: serial0 on ``mon:stdio``
    (the VT220 console and a human monitor sharing stdin and stdout), on plain stdio when a
    monitor option was given, or only a human monitor on stdio when -serial was.  -nodefaults
    adds none, and neither does a machine with a display (vmd has no virtual consoles, QEMU's
    "vc").

    Decided when the machine is built rather than in the command line, so that a command line
    without them still takes the start-up fast path (:func:`vmd.cli.quick_guest_settings`).

    :raises CmdlineError: with QEMU's texts when stdio or the chardev id is taken.
    """
    if not config.nographic or config.nodefaults:
        return config
    default_serial = "serials" not in config.model_fields_set
    default_monitor = "monitors" not in config.model_fields_set
    if not (default_serial or default_monitor):
        return config
    from vmd.config import ChardevStdio, MonitorSpec

    chardevs, monitors, serials = list(config.chardevs), list(config.monitors), list(config.serials)
    ids = {c.id for c in chardevs}
    stdio = next((c for c in chardevs if c.backend == "stdio"), None)
    stdio_taken = "cannot use stdio by multiple character devices"
    if default_serial:
        spec = "mon:stdio" if default_monitor else "stdio"
        after = f"could not connect serial device to character backend '{spec}'"
        if "serial0" in ids:
            raise _err(after, before=[(None, "Duplicate ID 'serial0' for chardev")])
        if stdio is not None:
            raise _err(after, before=[(None, stdio_taken)])
        chardevs.append(ChardevStdio(id="serial0", mux=default_monitor, signal=not default_monitor))
        serials.append("serial0")
        if default_monitor:
            monitors.append(MonitorSpec(chardev="serial0", mode="readline"))
    else:
        label = "compat_monitor0"  # no monitor option was given: the first compat monitor
        if label in ids:
            raise _err("parse error: stdio", before=[(None, f"Duplicate ID '{label}' for chardev")])
        if stdio is not None:
            if stdio.id in serials and stdio.origin:
                # QEMU opens the monitor first: the -serial that wanted stdio is the one refused
                given = stdio.origin.split(" ", 1)[-1]
                raise _err(f"could not connect serial device to character backend '{given}'", stdio.origin,
                           before=[(stdio.origin, stdio_taken)])
            raise _err(stdio_taken)
        chardevs.append(ChardevStdio(id=label))
        monitors.append(MonitorSpec(chardev=label, mode="readline"))
    return config.model_copy(update={"chardevs": chardevs, "monitors": monitors, "serials": serials})


def effective_raw(parsed: ParsedCommandLine) -> dict[str, Any]:
    """The Config input the command line stands for, the embedded demo VM included (stdlib only).

    The start-up fast path reads the monitor sockets from it before pydantic is imported.

    :raises CmdlineError: for ``--tn3270-listen`` without the demo VM, or a malformed address.
    """
    from vmd.defaults import DEMO_NAME, DEFAULT_TN3270_LISTEN, embedded_default, runtime_dir_for

    opts = parsed.vmd_options
    tn3270 = opts.get("tn3270-listen")
    if tn3270 is not None:
        host, sep, port = tn3270.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise _err(f"--tn3270-listen must be HOST:PORT, not '{tn3270}'")
        if not parsed.is_empty:
            raise _err("--tn3270-listen applies to the embedded demo VM only; "
                       "use -chardev socket,...,tn3270=on with a machine")
    if not parsed.is_empty:
        return parsed.raw
    raw = embedded_default(runtime_dir_for(DEMO_NAME, opts.get("runtime-dir")), tn3270 or DEFAULT_TN3270_LISTEN)
    _apply_vmd_options(raw, opts)
    return raw


def _vmd_option_for(loc: tuple, parsed: ParsedCommandLine) -> str | None:
    opts = parsed.vmd_options
    if loc[:2] == ("api", "listen") and opts.get("api-listen") is not None:
        return f"--api-listen {opts['api-listen']}"
    if loc[:2] == ("api", "token_file") and opts.get("token-file") is not None:
        return f"--token-file {opts['token-file']}"
    if loc[:1] == ("runtime-dir",) and opts.get("runtime-dir") is not None:
        return f"--runtime-dir {opts['runtime-dir']}"
    if opts.get("config"):
        return f"--config {opts['config']}"
    return None


def config_json(config) -> str:
    """The resolved Config as ``--print-config`` prints it."""
    import json

    return json.dumps(config.model_dump(mode="json", by_alias=True, exclude_none=True), indent=2) + "\n"


def perform_actions(parsed: ParsedCommandLine, out: TextIO | None = None) -> int | None:
    """Do the first requested action (help, version, print-config ...).

    Returns the exit code, or None when there is nothing to do (start the VM).
    :raises ConfigError: when ``--print-config`` meets a bad configuration.
    """
    if not parsed.actions:
        return None
    out = out or sys.stdout
    action = parsed.actions[0]
    if action.kind == "print-config":
        out.write(config_json(build_config(parsed)))
        return 0
    out.write(action.render())
    return action.exit_code


# ----------------------------------------------------------------------------------
# Help texts
# ----------------------------------------------------------------------------------
def version_text() -> str:
    from vmd import __version__

    return f"vmd version {__version__} (qemu-system-s390x 7.2 command line)\n"


def machine_help(mtype: Any = None) -> str:
    """``-machine help`` (QEMU's layout), or a machine's properties with ``-M TYPE,help``."""
    if isinstance(mtype, str) and machine_type_ok(mtype):
        return _machine_props_help(machine_class_name(mtype))
    default = f"{MACHINE_ALIAS}-{MACHINE_DEFAULT_VERSION}"
    names = sorted(set(machine_versions()) | {default})
    lines = ["Supported machines are:"]
    for name in names:
        desc = f"Virtual s390x machine (version {name.rsplit('-', 1)[1]})"
        if name == default:
            lines.append(f"{MACHINE_ALIAS:<20} {desc} (alias of {default})")
            lines.append(f"{name:<20} {desc} (default)")
        else:
            lines.append(f"{name:<20} {desc}")
    return "\n".join(lines) + "\n"


_MACHINE_PROP_HELP = (
    ("aes-key-wrap", "bool", "AES key wrapping with the CPACF wrapping key (on/off)"),
    ("append", "string", "kernel command line (-append)"),
    ("boot", "BootConfiguration", "boot options (-boot)"),
    ("confidential-guest-support", "link<confidential-guest-support>", "id of an s390-pv-guest object"),
    ("dea-key-wrap", "bool", "DEA key wrapping with the CPACF wrapping key (on/off)"),
    ("dump-guest-core", "bool", "guest memory in core dumps (on/off)"),
    ("firmware", "string", "firmware image (-bios)"),
    ("graphics", "bool", "graphics emulation (on/off; -nographic turns it off)"),
    ("initrd", "string", "initial ramdisk (-initrd)"),
    ("kernel", "string", "kernel image (-kernel)"),
    ("loadparm", "loadparm", "up to 8 characters of [A-Za-z0-9. ] for the IPL loader (upper-cased)"),
    ("mem-merge", "bool", "memory merging (on/off)"),
    ("memory-backend", "link<memory-backend>", "id of the memory backend object for RAM"),
    ("memory", "MemorySizeConfiguration", "memory size (-m)"),
    ("smp", "SMPConfiguration", "CPU topology (-smp)"),
    ("usb", "bool", "USB (on/off)"),
)


def _machine_props_help(name: str) -> str:
    lines = [f"{name}-machine options:"]
    for prop, qtype, desc in _MACHINE_PROP_HELP:
        left = f"  {prop}=<{qtype}>"
        lines.append(f"{left:<24} - {desc}")
    return "\n".join(lines) + "\n"


def cpu_help() -> str:
    """``-cpu help``: the s390x CPU model names of QEMU 7.2, QEMU's layout."""
    lines = []
    for name, desc, flags in CPU_MODELS:
        lines.append(f"s390 {name:<15} {desc:<35} ({flags})" if flags else f"s390 {name:<15} {desc}")
    return "\n".join(lines) + "\n"


def log_help() -> str:
    lines = ["Log items (comma separated):"]
    lines += [f"{name:<15} {desc}" for name, desc in LOG_ITEMS.items()]
    lines.append("trace:PATTERN   enable trace events")
    return "\n".join(lines) + "\n"


def help_text() -> str:
    return """\
usage: vmd [options]

vmd runs one IBM Z (s390x) virtual machine.  It reads qemu-system-s390x's
command line (the s390x subset) and serves QMP and a JSON-RPC API.  With no
machine options it runs a small demo VM.

Machine:
-machine|-M [type=]NAME[,prop=value...]   s390-ccw-virtio[-X.Y]; accel, loadparm,
                              dump-guest-core, aes-key-wrap, confidential-guest-support ...
-cpu MODEL[,feature=on|off...]   CPU model (-cpu help lists them)
-accel tcg | -enable-kvm      accelerator (recorded in machine.accel)
-smp [cpus=]N[,sockets=,cores=,threads=,maxcpus=]
-m [size=]SIZE[,slots=N,maxmem=SIZE]   memory (default unit: MiB)
-name [guest=]NAME            -uuid UUID
-kernel FILE -initrd FILE -append CMDLINE -bios FILE
-boot [order=]...             -global DRIVER.PROP=VALUE
-S (start paused)             -no-shutdown    -nodefaults
-nographic                    -display none
-D LOGFILE                    -d ITEM[,...]   (-d help lists them)

Devices and backends:
-device DRIVER[,prop=value...]   or JSON; -device help, -device DRIVER,help
-chardev BACKEND,id=ID[,...]     socket (path= or host=,port=; server=, wait=,
                              telnet=, tn3270=), stdio, null, file (path=)
-drive ... -blockdev ... -netdev TYPE,id=ID,... -object TYPE,id=ID,...

Monitors:
-qmp DEV | -qmp-pretty DEV    QMP on a legacy chardev: unix:PATH[,server=on,wait=off],
                              tcp:HOST:PORT[,...], telnet:HOST:PORT, stdio, chardev:ID
-monitor DEV                  HMP on a legacy chardev (none: no monitor)
-mon [chardev=]ID[,mode=control|readline][,pretty=on|off]
-serial DEV                   serial console on a legacy chardev (none: none)

vmd's own options:
--config FILE.toml            the whole machine from a TOML file
--print-config                print the resolved configuration as JSON and exit
--api-listen HOST:PORT        JSON-RPC API address
--token-file PATH             where the API bearer token is written
--runtime-dir DIR             directory for sockets and the token
--tn3270-listen HOST:PORT     3270 terminal port of the embedded demo VM (default 127.0.0.1:2300)
--version                     -h, --help

Options may be written -opt or --opt.  See docs/COMMAND-LINE.md.
"""


__all__ = [
    "Action", "CmdlineError", "ConfigWarning", "ParsedCommandLine", "build_config", "check_raw",
    "config_json", "format_opts", "keyval_parse", "parse_argv", "parse_json", "parse_opts",
    "perform_actions", "render_error",
]
