"""The one command registry behind QMP and JSON-RPC.

A command is declared once with :func:`command`: its name, a pydantic model
of its arguments and a type of its result.  From that declaration come
argument validation (jsonschema on the wire form, then pydantic), the JSON
Schema files in ``schemas/``, ``query-commands`` and ``query-qmp-schema``.
Transports call :meth:`Registry.dispatch` and know no command by name.

Argument errors use QEMU's texts ("Parameter 'id' is missing", "Parameter
'foo' is unexpected", "Invalid parameter type for 'id', expected: string").

A few commands take free-form arguments (``device_add`` takes the properties
of whichever device type it names); they declare ``args=None`` with
``free_args=True`` and validate against the device type's own declaration,
which is the same one the schema lists.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from vmd.errors import CommandNotFound, InvalidParameter


class Args(BaseModel):
    """Base of every command's argument model: unknown members are refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


@dataclass
class Context:
    """What a command handler may reach: the machine, the daemon's services, the caller."""

    machine: Any
    services: Any = None
    session: Any = None  # the QMP session or HTTP request making the call


Handler = Callable[[Context, Any], Any | Awaitable[Any]]


@dataclass
class CommandSpec:
    name: str
    handler: Handler
    args: type[BaseModel] | None
    returns: Any
    doc: str
    free_args: bool = False
    args_schema_override: dict | Callable[[], dict] | None = None
    #: JSON-Schema of the arguments (wire form), built lazily
    _arg_schema: dict | None = field(default=None, repr=False)
    _validator: Any = field(default=None, repr=False)
    _ret_adapter: TypeAdapter | None = field(default=None, repr=False)
    is_async: bool = False

    def arg_schema(self) -> dict:
        if self._arg_schema is None:
            if callable(self.args_schema_override):
                self._arg_schema = self.args_schema_override()
            elif self.args_schema_override is not None:
                self._arg_schema = self.args_schema_override
            elif self.args is None:
                self._arg_schema = {"type": "object", "properties": {}, "additionalProperties": self.free_args}
            else:
                self._arg_schema = self.args.model_json_schema(by_alias=True)
        return self._arg_schema

    def return_schema(self) -> dict:
        if self.returns is None:
            return {"type": "object", "properties": {}, "additionalProperties": False}
        return self.return_adapter().json_schema(by_alias=True)

    def return_adapter(self) -> TypeAdapter:
        if self._ret_adapter is None:
            self._ret_adapter = TypeAdapter(self.returns)
        return self._ret_adapter

    def validator(self):
        if self._validator is None:
            import jsonschema  # lazy: 80 ms of import kept off the start-up path

            cls = jsonschema.validators.validator_for(self.arg_schema())
            self._validator = cls(self.arg_schema())
        return self._validator


def _qemu_arg_error(err) -> str:
    """QEMU's wording for one jsonschema validation error."""
    path = [str(p) for p in err.absolute_path]
    name = ".".join(path) if path else None
    if err.validator == "required":
        missing = err.message.split("'")[1] if "'" in err.message else "?"
        full = ".".join([*path, missing]) if path else missing
        return f"Parameter '{full}' is missing"
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        first = extra[0] if extra else "?"
        full = ".".join([*path, first]) if path else first
        return f"Parameter '{full}' is unexpected"
    if err.validator == "type":
        expected = err.validator_value
        if isinstance(expected, list):
            expected = expected[0]
        return f"Invalid parameter type for '{name}', expected: {expected}"
    if err.validator in ("enum", "const"):
        return f"Parameter '{name}' does not accept value '{err.instance}'"
    if err.validator in ("anyOf", "oneOf"):
        # optional members are declared as anyOf [T, null]; report the first concrete type
        for sub in err.validator_value:
            if sub.get("type") and sub.get("type") != "null":
                return f"Invalid parameter type for '{name}', expected: {sub['type']}"
    return f"Parameter '{name}' is invalid: {err.message}"


