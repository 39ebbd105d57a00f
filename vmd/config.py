"""The configuration: one pydantic model of a whole VM.

Both ways of describing a machine produce this model: QEMU's command line
(:mod:`vmd.cmdline`) and a TOML file (``vmd --config vm.toml``, the form the
systemd unit uses).  ``vmd --print-config`` dumps it as JSON; the JSON and TOML
keys are the same (field aliases: ``[[device]]``, ``[[chardev]]`` ...).

Options whose subsystem arrives in a later issue (drives, netdevs, objects,
kernel/initrd) are validated for shape here and kept, so that a configuration
written today keeps its meaning.
"""

from __future__ import annotations

import uuid as uuid_mod
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from vmd.defaults import DEFAULT_API_LISTEN, embedded_default, runtime_dir_for  # noqa: F401 (re-exported)
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Origin(_Model):
    """A part of the configuration that remembers the option it came from, for error messages."""

    origin: str | None = Field(None, exclude=True, description="the option as written, for error messages")


# --- chardevs -----------------------------------------------------------------
class ChardevSocket(_Origin):
    backend: Literal["socket"] = "socket"
    id: str
    path: str | None = None
    abstract: bool = False
    host: str | None = None
    port: int | None = Field(None, ge=0, le=65535)
    server: bool = False
    wait: bool = True
    telnet: bool = False
    tn3270: bool = False
    websocket: bool = False
    nodelay: bool = False
    ipv4: bool | None = None
    ipv6: bool | None = None
    reconnect: int = Field(0, ge=0)
    tls_creds: str | None = Field(None, alias="tls-creds")
    mux: bool = False

    @model_validator(mode="after")
    def _one_address(self) -> "ChardevSocket":
        if self.path is None and self.host is None and self.port is None:
            raise ValueError("chardev: socket: no address given (path, or host and port)")
        if self.path is not None and (self.host is not None or self.port is not None):
            raise ValueError("chardev: socket: give either a path or host and port, not both")
        if self.path is None and self.port is None:
            raise ValueError("chardev: socket: port is missing")
        return self


class ChardevStdio(_Origin):
    backend: Literal["stdio"] = "stdio"
    id: str
    signal: bool = True
    mux: bool = False


class ChardevNull(_Origin):
    backend: Literal["null"] = "null"
    id: str
    mux: bool = False


class ChardevFile(_Origin):
    backend: Literal["file"] = "file"
    id: str
    path: str
    append: bool = False
    mux: bool = False


Chardev = Annotated[Union[ChardevSocket, ChardevStdio, ChardevNull, ChardevFile], Field(discriminator="backend")]


class MonitorSpec(_Origin):
    chardev: str
    mode: Literal["control", "readline"] = "readline"
    pretty: bool = False


# --- devices and backends -------------------------------------------------------
class DeviceSpec(_Origin):
    """A ``-device`` / ``[[device]]`` entry: the driver, its id and its properties.

    Properties are validated against the device type's declaration when the
    machine is built (:mod:`vmd.devices.registry`); unknown drivers and bad
    values are reported with QEMU's texts.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    driver: str
    id: str | None = None
    bus: str | None = None

    @property
    def props(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OpaqueSpec(_Origin):
    """Options of a backend whose subsystem arrives later: kept as written, by key."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DriveSpec(OpaqueSpec):
    id: str | None = None
    file: str | None = None
    if_: str | None = Field(None, alias="if")
    format: str | None = None


class BlockdevSpec(OpaqueSpec):
    driver: str
    node_name: str | None = Field(None, alias="node-name")


class NetdevSpec(OpaqueSpec):
    type: str
    id: str


class ObjectSpec(OpaqueSpec):
    qom_type: str = Field(alias="qom-type")
    id: str


class GlobalSpec(_Origin):
    driver: str
    property: str
    value: str


# --- machine ----------------------------------------------------------------------
MACHINE_TYPES = ("s390-ccw-virtio",)
#: versioned aliases QEMU 7.2 accepts; all map onto the one machine vmd models
MACHINE_VERSIONS = tuple(f"s390-ccw-virtio-{v}" for v in (
    "7.2", "7.1", "7.0", "6.2", "6.1", "6.0", "5.2", "5.1", "5.0", "4.2", "4.1", "4.0",
    "3.1", "3.0", "2.12", "2.11", "2.10", "2.9", "2.8", "2.7", "2.6", "2.5", "2.4",
))


