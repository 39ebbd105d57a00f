"""SCSI devices on a virtio-scsi bus: ``scsi-hd`` and ``scsi-cd``, and the bus of ``virtio-scsi-ccw``.

A virtio-scsi-ccw controller owns one SCSI bus, named ``<id>.0`` (or
``scsi.<n>`` for a controller without an id, n counting such buses).  A SCSI
device plugs into the bus its ``bus`` property names, or else the newest
controller's (QEMU walks its device list newest first); its address is
(``channel``, ``scsi-id``, ``lun``), with a missing target or LUN filled in as
QEMU does.  The property lists, help texts and error texts are QEMU 7.2's.  The
command set itself is :mod:`vmd.scsi`; the virtio side is :mod:`vmd.virtio.scsi`.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from vmd.devices.base import Device, DeviceProps, device_type
from vmd.devices.props import (
    QBlockdevOnError,
    QBool,
    QInt32,
    QOnOffAuto,
    QSize,
    QStr,
    QUint16,
    QUint32,
    QUint64,
)
from vmd.errors import GenericError

ON_OFF = "on/off"
ON_OFF_AUTO = "on/off/auto"
UNSET = 0xFFFFFFFF
#: QEMU's limit on request queues: the virtio queue maximum less control and event
MAX_REQUEST_QUEUES = 1022
MAX_VIRTQUEUE_SIZE = 1024


class ScsiDiskProps(DeviceProps):
    """Properties scsi-hd and scsi-cd share (QEMU's scsi-disk-base and SCSIDevice)."""

    account_failed: QOnOffAuto = Field("auto", alias="account-failed", description=ON_OFF_AUTO)
    account_invalid: QOnOffAuto = Field("auto", alias="account-invalid", description=ON_OFF_AUTO)
    backend_defaults: QOnOffAuto = Field("auto", description=ON_OFF_AUTO)
    bootindex: QInt32 | None = Field(None, description=None)
    channel: QUint32 = Field(0, description="")
    device_id: QStr | None = None
    discard_granularity: QSize = Field(0xFFFFFFFF, description="")
    drive: QStr | None = Field(None, description="Node name or ID of a block device to use as a backend")
    logical_block_size: QSize = Field(0, description="A power of two between 512 B and 2 MiB")
    lun: QUint32 = Field(UNSET, description="")
    max_io_size: QUint64 = Field((1 << 31) - 1, description="")
    min_io_size: QSize = Field(0, description="")
    opt_io_size: QSize = Field(0, description="")
    physical_block_size: QSize = Field(0, description="A power of two between 512 B and 2 MiB")
    port_index: QUint16 = Field(0, description="")
    port_wwn: QUint64 = Field(0, description="")
    product: QStr | None = None
    quirk_mode_page_vendor_specific_apple: QBool = Field(False, description=ON_OFF)
    rerror: QBlockdevOnError = Field("auto", description="Error handling policy, report/ignore/enospc/stop/auto")
    scsi_id: QUint32 = Field(UNSET, alias="scsi-id", description="")
    scsi_version: QInt32 = Field(5, description="")
    serial: QStr | None = None
    share_rw: QBool = Field(False, alias="share-rw", description="")
    vendor: QStr | None = None
    ver: QStr | None = None
    werror: QBlockdevOnError = Field("auto", description="Error handling policy, report/ignore/enospc/stop/auto")
    write_cache: QOnOffAuto = Field("auto", alias="write-cache", description=ON_OFF_AUTO)
    wwn: QUint64 = Field(0, description="")


class ScsiDiskModel(Device):
    """Abstract: a disk or CD-ROM on a SCSI bus."""

    bus_type = "SCSI"
    category = "Storage devices"
    cdrom: ClassVar[bool] = False
    Props = ScsiDiskProps

    def __init__(self, dev_id, props, qom_path):
        super().__init__(dev_id, props, qom_path)
        #: the controller whose bus the device is on (the machine sets it)
        self.bus_owner = None
        self.unit = None
        self.node = None

    # -- life cycle ----------------------------------------------------------------------------
    def realize(self, machine) -> None:
        """QEMU's order: property values, the address on the bus, then the device's own checks."""
        from vmd.scsi.bus import AddressError, ScsiDevice

        p = self.props
        _power_of_two_size("logical_block_size", p.logical_block_size)
        _power_of_two_size("physical_block_size", p.physical_block_size)
        bus = self._bus()
        drive = p.drive or None
        if drive is not None:
            self.node = machine.block.claim(drive, self.qom_path, self.type_name)
        try:
            if p.bootindex is not None:
                for other in machine.devices.values():
                    if getattr(other.props, "bootindex", None) == p.bootindex:
                        raise GenericError(f"The bootindex {p.bootindex} has already been used")
            address = ScsiDevice(p.channel, p.scsi_id, p.lun, self.id)
            try:
                bus.check_address(address)
                bus.assign_address(address)
            except AddressError as err:
                raise GenericError(str(err)) from None
            logical, physical = self._check(drive)
            unit = self._make_unit(machine, drive, address, logical, physical)
        except Exception:
            if drive is not None:
                machine.block.release(drive)
            self.node = None
            raise
        self.unit = unit
        bus.attach(unit, hotplugged=self.hotplugged)
        self.realized = True

    def unrealize(self, machine) -> None:
        if self.unit is not None and self.unit.bus is not None:
            self.unit.bus.detach(self.unit)
        if self.props.drive:
            machine.block.release(self.props.drive)
        self.realized = False

    def _bus(self):
        bus = getattr(self.bus_owner, "child_bus", None)
        if bus is None:  # the machine finds the bus; a device built another way has none
            raise GenericError(f"No 'SCSI' bus found for device '{self.type_name}'")
        return bus

    def _check(self, drive: str | None) -> tuple[int, int]:
        """The device's own realize checks (after its address); returns its block sizes."""
        raise NotImplementedError

    def _block_sizes(self, logical: int, physical: int) -> tuple[int, int]:
        """QEMU's blkconf_blocksizes for a file: 512 where unset, then its consistency checks."""
        p = self.props
        logical, physical = logical or 512, physical or 512
        if logical > physical:
            raise GenericError("logical_block_size > physical_block_size not supported")
        if p.min_io_size % logical:
            raise GenericError("min_io_size must be a multiple of logical_block_size")
        if p.min_io_size // logical > 0xFFFF:
            raise GenericError("min_io_size must not exceed 65535 logical blocks")
        if p.opt_io_size % logical:
            raise GenericError("opt_io_size must be a multiple of logical_block_size")
        if p.discard_granularity != 0xFFFFFFFF and p.discard_granularity % logical:
            raise GenericError("discard_granularity must be a multiple of logical_block_size")
        return logical, physical

    def _settings(self, machine, drive: str | None, logical: int, physical: int):
        from vmd.scsi.disk import DiskSettings

        p = self.props
        writeback = not getattr(self.node, "writethrough", False)
        if p.device_id is not None:
            device_id = p.device_id
        elif p.serial is not None:
            device_id = p.serial[:20]
        else:
            # QEMU names the block backend: a -drive by its id, a -blockdev node not at all
            device_id = drive if drive is not None and drive in machine.block.drive_ids else None
        return DiskSettings(
            vendor=p.vendor if p.vendor is not None else "QEMU", product=p.product,
            version=p.ver if p.ver is not None else "2.5+", serial=p.serial, device_id=device_id or None,
            wwn=p.wwn, port_wwn=p.port_wwn, port_index=p.port_index, scsi_version=p.scsi_version,
            logical_block_size=logical, physical_block_size=physical,
            min_io_size=p.min_io_size, opt_io_size=p.opt_io_size,
            discard_granularity=(max(logical, 4096) if p.discard_granularity == 0xFFFFFFFF
                                 else p.discard_granularity),
            max_io_size=p.max_io_size,
            write_cache=p.write_cache == "on" or (p.write_cache == "auto" and writeback),
        )

    def _make_unit(self, machine, drive: str | None, address, logical: int, physical: int):
        raise NotImplementedError

    # -- introspection -----------------------------------------------------------------------------
    def parent_bus_path(self) -> str:
        owner = self.bus_owner
        bus = getattr(owner, "child_bus", None)
        if owner is None or bus is None:
            return ""
        return f"{owner.qom_path}/virtio-backend/{bus.name}"

    def qom_properties(self):
        out = super().qom_properties()
        if self.unit is not None:
            out["scsi-id"] = ("uint32", lambda: self.unit.target)
            out["lun"] = ("uint32", lambda: self.unit.lun)
        return out


@device_type
class ScsiHd(ScsiDiskModel):
    type_name = "scsi-hd"
    description = "virtual SCSI disk"

    class Props(ScsiDiskProps):
        cyls: QUint32 = Field(0, description="")
        dpofua: QBool = Field(False, description=ON_OFF)
        heads: QUint32 = Field(0, description="")
        lcyls: QUint32 = Field(0, description="")
        lheads: QUint32 = Field(0, description="")
        lsecs: QUint32 = Field(0, description="")
        max_unmap_size: QUint64 = Field(1 << 30, description="")
        removable: QBool = Field(False, description=ON_OFF)
        rotation_rate: QUint16 = Field(0, description="")
        secs: QUint32 = Field(0, description="")

    def _check(self, drive: str | None) -> tuple[int, int]:
        p = self.props
        logical, physical = p.logical_block_size, p.physical_block_size
        if drive is not None:
            logical, physical = self._block_sizes(logical, physical)
        if drive is None:
            raise GenericError("drive property not set")
        if self.node is None and not p.removable:  # a -drive without a medium
            raise GenericError("Device needs media, but drive is empty")
        if p.cyls or p.heads or p.secs:
            if not 1 <= p.cyls <= 65535:
                raise GenericError("cyls must be between 1 and 65535")
            if not 1 <= p.heads <= 255:
                raise GenericError("heads must be between 1 and 255")
            if not 1 <= p.secs <= 255:
                raise GenericError("secs must be between 1 and 255")
        return logical, physical

    def _make_unit(self, machine, drive: str | None, address, logical: int, physical: int):
        from vmd.scsi.disk import ScsiDisk

        p = self.props
        settings = self._settings(machine, drive, logical, physical)
        settings.removable, settings.dpofua = p.removable, p.dpofua
        settings.max_unmap_size, settings.rotation_rate = p.max_unmap_size, p.rotation_rate
        settings.quirks = p.quirk_mode_page_vendor_specific_apple << 2
        settings.geometry = self._geometry()
        return ScsiDisk(self.node, settings, cdrom=False, channel=address.channel, target=address.target,
                        lun=address.lun, label=self.id)

    def _geometry(self) -> tuple[int, int, int]:
        p = self.props
        if p.cyls or p.heads or p.secs:
            return p.cyls, p.heads, p.secs
        from vmd.virtio.blk import guess_geometry

        if self.node is None:  # a removable disk without a medium
            return guess_geometry(0)
        sectors = self.node.size // 512
        try:
            first = self.node.read(0, 512) if self.node.size >= 512 else b""
        except Exception:  # noqa: BLE001 - an unreadable disk still gets a geometry
            first = b""
        return guess_geometry(sectors, first)


@device_type
class ScsiCd(ScsiDiskModel):
    type_name = "scsi-cd"
    description = "virtual SCSI CD-ROM"
    cdrom = True

    class Props(ScsiDiskProps):
        quirk_mode_page_apple_vendor: QBool = Field(False, description=ON_OFF)
        quirk_mode_page_truncated: QBool = Field(False, description=ON_OFF)
        quirk_mode_sense_rom_use_dbd: QBool = Field(False, description=ON_OFF)

    def _check(self, drive: str | None) -> tuple[int, int]:
        return self._block_sizes(self.props.logical_block_size, self.props.physical_block_size)

    def _make_unit(self, machine, drive: str | None, address, logical: int, physical: int):
        from vmd.scsi.disk import ScsiDisk

        p = self.props
        # a CD-ROM drive's blocks are 2048 bytes unless physical_block_size says otherwise
        settings = self._settings(machine, drive, logical, physical)
        settings.quirks = (p.quirk_mode_page_apple_vendor | p.quirk_mode_sense_rom_use_dbd << 1
                           | p.quirk_mode_page_vendor_specific_apple << 2 | p.quirk_mode_page_truncated << 3)
        return ScsiDisk(self.node, settings, cdrom=True, channel=address.channel, target=address.target,
                        lun=address.lun, label=self.id, block_size=p.physical_block_size or 2048)


def _power_of_two_size(name: str, value: int) -> None:
    if value and (value & (value - 1) or not 512 <= value <= 2 << 20):
        if value & (value - 1):
            raise GenericError(f"Property .{name} doesn't take value '{value}', it's not a power of 2")
        raise GenericError(f"Property .{name} doesn't take value {value} (minimum: 512, maximum: 2097152)")


# -- the controller's side: used by virtio-scsi-ccw (vmd/devices/models/virtio_ccw.py) -------------------
def attach_controller(controller, machine) -> None:
    """Check a virtio-scsi controller's queue properties and give it its SCSI bus (QEMU's texts)."""
    from vmd.scsi.bus import ScsiBus

    p = controller.props
    queues = 1 if p.num_queues == UNSET else p.num_queues
    if queues == 0 or queues > MAX_REQUEST_QUEUES:
        raise GenericError(f"Invalid number of queues (= {queues}), must be a positive integer less than "
                           f"{MAX_REQUEST_QUEUES}.")
    if p.virtqueue_size <= 2:
        raise GenericError(f"invalid virtqueue_size property (= {p.virtqueue_size}), must be > 2")
    if p.virtqueue_size > MAX_VIRTQUEUE_SIZE:
        # QEMU aborts here; vmd refuses the device instead
        raise GenericError(f"invalid virtqueue_size property (= {p.virtqueue_size}), "
                           f"must be at most {MAX_VIRTQUEUE_SIZE}")
    controller.request_queues = queues
    controller.child_bus = ScsiBus(controller.child_bus_name)  # the machine named it


def controller_backend(controller):
    """The virtio-scsi back end on the controller's bus."""
    from vmd.virtio.scsi import ScsiSettings, VirtioScsi

    p = controller.props
    settings = ScsiSettings(num_queues=controller.request_queues, virtqueue_size=p.virtqueue_size,
                            seg_max_adjust=p.seg_max_adjust, max_sectors=p.max_sectors,
                            cmd_per_lun=p.cmd_per_lun, hotplug=p.hotplug, param_change=p.param_change)
    return VirtioScsi(controller.child_bus, settings)
