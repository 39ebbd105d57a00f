"""``vmd``: the daemon's entry point.

argv -> :func:`vmd.cmdline.parse_argv` (stdlib only) -> help/version/print-config
actions, or :func:`vmd.cmdline.build_config` -> :func:`vmd.daemon.run`.

Every configuration error is printed QEMU's way (``vmd: -device foo: ...``) on
stderr with exit code 1, before or while the machine is built; nothing is
left behind (sockets already bound are closed and unlinked).

Start-up fast path (docs/ARCHITECTURE.md): the QMP sockets listen before
anything heavy is imported, and a machine that is certainly valid and has no
devices starts its guest before pydantic, the daemon and the API are loaded
(:class:`EarlyGuest`); they are built while the guest already runs and take it
over.  Everything on that path is stdlib or the CPU engine.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from vmd.cmdline import MACHINE_ALIAS


def _setup_logging() -> None:
    import logging  # 10 ms: kept off the path to the first socket

    logging.basicConfig(level=logging.INFO, format="vmd: %(message)s", stream=sys.stderr)


def start_early_monitor(raw: dict):
    """Bind the QMP sockets and greet clients while the machine is still being built."""
    from vmd.defaults import runtime_dir_for

    name = raw.get("name") if isinstance(raw.get("name"), str) else None
    runtime_dir_for(name, raw.get("runtime-dir")).mkdir(parents=True, exist_ok=True, mode=0o700)
    if not raw.get("chardev"):
        return None  # no socket to serve: the early monitor's imports would be wasted
    from vmd.proto.qmp import greeting
    from vmd.transports.early_monitor import EarlyMonitor, monitor_sockets
    from vmd.version import version_info

    early = EarlyMonitor(greeting(version_info(), ["oob"]))
    try:
        for chardev in monitor_sockets(raw):
            early.bind(chardev)
    except BaseException:
        _discard_early(early)
        raise
    early.start()
    return early


def _discard_early(early) -> None:
    """Close and unlink what the fast path bound (the daemon will not take it over)."""
    import os

    if early is None:
        return
    listeners, clients = early.handover()
    for group in clients.values():
        for client in group:
            client.sock.close()
    for sock in listeners.values():
        name = sock.getsockname()
        sock.close()
        if isinstance(name, str) and name:
            try:
                os.unlink(name)
            except OSError:
                pass


# -- certifying a configuration without pydantic -------------------------------------------------
#: Config's defaults and limits for what the guest needs (vmd.config; main() compares the settings
#: with the validated Config's, so a drift fails loudly)
DEFAULT_MEMORY_SIZE = 128 << 20
MAX_SMP_CPUS = 248


@dataclass(frozen=True)
class GuestSettings:
    """What starting the guest takes from the configuration (the fields of Config it reads)."""

    memory_size: int = DEFAULT_MEMORY_SIZE
    cpus: int = 1
    max_cpus: int | None = None
    cpu_model: str = "qemu"
    cpu_features: dict[str, bool] = field(default_factory=dict)
    name: str | None = None
    uuid: Any = None
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None
    bios: str | None = None
    loadparm: str | None = None
    nographic: bool = False

    @classmethod
    def from_config(cls, config) -> "GuestSettings":
        """The same settings from a validated :class:`vmd.config.Config`."""
        return cls(memory_size=config.memory.size, cpus=config.smp.cpus, max_cpus=config.smp.maxcpus,
                   cpu_model=config.cpu.model, cpu_features=dict(config.cpu.features), name=config.name,
                   uuid=config.uuid, kernel=config.kernel, initrd=config.initrd, append=config.append,
                   bios=config.bios, loadparm=config.machine.loadparm, nographic=config.nographic)


def _is_str(value: Any) -> bool:
    return type(value) is str


def _opt_str(value: Any) -> bool:
    return value is None or type(value) is str


def _is_bool(value: Any) -> bool:
    return type(value) is bool


def _opt_bool(value: Any) -> bool:
    return value is None or type(value) is bool


def _int_from(low: int, high: int | None = None, optional: bool = False) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if value is None:
            return optional
        return type(value) is int and value >= low and (high is None or value <= high)
    return check


def _opt_int(value: Any) -> bool:
    return value is None or type(value) is int


def _str_list(value: Any) -> bool:
    return type(value) is list and all(type(v) is str for v in value)


def _empty_list(value: Any) -> bool:
    return type(value) is list and not value


def _str_dict(value: Any) -> bool:
    return type(value) is dict and all(type(k) is str and type(v) is str for k, v in value.items())


def _is_uuid(value: Any) -> bool:
    """None, or the canonical 8-4-4-4-12 form that every UUID parser reads the same way."""
    if value is None:
        return True
    if type(value) is not str or len(value) != 36:
        return False
    hexdigits = "0123456789abcdefABCDEF"
    return all((c == "-") if i in (8, 13, 18, 23) else (c in hexdigits) for i, c in enumerate(value))


def _host_port(value: Any) -> bool:
    """ApiSpec.listen's rule: HOST:PORT with a port up to 65535."""
    if value is None:
        return True
    if type(value) is not str:
        return False
    _host, sep, port = value.rpartition(":")
    return bool(sep) and port.isdigit() and 0 <= int(port) <= 65535


