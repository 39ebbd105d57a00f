"""virtio-ccw devices: every ``virtio-*-ccw`` and ``vhost-*-ccw`` model QEMU offers on s390x.

Each model is a small class: its QEMU names, its virtio device id (which the
guest sees as the control unit model in Sense ID, CU type 0x3832), and its
backend properties.  The transport properties shared by all of them live in
:class:`VirtioCcwProps`.  Guest I/O (virtqueues) arrives with the CPU engine;
the identity on the channel subsystem is complete here.
"""

from __future__ import annotations

from pydantic import Field

from vmd.errors import GenericError
from vmd.devices.base import BootableCcwProps, CcwDevice, CcwDeviceProps, device_type
from vmd.devices.models.virtio_serial import VirtioSerialBus
from vmd.devices.props import (
    QBlockdevOnError,
    QBool,
    QInt32,
    QLink,
    QOnOffAuto,
    QSize,
    QStr,
    QUint16,
    QUint32,
    QUint64,
)
from vmd.machine.css import CHPID_TYPE_VIRTIO

VIRTIO_CCW_CU_TYPE = 0x3832
ON_OFF = "on/off"
ON_OFF_AUTO = "on/off/auto"


def onoff(default: bool):
    return Field(default, description=ON_OFF)


# Virtio device ids (virtio spec 1.2, section 5 "Device Types").
VIRTIO_ID_NET = 1
VIRTIO_ID_BLOCK = 2
VIRTIO_ID_CONSOLE = 3
VIRTIO_ID_RNG = 4
VIRTIO_ID_BALLOON = 5
VIRTIO_ID_SCSI = 8
VIRTIO_ID_9P = 9
VIRTIO_ID_GPU = 16
VIRTIO_ID_INPUT = 18
VIRTIO_ID_VSOCK = 19
VIRTIO_ID_CRYPTO = 20
VIRTIO_ID_FS = 26


class VhostCcwProps(CcwDeviceProps):
    """Transport properties of every virtio-ccw device (QEMU's virtio-ccw-device and virtio-device).

    vhost devices have no ``ioeventfd`` switch: their notifications always go to the vhost backend.
    """

    any_layout: QBool = onoff(True)
    event_idx: QBool = onoff(True)
    indirect_desc: QBool = onoff(True)
    iommu_platform: QBool = onoff(False)
    max_revision: QUint32 = Field(2, description="")
    notify_on_empty: QBool = onoff(True)
    packed: QBool = onoff(False)
    queue_reset: QBool = onoff(True)
    use_disabled_flag: QBool = Field(True, alias="use-disabled-flag", description="")
    use_started: QBool = Field(True, alias="use-started", description="")
    x_disable_legacy_check: QBool = Field(False, alias="x-disable-legacy-check", description="")


class VirtioCcwProps(VhostCcwProps):
    """Transport properties of virtio-ccw devices emulated by vmd itself."""

    ioeventfd: QBool = onoff(True)


class BootableVirtioCcwProps(VirtioCcwProps, BootableCcwProps):
    """virtio-ccw devices the firmware can IPL from (block, network, SCSI)."""


class VirtioCcwDevice(CcwDevice):
    """Abstract: a virtio device on the channel subsystem."""

    chpid_type = CHPID_TYPE_VIRTIO
    cu_type = VIRTIO_CCW_CU_TYPE
    virtio_id: int = 0
    #: the type name of the embedded virtio device (QEMU's "virtio-backend" child)
    backend_type: str = ""
    Props = VirtioCcwProps

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.cu_model = cls.virtio_id
        if cls.backend_type:
            cls.children = {"virtio-backend": f"child<{cls.backend_type}>"}

    def make_backend(self):
        """The virtio device behind the transport, or None for types whose guest I/O vmd lacks
        (their channel commands are rejected, as for a device without a driver)."""
        return None


