"""Guest CPUs and storage: inject-nmi, pmemsave, memsave (QEMU's qapi/misc.json, machine.json)."""

from __future__ import annotations

import os

from pydantic import Field

from vmd.api.registry import Args, Context, Registry
from vmd.errors import GenericError


class SaveArgs(Args):
    val: int = Field(ge=0, description="start address")
    size: int = Field(ge=0, description="number of bytes")
    filename: str
    cpu_index: int | None = Field(None, alias="cpu-index")


def _execution(ctx: Context):
    execution = ctx.machine.execution
    if execution is None:
        raise GenericError("this machine has no guest storage yet (no -kernel was given)")
    return execution


def _save(ctx: Context, args: SaveArgs, absolute: bool) -> None:
    execution = _execution(ctx)
    memory = execution.memory
    if args.val + args.size > memory.size:
        raise GenericError(f"Invalid addr 0x{args.val:016x}/size {args.size} specified")
    cpu = execution.cpus[args.cpu_index or 0] if not absolute else None
    if cpu is not None and args.cpu_index is not None and not 0 <= args.cpu_index < len(execution.cpus):
        raise GenericError("Invalid parameter 'cpu-index'")
    try:
        fd = os.open(args.filename, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as err:
        raise GenericError(f"Could not open '{args.filename}': {err.strerror}") from err
    with os.fdopen(fd, "wb") as out:
        if cpu is None:
            out.write(memory.read(args.val, args.size))
        else:  # memsave: real addresses of that CPU (DAT-off view), prefixing applied
            out.write(cpu.read(args.val, args.size))


def register(r: Registry) -> None:
    @r.command("inject-nmi")
    def inject_nmi(ctx: Context, args: None) -> None:
        """The restart interruption on CPU 0 (s390x's NMI), as QEMU does."""
        _execution(ctx).restart_interrupt(0)

    @r.command("pmemsave", args=SaveArgs)
    def pmemsave(ctx: Context, args: SaveArgs) -> None:
        """Write guest absolute storage [val, val+size) to a file (created 0600)."""
        _save(ctx, args, absolute=True)

    @r.command("memsave", args=SaveArgs)
    def memsave(ctx: Context, args: SaveArgs) -> None:
        """Write a CPU's view of storage [val, val+size) to a file (created 0600)."""
        _save(ctx, args, absolute=False)
