"""virtio-serial ports: ``virtconsole`` and ``virtserialport`` on a virtio-serial-ccw device's bus.

The bus is QEMU's ``virtio-serial-bus``: ``<id>.0`` for a virtio-serial-ccw
with an id, ``virtio-serial-bus.<n>`` for one without; a port without
``bus=`` goes on the most recently created one, as QEMU's bus search finds
it.  Port numbers follow QEMU: the first console without ``nr`` takes port 0,
every other port the lowest free number (port 0 stays reserved for consoles
even after its console is unplugged), names are unique across all buses.

A port's ``chardev`` is one of the machine's character devices (the daemon
puts them in ``machine.chardevs``); the chardev feeds the port's
:class:`~vmd.virtio.serial.SerialPort` and takes its output.  The device side
(:class:`~vmd.virtio.serial.VirtioSerial`) exists only while the machine
runs guest code; host events reach it through :meth:`VirtioSerialBus.schedule_service`,
which runs it on the event loop with the vCPU thread held out of guest code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar

from pydantic import Field

from vmd.devices.base import Device, DeviceProps, device_type
from vmd.devices.props import QStr, QUint32
from vmd.errors import GenericError

if TYPE_CHECKING:
    from vmd.machine.machine import Machine

SERIAL_BUS_TYPE = "virtio-serial-bus"
#: "nr" not given (QEMU's VIRTIO_CONSOLE_BAD_ID)
BAD_ID = 0xFFFFFFFF
#: two queues per port plus the control pair within QEMU's 1024 queues
MAX_PORTS = 511


class VirtioSerialBus:
    """Mixin for virtio-serial-ccw: the bus its ports ride on and the back end they share."""

    child_bus_type: ClassVar[str] = SERIAL_BUS_TYPE

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: the bus's name, given by the machine (``vs0.0``, ``virtio-serial-bus.0``)
        self.child_bus_name = SERIAL_BUS_TYPE + ".0"
        #: port devices in plug order
        self.ports: list[VirtioSerialPortDevice] = []
        #: port numbers in use; 0 is kept for a console from the start (QEMU's backward compatibility)
        self.port_ids: set[int] = {0}
        self.backend = None
        self._transport = None
        self._machine: "Machine | None" = None
        self._service_pending = False

    def realize(self, machine: "Machine") -> None:
        """QEMU's order: the subchannel, then the virtio-serial device's own checks."""
        super().realize(machine)  # type: ignore[misc]
        max_ports = self.props.max_ports  # type: ignore[attr-defined]
        try:
            if max_ports == 0:
                raise GenericError("Maximum number of serial ports not specified")
            if max_ports > MAX_PORTS:
                raise GenericError(f"maximum ports supported: {MAX_PORTS}")
        except GenericError:
            super().unrealize(machine)  # type: ignore[misc]
            raise
        self._machine = machine

    # -- the back end ----------------------------------------------------------------------
    def make_backend(self):
        from vmd.virtio.serial import VirtioSerial

        props = self.props  # type: ignore[attr-defined]
        backend = VirtioSerial(props.max_ports, props.emergency_write, self.child_bus_name)
        for device in self.ports:
            backend.plug(device.port)
        self.backend = backend
        return backend

    @property
    def io_handler(self):
        """The transport the machine put in front of the back end (None without guest code)."""
        return self._transport

    @io_handler.setter
    def io_handler(self, transport) -> None:
        self._transport = transport
        if self.backend is not None:
            # the back end fills receive queues on its own (host input), not only inside kicks
            self.backend.attach_queues(None if transport is None else transport.queues)
        if transport is None:
            self.backend = None

    def schedule_service(self) -> None:
        """(event loop) Host input or a host state change: let the back end look, soon and once."""
        if self._service_pending or self._machine is None:
            return
        self._service_pending = True
        self._machine.defer(self._service)

    def _service(self) -> None:
        self._service_pending = False
        backend = self.backend
        if backend is not None and self._transport is not None and self._machine is not None:
            self._machine.with_guest_held(backend.service)

    # -- ports -------------------------------------------------------------------------------
    def assign_port_id(self, requested: int, is_console: bool, name_taken: Callable[[], bool],
                       name: str | None) -> int:
        """The port number for a new port; the refusals in QEMU's order and words."""
        props = self.props  # type: ignore[attr-defined]
        if requested != BAD_ID and requested in self._plugged_ids():
            raise GenericError(f"virtio-serial-bus: A port already exists at id {requested}")
        if name is not None and name_taken():
            raise GenericError(f"virtio-serial-bus: A port already exists by name {name}")
        port_id = requested
        if port_id == BAD_ID:
            if is_console and 0 not in self._plugged_ids():
                port_id = 0
            else:
                # QEMU looks through whole 32-bit words of its port map
                words = (props.max_ports + 31) // 32
                port_id = next((i for i in range(words * 32) if i not in self.port_ids), BAD_ID)
                if port_id == BAD_ID:
                    raise GenericError("virtio-serial-bus: Maximum port limit for this device reached")
        if port_id >= props.max_ports:
            raise GenericError("virtio-serial-bus: Out-of-range port id specified, "
                               f"max. allowed: {props.max_ports - 1}")
        return port_id

    def _plugged_ids(self) -> set[int]:
        return {device.port.id for device in self.ports}

    def plug_port(self, device: "VirtioSerialPortDevice") -> None:
        self.ports.append(device)
        self.port_ids.add(device.port.id)
        device.port.request_service = self.schedule_service
        if self.backend is not None:
            self.backend.plug(device.port)

    def unplug_port(self, device: "VirtioSerialPortDevice") -> None:
        if device in self.ports:
            self.ports.remove(device)
        if device.port.id:
            self.port_ids.discard(device.port.id)
        if self.backend is not None:
            self.backend.unplug(device.port)


