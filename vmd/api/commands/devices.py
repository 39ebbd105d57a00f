"""Devices: hot plug, properties and the QOM tree (QEMU's qapi/qdev.json, qom.json), plus the CSS map."""

from __future__ import annotations

from typing import Any

from vmd.api.models import (
    VENDOR,
    CssInfo,
    DeviceDelArgs,
    DeviceListPropertiesArgs,
    ObjectPropertyInfo,
    QomGetArgs,
    QomListArgs,
)
from vmd.api.registry import Context, Registry
from vmd.devices import registry as devices
from vmd.errors import DeviceNotFound, GenericError


def device_add_schema() -> dict:
    """device_add's arguments: one alternative per device type, discriminated on ``driver``."""
    alternatives = []
    for name, cls in sorted(devices.types().items()):
        schema = cls.Props.model_json_schema(by_alias=True)
        props = dict(schema.get("properties", {}))
        props["driver"] = {"enum": [name, *cls.aliases]}
        props["id"] = {"type": "string"}
        props["bus"] = {"type": "string"}
        alt = {"type": "object", "title": name, "properties": props, "required": ["driver"],
               "additionalProperties": False}
        if "$defs" in schema:
            alt["$defs"] = schema["$defs"]
        alternatives.append(alt)
    return {"oneOf": alternatives}


def _split(args: dict[str, Any]) -> tuple[Any, Any, Any, dict[str, Any]]:
    props = dict(args)
    driver = props.pop("driver", None)
    dev_id = props.pop("id", None)
    bus = props.pop("bus", None)
    if driver is not None and not isinstance(driver, str):
        raise GenericError("Invalid parameter type for 'driver', expected: string")
    if dev_id is not None and not isinstance(dev_id, str):
        raise GenericError("Invalid parameter type for 'id', expected: string")
    if bus is not None and not isinstance(bus, str):
        raise GenericError("Invalid parameter type for 'bus', expected: string")
    return driver, dev_id, bus, props


def _qom_resolve(ctx: Context, path: str):
    """A QOM path -> (kind, object).  Containers are listed, devices are objects."""
    machine = ctx.machine
    if path in ("/machine/peripheral", "/machine/peripheral-anon"):
        return "container", path
    if path in ("/", "/machine"):
        return "container", path
    device = machine.devices.get(path)
    if device is None and not path.startswith("/"):
        device = machine.by_id.get(path)  # QEMU also resolves partial paths
    if device is not None:
        return "device", device
    raise DeviceNotFound(f"Device '{path}' not found")


def register(r: Registry) -> None:
    @r.command("device_add", free_args=True, args_schema=device_add_schema)
    def device_add(ctx: Context, args: dict[str, Any]) -> None:
        """Hot-plug a device: ``driver``, optional ``id`` and ``bus``, and the type's properties."""
        driver, dev_id, bus, props = _split(args)
        ctx.machine.add_device(driver, dev_id, bus, props)

    @r.command("device_del", args=DeviceDelArgs)
    def device_del(ctx: Context, args: DeviceDelArgs) -> None:
        """Unplug a device by id or QOM path; DEVICE_DELETED follows."""
        ctx.machine.delete_device(args.id)

    @r.command("device-list-properties", args=DeviceListPropertiesArgs, returns=list[ObjectPropertyInfo])
    def device_list_properties(ctx: Context, args: DeviceListPropertiesArgs) -> list[dict]:
        """The properties of a device type, as -device TYPE,help lists them."""
        cls = devices.resolve(args.typename)
        if cls is None:
            raise DeviceNotFound(f"Device '{args.typename}' not found")
        return devices.property_table(cls)

    @r.command("qom-list", args=QomListArgs, returns=list[ObjectPropertyInfo])
    def qom_list(ctx: Context, args: QomListArgs) -> list[dict]:
        """The properties (and children) of a QOM object."""
        kind, obj = _qom_resolve(ctx, args.path)
        if kind == "container":
            out = [{"name": "type", "type": "string"}]
            if obj in ("/", "/machine"):
                if obj == "/":
                    return out + [{"name": "machine", "type": "child<s390-ccw-virtio-7.2-machine>"}]
                return out + [
                    {"name": "peripheral", "type": "child<container>"},
                    {"name": "peripheral-anon", "type": "child<container>"},
                    {"name": "virtual-css-bridge", "type": "child<virtual-css-bridge>"},
                ]
            for path, device in ctx.machine.devices.items():
                if path.rsplit("/", 1)[0] == obj:
                    out.append({"name": path.rsplit("/", 1)[1], "type": f"child<{device.type_name}>"})
            return out
        return [{"name": name, "type": qtype} for name, (qtype, _) in obj.qom_properties().items()]

    @r.command("qom-get", args=QomGetArgs, returns=Any)
    def qom_get(ctx: Context, args: QomGetArgs) -> Any:
        """One property of a QOM object, e.g. dev_id or subch_id of a channel device."""
        kind, obj = _qom_resolve(ctx, args.path)
        if kind == "container":
            if args.property == "type":
                return "container"
            raise GenericError(f"Property 'container.{args.property}' not found")
        props = obj.qom_properties()
        if args.property not in props:
            raise GenericError(f"Property '{obj.type_name}.{args.property}' not found")
        return props[args.property][1]()

    @r.command(f"{VENDOR}query-css", returns=CssInfo)
    def query_css(ctx: Context, args: None) -> dict:
        """The whole channel subsystem: every subchannel, its device, how a guest sees it, and the CHPIDs."""
        css = ctx.machine.css
        subchannels = []
        for sch in css.subchannels():
            device = sch.owner
            view = css.guest_view(sch)
            subchannels.append(
                {
                    "subch-id": str(sch.subch_id),
                    "dev-id": str(sch.dev_id),
                    "device": getattr(device, "id", None),
                    "qom-path": getattr(device, "qom_path", ""),
                    "driver": getattr(device, "type_name", "?"),
                    "visible-as": None if view is None else f"{view.cssid:x}.{view.ssid:x}.{view.devno:04x}",
                    "chpids": [f"{sch.cssid:x}.{sch.chpid:02x}"],
                    "hotplugged": sch.hotplugged,
                }
            )
        paths = [
            {"cssid": p.cssid, "chpid": p.chpid, "type": p.type, "devices": p.devices}
            for p in css.channel_paths()
        ]
        return CssInfo.model_validate(
            {"subchannels": subchannels, "channel-paths": paths, "pending-crws": len(css.pending_crws)}
        )
