"""vmd: an IBM Z (s390x) virtual machine daemon.

It speaks QEMU's command line and QMP for the s390x subset; see docs/ARCHITECTURE.md for the layers.
"""

__version__ = "0.1.0"
