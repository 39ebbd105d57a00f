"""The import rules of docs/ARCHITECTURE.md, checked on every module's import statements."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "vmd"

# group -> vmd modules (prefixes) it must not import, at module level or inside functions
FORBIDDEN = {
    "vmd.proto": ("vmd.api", "vmd.machine", "vmd.devices", "vmd.transports", "vmd.daemon", "vmd.config"),
    "vmd.devices": ("vmd.api", "vmd.transports", "vmd.daemon"),
    "vmd.machine": ("vmd.api", "vmd.transports", "vmd.daemon"),
    "vmd.cpu": ("vmd.api", "vmd.transports", "vmd.daemon", "vmd.devices"),
    "vmd.api": ("vmd.transports", "vmd.daemon"),
    "vmd.virtio": ("vmd.api", "vmd.transports", "vmd.daemon", "vmd.devices", "vmd.cpu", "vmd.block",
                   "vmd.machine.machine", "vmd.machine.execution"),
    "vmd.transports": ("vmd.daemon", "vmd.machine.machine"),
    "vmd.errors": ("vmd.",),
    "vmd.events": ("vmd.api", "vmd.machine", "vmd.devices", "vmd.transports", "vmd.daemon"),
    "vmd.vmctl": ("vmd.",),
    "vmd.boot": ("vmd.api", "vmd.machine", "vmd.devices", "vmd.cpu", "vmd.transports", "vmd.daemon",
                 "vmd.config", "vmd.virtio", "vmd.block"),
}
#: what a group may import although its FORBIDDEN entry covers it (vmctl's local mkboot command)
ALLOWED = {"vmd.vmctl": ("vmd.boot",)}
# sans-I/O and start-up path modules: no third-party or I/O modules at all
FORBIDDEN_EXTERNAL = {
    "vmd.proto": ("asyncio", "socket", "aiohttp", "pydantic", "uvloop"),
    "vmd.vmctl": ("pydantic", "aiohttp", "asyncio"),
    "vmd.systemd": ("pydantic", "aiohttp"),
    "vmd.boot": ("pydantic", "aiohttp", "asyncio"),
}


def modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        yield name, path


def imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _group(name: str, table: dict) -> str | None:
    for group in table:
        if name == group or name.startswith(group + "."):
            return group
    return None


@pytest.mark.parametrize("name,path", list(modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_module_respects_the_layers(name, path):
    imports = imported(path)
    group = _group(name, FORBIDDEN)
    if group:
        allowed = ALLOWED.get(group, ())
        bad = sorted(i for i in imports if any(i == f or i.startswith(f if f.endswith(".") else f + ".") or i == f
                                                for f in FORBIDDEN[group])
                     and not any(i == a or i.startswith(a + ".") for a in allowed))
        assert not bad, f"{name} imports {bad}, which its layer may not (docs/ARCHITECTURE.md)"
    group = _group(name, FORBIDDEN_EXTERNAL)
    if group:
        bad = sorted(i for i in imports if i.split(".")[0] in FORBIDDEN_EXTERNAL[group])
        assert not bad, f"{name} imports {bad}: it must stay free of I/O and heavy imports"
