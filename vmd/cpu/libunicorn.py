"""The patched libunicorn that runs vmd's s390x guests.

vmd drives guest code with Unicorn 2.1.4, but the stock library freezes the TOD
clock, stores an empty facility list, lets EPSW reveal the forced problem state
and sends every guest store through the slow path. ``vmd/cpu/unicorn.patch``
fixes those; ``scripts/build-libunicorn`` builds the patched ``libunicorn.so.2``
into a content-addressed cache, and this module binds the ``unicorn`` Python
package to it::

    from vmd.cpu import libunicorn
    unicorn = libunicorn.load()            # the unicorn module, patched library
    uc = unicorn.Uc(unicorn.UC_ARCH_S390X, unicorn.UC_MODE_BIG_ENDIAN)
    libunicorn.set_tod_offset(uc, offset)  # the exports the patch adds

The library is looked up in this order: ``VMD_LIBUNICORN`` (the library file,
or a directory holding ``libunicorn.so.2``), then the cache
(``VMD_LIBUNICORN_CACHE``, by default ``<repo>/.cache/libunicorn``) under the key
of the current sources (:func:`cache_key`), so a changed patch is never served
by a stale build.

This module imports nothing heavy at import time: ``scripts/build-libunicorn``
reads its constants before vmd or unicorn is installed.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable

UNICORN_VERSION = "2.1.4"
# sha256 of unicorn-2.1.4.tar.gz, the source distribution on PyPI.
SDIST_SHA256 = "00567a70e323f749b419cd86bee4f9115beab7ebba32194581c090cbb7c59cff"
# The value of the vmd_patch_version symbol the patch exports; bump both together.
PATCH_VERSION = 3
LIB_NAME = "libunicorn.so.2"  # the name the unicorn binding loads
CMAKE_ARGS = (
    "-DUNICORN_ARCH=s390x",
    "-DCMAKE_BUILD_TYPE=Release",
    "-DUNICORN_BUILD_TESTS=OFF",
    "-DUNICORN_INSTALL=OFF",
    "-DUNICORN_LEGACY_STATIC_ARCHIVE=OFF",
)

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent.parent
PATCH_FILE = PACKAGE_DIR / "unicorn.patch"
BUILD_SCRIPT = "scripts/build-libunicorn"


class LibUnicornError(RuntimeError):
    """The patched libunicorn is missing, or unicorn is bound to another library."""


def cache_root() -> Path:
    env = os.environ.get("VMD_LIBUNICORN_CACHE")
    return Path(env) if env else ROOT / ".cache" / "libunicorn"


def cache_key() -> str:
    """Hash of everything the library is built from: sdist, patch and cmake flags."""
    h = hashlib.sha256()
    h.update(f"unicorn {UNICORN_VERSION} {SDIST_SHA256}\n".encode())
    h.update(" ".join(CMAKE_ARGS).encode() + b"\n")
    h.update(PATCH_FILE.read_bytes())
    return h.hexdigest()[:20]


def cached_library() -> Path:
    """Where scripts/build-libunicorn installs the library for the current sources."""
    return cache_root() / cache_key() / LIB_NAME


def library_path() -> Path:
    """The patched library to load; raises LibUnicornError when it is not there."""
    env = os.environ.get("VMD_LIBUNICORN")
    if env:
        path = Path(env)
        if path.is_dir():
            path = path / LIB_NAME
        if not path.is_file():
            raise LibUnicornError(f"VMD_LIBUNICORN={env}: no {LIB_NAME} there")
        if path.name != LIB_NAME:
            raise LibUnicornError(
                f"VMD_LIBUNICORN={env}: the unicorn binding loads a file named {LIB_NAME}")
        return path
    path = cached_library()
    if not path.is_file():
        raise LibUnicornError(
            f"the patched libunicorn is not built (looked for {path}); "
            f"run {BUILD_SCRIPT} (scripts/setup runs it), or set VMD_LIBUNICORN")
    return path


def stock_library() -> Path | None:
    """The unpatched library inside the pip-installed unicorn wheel (for tests)."""
    spec = importlib.util.find_spec("unicorn")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "lib" / LIB_NAME
        if path.is_file():
            return path
    return None


_module: ModuleType | None = None
_lib: ctypes.CDLL | None = None


def _bound_cdll() -> ctypes.CDLL | None:
    """The ctypes library the imported unicorn package calls into."""
    for name in ("unicorn.unicorn_py3.unicorn", "unicorn.unicorn"):
        lib = getattr(sys.modules.get(name), "uclib", None)
        if lib is not None:
            return lib
    return None


def load() -> ModuleType:
    """The unicorn module, bound to the patched library.

    Sets LIBUNICORN_PATH and imports unicorn. The binding silently falls back to
    the wheel's own library when the one named cannot be loaded, and a process
    can bind only one library, so the result is checked: LibUnicornError when
    unicorn was already imported with another library or the library is not vmd's.
    """
    global _module, _lib
    if _module is not None:
        return _module
    path = library_path()
    if "unicorn" not in sys.modules:
        os.environ["LIBUNICORN_PATH"] = str(path.parent)
    import unicorn

    lib = _bound_cdll()
    bound = Path(lib._name) if lib is not None else None
    if bound is None or bound.resolve() != path.resolve():
        raise LibUnicornError(
            f"unicorn is bound to {bound}, not the patched {path}: call "
            "vmd.cpu.libunicorn.load() before anything else imports unicorn")
    version = getattr(unicorn, "__version__", "?")
    if version != UNICORN_VERSION:
        raise LibUnicornError(f"unicorn {version} is installed; vmd pins {UNICORN_VERSION}")
    found = _patch_version_of(lib)
    if found != PATCH_VERSION:
        raise LibUnicornError(
            f"{path} has vmd_patch_version {found}, expected {PATCH_VERSION}; "
            f"rebuild with {BUILD_SCRIPT}")
    _declare(lib)
    _module, _lib = unicorn, lib
    return unicorn


def _patch_version_of(lib: ctypes.CDLL) -> int | None:
    try:
        return ctypes.c_uint32.in_dll(lib, "vmd_patch_version").value
    except ValueError:  # symbol not found: a stock library
        return None


def is_patched() -> bool:
    """Whether unicorn is (or, when not yet imported, can be) bound to vmd's library."""
    if _module is not None:
        return True
    if "unicorn" in sys.modules:
        lib = _bound_cdll()
        return lib is not None and _patch_version_of(lib) == PATCH_VERSION
    try:
        load()
    except (LibUnicornError, ImportError):
        return False
    return True


