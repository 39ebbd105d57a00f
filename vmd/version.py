"""Versions: vmd's own and the QEMU release whose QMP it speaks (stdlib only, on the fast path)."""

from __future__ import annotations

from vmd import __version__

#: the QEMU release whose command line and QMP vmd matches (clients such as libvirt branch on it)
QEMU_VERSION = {"major": 7, "minor": 2, "micro": 0}


def version_info() -> dict:
    """query-version's result: QEMU's version triple, and vmd's own as the package."""
    return {"qemu": dict(QEMU_VERSION), "package": f"vmd {__version__}"}
