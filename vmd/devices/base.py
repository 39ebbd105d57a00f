"""Device base classes: properties declared once, two-phase lifecycle.

A device type is a class with a nested pydantic ``Props`` model.  That one
declaration drives command-line and QMP validation, ``-device X,help``,
``device-list-properties``, the JSON schemas in ``schemas/`` and ``qom-get``.

Lifecycle (as QEMU's qdev): building a device from validated ``Props`` cannot
fail; :meth:`Device.realize` claims machine resources (a subchannel) and may
fail, in which case it must leave nothing behind; :meth:`Device.unrealize`
gives them back.

The seam between a channel device and the channel subsystem is narrow: the CSS
owns subchannels and their identities, the device answers Sense ID and (in the
CPU issue) executes CCWs.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from vmd.devices.props import QInt32, QStr, qemu_message
from vmd.errors import GenericError
from vmd.machine.css import CHPID_TYPE_VIRTIO, CssDevId, Subchannel, devid_str

if TYPE_CHECKING:
    from vmd.machine.machine import Machine

CSS_DEVID_DESC = "Identifier of an I/O device in the channel subsystem, example: fe.1.23ab"
READONLY_DEVID_DESC = "Read-only identifier of an I/O device in the channel subsystem, example: fe.1.23ab"
LOADPARM_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789. ")


class DeviceProps(BaseModel):
    """Properties every device type has; subclasses add their own fields.

    Field aliases carry QEMU's spelling (``max-bytes``); ``populate_by_name``
    lets Python code use the attribute names.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def parse_loadparm(value: str) -> str:
    """QEMU's loadparm rules: up to 8 characters of ``[A-Za-z0-9. ]``, upper-cased.

    :raises ValueError: with QEMU's text.
    """
    if len(value) > 8:
        raise ValueError("'loadparm' can only contain up to 8 characters")
    upper = value.upper()
    for ch in upper:
        if ch not in LOADPARM_CHARS:
            raise ValueError(f"LOADPARM: invalid character '{ch}' (ASCII 0x{ord(ch):02x})")
    return upper