class VirtioSerialPortDevice(Device):
    """Abstract: a port on a virtio-serial bus."""

    bus_type = SERIAL_BUS_TYPE
    category = "Input devices"
    is_console: ClassVar[bool] = False

    class Props(DeviceProps):
        chardev: QStr | None = Field(None, description="ID of a chardev to use as a backend")
        name: QStr | None = None
        nr: QUint32 = Field(BAD_ID, description="")

    def __init__(self, dev_id, props, qom_path):
        super().__init__(dev_id, props, qom_path)
        #: the virtio-serial device whose bus this port is on (set by the machine before realize)
        self.bus_owner: VirtioSerialBus | None = None
        self.port = None
        self.chardev = None

    def realize(self, machine: "Machine") -> None:
        from vmd.virtio.serial import SerialPort

        owner = self.bus_owner
        if owner is None:
            raise GenericError(f"No '{SERIAL_BUS_TYPE}' bus found for device '{self.type_name}'")
        props = self.props
        chardev = self._find_chardev(machine)
        # names are unique across every virtio-serial bus of the machine
        port_id = owner.assign_port_id(
            props.nr, self.is_console, name=props.name,
            name_taken=lambda: any(isinstance(d, VirtioSerialPortDevice) and d.props.name == props.name
                                   for d in machine.devices.values()))
        if port_id == 0 and not self.is_console:
            raise GenericError("Port number 0 on virtio-serial devices reserved for virtconsole devices "
                               "for backward compatibility.")
        self.port = SerialPort(port_id, props.name, self.is_console, has_chardev=chardev is not None)
        if chardev is not None:
            chardev.attach_device(self.type_name, self.port)
        self.chardev = chardev
        owner.plug_port(self)
        self.realized = True

    def _find_chardev(self, machine: "Machine"):
        name = self.props.chardev
        if not name:  # an empty name is no chardev, as in QEMU
            return None
        chardev = machine.chardevs.get(name)
        if chardev is None:
            raise GenericError(f"Property '{self.type_name}.chardev' can't find value '{name}'")
        if chardev.frontend is not None:
            raise GenericError(f"Property '{self.type_name}.chardev' can't take value '{name}': "
                               f"Device '{name}' is in use")
        return chardev

    def unrealize(self, machine: "Machine") -> None:
        if self.bus_owner is not None and self.port is not None:
            self.bus_owner.unplug_port(self)
        if self.chardev is not None:
            self.chardev.detach_device()
            self.chardev = None
        self.realized = False

    # -- introspection -----------------------------------------------------------------------
    def parent_bus_path(self) -> str:
        owner = self.bus_owner
        if owner is None:
            return ""
        return f"{owner.qom_path}/virtio-backend/{owner.child_bus_name}"  # type: ignore[attr-defined]

    def _values(self) -> dict[str, Callable[[], Any]]:
        # QEMU shows the number the port got, and "" for strings never set
        return {"nr": lambda: self.port.id if self.port is not None else self.props.nr,
                "chardev": lambda: self.props.chardev or "",
                "name": lambda: self.props.name or ""}

    def qom_properties(self):
        out = super().qom_properties()
        for name, getter in self._values().items():
            out[name] = (out[name][0], getter)
        return out

    def qtree_props(self) -> list[tuple[str, str]]:
        values = {name: getter() for name, getter in self._values().items()}
        return [("chardev", f'"{values["chardev"]}"'), ("nr", f"{values['nr']} ({values['nr']:#x})"),
                ("name", f'"{values["name"]}"')]

    def port_state(self) -> str:
        """QEMU's qtree line for a port: "port 1, guest on, host off, throttle off"."""
        port = self.port
        if port is None:
            return ""
        def onoff(flag: bool) -> str:
            return "on" if flag else "off"
        return (f"port {port.id}, guest {onoff(port.guest_connected)}, host {onoff(port.host_connected)}, "
                f"throttle {onoff(port.throttled)}")


@device_type
class VirtConsole(VirtioSerialPortDevice):
    type_name = "virtconsole"
    is_console = True


@device_type
class VirtSerialPort(VirtioSerialPortDevice):
    type_name = "virtserialport"
