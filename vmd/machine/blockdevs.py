"""The machine's block backends: image nodes by name, and which device uses each.

The daemon opens ``-drive`` and ``-blockdev`` images through the block layer
and registers them here under the drive id or node name; a storage device
claims one by its ``drive`` property.  The texts are QEMU's: a name nobody
registered "can't find value", a ``-drive`` is used by one device only, and
a writable ``-blockdev`` node by one writer.
"""

from __future__ import annotations

from typing import Any

from vmd.errors import GenericError


class BlockBackends:
    def __init__(self) -> None:
        #: name -> node; None for a -drive without a medium
        self.nodes: dict[str, Any] = {}
        #: names that came from -drive (id) rather than -blockdev (node-name)
        self.drive_ids: set[str] = set()
        self.users: dict[str, str] = {}

    def add(self, name: str, node: Any, from_drive: bool) -> None:
        self.nodes[name] = node
        if from_drive:
            self.drive_ids.add(name)

    def claim(self, name: str, user: str, prop_owner: str = "virtio-blk-device") -> Any:
        """Attach ``user`` (a QOM path) to the node; raises GenericError with QEMU's texts."""
        if name not in self.nodes:
            raise GenericError(f"Property '{prop_owner}.drive' can't find value '{name}'")
        node = self.nodes[name]  # None: a -drive without a medium
        holder = self.users.get(name)
        if holder is not None:
            if name in self.drive_ids:
                raise GenericError(f"Drive '{name}' is already in use by another device")
            if not getattr(node, "read_only", False):
                raise GenericError(
                    f"Permission conflict on node '{name}': permissions 'write' are both required by block "
                    f"device '{holder}' (uses node '{name}' as 'root' child) and unshared by block device "
                    f"'{user}' (uses node '{name}' as 'root' child).")
        else:
            self.users[name] = user
        return node

    def release(self, name: str) -> None:
        self.users.pop(name, None)

    def close(self) -> None:
        for node in self.nodes.values():
            close = getattr(node, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - an image that fails to close must not stop the others
                    pass
        self.nodes.clear()
