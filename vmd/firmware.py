"""Where vmd's own IPL firmware lives (built from firmware/ in the source tree)."""

from __future__ import annotations

import os
from pathlib import Path

FIRMWARE_NAME = "vmd-fw.img"


def default_firmware_path() -> str:
    """The firmware IPL loads when neither -kernel nor -bios names something else.

    ``VMD_FIRMWARE`` overrides; then the source tree's ``firmware/``, then the data directory
    a package installs it to.  When none exists the path of the first is returned, so that
    loading it fails with QEMU's "could not find stage1 bootloader".
    """
    candidates = [
        os.environ.get("VMD_FIRMWARE"),
        str(Path(__file__).resolve().parent.parent / "firmware" / FIRMWARE_NAME),
        f"/usr/share/vmd/{FIRMWARE_NAME}",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    return next(c for c in candidates if c)