def _power_of_two_size(name: str, value: int) -> None:
    if value and (value & (value - 1) or not 512 <= value <= 2 << 20):
        if value & (value - 1):
            raise GenericError(f"Property .{name} doesn't take value '{value}', it's not a power of 2")
        raise GenericError(f"Property .{name} doesn't take value {value} (minimum: 512, maximum: 2097152)")


@device_type
class VirtioNetCcw(VirtioCcwDevice):
    type_name = "virtio-net-ccw"
    aliases = ("virtio-net",)
    category = "Network devices"
    virtio_id = VIRTIO_ID_NET
    backend_type = "virtio-net-device"

    class Props(BootableVirtioCcwProps):
        csum: QBool = onoff(True)
        ctrl_guest_offloads: QBool = onoff(True)
        ctrl_mac_addr: QBool = onoff(True)
        ctrl_rx: QBool = onoff(True)
        ctrl_rx_extra: QBool = onoff(True)
        ctrl_vlan: QBool = onoff(True)
        ctrl_vq: QBool = onoff(True)
        duplex: QStr | None = None
        failover: QBool = Field(False, description="")
        gso: QBool = onoff(True)
        guest_announce: QBool = onoff(True)
        guest_csum: QBool = onoff(True)
        guest_ecn: QBool = onoff(True)
        guest_rsc_ext: QBool = onoff(False)
        guest_tso4: QBool = onoff(True)
        guest_tso6: QBool = onoff(True)
        guest_ufo: QBool = onoff(True)
        hash: QBool = onoff(False)
        host_ecn: QBool = onoff(True)
        host_mtu: QUint16 = Field(0, description="")
        host_tso4: QBool = onoff(True)
        host_tso6: QBool = onoff(True)
        host_ufo: QBool = onoff(True)
        mac: QStr | None = Field(None, description="Ethernet 6-byte MAC Address, example: 52:54:00:12:34:56")
        mq: QBool = onoff(False)
        mrg_rxbuf: QBool = onoff(True)
        netdev: QStr | None = Field(None, description="ID of a netdev to use as a backend")
        rsc_interval: QUint32 = Field(300000, description="")
        rss: QBool = onoff(False)
        rx_queue_size: QUint16 = Field(256, description="")
        speed: QInt32 = Field(-1, description="")
        status: QBool = onoff(True)
        tx: QStr | None = None
        tx_queue_size: QUint16 = Field(256, description="")
        x_mtu_bypass_backend: QBool = Field(True, alias="x-mtu-bypass-backend", description="")
        x_txburst: QInt32 = Field(256, alias="x-txburst", description="")
        x_txtimer: QUint32 = Field(150000, alias="x-txtimer", description="")