class MachineSpec(_Origin):
    type: str = "s390-ccw-virtio"
    accel: str = "tcg"
    loadparm: str | None = None
    dump_guest_core: bool = Field(True, alias="dump-guest-core")
    mem_merge: bool = Field(True, alias="mem-merge")
    aes_key_wrap: bool = Field(True, alias="aes-key-wrap")
    dea_key_wrap: bool = Field(True, alias="dea-key-wrap")
    zpcii_disable: bool = Field(False, alias="zpcii-disable")
    confidential_guest_support: str | None = Field(None, alias="confidential-guest-support")
    memory_backend: str | None = Field(None, alias="memory-backend")
    graphics: bool = True
    usb: bool = False

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value in ("s390-ccw-virtio", *MACHINE_VERSIONS):
            return value
        raise ValueError(f"unsupported machine type: \"{value}\"")


class CpuSpec(_Origin):
    model: str = "qemu"
    features: dict[str, bool] = Field(default_factory=dict)


class MemorySpec(_Origin):
    size: int = Field(128 << 20, gt=0, description="bytes")
    slots: int | None = None
    maxmem: int | None = None


class SmpSpec(_Origin):
    cpus: int = Field(1, ge=1, le=248)
    maxcpus: int | None = Field(None, ge=1, le=248)
    drawers: int | None = Field(None, ge=1)
    books: int | None = Field(None, ge=1)
    sockets: int | None = Field(None, ge=1)
    cores: int | None = Field(None, ge=1)
    threads: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _max(self) -> "SmpSpec":
        if self.maxcpus is not None and self.maxcpus < self.cpus:
            raise ValueError("maxcpus must be equal to or greater than smp")
        return self


class ApiSpec(_Model):
    """vmd's JSON-RPC/HTTP API (no QEMU counterpart)."""

    listen: str | None = Field(None, description="HOST:PORT of the JSON-RPC API; none to disable")
    token_file: str | None = Field(None, description="where the bearer token is written (0600)")

    def address(self) -> tuple[str, int] | None:
        if not self.listen:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"api listen address must be HOST:PORT, not '{value}'")
        return value


class Config(_Model):
    """A whole VM, as both the command line and TOML describe it."""

    name: str | None = None
    uuid: uuid_mod.UUID | None = None
    machine: MachineSpec = Field(default_factory=MachineSpec)
    cpu: CpuSpec = Field(default_factory=CpuSpec)
    memory: MemorySpec = Field(default_factory=MemorySpec)
    smp: SmpSpec = Field(default_factory=SmpSpec)
    chardevs: list[Chardev] = Field(default_factory=list, alias="chardev")
    monitors: list[MonitorSpec] = Field(default_factory=list, alias="monitor")
    devices: list[DeviceSpec] = Field(default_factory=list, alias="device")
    drives: list[DriveSpec] = Field(default_factory=list, alias="drive")
    blockdevs: list[BlockdevSpec] = Field(default_factory=list, alias="blockdev")
    netdevs: list[NetdevSpec] = Field(default_factory=list, alias="netdev")
    objects: list[ObjectSpec] = Field(default_factory=list, alias="object")
    globals: list[GlobalSpec] = Field(default_factory=list, alias="global")
    serials: list[str] = Field(
        default_factory=list, alias="serial", description="-serial: chardev ids of the serial consoles, in order"
    )
    boot: dict[str, str] = Field(default_factory=dict)
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None
    bios: str | None = None
    log_file: str | None = Field(None, alias="log-file", description="-D: where -d log items go")
    log_items: list[str] = Field(default_factory=list, alias="log-items")
    start_paused: bool = Field(False, alias="start-paused", description="-S")
    no_shutdown: bool = Field(False, alias="no-shutdown")
    nodefaults: bool = False
    display: str = "none"
    nographic: bool = False
    runtime_dir: str | None = Field(None, alias="runtime-dir")
    api: ApiSpec = Field(default_factory=ApiSpec)

    @model_validator(mode="after")
    def _references(self) -> "Config":
        seen: set[str] = set()
        for chardev in self.chardevs:
            if chardev.id in seen:
                raise ValueError(f"Duplicate ID '{chardev.id}' for chardev")
            seen.add(chardev.id)
        for monitor in self.monitors:
            if monitor.chardev not in seen:
                raise ValueError(f"chardev \"{monitor.chardev}\" not found")
        ids: set[str] = set()
        for device in self.devices:
            if device.id is not None:
                if device.id in ids:
                    raise ValueError(f"Duplicate device ID '{device.id}'")
                ids.add(device.id)
        return self

    def chardev(self, chardev_id: str):
        for chardev in self.chardevs:
            if chardev.id == chardev_id:
                return chardev
        return None

    def resolved_runtime_dir(self) -> Path:
        """Where sockets and the token live: systemd's RuntimeDirectory, else XDG, else /run."""
        return runtime_dir_for(self.name, self.runtime_dir)
