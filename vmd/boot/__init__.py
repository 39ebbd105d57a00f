"""Bootable disk images for s390x guests.

``zipl`` writes and reads the boot map that QEMU's s390-ccw firmware loads from
a SCSI-type disk (docs/BOOTMAP.md); ``kernel`` turns a kernel file (ELF or a
Linux image), an initrd and a command line into what one boot entry loads.
Standard library only: ``vmctl mkboot`` uses it.
"""