# --- the exports the patch adds (see unicorn.patch, qemu/target/s390x/unicorn.c) --

def _declare(lib: ctypes.CDLL) -> None:
    p, u32, u64, size_t = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_size_t
    for name, restype, argtypes in (
        ("vmd_s390x_host_tod", u64, ()),
        ("vmd_s390x_get_tod", u64, (p,)),
        ("vmd_s390x_set_tod_offset", ctypes.c_int, (p, u64)),
        ("vmd_s390x_set_facilities", ctypes.c_int, (p, ctypes.c_char_p, size_t)),
        ("vmd_s390x_get_facilities", size_t, (p, ctypes.c_char_p, size_t)),
        ("vmd_s390x_get_intcodes", ctypes.c_int, (p, ctypes.POINTER(u32))),
        ("vmd_s390x_trap_state", ctypes.c_int, (p, ctypes.POINTER(u64))),
        ("vmd_invalidate_code", None, (p, u64, u64)),
    ):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes


def _exports() -> ctypes.CDLL:
    if _lib is None:
        load()
    assert _lib is not None
    return _lib


def _handle(uc) -> int:
    return uc._uch.value if hasattr(uc._uch, "value") else uc._uch


def _check(err: int, what: str) -> None:
    if err:
        raise ValueError(f"{what}: unicorn error {err}")


def host_tod() -> int:
    """The host TOD clock (64-bit, bit 51 = 1 us, epoch 1900) that STCK adds the offset to."""
    return _exports().vmd_s390x_host_tod()


def get_tod(uc) -> int:
    """The TOD value a STCK on this CPU would store now."""
    return _exports().vmd_s390x_get_tod(_handle(uc))


def set_tod_offset(uc, offset: int) -> None:
    """Guest TOD = host_tod() + offset (mod 2**64); emulate SCK with new_tod - host_tod()."""
    _check(_exports().vmd_s390x_set_tod_offset(_handle(uc), offset & (2**64 - 1)),
           "set_tod_offset")


def set_facilities(uc, facilities: bytes) -> None:
    """The facility list STFLE and STFL store on this CPU (bit n = facility n), ≤ 2048 bytes."""
    _check(_exports().vmd_s390x_set_facilities(_handle(uc), bytes(facilities), len(facilities)),
           "set_facilities")


def get_facilities(uc) -> bytes:
    """The facility list STFLE stores (the CPU model's until set), whole doublewords."""
    buf = ctypes.create_string_buffer(2048)
    used = _exports().vmd_s390x_get_facilities(_handle(uc), buf, len(buf))
    return buf.raw[:used]


def intcodes(uc) -> tuple[int, int, int, int]:
    """(program-interruption code, its ILC in bytes, SVC number, SVC ILC) of the last trap.

    Read in a UC_HOOK_INTR callback: intno 3 is a program interruption, 2 an SVC.
    """
    out = (ctypes.c_uint32 * 4)()
    _check(_exports().vmd_s390x_get_intcodes(_handle(uc), out), "intcodes")
    return out[0], out[1], out[2], out[3]


def trap_state_reader(uc) -> Callable[[], tuple[int, ...]]:
    """A function returning (PSW mask, PSW address, program-interruption code, its ILC, SVC
    number, SVC ILC) of this CPU in one call: what a trap handler reads first."""
    fn, handle = _exports().vmd_s390x_trap_state, _handle(uc)
    out = (ctypes.c_uint64 * 6)()

    def read() -> tuple[int, ...]:
        _check(fn(handle, out), "trap_state")
        return tuple(out)
    return read


def code_invalidator(uc) -> Callable[[int, int], None]:
    """A function dropping the translated code of an absolute range [start, end) of this
    instance's storage (pages without code cost a lookup only)."""
    fn, handle = _exports().vmd_invalidate_code, _handle(uc)

    def invalidate(start: int, end: int) -> None:
        fn(handle, start, end)
    return invalidate