@device_type
class VirtioBlkCcw(VirtioCcwDevice):
    type_name = "virtio-blk-ccw"
    aliases = ("virtio-blk",)
    category = "Storage devices"
    virtio_id = VIRTIO_ID_BLOCK
    backend_type = "virtio-blk-device"

    class Props(BootableVirtioCcwProps):
        account_failed: QOnOffAuto = Field("auto", alias="account-failed", description=ON_OFF_AUTO)
        account_invalid: QOnOffAuto = Field("auto", alias="account-invalid", description=ON_OFF_AUTO)
        backend_defaults: QOnOffAuto = Field("auto", description=ON_OFF_AUTO)
        config_wce: QBool = Field(True, alias="config-wce", description=ON_OFF)
        cyls: QUint32 = Field(0, description="")
        discard: QBool = onoff(True)
        discard_granularity: QSize = Field(0xFFFFFFFF, description="")
        drive: QStr | None = Field(None, description="Node name or ID of a block device to use as a backend")
        heads: QUint32 = Field(0, description="")
        iothread: QLink("iothread") | None = None
        lcyls: QUint32 = Field(0, description="")
        lheads: QUint32 = Field(0, description="")
        logical_block_size: QSize = Field(0, description="A power of two between 512 B and 2 MiB")
        lsecs: QUint32 = Field(0, description="")
        max_discard_sectors: QUint32 = Field(4194303, alias="max-discard-sectors", description="")
        max_write_zeroes_sectors: QUint32 = Field(4194303, alias="max-write-zeroes-sectors", description="")
        min_io_size: QSize = Field(0, description="")
        num_queues: QUint16 = Field(65535, alias="num-queues", description="")
        opt_io_size: QSize = Field(0, description="")
        physical_block_size: QSize = Field(0, description="A power of two between 512 B and 2 MiB")
        queue_size: QUint16 = Field(256, alias="queue-size", description="")
        report_discard_granularity: QBool = Field(True, alias="report-discard-granularity", description="")
        request_merging: QBool = Field(True, alias="request-merging", description=ON_OFF)
        rerror: QBlockdevOnError = Field(
            "auto", description="Error handling policy, report/ignore/enospc/stop/auto"
        )
        scsi: QBool = onoff(False)
        secs: QUint32 = Field(0, description="")
        seg_max_adjust: QBool = Field(True, alias="seg-max-adjust", description="")
        serial: QStr | None = None
        share_rw: QBool = Field(False, alias="share-rw", description="")
        werror: QBlockdevOnError = Field(
            "auto", description="Error handling policy, report/ignore/enospc/stop/auto"
        )
        write_cache: QOnOffAuto = Field("auto", alias="write-cache", description=ON_OFF_AUTO)
        write_zeroes: QBool = Field(True, alias="write-zeroes", description=ON_OFF)
        x_enable_wce_if_config_wce: QBool = Field(True, alias="x-enable-wce-if-config-wce", description="")

    def realize(self, machine) -> None:
        """QEMU's order: property values (sizes, the drive) when set, then the subchannel, then the device."""
        props = self.props
        _power_of_two_size("logical_block_size", props.logical_block_size)
        _power_of_two_size("physical_block_size", props.physical_block_size)
        self.node = None
        if props.drive is not None:
            self.node = machine.block.claim(props.drive, f"{self.qom_path}/virtio-backend")
        try:
            super().realize(machine)
            try:
                if props.drive is None:
                    raise GenericError("drive property not set")
                if self.node is None:
                    raise GenericError("Device needs media, but drive is empty")
                if props.num_queues == 0:
                    raise GenericError("num-queues property must be larger than 0")
                if props.queue_size <= 2:
                    raise GenericError(f"invalid queue-size property ({props.queue_size}), must be > 2")
                if props.queue_size > 1024 or props.queue_size & (props.queue_size - 1):
                    raise GenericError(f"invalid queue-size property ({props.queue_size}), "
                                       "must be a power of 2 (max 1024)")
            except GenericError:
                super().unrealize(machine)
                raise
        except Exception:
            if props.drive is not None:
                machine.block.release(props.drive)
            raise

    def unrealize(self, machine) -> None:
        super().unrealize(machine)
        machine.block.release(self.props.drive)

    def make_backend(self):
        from vmd.virtio.blk import BlkSettings, VirtioBlk

        p = self.props
        logical = p.logical_block_size or 512
        settings = BlkSettings(
            queue_size=p.queue_size, num_queues=1 if p.num_queues == 65535 else p.num_queues,
            seg_max_adjust=p.seg_max_adjust, logical_block_size=logical,
            physical_block_size=max(p.physical_block_size or 512, logical),
            min_io_size=p.min_io_size, opt_io_size=p.opt_io_size, cyls=p.cyls, heads=p.heads, secs=p.secs,
            serial=p.serial, write_cache=p.write_cache != "off" and getattr(self.node, "writeback", True),
            config_wce=p.config_wce, discard=p.discard, write_zeroes=p.write_zeroes,
            max_discard_sectors=p.max_discard_sectors, max_write_zeroes_sectors=p.max_write_zeroes_sectors,
        )
        return VirtioBlk(self.node, settings)