def _table(**fields: Callable[[Any], bool]) -> dict[str, tuple[str, Callable[[Any], bool]]]:
    """key -> (field, check); a field whose name has '_' also answers to its '-' alias."""
    out = {}
    for name, check in fields.items():
        out[name] = (name, check)
        if "_" in name:
            out[name.replace("_", "-")] = (name, check)
    return out


def _cpu_features(value: Any) -> bool:
    return type(value) is dict and all(type(k) is str and type(v) is bool for k, v in value.items())


_MACHINE = _table(type=lambda v: v == MACHINE_ALIAS, accel=_is_str, loadparm=_opt_str,
                  dump_guest_core=_is_bool, mem_merge=_is_bool, aes_key_wrap=_is_bool, dea_key_wrap=_is_bool,
                  zpcii_disable=_is_bool, confidential_guest_support=_opt_str, memory_backend=_opt_str,
                  graphics=_is_bool, usb=_is_bool, origin=_opt_str)
_CPU = _table(model=_is_str, features=_cpu_features, origin=_opt_str)
_MEMORY = _table(size=_int_from(1), slots=_opt_int, maxmem=_opt_int, origin=_opt_str)
_SMP = _table(cpus=_int_from(1, MAX_SMP_CPUS), maxcpus=_int_from(1, MAX_SMP_CPUS, optional=True),
              drawers=_int_from(1, optional=True), books=_int_from(1, optional=True),
              sockets=_int_from(1, optional=True), cores=_int_from(1, optional=True),
              threads=_int_from(1, optional=True), origin=_opt_str)
_API = {"listen": ("listen", _host_port), "token_file": ("token_file", _opt_str)}
_SOCKET = _table(backend=lambda v: v == "socket", id=_is_str, path=_opt_str, abstract=_is_bool, host=_opt_str,
                 port=_int_from(0, 65535, optional=True), server=_is_bool, wait=_is_bool, telnet=_is_bool,
                 tn3270=_is_bool, websocket=_is_bool, nodelay=_is_bool, ipv4=_opt_bool, ipv6=_opt_bool,
                 reconnect=_int_from(0), tls_creds=_opt_str, mux=_is_bool, origin=_opt_str)
_MONITOR = _table(chardev=_is_str, mode=lambda v: v in ("control", "readline"), pretty=_is_bool,
                  origin=_opt_str)
#: None: a section checked on its own below
_TOP = _table(name=_opt_str, uuid=_is_uuid, machine=None, cpu=None, memory=None, smp=None, api=None,
              boot=_str_dict, kernel=_opt_str, initrd=_opt_str, append=_opt_str, bios=_opt_str,
              log_file=_opt_str, log_items=_str_list, start_paused=lambda v: v is False, no_shutdown=_is_bool,
              nodefaults=_is_bool, display=_is_str, nographic=_is_bool, runtime_dir=_opt_str)
_TOP.update({alias: (name, None) for alias, name in (
    ("chardev", "chardevs"), ("chardevs", "chardevs"), ("monitor", "monitors"), ("monitors", "monitors"))})
# sections whose entries would need pydantic (devices) or could fail late (block images): none at all
_TOP.update({alias: (name, _empty_list) for alias, name in (
    ("device", "devices"), ("devices", "devices"), ("drive", "drives"), ("drives", "drives"),
    ("blockdev", "blockdevs"), ("blockdevs", "blockdevs"), ("netdev", "netdevs"), ("netdevs", "netdevs"),
    ("object", "objects"), ("objects", "objects"), ("global", "globals"), ("globals", "globals"),
    ("serial", "serials"), ("serials", "serials"))})


def _section(entry: Any, table: dict) -> dict[str, Any] | None:
    """The entry by field name if every key is known, given once and valid; else None."""
    if type(entry) is not dict:
        return None
    out: dict[str, Any] = {}
    for key, value in entry.items():
        spec = table.get(key)
        if spec is None:
            return None
        name, check = spec
        if name in out or (check is not None and not check(value)):
            return None
        out[name] = value
    return out


