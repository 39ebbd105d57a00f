"""The machine: run state, channel subsystem and the device tree.

The machine knows no sockets and no event loop.  It emits events on the
:class:`~vmd.events.EventBus`, and asks its owner to run things "soon"
(``defer``) or to end the process (``request_exit``), so the same object runs
under the daemon and under plain unit tests.

Device identity follows QEMU's QOM layout: a device with an id lives at
``/machine/peripheral/<id>``, one without at
``/machine/peripheral-anon/device[N]`` (N counts up and is never reused).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from vmd.devices import registry
from vmd.devices.base import Device
from vmd.errors import DeviceNotFound, GenericError
from vmd.events import EventBus
from vmd.machine.blockdevs import BlockBackends
from vmd.machine.css import ChannelSubsystem
from vmd.machine.runstate import RunState, RunStateMachine

CSS_BUS_NAMES = ("virtual-css", "virtual-css-bus", "/machine/virtual-css-bridge/virtual-css")
CSS_BUS_TYPE = "virtual-css-bus"
# -- the SCLP's events bus (devices/models/sclp_console.py): the machine's own, without hot plug
SCLP_EVENTS_BUS_NAME = "s390-sclp-events-bus.0"
SCLP_EVENTS_BUS_TYPE = "s390-sclp-events-bus"
#: the buses the machine itself provides, by the names bus= takes
MACHINE_BUSES = {**{name: CSS_BUS_TYPE for name in CSS_BUS_NAMES}, SCLP_EVENTS_BUS_NAME: SCLP_EVENTS_BUS_TYPE}
#: bus type -> its name, for the buses that refuse hot plug
NO_HOTPLUG_BUSES = {SCLP_EVENTS_BUS_TYPE: SCLP_EVENTS_BUS_NAME}
# --
_ID_RE = re.compile(r"[A-Za-z][A-Za-z0-9\-_.]*\Z")


def id_wellformed(ident: str) -> bool:
    """QEMU's id_wellformed(): a letter, then letters, digits, '-', '.', '_'."""
    return bool(_ID_RE.match(ident))


