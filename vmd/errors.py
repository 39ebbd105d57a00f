"""The error tree of vmd.

Every error a client can cause is a :class:`VmdError`.  Each class carries the
QMP error class it is rendered as (``qapi/error.json``: GenericError,
CommandNotFound, DeviceNotActive, DeviceNotFound, KVMMissingCap) and the
JSON-RPC error code it maps to, so each transport renders errors one way and
no transport knows a command or an error by name.

Anything else that escapes a command handler is a bug in vmd: transports log it
and answer with a GenericError instead of dying.
"""

from __future__ import annotations

# JSON-RPC 2.0 reserved codes (https://www.jsonrpc.org/specification#error_object)
RPC_PARSE_ERROR = -32700
RPC_INVALID_REQUEST = -32600
RPC_METHOD_NOT_FOUND = -32601
RPC_INVALID_PARAMS = -32602
RPC_INTERNAL_ERROR = -32603
# Application codes (the -32000..-32099 "server error" range is implementation defined)
RPC_GENERIC_ERROR = -32000
RPC_DEVICE_NOT_FOUND = -32001
RPC_DEVICE_NOT_ACTIVE = -32002
RPC_KVM_MISSING_CAP = -32003


class VmdError(Exception):
    """Ancestor of every error vmd reports to a client or a user."""

    error_class = "GenericError"
    rpc_code = RPC_GENERIC_ERROR

    def __init__(self, desc: str):
        super().__init__(desc)
        self.desc = desc

    def to_qmp(self) -> dict:
        return {"class": self.error_class, "desc": self.desc}


class GenericError(VmdError):
    """QMP GenericError: the catch-all class."""


class InvalidParameter(GenericError):
    """A command's arguments do not match its declaration (QMP GenericError)."""

    rpc_code = RPC_INVALID_PARAMS


class CommandNotFound(VmdError):
    error_class = "CommandNotFound"
    rpc_code = RPC_METHOD_NOT_FOUND


class DeviceNotFound(VmdError):
    error_class = "DeviceNotFound"
    rpc_code = RPC_DEVICE_NOT_FOUND


class DeviceNotActive(VmdError):
    error_class = "DeviceNotActive"
    rpc_code = RPC_DEVICE_NOT_ACTIVE


class KVMMissingCap(VmdError):
    error_class = "KVMMissingCap"
    rpc_code = RPC_KVM_MISSING_CAP


class ConfigError(VmdError):
    """A bad command-line option or configuration file value.

    ``option`` is the option as the user wrote it (``-device foo``); the
    command line renders it QEMU's way: ``vmd: -device foo: <desc>``.
    """

    def __init__(self, desc: str, option: str | None = None):
        super().__init__(desc)
        self.option = option

    def render(self, prog: str = "vmd") -> str:
        if self.option:
            return f"{prog}: {self.option}: {self.desc}"
        return f"{prog}: {self.desc}"


#: QMP error class name -> exception type, for clients that map wire errors back.
BY_CLASS: dict[str, type[VmdError]] = {
    cls.error_class: cls
    for cls in (GenericError, CommandNotFound, DeviceNotFound, DeviceNotActive, KVMMissingCap)
}