@device_type
class VirtioScsiCcw(VirtioCcwDevice):
    type_name = "virtio-scsi-ccw"
    aliases = ("virtio-scsi",)
    category = "Storage devices"
    virtio_id = VIRTIO_ID_SCSI
    backend_type = "virtio-scsi-device"

    class Props(VirtioCcwProps):
        cmd_per_lun: QUint32 = Field(128, description="")
        hotplug: QBool = onoff(True)
        iothread: QLink("iothread") | None = None
        max_sectors: QUint32 = Field(65535, description="")
        num_queues: QUint32 = Field(0xFFFFFFFF, description="")
        param_change: QBool = onoff(True)
        seg_max_adjust: QBool = Field(True, description="")
        virtqueue_size: QUint32 = Field(256, description="")

    # -- the SCSI bus the scsi-hd/scsi-cd devices plug into: vmd/devices/models/scsi.py --
    child_bus_type = "SCSI"
    child_bus = None

    def realize(self, machine) -> None:
        """The subchannel, then the virtio device's queue checks and its SCSI bus (QEMU's order)."""
        from vmd.devices.models.scsi import attach_controller

        super().realize(machine)
        try:
            attach_controller(self, machine)
        except GenericError:
            super().unrealize(machine)
            raise

    def make_backend(self):
        from vmd.devices.models.scsi import controller_backend

        return controller_backend(self)


@device_type
class VirtioRngCcw(VirtioCcwDevice):
    type_name = "virtio-rng-ccw"
    aliases = ("virtio-rng",)
    virtio_id = VIRTIO_ID_RNG
    backend_type = "virtio-rng-device"

    class Props(VirtioCcwProps):
        max_bytes: QUint64 = Field((1 << 63) - 1, alias="max-bytes", description="")
        period: QUint32 = Field(65536, description="")
        rng: QLink("rng-backend") | None = None

    def make_backend(self):
        from vmd.virtio.rng import VirtioRng

        return VirtioRng(max_bytes=self.props.max_bytes, period_ms=self.props.period)


@device_type
class VirtioBalloonCcw(VirtioCcwDevice):
    type_name = "virtio-balloon-ccw"
    aliases = ("virtio-balloon",)
    virtio_id = VIRTIO_ID_BALLOON
    backend_type = "virtio-balloon-device"

    readonly_props = {
        **VirtioCcwDevice.readonly_props,
        "guest-stats": ("guest statistics", ""),
        "guest-stats-polling-interval": ("int", ""),
    }

    class Props(VirtioCcwProps):
        deflate_on_oom: QBool = Field(False, alias="deflate-on-oom", description=ON_OFF)
        free_page_hint: QBool = Field(False, alias="free-page-hint", description=ON_OFF)
        free_page_reporting: QBool = Field(False, alias="free-page-reporting", description=ON_OFF)
        iothread: QLink("iothread") | None = None
        page_poison: QBool = Field(True, alias="page-poison", description=ON_OFF)
        qemu_4_0_config_size: QBool = Field(False, alias="qemu-4-0-config-size", description="")


@device_type
class VirtioGpuCcw(VirtioCcwDevice):
    type_name = "virtio-gpu-ccw"
    aliases = ("virtio-gpu",)
    category = "Display devices"
    virtio_id = VIRTIO_ID_GPU
    backend_type = "virtio-gpu-device"

    class Props(VirtioCcwProps):
        blob: QBool = onoff(False)
        edid: QBool = onoff(True)
        max_hostmem: QSize = Field(268435456, description="")
        max_outputs: QUint32 = Field(1, description="")
        xres: QUint32 = Field(1280, description="")
        yres: QUint32 = Field(800, description="")


class VirtioInputCcw(VirtioCcwDevice):
    """Abstract: the virtio-input family (keyboard, mouse, tablet)."""

    category = "Input devices"
    virtio_id = VIRTIO_ID_INPUT

    class Props(VirtioCcwProps):
        serial: QStr | None = None
        display: QStr | None = None
        head: QUint32 = Field(0, description="")


