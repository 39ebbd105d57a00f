"""The commands, one module per domain; :func:`build_registry` assembles them."""

from __future__ import annotations

from vmd.api.registry import Registry


def build_registry() -> Registry:
    from vmd.api.commands import control, cpus, devices, hmp, runstate

    registry = Registry()
    for module in (control, runstate, devices, cpus, hmp):
        module.register(registry)
    return registry