def quick_guest_settings(raw: dict[str, Any]) -> GuestSettings | None:
    """The guest's settings when ``raw`` certainly validates into a Config and the guest may start
    before the daemon exists; None when in doubt (pydantic then decides, with its error texts).

    Starting early needs a machine with one CPU and without devices, drives or other back ends,
    not paused (-S), whose only chardevs are QMP server sockets the early monitor already listens
    on (wait=off).  Only input whose validation cannot fail is accepted, so no error text can
    differ.
    """
    top = _section(raw, _TOP)
    if top is None:
        return None
    sections = {}
    for key, table in (("machine", _MACHINE), ("cpu", _CPU), ("memory", _MEMORY), ("smp", _SMP), ("api", _API)):
        sections[key] = _section(top.get(key, {}), table)
        if sections[key] is None:
            return None
    smp = sections["smp"]
    cpus = smp.get("cpus", 1)
    if smp.get("maxcpus") is not None and smp["maxcpus"] < cpus:
        return None
    if cpus != 1:
        # several CPUs take turns in 10 ms slices, and the engine's slice timer can lose a stop
        # that fires before the run has begun (a busy start-up makes that likely): one CPU only
        return None
    chardevs = top.get("chardevs", [])
    monitors = top.get("monitors", [])
    if type(chardevs) is not list or type(monitors) is not list:
        return None
    ids: set[str] = set()
    for entry in chardevs:
        spec = _section(entry, _SOCKET)
        if (spec is None or "id" not in spec or "backend" not in spec or spec["id"] in ids
                or not spec.get("server") or spec.get("wait", True) or not _one_address(spec)):
            return None
        ids.add(spec["id"])
    controlled: set[str] = set()
    for entry in monitors:
        spec = _section(entry, _MONITOR)
        if spec is None or spec.get("chardev") not in ids or spec.get("mode") != "control":
            return None
        controlled.add(spec["chardev"])
    if controlled != ids:
        return None  # a chardev that no QMP monitor owns is opened later, and may fail then
    machine, cpu, memory = sections["machine"], sections["cpu"], sections["memory"]
    import uuid as uuid_mod

    return GuestSettings(
        memory_size=memory.get("size", DEFAULT_MEMORY_SIZE), cpus=cpus, max_cpus=smp.get("maxcpus"),
        cpu_model=cpu.get("model", "qemu"), cpu_features=dict(cpu.get("features", {})), name=top.get("name"),
        uuid=None if top.get("uuid") is None else uuid_mod.UUID(top["uuid"]), kernel=top.get("kernel"),
        initrd=top.get("initrd"), append=top.get("append"), bios=top.get("bios"),
        loadparm=machine.get("loadparm"), nographic=top.get("nographic", False))


def _one_address(spec: dict[str, Any]) -> bool:
    """ChardevSocket's rule: a path, or a port (with an optional host), not both."""
    path, host, port = spec.get("path"), spec.get("host"), spec.get("port")
    if path is not None:
        return host is None and port is None
    return port is not None


# -- the guest before the daemon ----------------------------------------------------------------
class _CallsToLoop:
    """The CPU thread's way to the event loop (``call_soon_threadsafe``) while there is no loop yet.

    Calls wait, in order, until :meth:`open` hands them to the loop; later ones go straight
    there, as in a machine the daemon started.  Until then console output is written at once,
    on the CPU thread: the guest's first lines must not wait for the daemon.
    """

    def __init__(self, console: Callable[[bytes], None]):
        self.console = console
        self._lock = threading.Lock()
        self._pending: list[tuple[Callable, tuple]] = []
        self._forward: Callable | None = None

    def __call__(self, fn: Callable, *args: Any) -> None:
        with self._lock:
            if self._forward is None:
                if fn is self.console:
                    fn(*args)  # under the lock: written before the loop takes over
                else:
                    self._pending.append((fn, args))
                return
        self._forward(fn, *args)

    def open(self, call_soon_threadsafe: Callable) -> None:
        with self._lock:
            for fn, args in self._pending:
                call_soon_threadsafe(fn, *args)
            self._pending.clear()
            self._forward = call_soon_threadsafe


class _MachineToCome:
    """What the guest's Execution sees of the machine until the daemon has built it: the channel
    subsystem (the machine adopts it), no devices, and requests that run once the machine exists
    (they reach the loop through :class:`_CallsToLoop`, after the daemon took over)."""

    def __init__(self) -> None:
        from vmd.machine.css import ChannelSubsystem

        self.css = ChannelSubsystem()
        self.devices: dict[str, Any] = {}
        self.target: Any = None

    def reset(self, *args: Any, **kwargs: Any) -> None:
        self.target.reset(*args, **kwargs)

    def shutdown(self, *args: Any, **kwargs: Any) -> None:
        self.target.shutdown(*args, **kwargs)

    def guest_panicked(self, *args: Any, **kwargs: Any) -> None:
        self.target.guest_panicked(*args, **kwargs)