class CcwDeviceProps(DeviceProps):
    """Properties of every device on the virtual channel subsystem (QEMU's CcwDevice)."""

    devno: QStr | None = Field(None, description=CSS_DEVID_DESC)

    @field_validator("devno", mode="after")
    @classmethod
    def _check_devno(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        typename = (info.context or {}).get("typename", "device")
        try:
            return str(CssDevId.parse(value, typename, "devno"))
        except GenericError as err:
            raise qemu_message(err.desc) from err

    def css_devid(self) -> CssDevId | None:
        return None if self.devno is None else CssDevId.parse(self.devno, "device")


class BootableCcwProps(CcwDeviceProps):
    """Properties of channel devices the firmware can IPL from."""

    bootindex: QInt32 | None = Field(None, description=None)
    loadparm: QStr | None = Field(None, description="Boot loader parameter for this boot device (up to 8 characters)")

    @field_validator("loadparm", mode="after")
    @classmethod
    def _check_loadparm(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return parse_loadparm(value)
        except ValueError as err:
            raise qemu_message(str(err)) from err


class Device:
    """A device of the machine.  Subclasses set the class attributes and ``Props``."""

    type_name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    category: ClassVar[str] = "Misc devices"
    description: ClassVar[str | None] = None
    bus_type: ClassVar[str] = "virtual-css-bus"
    hotpluggable: ClassVar[bool] = True
    #: child objects QEMU shows among the properties, e.g. {"virtio-backend": "child<virtio-rng-device>"}
    children: ClassVar[dict[str, str]] = {}
    #: read-only properties shown by help, name -> (qemu type, description)
    readonly_props: ClassVar[dict[str, tuple[str, str]]] = {}
    Props: ClassVar[type[DeviceProps]] = DeviceProps

    def __init__(self, dev_id: str | None, props: DeviceProps, qom_path: str):
        self.id = dev_id
        self.props = props
        self.qom_path = qom_path
        self.realized = False
        self.hotplugged = False

    # -- lifecycle -------------------------------------------------------
    def realize(self, machine: "Machine") -> None:
        """Claim machine resources.  On failure raise and leave nothing claimed."""
        self.realized = True

    def unrealize(self, machine: "Machine") -> None:
        self.realized = False

    # -- introspection ---------------------------------------------------
    def qom_properties(self) -> dict[str, tuple[str, Callable[[], Any]]]:
        """QOM property name -> (type, getter) for qom-list and qom-get."""
        out: dict[str, tuple[str, Callable[[], Any]]] = {
            "type": ("string", lambda: self.type_name),
            "realized": ("bool", lambda: self.realized),
            "hotplugged": ("bool", lambda: self.hotplugged),
            "hotpluggable": ("bool", lambda: self.hotpluggable),
            "parent_bus": ("link<bus>", lambda: self.parent_bus_path()),
        }
        from vmd.devices.registry import property_table  # local: registry imports device modules

        for prop in property_table(type(self)):
            name = prop["name"]
            if name in out or prop["type"].startswith("child<"):
                continue
            out[name] = (prop["type"], self._prop_getter(name))
        for child, ctype in self.children.items():
            out[child] = (ctype, lambda child=child: f"{self.qom_path}/{child}")
        return out

    def _prop_getter(self, name: str) -> Callable[[], Any]:
        fields = type(self.props).model_fields
        for attr, info in fields.items():
            if (info.alias or attr) == name:
                return lambda attr=attr: getattr(self.props, attr)
        return lambda: None

    def parent_bus_path(self) -> str:
        return "/machine/virtual-css-bridge/virtual-css-bus"

    def qtree_props(self) -> list[tuple[str, str]]:
        """(name, rendered value) pairs for ``info qtree``."""
        return []


class CcwDevice(Device):
    """A device on the virtual channel subsystem (QEMU's abstract ccw-device)."""

    chpid_type: ClassVar[int] = CHPID_TYPE_VIRTIO
    readonly_props = {
        "dev_id": ("str", READONLY_DEVID_DESC),
        "subch_id": ("str", READONLY_DEVID_DESC),
    }
    Props = CcwDeviceProps
    #: Sense ID identity: control unit type/model and device type/model
    cu_type: ClassVar[int] = 0
    cu_model: ClassVar[int] = 0
    dev_type: ClassVar[int] = 0
    dev_model: ClassVar[int] = 0

    def __init__(self, dev_id: str | None, props: DeviceProps, qom_path: str):
        super().__init__(dev_id, props, qom_path)
        self.subchannel: Subchannel | None = None

    def realize(self, machine: "Machine") -> None:
        props: CcwDeviceProps = self.props  # type: ignore[assignment]
        if getattr(props, "loadparm", None) is not None and getattr(props, "bootindex", None) is None:
            raise GenericError("LOADPARM is only valid for boot devices!")
        self.subchannel = machine.css.assign(self, props.css_devid(), self.chpid_type, hotplugged=self.hotplugged)
        self.realized = True

    def unrealize(self, machine: "Machine") -> None:
        if self.subchannel is not None:
            machine.css.release(self.subchannel)
            self.subchannel = None
        self.realized = False

    @property
    def dev_id(self) -> str:
        return devid_str(None if self.subchannel is None else self.subchannel.dev_id)

    @property
    def subch_id(self) -> str:
        return devid_str(None if self.subchannel is None else self.subchannel.subch_id)

    def sense_id(self) -> bytes:
        """Sense ID data: 0xFF, CU type, CU model, device type, device model (7 bytes, no CIWs)."""
        return struct.pack(">BHBHB", 0xFF, self.cu_type, self.cu_model, self.dev_type, self.dev_model)

    def qom_properties(self) -> dict[str, tuple[str, Callable[[], Any]]]:
        out = super().qom_properties()
        out["dev_id"] = ("str", lambda: self.dev_id)
        out["subch_id"] = ("str", lambda: self.subch_id)
        # QEMU keeps devno as the user gave it: "<unset>" when it was auto-assigned.
        out["devno"] = ("str", lambda: self.props.devno or "<unset>")
        return out

    def qtree_props(self) -> list[tuple[str, str]]:
        return [
            ("devno", f'"{self.props.devno or "<unset>"}"'),
            ("dev_id", f'"{self.dev_id}"'),
            ("subch_id", f'"{self.subch_id}"'),
        ]


#: Device classes by canonical type name; filled by :func:`device_type`.
DEVICE_TYPES: dict[str, type[Device]] = {}
#: alias -> canonical type name
DEVICE_ALIASES: dict[str, str] = {}


def device_type(cls: type[Device]) -> type[Device]:
    """Class decorator registering a concrete device type."""
    if cls.type_name in DEVICE_TYPES:
        raise RuntimeError(f"device type {cls.type_name} registered twice")
    DEVICE_TYPES[cls.type_name] = cls
    for alias in cls.aliases:
        DEVICE_ALIASES[alias] = cls.type_name
    return cls
