"""Control commands: capabilities, version, introspection, quit (QEMU's qapi/control.json)."""

from __future__ import annotations

from vmd.api.models import CommandInfo, QmpCapabilitiesArgs, VersionInfo
from vmd.api.registry import Context, Registry
from vmd.errors import CommandNotFound
from vmd.version import version_info

def register(r: Registry) -> None:
    @r.command("qmp_capabilities", args=QmpCapabilitiesArgs)
    def qmp_capabilities(ctx: Context, args: QmpCapabilitiesArgs) -> None:
        """Leave capabilities negotiation mode (QMP sessions handle this before any other command)."""
        raise CommandNotFound("Capabilities negotiation is already complete, command ignored")

    @r.command("query-version", returns=VersionInfo)
    def query_version(ctx: Context, args: None) -> dict:
        """The QEMU version vmd is compatible with, and vmd's own as the package."""
        return version_info()

    @r.command("query-commands", returns=list[CommandInfo])
    def query_commands(ctx: Context, args: None) -> list[dict]:
        """Every command this monitor accepts."""
        return [{"name": name} for name in sorted(r.commands)]

    introspection: list[dict] = []

    @r.command("query-qmp-schema", returns=list[dict])
    def query_qmp_schema(ctx: Context, args: None) -> list[dict]:
        """QMP introspection (SchemaInfo list) derived from the command and event declarations."""
        from vmd.api.introspect import schema_info

        if not introspection:  # the declarations never change at run time: build it once
            introspection.extend(schema_info(r))
        return introspection

    @r.command("quit")
    def quit_(ctx: Context, args: None) -> None:
        """Exit the daemon: SHUTDOWN (host-qmp-quit) is sent, then the process ends."""
        ctx.machine.shutdown("host-qmp-quit", guest=False)
