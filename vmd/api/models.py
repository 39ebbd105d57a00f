"""Argument, result and event data models shared by the commands (QEMU's QAPI shapes).

Names follow ``qapi/*.json``; where vmd adds something, the name carries the
downstream prefix ``__org.vmd_`` (qmp-spec "Downstream extension of QMP").
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vmd.api.registry import Args

VENDOR = "__org.vmd_"


class Out(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


# --- control ----------------------------------------------------------------------
class VersionTriple(Out):
    major: int
    minor: int
    micro: int


class VersionInfo(Out):
    qemu: VersionTriple
    package: str


class CommandInfo(Out):
    name: str


class QmpCapabilitiesArgs(Args):
    enable: list[Literal["oob"]] | None = None


# --- run state ---------------------------------------------------------------------
RunStateName = Literal[
    "debug", "inmigrate", "internal-error", "io-error", "paused", "postmigrate", "prelaunch",
    "finish-migrate", "restore-vm", "running", "save-vm", "shutdown", "suspended", "watchdog",
    "guest-panicked", "colo",
]


class StatusInfo(Out):
    status: RunStateName
    singlestep: bool
    running: bool


class NameInfo(Out):
    name: str | None = None


class UuidInfo(Out):
    UUID: str


class MachineInfo(Out):
    name: str
    alias: str | None = None
    is_default: bool | None = Field(None, alias="is-default")
    cpu_max: int = Field(alias="cpu-max")
    hotpluggable_cpus: bool = Field(alias="hotpluggable-cpus")
    numa_mem_supported: bool = Field(alias="numa-mem-supported")
    deprecated: bool
    default_cpu_type: str | None = Field(None, alias="default-cpu-type")
    default_ram_id: str | None = Field(None, alias="default-ram-id")


class CpuInstanceProperties(Out):
    core_id: int = Field(alias="core-id")


class CpuInfoFast(Out):
    cpu_index: int = Field(alias="cpu-index")
    qom_path: str = Field(alias="qom-path")
    thread_id: int = Field(alias="thread-id")
    props: CpuInstanceProperties
    target: Literal["s390x"] = "s390x"
    cpu_state: Literal["uninitialized", "stopped", "check-stop", "operating", "load"] = Field(alias="cpu-state")


class ChardevInfo(Out):
    label: str
    filename: str
    frontend_open: bool = Field(alias="frontend-open")


# --- devices -----------------------------------------------------------------------
class DeviceDelArgs(Args):
    id: str


class DeviceListPropertiesArgs(Args):
    typename: str


class ObjectPropertyInfo(Out):
    name: str
    type: str
    description: str | None = None
    default_value: Any = Field(None, alias="default-value")


class QomListArgs(Args):
    path: str


class QomGetArgs(Args):
    path: str
    property: str


class HumanMonitorCommandArgs(Args):
    command_line: str = Field(alias="command-line")
    cpu_index: int | None = Field(None, alias="cpu-index")


class CssChannelPath(Out):
    cssid: int
    chpid: int
    type: int
    devices: int


class CssSubchannelInfo(Out):
    """One subchannel of the virtual channel subsystem, with how the guest sees it."""

    subch_id: str = Field(alias="subch-id", description="cssid.ssid.schid as QEMU prints it")
    dev_id: str = Field(alias="dev-id", description="cssid.ssid.devno as QEMU prints it")
    device: str | None = Field(None, description="the device's id, if it has one")
    qom_path: str = Field(alias="qom-path")
    driver: str
    visible_as: str | None = Field(
        None, alias="visible-as", description="the device number a guest without MCSS-E/MSS sees, if visible"
    )
    chpids: list[str]
    hotplugged: bool


class CssInfo(Out):
    subchannels: list[CssSubchannelInfo]
    channel_paths: list[CssChannelPath] = Field(alias="channel-paths")
    pending_crws: int = Field(alias="pending-crws")


# --- events ------------------------------------------------------------------------
ShutdownCause = Literal[
    "none", "host-error", "host-qmp-quit", "host-qmp-system-reset", "host-signal", "host-ui",
    "guest-shutdown", "guest-reset", "guest-panic", "subsystem-reset", "snapshot-load",
]


class ShutdownData(Out):
    guest: bool
    reason: ShutdownCause


class ResetData(Out):
    guest: bool
    reason: ShutdownCause


class DeviceDeletedData(Out):
    device: str | None = None
    path: str


class GuestPanicInformationS390(Out):
    type: Literal["s390"] = "s390"
    core: int
    psw_mask: int = Field(alias="psw-mask")
    psw_addr: int = Field(alias="psw-addr")
    reason: Literal["unknown", "disabled-wait", "extint-loop", "pgmint-loop", "opint-loop", "mcint-loop"]


class GuestPanickedData(Out):
    action: Literal["pause", "poweroff", "run"]
    info: GuestPanicInformationS390 | None = None


#: event name -> data model (None: the event has no data member)
EVENTS: dict[str, type[BaseModel] | None] = {
    "SHUTDOWN": ShutdownData,
    "POWERDOWN": None,
    "RESET": ResetData,
    "STOP": None,
    "RESUME": None,
    "DEVICE_DELETED": DeviceDeletedData,
    "GUEST_PANICKED": GuestPanickedData,
}
