"""Defaults that the start-up fast path needs before pydantic is imported (stdlib only).

The embedded demo VM (``vmd`` with no machine options) and where a VM's
runtime files live.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DEMO_NAME = "demo"
#: the demo guest the demo VM boots (a source checkout has it; an installed package may not)
DEMO_GUEST = Path(__file__).resolve().parent.parent / "guests" / "bin" / "hello.elf"
DEFAULT_API_LISTEN = "127.0.0.1:4480"
DEFAULT_TN3270_LISTEN = "127.0.0.1:2300"


def runtime_dir_for(name: str | None, explicit: str | None = None) -> Path:
    """systemd's $RUNTIME_DIRECTORY, else $XDG_RUNTIME_DIR/vmd/NAME, else /run/vmd/NAME (root), else /tmp."""
    if explicit:
        return Path(explicit)
    if os.environ.get("RUNTIME_DIRECTORY"):
        return Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0])
    name = name or "default"
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "vmd" / name
    if os.geteuid() == 0:
        return Path("/run/vmd") / name
    return Path(f"/tmp/vmd-{os.getuid()}") / name


def embedded_default(runtime_dir: Path, tn3270_listen: str = DEFAULT_TN3270_LISTEN) -> dict[str, Any]:
    """The demo VM as raw configuration data (the alias keys of vmd.config.Config).

    QMP on a unix socket in the runtime directory, the JSON-RPC API on
    127.0.0.1, one tn3270 terminal chardev, a virtio-rng device so the
    channel subsystem has something to show, and the demo guest.
    """
    host, _, port = tn3270_listen.rpartition(":")
    guest: dict[str, Any] = {}
    if DEMO_GUEST.exists():
        # the demo guest greets on the console (stdout) and powers off; the VM then waits in the
        # shutdown state for system_reset + cont instead of ending the daemon
        guest = {"kernel": str(DEMO_GUEST), "nographic": True, "no-shutdown": True}
    return {
        **guest,
        "name": DEMO_NAME,
        "runtime-dir": str(runtime_dir),
        "chardev": [
            {"backend": "socket", "id": "qmp0", "path": str(runtime_dir / "qmp.sock"), "server": True,
             "wait": False},
            {"backend": "socket", "id": "term0", "host": host.strip("[]") or "127.0.0.1", "port": int(port),
             "server": True, "wait": False, "tn3270": True},
        ],
        "monitor": [{"chardev": "qmp0", "mode": "control"}],
        "device": [{"driver": "virtio-rng-ccw", "id": "rng0"}],
        "api": {"listen": DEFAULT_API_LISTEN},
    }
