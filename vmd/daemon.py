"""The composition root: builds the machine, the command registry and every endpoint.

This is the only module that wires all layers together (docs/ARCHITECTURE.md).
Start-up order is chosen for a fast path to the first socket and the guest's
first instruction: the machine and the QMP monitors come first, the command
registry is built when a command first needs it, the HTTP API (aiohttp is the
heaviest import) after the machine runs.  A guest the CLI already started
(:class:`vmd.cli.EarlyGuest`) is adopted by the machine.  systemd hears
READY=1 once every socket listens.

Lifecycle follows QEMU: the daemon runs in the foreground until ``quit``, a
host signal (SIGTERM, SIGINT, SIGHUP: SHUTDOWN with reason host-signal) or a
guest shutdown without ``-no-shutdown``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from vmd.api.commands import build_registry
from vmd.api.registry import Context, Registry
from vmd.cmdline import CmdlineError, with_default_consoles
from vmd.config import Config
from vmd.errors import ConfigError, VmdError
from vmd.events import EventBus
from vmd.machine.machine import Machine
from vmd.transports.chardev import Chardev

log = logging.getLogger("vmd")


class Services:
    """What commands may reach beyond the machine: configuration and chardev state."""

    def __init__(self, daemon: "Daemon"):
        self._daemon = daemon

    @property
    def config(self) -> Config:
        return self._daemon.config

    def chardev_infos(self) -> list[dict]:
        return [info for c in self._daemon.chardevs.values() for info in c.infos()]


class Daemon:
    def __init__(self, config: Config, early: Any = None, guest: Any = None):
        self.config = config
        #: the start-up fast path's listening sockets and greeted clients, by chardev id
        self.early_listeners, self.early_clients = early.handover() if early is not None else ({}, {})
        #: the guest the CLI started before the daemon existed (vmd.cli.EarlyGuest), or None
        self.guest = guest
        self.events = EventBus()
        self.registry = Registry(loader=build_registry)
        self.services = Services(self)
        self.chardevs: dict[str, Chardev] = {}
        self.machine: Machine | None = None
        self.http = None
        self.exit_code: asyncio.Future[int] | None = None
        self.endpoints: dict[str, str] = {}
        self.notifier = None
        self._watchdog_task: asyncio.Task | None = None
        self.started: asyncio.Event | None = None  # created on the loop, in run()

    # -- composition -------------------------------------------------------------------
    def context(self, session: Any = None) -> Context:
        return Context(machine=self.machine, services=self.services, session=session)

    def request_exit(self, code: int) -> None:
        """End the process soon, after replies already queued are written."""
        loop = asyncio.get_running_loop()

        def finish() -> None:
            if self.exit_code is not None and not self.exit_code.done():
                self.exit_code.set_result(code)

        loop.call_soon(finish)

    def build_machine(self) -> Machine:
        """Create the machine and cold-plug the configured devices.

        :raises ConfigError: naming the option, with QEMU's text.
        """
        loop = asyncio.get_running_loop()
        machine = Machine(
            self.events,
            start_paused=self.config.start_paused,
            no_shutdown=self.config.no_shutdown,
            defer=loop.call_soon,
            request_exit=self.request_exit,
        )
        if self.guest is not None:
            machine.css = self.guest.css  # the running guest may have changed it already (CHSC)
        self.open_block_backends(machine)
        self.config = with_default_consoles(self.config)  # -nographic's serial0 and monitor
        self.create_chardevs()
        machine.chardevs = self.chardevs  # the chardevs that virtio-serial ports name
        # QEMU sets the CPUs up before the devices; an early guest's were set up with its start
        self.cpu_model = self.guest.cpu_model if self.guest is not None else self.resolve_cpu_model()
        self.add_serial_consoles(machine)
        for spec in self.config.devices:
            try:
                machine.add_device(spec.driver, spec.id, spec.bus, spec.props)
            except VmdError as err:
                option = spec.origin or f"-device {spec.driver}"
                # what QEMU reports on lines of their own before the error (SCLP event init)
                before = [(option, line) for line in getattr(err, "reported", ())]
                raise CmdlineError(err.desc, option, before=before) from err
        self.machine = machine
        # as in QEMU, every machine runs guest code: the -kernel image, or the firmware that IPLs
        if self.guest is None:
            self.attach_execution(machine, loop)
        return machine

    # -- the SCLP consoles of -serial (devices/models/sclp_console.py) --------------------------
    SERIAL_CONSOLES = ("sclpconsole", "sclplmconsole")

    def add_serial_consoles(self, machine: Machine) -> None:
        """QEMU's machine puts a VT220 console on the first serial and a line-mode console on the
        second, after the CPUs (/machine/unattached/device[N]) and before -device."""
        for index, (driver, chardev) in enumerate(zip(self.SERIAL_CONSOLES, self.config.serials)):
            path = f"/machine/unattached/device[{self.config.smp.cpus + index}]"
            try:
                machine.add_onboard_device(driver, path, {"chardev": chardev})
            except VmdError as err:
                in_use = f"Device '{chardev}' is in use"
                # QEMU fails setting the property itself, which words it without the property
                raise ConfigError(in_use if err.desc.endswith(in_use) else err.desc) from err
    # --

    def resolve_cpu_model(self):
        """-cpu as QEMU 7.2 sets it up: its warnings once per CPU, its errors in QEMU's words."""
        from vmd.cli import resolve_cpu_model

        return resolve_cpu_model(self.config.cpu.model, self.config.cpu.features, self.config.smp.cpus)

    def open_block_backends(self, machine: Machine) -> None:
        """-blockdev nodes, then -drive images (QEMU's order), registered by node name or drive id."""
        if not (self.config.blockdevs or self.config.drives):
            return
        from vmd.block import BlockError, open_blockdev, open_drive

        nodes: dict = {}
        for spec in self.config.blockdevs:
            try:
                node = open_blockdev(_spec_options(spec), nodes, mode=_spec_mode(spec))
            except BlockError as err:
                raise ConfigError(str(err), option=spec.origin or "-blockdev") from err
            machine.block.add(node.node_name, node, from_drive=False)
        for spec in self.config.drives:
            if spec.if_ not in (None, "none", "virtio"):
                continue
            try:
                node = open_drive(_spec_options(spec), nodes=nodes)  # None: a drive without a medium
            except BlockError as err:
                raise ConfigError(str(err), option=spec.origin or "-drive") from err
            machine.block.add(spec.id, node, from_drive=True)

    def attach_execution(self, machine: Machine, loop: asyncio.AbstractEventLoop) -> None:
        """Guest code: storage, CPUs, SCLP, and the -kernel image or the firmware loaded for IPL."""
        from vmd.machine.execution import Execution
        from vmd.machine.loader import ImageError

        execution = Execution(machine, self.config.memory.size, self.config.smp.cpus,
                              loop.call_soon_threadsafe, self.console_output,
                              cpu_model=self.cpu_model, name=self.config.name, uuid=self.config.uuid,
                              max_cpus=self.config.smp.maxcpus)
        try:
            execution.configure_ipl(kernel=self.config.kernel, initrd=self.config.initrd,
                                    append=self.config.append or "", bios=self.config.bios,
                                    machine_loadparm=self.config.machine.loadparm)
        except ImageError as err:
            execution.shutdown()
            raise ConfigError(str(err)) from err
        machine.execution = execution

    def console_output(self, data: bytes) -> None:
        """The SCLP console: stdout with -nographic (QEMU's serial0 on stdio)."""
        if self.config.nographic:
            try:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            except (OSError, ValueError):
                pass

    def create_chardevs(self) -> None:
        """The -chardev objects, before the devices that name them (a monitor claims its own)."""
        monitors = {m.chardev for m in self.config.monitors}
        for spec in self.config.chardevs:
            chardev = Chardev(spec)
            chardev.presocket = self.early_listeners.pop(spec.id, None)
            chardev.early_clients = self.early_clients.pop(spec.id, [])
            if spec.id in monitors:
                chardev.frontend = "monitor"
            chardev.quit_request = self._quit_from_terminal  # C-a x on a multiplexed chardev
            self.chardevs[spec.id] = chardev

    def _quit_from_terminal(self) -> None:
        if self.machine is not None:
            self.machine.shutdown("host-qmp-quit", guest=False)

    async def open_chardevs(self) -> None:
        from vmd.proto.qmp import greeting
        from vmd.version import version_info

        monitors = {m.chardev: m for m in self.config.monitors}
        hello = greeting(version_info(), ["oob"])
        for spec in self.config.chardevs:
            chardev = self.chardevs[spec.id]
            monitor = monitors.get(spec.id)
            factory = None
            if monitor is not None:
                factory = self._monitor_factory(monitor, hello)
            await chardev.open(factory)
            if monitor is not None:
                self.endpoints[f"{'QMP' if monitor.mode == 'control' else 'HMP'} monitor ({spec.id})"] = chardev.filename().removeprefix("disconnected:")
            elif getattr(spec, "tn3270", False):
                self.endpoints[f"3270 terminal ({spec.id})"] = chardev.filename().removeprefix("disconnected:")

    async def wait_for_clients(self) -> None:
        """``server=on,wait=on`` (QEMU's default for servers): start only once a client is connected."""
        for chardev in self.chardevs.values():
            spec = chardev.spec
            if getattr(spec, "server", False) and getattr(spec, "wait", False) and chardev.first_client is not None:
                if not chardev.connections:
                    log.info("waiting for connection on: %s", chardev.filename())
                    await chardev.first_client.wait()

    def _monitor_factory(self, monitor, hello):
        if monitor.mode == "control":
            from vmd.transports.qmp_server import QmpSession

            return lambda early: QmpSession(
                self.registry, self.context, self.events, hello, pretty=monitor.pretty, early=early,
                ready=self.started,
            )
        from vmd.transports.hmp_server import HmpSession

        return lambda early: HmpSession(self.registry, self.context)

    async def start_http(self) -> None:
        address = self.config.api.address()
        if address is None:
            return
        from vmd.transports.http_rpc import HttpApi, write_token
        from vmd.schemas import full_schema

        token_path = Path(self.config.api.token_file or self.config.resolved_runtime_dir() / "token")
        token = write_token(token_path)
        self.http = HttpApi(self.registry, self.events, self.context, token, lambda: full_schema(self.registry))
        try:
            host, port = await self.http.start(*address)
        except OSError as err:
            raise ConfigError(f"cannot listen on {address[0]}:{address[1]}: {err.strerror}", option="api.listen") from err
        self.endpoints["JSON-RPC API"] = f"http://{host}:{port}/rpc (token in {token_path})"

    # -- run ----------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.exit_code = loop.create_future()
        self.started = asyncio.Event()
        runtime = self.config.resolved_runtime_dir()
        runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            machine = self.build_machine()
            await self.open_chardevs()
            await self.wait_for_clients()
            machine.boot()
            if self.guest is not None:  # running since before the machine existed: adopt it now
                self.guest.adopt(machine, loop.call_soon_threadsafe)
                for device in list(machine.devices.values()):  # the serial consoles
                    machine.execution.attach_device(device)
            self.started.set()
            await self.start_http()
        except BaseException:
            await self.close()
            raise
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._on_signal, sig)
        for what, where in self.endpoints.items():
            log.info("%s: %s", what, where)
        log.info("machine %s is %s", self.config.name or "(unnamed)", machine.state.value)
        self._notify_ready()
        try:
            return await self.exit_code
        finally:
            await self.close()

    def _on_signal(self, sig: int) -> None:
        log.info("terminating on signal %d", sig)
        assert self.machine is not None
        self.machine.shutdown("host-signal", guest=False)

    def _notify_ready(self) -> None:
        try:
            from vmd.systemd import Notifier, watchdog_loop
        except ImportError:  # pragma: no cover - the module is part of the package
            return
        self.notifier = Notifier.from_env()
        summary = ", ".join(f"{k} on {v}" for k, v in self.endpoints.items())
        self.notifier.ready(f"running: {summary}" if summary else "running")
        if self.notifier.watchdog_interval():
            self._watchdog_task = asyncio.get_running_loop().create_task(
                watchdog_loop(self.notifier, lambda: self.exit_code is not None and not self.exit_code.done())
            )

    async def close(self) -> None:
        if self.notifier is not None:
            self.notifier.stopping()
        if self.machine is not None and self.machine.execution is not None:
            self.machine.execution.shutdown()
        elif self.guest is not None:
            self.guest.shutdown()
        if self.machine is not None:
            self.machine.block.close()
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()
        for chardev in self.chardevs.values():
            chardev.close()
        if self.http is not None:
            await self.http.stop()
        await asyncio.sleep(0)  # let transports flush what close() queued


def run(config: Config, early: Any = None, guest: Any = None) -> int:
    """Run the daemon until it exits; returns the exit code.

    ``early`` is the start-up fast path's :class:`~vmd.transports.early_monitor.EarlyMonitor`,
    whose sockets and clients the daemon takes over; ``guest`` a :class:`vmd.cli.EarlyGuest`
    already running, which the machine adopts.
    """
    daemon = Daemon(config, early, guest)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency
        return asyncio.run(daemon.run())
    return uvloop.run(daemon.run())


def _spec_options(spec) -> dict:
    """A -drive / -blockdev entry as the block layer takes it: every key as written, without the origin.

    Declared fields left unset are dropped; an explicit null among the other keys (``"backing": null``)
    means something and stays.
    """
    options = {k: v for k, v in spec.model_dump(by_alias=True).items()
               if v is not None or k in (spec.model_extra or {})}
    options.pop("origin", None)
    return options


def _spec_mode(spec) -> str | None:
    """How a -blockdev was written: JSON values are typed, key=value ones are strings."""
    origin = spec.origin or ""
    if origin.startswith("-blockdev"):
        return "json" if origin[len("-blockdev"):].lstrip().startswith("{") else "keyval"
    return None