class EarlyGuest:
    """A guest started before the daemon: storage, CPUs and the IPL as the daemon would set them
    up (same order, same errors), its thread running.  The daemon adopts it (:meth:`adopt`)."""

    def __init__(self, settings: GuestSettings):
        self.settings = settings
        self.machine = _MachineToCome()
        self.css = self.machine.css
        self.console = self.console_output  # one bound method: the calls recognise it by identity
        self.calls = _CallsToLoop(self.console)
        self.cpu_model: Any = None
        self.execution: Any = None

    def console_output(self, data: bytes) -> None:
        """The SCLP console: stdout with -nographic (as Daemon.console_output)."""
        if self.settings.nographic:
            try:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            except (OSError, ValueError):
                pass

    def start(self) -> None:
        """Resolve the CPU model, load the images and start the CPU thread.

        :raises ConfigError: as the daemon raises it (QEMU's texts), with nothing left running.
        """
        from vmd.errors import ConfigError
        from vmd.machine.execution import Execution
        from vmd.machine.loader import ImageError

        s = self.settings
        self.cpu_model = resolve_cpu_model(s.cpu_model, s.cpu_features, s.cpus)
        execution = Execution(self.machine, s.memory_size, s.cpus, self.calls, self.console,
                              cpu_model=self.cpu_model, name=s.name, uuid=s.uuid, max_cpus=s.max_cpus)
        try:
            execution.configure_ipl(kernel=s.kernel, initrd=s.initrd, append=s.append or "", bios=s.bios,
                                    machine_loadparm=s.loadparm)
        except ImageError as err:
            execution.shutdown()
            raise ConfigError(str(err)) from err
        self.execution = execution
        execution.start()  # as Machine.boot() without -S
        execution.resume()

    def adopt(self, machine: Any, call_soon_threadsafe: Callable) -> None:
        """The daemon's machine takes the guest over (after its boot(); the loop is running)."""
        self.machine.target = machine
        self.execution.machine = machine
        machine.execution = self.execution
        self.calls.open(call_soon_threadsafe)

    def shutdown(self) -> None:
        """Stop the guest (the daemon never took it over)."""
        if self.execution is not None:
            self.execution.shutdown()


def resolve_cpu_model(name: str, features: dict[str, bool], cpus: int):
    """-cpu as QEMU 7.2 sets it up: its warnings once per CPU, its errors in QEMU's words.

    :raises ConfigError: with QEMU's text (its warnings printed first).
    """
    from vmd.cmdline import ConfigWarning
    from vmd.cpu.models import CpuModelError, resolve_cpu_model as resolve
    from vmd.errors import ConfigError

    try:
        model = resolve(name, features)
    except CpuModelError as err:
        for text in err.warnings:  # QEMU stops at the first CPU
            print(ConfigWarning(text).render(), file=sys.stderr)
        raise ConfigError(err.desc) from err
    for _ in range(cpus):
        for text in model.warnings:
            print(ConfigWarning(text).render(), file=sys.stderr)
    return model


def main(argv: list[str] | None = None) -> int:
    from vmd.cmdline import build_config, effective_raw, parse_argv, perform_actions, render_error
    from vmd.errors import ConfigError

    args = sys.argv[1:] if argv is None else argv
    early = guest = None
    try:
        parsed = parse_argv(args)
        for warning in parsed.warnings:
            print(str(warning), file=sys.stderr)
        code = perform_actions(parsed)
        if code is not None:
            return code
        raw = effective_raw(parsed)
        early = start_early_monitor(raw)
        settings = quick_guest_settings(raw)
        if settings is not None:
            _setup_logging()
            guest = EarlyGuest(settings)
            guest.start()
        config = build_config(parsed)
        if guest is not None and GuestSettings.from_config(config) != settings:
            raise RuntimeError(f"the guest started with {settings}, the configuration says "
                               f"{GuestSettings.from_config(config)}")
    except ConfigError as err:
        if guest is not None:
            guest.shutdown()
        _discard_early(early)
        print(render_error(err), file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except BaseException:
        if guest is not None:
            guest.shutdown()
        raise
    if guest is None:
        _setup_logging()
    from vmd.daemon import run

    try:
        return run(config, early, guest)
    except ConfigError as err:
        print(render_error(err), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
