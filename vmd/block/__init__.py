"""vmd's block layer: disk image formats and the node graphs behind ``-drive`` and ``-blockdev``.

Devices call nodes synchronously from the vCPU thread; every node does plain blocking I/O.
This package imports only the standard library and :mod:`vmd.errors`.
"""

from vmd.block.base import BlockError, BlockNode, BlockWarning, Node
from vmd.block.graph import DriveSettings, drive_settings, open_blockdev, open_drive
from vmd.block.probe import probe_format
from vmd.block.qcow2 import create_qcow2

__all__ = [
    "BlockError", "BlockNode", "BlockWarning", "DriveSettings", "Node", "create_qcow2", "drive_settings",
    "open_blockdev", "open_drive", "probe_format",
]