class Machine:
    """An s390-ccw-virtio machine."""

    def __init__(
        self,
        events: EventBus,
        *,
        start_paused: bool = False,
        no_shutdown: bool = False,
        defer: Callable[[Callable[[], None]], None] | None = None,
        request_exit: Callable[[int], None] | None = None,
    ):
        self.events = events
        self.css = ChannelSubsystem()
        self.runstate = RunStateMachine(RunState.PRELAUNCH)
        self.start_paused = start_paused
        self.no_shutdown = no_shutdown
        self.defer = defer or (lambda fn: fn())
        self.request_exit = request_exit or (lambda code: None)
        self.devices: dict[str, Device] = {}  # by QOM path, in creation order
        self.by_id: dict[str, Device] = {}
        self._anon = 0
        self.booted = False  # devices added after boot are hot-plugged
        #: block backends (-drive / -blockdev images) by name
        self.block = BlockBackends()
        #: guest code execution (storage, CPUs), when the machine has something to run
        self.execution = None
        #: character devices (-chardev) by id, for device front ends such as virtio-serial ports;
        #: the owner fills it before devices are added
        self.chardevs: dict[str, Any] = {}
        #: automatic bus names ("virtio-serial-bus.0") count per bus type
        self._bus_numbers: dict[str, int] = {}

    # -- run control -------------------------------------------------------
    @property
    def state(self) -> RunState:
        return self.runstate.state

    def boot(self) -> None:
        """End of machine creation: later devices are hot-plugged; start unless -S."""
        self.booted = True
        if self.execution is not None:
            self.execution.start()
        if not self.start_paused:
            self.runstate.to(RunState.RUNNING)
            if self.execution is not None:
                self.execution.resume()

    def stop(self) -> None:
        """QMP ``stop``: pause a running VM (a no-op in any other state, like QEMU)."""
        if self.runstate.running:
            if self.execution is not None:
                self.execution.pause()
            self.runstate.to(RunState.PAUSED)
            self.events.emit("STOP")

    def cont(self) -> None:
        """QMP ``cont``.

        :raises GenericError: "Resetting the Virtual Machine is required" after shutdown or a panic.
        """
        if self.runstate.needs_reset:
            raise GenericError("Resetting the Virtual Machine is required")
        if self.runstate.running:
            return
        self.runstate.to(RunState.RUNNING)
        self.events.emit("RESUME")
        if self.execution is not None:
            self.execution.resume()

    def reset(self, reason: str = "host-qmp-system-reset", guest: bool = False) -> None:
        """System reset: CPUs and devices reset and the IPL done again; the run state leaves
        shutdown/panicked for paused."""
        if self.execution is not None:
            self.execution.reset()
        self.events.emit("RESET", {"guest": guest, "reason": reason})
        if self.runstate.needs_reset:
            self.runstate.to(RunState.PAUSED)
        if self.execution is not None and self.runstate.running:
            self.execution.resume()

    def powerdown(self) -> None:
        """The power button: the guest is asked to shut down (the SCLP's signal quiesce on s390x)."""
        self.events.emit("POWERDOWN")
        if self.execution is not None:
            self.execution.request_quiesce()

    def shutdown(self, reason: str, guest: bool) -> None:
        """A shutdown request: the process exits, except for a guest shutdown under -no-shutdown."""
        self.events.emit("SHUTDOWN", {"guest": guest, "reason": reason})
        if guest and self.no_shutdown:
            if self.runstate.running:
                if self.execution is not None:
                    self.execution.pause()
                self.runstate.to(RunState.SHUTDOWN)
                self.events.emit("STOP")
            return
        self.request_exit(0)

    def guest_panicked(self, info: dict[str, Any]) -> None:
        """A guest panic (an s390 disabled wait): QEMU's default action is power-off, or pause
        with -no-shutdown."""
        action = "pause" if self.no_shutdown else "poweroff"
        self.events.emit("GUEST_PANICKED", {"action": action, "info": info})
        if self.no_shutdown:
            if self.execution is not None:
                self.execution.pause()
            if self.runstate.running:
                self.runstate.to(RunState.GUEST_PANICKED)
                self.events.emit("STOP")
            return
        self.shutdown("guest-panic", guest=True)

    # -- devices -------------------------------------------------------------
    def find(self, ident: str) -> Device | None:
        """A device by id or by QOM path."""
        if ident.startswith("/"):
            return self.devices.get(ident)
        return self.by_id.get(ident)

    def add_device(self, driver: str | None, dev_id: str | None, bus: str | None, props: dict[str, Any]) -> Device:
        """Create and realize a device; on any error nothing is left behind.

        Devices added after :meth:`boot` are hot-plugged (and queue channel report words).

        :raises GenericError: with QEMU's text for every refusal.
        """
        if driver is None:
            raise GenericError("Parameter 'driver' is missing")
        cls = registry.lookup(driver)
        if dev_id is not None:
            if not id_wellformed(dev_id):
                raise GenericError("Parameter 'id' expects an identifier")
            if dev_id in self.by_id:
                raise GenericError(f"Duplicate device ID '{dev_id}'")
        owner = self._bus_owner(cls, bus)
        if self.booted and owner is None and cls.bus_type in NO_HOTPLUG_BUSES:
            raise GenericError(f"Bus '{NO_HOTPLUG_BUSES[cls.bus_type]}' does not support hotplugging")
        if self.booted and not cls.hotpluggable:
            raise GenericError("Parameter 'driver' expects a pluggable device type")
        validated = registry.validate_props(cls, props)
        if dev_id is not None:
            path = f"/machine/peripheral/{dev_id}"
        else:
            path = f"/machine/peripheral-anon/device[{self._anon}]"
        device = cls(dev_id, validated, path)
        device.hotplugged = self.booted
        if owner is not None:
            device.bus_owner = owner  # type: ignore[attr-defined]
        child_bus = getattr(cls, "child_bus_type", None)
        if child_bus:
            # QEMU's names: "<id>.0", or "<bus type in lower case>.<n>" counting the buses named so per type
            device.child_bus_name = (  # type: ignore[attr-defined]
                f"{dev_id}.0" if dev_id is not None else f"{child_bus.lower()}.{self._bus_numbers.get(child_bus, 0)}")
        with self._guest_held():
            device.realize(self)  # may raise; realize() claims nothing on failure
            if self.execution is not None:
                self.execution.attach_device(device)
        if dev_id is None:
            self._anon += 1
            if child_bus:
                self._bus_numbers[child_bus] = self._bus_numbers.get(child_bus, 0) + 1
        self.devices[path] = device
        if dev_id is not None:
            self.by_id[dev_id] = device
        return device

    def add_onboard_device(self, driver: str, qom_path: str, props: dict[str, Any]) -> Device:
        """A device the machine creates itself (the SCLP consoles of -serial), at ``qom_path``.

        :raises GenericError: with QEMU's text.
        """
        cls = registry.lookup(driver)
        device = cls(None, registry.validate_props(cls, props), qom_path)
        with self._guest_held():
            device.realize(self)
            if self.execution is not None:
                self.execution.attach_device(device)
        self.devices[qom_path] = device
        return device

    def _bus_owner(self, cls: type[Device], bus: str | None) -> Device | None:
        """The device providing the bus a new ``cls`` device goes on; None for the channel subsystem.

        Without ``bus=``, QEMU's search meets the most recently added bus of the right type first.

        :raises GenericError: with QEMU's texts.
        """
        if bus is not None:
            if bus in MACHINE_BUSES:
                owner, bus_type = None, MACHINE_BUSES[bus]
            else:
                owner = next((d for d in self.devices.values() if getattr(d, "child_bus_name", None) == bus), None)
                if owner is None:
                    raise GenericError(f"Bus '{bus}' not found")
                bus_type = owner.child_bus_type  # type: ignore[attr-defined]
            if bus_type != cls.bus_type:
                raise GenericError(f"Device '{cls.type_name}' can't go on {bus_type} bus")
            return owner
        if cls.bus_type in (CSS_BUS_TYPE, SCLP_EVENTS_BUS_TYPE):
            return None
        for device in reversed(self.devices.values()):
            if getattr(device, "child_bus_type", None) == cls.bus_type:
                return device
        raise GenericError(f"No '{cls.bus_type}' bus found for device '{cls.type_name}'")

    def with_guest_held(self, work: Callable[[], None]) -> None:
        """Run ``work`` (event loop) with the vCPU thread out of guest code: how device back ends
        move host input into guest storage."""
        with self._guest_held():
            work()

    @contextmanager
    def _guest_held(self) -> Iterator[None]:
        """The vCPU thread out of guest code while a device comes or goes, as QEMU plugs under its
        big lock: the channel report words a plug queues never interleave with the guest's STORE
        CHANNEL REPORT WORD (which re-arms the machine check when it finds none), and the guest
        meets a new subchannel only once its transport is attached."""
        execution = self.execution
        if execution is None:
            yield
            return
        execution.pause()
        try:
            yield
        finally:
            if self.runstate.running:
                execution.resume()

    def delete_device(self, ident: str) -> Device:
        """Unplug a device.  DEVICE_DELETED follows through ``defer`` (after the reply).

        :raises DeviceNotFound: "Device '%s' not found".
        """
        device = self.find(ident)
        if device is None:
            raise DeviceNotFound(f"Device '{ident}' not found")
        if getattr(device, "bus_owner", None) is None and device.bus_type in NO_HOTPLUG_BUSES:
            raise GenericError(f"Bus '{NO_HOTPLUG_BUSES[device.bus_type]}' does not support hotplugging")
        if not device.hotpluggable:
            raise GenericError(f"Device '{device.type_name}' does not support hotplugging")
        # the devices on its bus go first, the newest first (QEMU's unparent order)
        on_bus = [d for d in self.devices.values() if getattr(d, "bus_owner", None) is device]
        gone = [*reversed(on_bus), device]
        for each in gone:
            if self.execution is not None:
                self.execution.detach_device(each)
            with self._guest_held():
                each.unrealize(self)
            del self.devices[each.qom_path]
            if each.id is not None:
                self.by_id.pop(each.id, None)

        def announce() -> None:
            for each in gone:
                for child in each.children:
                    self.events.emit("DEVICE_DELETED", {"path": f"{each.qom_path}/{child}"})
                data: dict[str, Any] = {"path": each.qom_path}
                if each.id is not None:
                    data = {"device": each.id, "path": each.qom_path}
                self.events.emit("DEVICE_DELETED", data)

        self.defer(announce)
        return device
