"""The SCLP operator consoles: ``sclpconsole`` (VT220) and ``sclplmconsole`` (line mode).

They sit on the machine's own ``s390-sclp-events-bus`` (``s390-sclp-events-bus.0``
for ``bus=``), which takes no hot plug: QEMU refuses ``device_add`` and
``device_del`` there for the bus, before anything else about the device.
QEMU's ``hotpluggable`` property is
false for them.  The machine creates them itself for ``-serial`` (the first serial is a VT220
console, the second a line-mode one) at ``/machine/unattached/device[N]``,
after the CPUs; ``-device`` adds them too.  A machine has at most one of each
(QEMU: "Multiple VT220 operator consoles are not supported", then "SCLP event
initialization failed.").

A console's ``chardev`` is one of the machine's character devices: a
multiplexed one (``mon:stdio``) may also carry a monitor.  The chardev feeds
the console's :class:`~vmd.machine.sclp.ConsolePort` and takes its output;
the SCLP side (:mod:`vmd.machine.sclp`) is built when the machine runs guest
code (:meth:`SclpConsoleDevice.make_sclp_event`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar

from pydantic import Field

from vmd.devices.base import Device, DeviceProps, device_type
from vmd.devices.props import QBool, QStr, QUint32
from vmd.errors import GenericError

if TYPE_CHECKING:
    from vmd.machine.machine import Machine

SCLP_EVENTS_BUS_TYPE = "s390-sclp-events-bus"
#: the bus's name for ``bus=``
SCLP_EVENTS_BUS_NAME = "s390-sclp-events-bus.0"
SCLP_EVENTS_BUS_PATH = "/machine/sclp/s390-sclp-event-facility/s390-sclp-events-bus.0"


class SclpEventInitError(GenericError):
    """realize failed as QEMU's SCLP event initialization fails: QEMU reports the reason on a
    line of its own (``reported``) before the error itself."""

    def __init__(self, reason: str):
        super().__init__("SCLP event initialization failed.")
        self.reported = [reason]


class SclpConsoleDevice(Device):
    """Abstract: an operator console on the SCLP events bus."""

    bus_type = SCLP_EVENTS_BUS_TYPE
    category = "Input devices"
    #: QEMU's "hotpluggable" property: the device's own flag and its bus's, which says no
    hotpluggable = False
    #: "VT220" / "line-mode": how QEMU names the console when refusing a second one
    console_kind: ClassVar[str] = ""

    class Props(DeviceProps):
        chardev: QStr | None = Field(None, description="ID of a chardev to use as a backend")

    def __init__(self, dev_id, props, qom_path):
        super().__init__(dev_id, props, qom_path)
        self.port = None
        self.chardev = None
        #: the console on the SCLP's bus, while the machine runs guest code
        self.sclp_event = None

    def realize(self, machine: "Machine") -> None:
        from vmd.machine.sclp import ConsolePort

        chardev = self._find_chardev(machine)  # QEMU sets the property before it realizes
        if any(type(d) is type(self) and d.realized for d in machine.devices.values()):
            raise SclpEventInitError(f"Multiple {self.console_kind} operator consoles are not supported")
        self.port = ConsolePort(self.inbox_limit())
        if chardev is not None:
            chardev.attach_device(self.type_name, self.port)
        self.chardev = chardev
        self.realized = True

    def inbox_limit(self) -> int:
        raise NotImplementedError

    def _find_chardev(self, machine: "Machine"):
        name = self.props.chardev
        if not name:  # an empty name is no chardev, as in QEMU
            return None
        chardev = machine.chardevs.get(name)
        if chardev is None:
            raise GenericError(f"Property '{self.type_name}.chardev' can't find value '{name}'")
        # a multiplexed chardev (mon:stdio) takes a console beside its monitor
        shared = getattr(chardev.spec, "mux", False) and chardev.frontend == "monitor"
        if chardev.frontend is not None and not shared:
            raise GenericError(f"Property '{self.type_name}.chardev' can't take value '{name}': "
                               f"Device '{name}' is in use")
        return chardev

    def unrealize(self, machine: "Machine") -> None:
        if self.chardev is not None:
            self.chardev.detach_device()
            self.chardev = None
        self.realized = False

    def make_sclp_event(self):
        """The console as the SCLP's event facility sees it (built when guest code runs)."""
        raise NotImplementedError

    # -- introspection -----------------------------------------------------------------------
    def parent_bus_path(self) -> str:
        return SCLP_EVENTS_BUS_PATH

    def _values(self) -> dict[str, tuple[str, Callable[[], Any]]]:
        """The device's own properties in QEMU's qom-list order; "" for a chardev never set."""
        return {"chardev": ("str", lambda: self.props.chardev or "")}

    def qom_properties(self):
        base = super().qom_properties()
        out = {name: base[name] for name in ("type", "parent_bus", "realized", "hotplugged", "hotpluggable")}
        out.update(self._values())
        return out

    def qtree_props(self) -> list[tuple[str, str]]:
        return [("chardev", f'"{self.props.chardev or ""}"')]


@device_type
class SclpVt220Console(SclpConsoleDevice):
    type_name = "sclpconsole"
    console_kind = "VT220"

    def inbox_limit(self) -> int:
        from vmd.machine.sclp import VT220_INPUT_LIMIT

        return VT220_INPUT_LIMIT

    def make_sclp_event(self):
        from vmd.machine.sclp import Vt220Console

        return Vt220Console(self.port)


@device_type
class SclpLineModeConsole(SclpConsoleDevice):
    type_name = "sclplmconsole"
    console_kind = "line-mode"

    class Props(SclpConsoleDevice.Props):
        echo: QBool = Field(True, description="")
        write_errors: QUint32 = Field(0, description="")

    def inbox_limit(self) -> int:
        from vmd.machine.sclp import SCCB_SIZE

        return SCCB_SIZE

    def make_sclp_event(self):
        from vmd.machine.sclp import LineModeConsole

        return LineModeConsole(self.port, echo=self.props.echo)

    def _values(self):
        # write_errors counts failed writes since the last reset, which clears it (QEMU's reset
        # comes before the guest runs, whatever the property said); vmd's writes do not fail
        return {"echo": ("bool", lambda: self.props.echo), **super()._values(),
                "write_errors": ("uint32", lambda: 0)}

    def qtree_props(self) -> list[tuple[str, str]]:
        return [*super().qtree_props(), ("write_errors", "0 (0x0)"),
                ("echo", "true" if self.props.echo else "false")]