#: no command's arguments nest deeper; deeper input is refused before validation recurses into it
MAX_ARGUMENT_DEPTH = 32


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > MAX_ARGUMENT_DEPTH:
                return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


class Registry:
    """Name -> command.  ``dispatch`` is the only way any transport runs a command.

    ``loader`` (a function returning a Registry) supplies the commands on first use, so that
    building every command's models stays off the daemon's start-up path.
    """

    def __init__(self, loader: Callable[[], "Registry"] | None = None) -> None:
        self._commands: dict[str, CommandSpec] = {}
        self._loader = loader

    @property
    def commands(self) -> dict[str, CommandSpec]:
        if self._loader is not None:
            loader, self._loader = self._loader, None
            self._commands.update(loader().commands)
        return self._commands

    def command(
        self,
        name: str,
        *,
        args: type[BaseModel] | None = None,
        returns: Any = None,
        free_args: bool = False,
        args_schema: dict | Callable[[], dict] | None = None,
    ) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            if name in self.commands:
                raise RuntimeError(f"command {name} registered twice")
            self.commands[name] = CommandSpec(
                name=name,
                handler=fn,
                args=args,
                returns=returns,
                doc=inspect.getdoc(fn) or "",
                free_args=free_args,
                args_schema_override=args_schema,
                is_async=inspect.iscoroutinefunction(fn),
            )
            return fn

        return register

    def get(self, name: str) -> CommandSpec:
        spec = self.commands.get(name)
        if spec is None:
            raise CommandNotFound(f"The command {name} has not been found")
        return spec

    def parse_args(self, spec: CommandSpec, arguments: dict[str, Any]) -> Any:
        """Validate wire arguments; returns the parsed model (or the dict for free-form commands).

        :raises InvalidParameter: with QEMU's text.
        """
        if arguments and _depth(arguments) > MAX_ARGUMENT_DEPTH:
            raise InvalidParameter("Parameter nesting is too deep")
        if spec.free_args:
            return arguments
        if spec.args is None:
            if arguments:
                first = sorted(arguments)[0]
                raise InvalidParameter(f"Parameter '{first}' is unexpected")
            return None
        if arguments:
            errors = sorted(spec.validator().iter_errors(arguments), key=lambda e: (len(e.absolute_path), str(e.path)))
            if errors:
                raise InvalidParameter(_qemu_arg_error(errors[0]))
        try:
            return spec.args.model_validate(arguments)
        except ValidationError as err:
            first = err.errors(include_url=False)[0]
            loc = ".".join(str(p) for p in first.get("loc", ()))
            if first["type"] == "missing":
                raise InvalidParameter(f"Parameter '{loc}' is missing") from err
            if first["type"] == "extra_forbidden":
                raise InvalidParameter(f"Parameter '{loc}' is unexpected") from err
            raise InvalidParameter(f"Parameter '{loc}' is invalid: {first['msg']}") from err

    async def dispatch(self, name: str, arguments: dict[str, Any] | None, ctx: Context) -> Any:
        """Run a command; returns the JSON-ready result (``{}`` for commands without data).

        :raises VmdError: the client's error, rendered by the transport.
        """
        spec = self.get(name)
        parsed = self.parse_args(spec, arguments or {})
        result = spec.handler(ctx, parsed)
        if spec.is_async:
            result = await result
        return to_wire(result)

    def schema(self) -> dict[str, dict]:
        """Every command's argument and result JSON Schema, by name."""
        return {
            name: {"description": spec.doc, "arguments": spec.arg_schema(), "returns": spec.return_schema()}
            for name, spec in sorted(self.commands.items())
        }


def to_wire(value: Any) -> Any:
    """A handler's result as JSON-ready data: models by alias without unset optionals."""
    if value is None:
        return {}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(value, list):
        return [to_wire(v) if isinstance(v, BaseModel) else v for v in value]
    return value

