"""The commands, one module per domain; :func:`build_registry` assembles them."""

from __future__ import annotations

from vmd.api.registry import Registry


def build_registry() -> Registry:
    from vmd.api.commands import control, cpu_models, cpus, devices, hmp, runstate

    registry = Registry()
    for module in (control, runstate, devices, cpus, cpu_models, hmp):
        module.register(registry)
    return registry
