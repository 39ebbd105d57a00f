"""human-monitor-command: the HMP commands management tools still send through QMP.

Each HMP command is a function in :data:`HMP_COMMANDS`, keyed by its words.
Errors come back as text (``Error: ...``), never as QMP errors, as in QEMU.
"""

from __future__ import annotations

from typing import Callable

from vmd.api.models import HumanMonitorCommandArgs
from vmd.api.registry import Context, Registry
from vmd.errors import VmdError

CRLF = "\r\n"


def _info_status(ctx: Context, rest: str) -> str:
    state = ctx.machine.state.value
    if state == "running":
        return f"VM status: running{CRLF}"
    if state == "paused":
        return f"VM status: paused{CRLF}"
    return f"VM status: paused ({state}){CRLF}"


def _info_chardev(ctx: Context, rest: str) -> str:
    return "".join(f"{c['label']}: filename={c['filename']}{CRLF}" for c in ctx.services.chardev_infos())


def _qtree_device(device, indent: str) -> list[str]:
    lines = [f'{indent}dev: {device.type_name}, id "{device.id or ""}"']
    for name, value in device.qtree_props():
        lines.append(f"{indent}  {name} = {value}")
    backend = getattr(device, "backend_type", "")
    if backend:
        lines.append(f"{indent}  bus: virtio-bus")
        lines.append(f"{indent}    type virtio-ccw-bus")
        lines.append(f'{indent}    dev: {backend}, id ""')
    return lines


def _info_qtree(ctx: Context, rest: str) -> str:
    lines = [
        "bus: main-system-bus",
        "  type System",
        '  dev: virtual-css-bridge, id ""',
        "    css_dev_path = true",
        "    bus: virtual-css",
        "      type virtual-css-bus",
    ]
    for device in ctx.machine.devices.values():
        if device.bus_type == "virtual-css-bus":
            lines.extend(_qtree_device(device, "      "))
    return CRLF.join(lines) + CRLF


def _info_registers(ctx: Context, rest: str) -> str:
    execution = ctx.machine.execution
    if execution is None:
        return ""
    # registers are read with the vCPU thread parked: reading the PSW of a running engine
    # would make it recompute its condition-code state under the guest's feet
    execution.pause()
    try:
        return _registers_text(execution)
    finally:
        if ctx.machine.runstate.running:
            execution.resume()


def _registers_text(execution) -> str:
    lines = []
    for cpu in execution.cpus:
        mask, addr = cpu.psw()
        lines.append(f"CPU#{cpu.address}: PSW=mask {mask:016x} addr {addr:016x} cc {(mask >> 44) & 3:02x}")
        for row in range(4):
            regs = " ".join(f"R{n:02d}={cpu.engine.gpr(n):016x}" for n in range(row * 4, row * 4 + 4))
            lines.append(regs)
        for row in range(4):
            regs = " ".join(f"C{n:02d}={cpu.engine.cr(n):016x}" for n in range(row * 4, row * 4 + 4))
            lines.append(regs)
    return CRLF.join(lines) + CRLF


def _device_add(ctx: Context, rest: str) -> str:
    from vmd.cmdline import parse_opts

    if rest.strip() in ("help", "?"):
        from vmd.devices.registry import devices_help

        return devices_help().replace("\n", CRLF)
    dev_id, opts = parse_opts(rest, implied="driver")
    driver = opts.pop("driver", None)
    bus = opts.pop("bus", None)
    ctx.machine.add_device(driver, dev_id, bus, opts)
    return ""


def _device_del(ctx: Context, rest: str) -> str:
    ctx.machine.delete_device(rest.strip())
    return ""


def _simple(method: str) -> Callable[[Context, str], str]:
    def run(ctx: Context, rest: str) -> str:
        getattr(ctx.machine, method)()
        return ""

    return run


HMP_COMMANDS: dict[str, Callable[[Context, str], str]] = {
    "info status": _info_status,
    "info chardev": _info_chardev,
    "info qtree": _info_qtree,
    "info registers": _info_registers,
    "device_add": _device_add,
    "device_del": _device_del,
    "stop": _simple("stop"),
    "cont": _simple("cont"),
    "c": _simple("cont"),
    "system_reset": _simple("reset"),
    "system_powerdown": _simple("powerdown"),
}


def run_hmp(ctx: Context, line: str) -> str:
    words = line.strip().split(None, 2)
    if not words:
        return ""
    for count in (2, 1):
        key = " ".join(words[:count])
        handler = HMP_COMMANDS.get(key)
        if handler is not None:
            rest = line.strip()[len(key):].strip() if count <= len(words) else ""
            try:
                return handler(ctx, rest)
            except VmdError as err:
                return f"Error: {err.desc}{CRLF}"
    return f"unknown command: '{line.strip()}'{CRLF}"


def register(r: Registry) -> None:
    @r.command("human-monitor-command", args=HumanMonitorCommandArgs, returns=str)
    def human_monitor_command(ctx: Context, args: HumanMonitorCommandArgs) -> str:
        """Run an HMP command line (info status/chardev/qtree, device_add, device_del, stop, cont...)."""
        return run_hmp(ctx, args.command_line)
