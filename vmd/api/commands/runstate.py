"""Run control and machine queries (QEMU's qapi/run-state.json, machine.json, misc.json)."""

from __future__ import annotations

import os

from vmd.api.models import ChardevInfo, CpuInfoFast, MachineInfo, NameInfo, StatusInfo, UuidInfo
from vmd.api.registry import Context, Registry
from vmd.config import MACHINE_VERSIONS

CPU_MAX = 248
NULL_UUID = "00000000-0000-0000-0000-000000000000"


def machine_list() -> list[dict]:
    out = []
    for name in MACHINE_VERSIONS:
        entry = {
            "name": name,
            "cpu-max": CPU_MAX,
            "hotpluggable-cpus": True,
            "numa-mem-supported": False,
            "deprecated": False,
            "default-cpu-type": "qemu-s390x-cpu",
            "default-ram-id": "s390.ram",
        }
        if name == MACHINE_VERSIONS[0]:
            entry["alias"] = "s390-ccw-virtio"
            entry["is-default"] = True
        out.append(entry)
    return out


def register(r: Registry) -> None:
    @r.command("query-status", returns=StatusInfo)
    def query_status(ctx: Context, args: None) -> dict:
        """The run state."""
        state = ctx.machine.state
        # QAPI StatusInfo member order (running, singlestep, status): the wire order follows it
        return {"running": state.value == "running", "singlestep": False, "status": state.value}

    @r.command("stop")
    def stop(ctx: Context, args: None) -> None:
        """Pause the VM (STOP)."""
        ctx.machine.stop()

    @r.command("cont")
    def cont(ctx: Context, args: None) -> None:
        """Resume the VM (RESUME); after shutdown or a panic a reset must come first."""
        ctx.machine.cont()

    @r.command("system_reset")
    def system_reset(ctx: Context, args: None) -> None:
        """Reset the machine (RESET)."""
        ctx.machine.reset()

    @r.command("system_powerdown")
    def system_powerdown(ctx: Context, args: None) -> None:
        """Ask the guest to power down (POWERDOWN)."""
        ctx.machine.powerdown()

    @r.command("query-name", returns=NameInfo)
    def query_name(ctx: Context, args: None) -> dict:
        """The VM's name (-name)."""
        name = ctx.services.config.name
        return {} if name is None else {"name": name}

    @r.command("query-uuid", returns=UuidInfo)
    def query_uuid(ctx: Context, args: None) -> dict:
        """The VM's UUID (-uuid), all zeroes when none was given."""
        uuid = ctx.services.config.uuid
        return {"UUID": str(uuid) if uuid else NULL_UUID}

    @r.command("query-machines", returns=list[MachineInfo])
    def query_machines(ctx: Context, args: None) -> list[dict]:
        """The machine types (every versioned name is the one s390-ccw-virtio model)."""
        return machine_list()

    @r.command("query-cpus-fast", returns=list[CpuInfoFast])
    def query_cpus_fast(ctx: Context, args: None) -> list[dict]:
        """The vCPUs; CPU 0 is operating, the others stopped until the guest starts them (SIGP)."""
        execution = ctx.machine.execution
        cpus = ctx.services.config.smp.cpus
        tid = os.getpid()
        states = ["operating" if i == 0 else "stopped" for i in range(cpus)]
        if execution is not None:
            tid = execution.runner.native_id or tid
            states = ["operating" if cpu.operating else "stopped" for cpu in execution.cpus]
        return [
            {
                "cpu-index": i,
                "qom-path": f"/machine/unattached/device[{i}]",
                "thread-id": tid,
                "props": {"core-id": i},
                "target": "s390x",
                "cpu-state": state,
            }
            for i, state in enumerate(states)
        ]

    @r.command("query-chardev", returns=list[ChardevInfo])
    def query_chardev(ctx: Context, args: None) -> list[dict]:
        """Every character device: label, what it is connected to, whether its frontend is open."""
        return ctx.services.chardev_infos()