class VirtioPointerCcw(VirtioInputCcw):
    """Abstract: mouse and tablet, which also report a wheel."""

    class Props(VirtioInputCcw.Props):
        wheel_axis: QBool = Field(True, alias="wheel-axis", description="")


@device_type
class VirtioKeyboardCcw(VirtioInputCcw):
    type_name = "virtio-keyboard-ccw"
    aliases = ("virtio-keyboard",)
    backend_type = "virtio-keyboard-device"


@device_type
class VirtioMouseCcw(VirtioPointerCcw):
    type_name = "virtio-mouse-ccw"
    aliases = ("virtio-mouse",)
    backend_type = "virtio-mouse-device"


@device_type
class VirtioTabletCcw(VirtioPointerCcw):
    type_name = "virtio-tablet-ccw"
    aliases = ("virtio-tablet",)
    backend_type = "virtio-tablet-device"


@device_type
class VirtioSerialCcw(VirtioSerialBus, VirtioCcwDevice):
    """Its bus, ports and back end: :mod:`vmd.devices.models.virtio_serial`."""

    type_name = "virtio-serial-ccw"
    aliases = ("virtio-serial",)
    category = "Input devices"
    virtio_id = VIRTIO_ID_CONSOLE
    backend_type = "virtio-serial-device"

    class Props(VirtioCcwProps):
        emergency_write: QBool = Field(True, alias="emergency-write", description=ON_OFF)
        max_ports: QUint32 = Field(31, description="")


@device_type
class VirtioCryptoCcw(VirtioCcwDevice):
    type_name = "virtio-crypto-ccw"
    virtio_id = VIRTIO_ID_CRYPTO
    backend_type = "virtio-crypto-device"

    class Props(VirtioCcwProps):
        cryptodev: QLink("cryptodev-backend") | None = None


@device_type
class Virtio9pCcw(VirtioCcwDevice):
    type_name = "virtio-9p-ccw"
    aliases = ("virtio-9p",)
    category = "Storage devices"
    virtio_id = VIRTIO_ID_9P
    backend_type = "virtio-9p-device"

    class Props(VirtioCcwProps):
        fsdev: QStr | None = None
        mount_tag: QStr | None = None


@device_type
class VhostVsockCcw(VirtioCcwDevice):
    type_name = "vhost-vsock-ccw"
    virtio_id = VIRTIO_ID_VSOCK
    backend_type = "vhost-vsock-device"

    class Props(VhostCcwProps):
        guest_cid: QUint64 = Field(0, alias="guest-cid", description="")
        seqpacket: QOnOffAuto = Field("auto", description=ON_OFF_AUTO)
        vhostfd: QStr | None = None


@device_type
class VhostUserFsCcw(VirtioCcwDevice):
    type_name = "vhost-user-fs-ccw"
    category = "Storage devices"
    virtio_id = VIRTIO_ID_FS
    backend_type = "vhost-user-fs-device"

    class Props(VirtioCcwProps):
        chardev: QStr | None = Field(None, description="ID of a chardev to use as a backend")
        num_request_queues: QUint16 = Field(1, alias="num-request-queues", description="")
        queue_size: QUint16 = Field(128, alias="queue-size", description="")
        tag: QStr | None = None


@device_type
class VhostScsiCcw(VirtioCcwDevice):
    type_name = "vhost-scsi-ccw"
    category = "Storage devices"
    virtio_id = VIRTIO_ID_SCSI
    backend_type = "vhost-scsi"

    class Props(VhostCcwProps):
        wwpn: QStr | None = None
        boot_tpgt: QUint32 = Field(0, description="")
        num_queues: QUint32 = Field(0xFFFFFFFF, description="")
        virtqueue_size: QUint32 = Field(128, description="")
        max_sectors: QUint32 = Field(0xFFFF, description="")
        cmd_per_lun: QUint32 = Field(128, description="")
        vhostfd: QStr | None = None
        migratable: QBool = Field(False, description="")
        seg_max_adjust: QBool = Field(True, description="")
        t10_pi: QBool = onoff(False)
