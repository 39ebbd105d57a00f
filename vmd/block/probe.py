"""Image format probing, for ``-drive`` without ``format=`` and backing files without a format.

QEMU asks every format driver to score the first 512 bytes and takes the best; raw scores
lowest and wins when nothing else recognises the image. vmd recognises the same signatures
so that an image in a format vmd cannot open is reported as such, never opened as raw.
"""

from __future__ import annotations

import struct

PROBE_BYTES = 512

#: printed when probing guessed raw (QEMU 7.2 block.c, printed without a location prefix)
RAW_PROBE_WARNING = (
    "WARNING: Image format was not specified for '{filename}' and probing guessed raw.\n"
    "         Automatically detecting the format is dangerous for raw images, "
    "write operations on block 0 will be restricted.\n"
    "         Specify the 'raw' format explicitly to remove the restrictions."
)

_CLOOP_MAGIC = (b"#!/bin/sh\n#V2.0 Format\n"
                b"modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n")


def probe_format(head: bytes, filename: str | None = None) -> str:
    """The format driver QEMU would pick for an image starting with ``head``."""
    head = bytes(head[:PROBE_BYTES]).ljust(PROBE_BYTES, b"\0")
    if head[:4] == b"QFI\xfb":
        version = struct.unpack_from(">I", head, 4)[0]
        if version >= 2:
            return "qcow2"
        if version == 1:
            return "qcow"
    if head[:4] == b"QED\0":
        return "qed"
    if head[:4] in (b"KDMV", b"COWD") or head.startswith(b"# Disk DescriptorFile"):
        return "vmdk"
    if head[:8] == b"conectix":
        return "vpc"
    if head[:8] == b"vhdxfile":
        return "vhdx"
    if head[:6] == b"LUKS\xba\xbe" and struct.unpack_from(">H", head, 6)[0] in (1, 2):
        return "luks"
    if struct.unpack_from("<I", head, 0x40)[0] == 0xBEDA107F:
        return "vdi"
    if head.startswith(b"Bochs Virtual HD Image"):
        return "bochs"
    if head.startswith(_CLOOP_MAGIC):
        return "cloop"
    if head[:16] in (b"WithoutFreeSpace", b"WithouFreSpacExt"):
        return "parallels"
    if filename is not None and len(filename) > 4 and filename.endswith(".dmg"):
        return "dmg"
    return "raw"
