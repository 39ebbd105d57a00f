"""SCSI targets for vmd's host adapters: QEMU's scsi-hd and scsi-cd, sans I/O.

:mod:`~vmd.scsi.cdb` parses command descriptor blocks, :mod:`~vmd.scsi.sense`
builds sense data, :mod:`~vmd.scsi.bus` routes a request to its unit (or to the
target, or to a pending unit attention) and reports how it completed, and
:mod:`~vmd.scsi.disk` carries out the disk and CD-ROM command sets on a block
image.  The package uses only the standard library; the image is any object with
the block layer's node interface, and the adapter (:mod:`vmd.virtio.scsi`) moves
the data between the request and guest storage.
"""
