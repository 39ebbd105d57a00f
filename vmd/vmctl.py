"""vmctl: a command-line client for vmd's QMP monitor and JSON-RPC API.

Examples::

    vmctl query-status                              # the demo VM's QMP socket
    vmctl -s /run/vmd/web1/qmp.sock query-status
    vmctl device_add driver=virtio-rng-ccw id=r1
    vmctl device_del id=r1
    vmctl hmp info qtree                            # human-monitor-command
    vmctl events                                    # follow events until Ctrl-C
    vmctl --http http://127.0.0.1:4480 --token-file /run/vmd/demo/token query-status
    vmctl --json query-cpus-fast                    # raw JSON for scripts

Arguments are ``key=value``; a value that parses as JSON (numbers, true,
false, null, objects) is sent as such, anything else as a string; use
``key:=value`` to force JSON and ``key==value`` to force a string.

Stdlib only, so it starts fast and works in a minimal container.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

EXIT_ERROR = 1
EXIT_USAGE = 2


class ClientError(Exception):
    """An error answer from vmd (class and description) or a transport failure."""

    def __init__(self, desc: str, error_class: str = "GenericError"):
        super().__init__(desc)
        self.desc = desc
        self.error_class = error_class


def default_socket() -> str:
    """The demo VM's QMP socket, where vmd puts it without options."""
    candidates = []
    if os.environ.get("XDG_RUNTIME_DIR"):
        candidates.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "vmd" / "demo" / "qmp.sock")
    candidates.append(Path("/run/vmd/demo/qmp.sock"))
    candidates.append(Path(f"/tmp/vmd-{os.getuid()}/demo/qmp.sock"))
    for path in candidates:
        if path.exists():
            return str(path)
    return str(candidates[0])


def parse_arguments(items: list[str]) -> dict[str, Any]:
    """``key=value`` (JSON if it parses, else a string), ``key:=json``, ``key==string``."""
    args: dict[str, Any] = {}
    for item in items:
        m = re.match(r"([^=:]+)(:=|==|=)(.*)\Z", item, re.S)
        if not m:
            raise ClientError(f"argument '{item}' is not key=value")
        key, op, raw = m.groups()
        if op == "==":
            args[key] = raw
        elif op == ":=":
            try:
                args[key] = json.loads(raw)
            except ValueError as err:
                raise ClientError(f"argument '{item}': not JSON: {err}") from err
        else:
            try:
                args[key] = json.loads(raw)
            except ValueError:
                args[key] = raw
    return args


class QmpConnection:
    """A minimal blocking QMP client (greeting, negotiation, execute, events)."""

    def __init__(self, address: str, timeout: float | None = 30.0):
        if ":" in address and not address.startswith("/") and not os.path.exists(address):
            host, _, port = address.rpartition(":")
            self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            try:
                self.sock.connect(address)
            except OSError as err:
                raise ClientError(f"cannot connect to {address}: {err.strerror}") from err
        self.file = self.sock.makefile("rb")
        self.events: list[dict] = []
        self.greeting = self._read()
        self.execute("qmp_capabilities")

    def _read(self) -> dict:
        line = self.file.readline()
        if not line:
            raise ClientError("connection closed by vmd")
        return json.loads(line)

    def execute(self, name: str, arguments: dict | None = None) -> Any:
        msg: dict[str, Any] = {"execute": name, "id": "vmctl"}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise ClientError(reply["error"].get("desc", "?"), reply["error"].get("class", "GenericError"))
            return reply.get("return")

    def follow(self) -> Iterator[dict]:
        self.sock.settimeout(None)
        yield from self.events
        while True:
            yield self._read()


class HttpConnection:
    """JSON-RPC over HTTP with a bearer token."""

    def __init__(self, url: str, token: str):
        self.url = url.rstrip("/")
        self.token = token

    def _request(self, path: str, body: bytes | None = None):
        req = urllib.request.Request(self.url + path, data=body, method="POST" if body is not None else "GET")
        req.add_header("Authorization", f"Bearer {self.token}")
        if body is not None:
            req.add_header("Content-Type", "application/json")
        try:
            return urllib.request.urlopen(req, timeout=None if body is None else 30)
        except urllib.error.HTTPError as err:
            raise ClientError(f"HTTP {err.code}: {err.read().decode(errors='replace')}") from err
        except urllib.error.URLError as err:
            raise ClientError(f"cannot reach {self.url}: {err.reason}") from err

    def execute(self, name: str, arguments: dict | None = None) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "method": name, "params": arguments or {}, "id": 1}).encode()
        with self._request("/rpc", body) as resp:
            reply = json.loads(resp.read())
        if "error" in reply:
            err = reply["error"]
            raise ClientError(err.get("message", "?"), (err.get("data") or {}).get("class", "GenericError"))
        return reply.get("result")

    def follow(self) -> Iterator[dict]:
        with self._request("/events") as resp:
            for raw in resp:
                line = raw.decode().rstrip("\n")
                if line.startswith("data: "):
                    yield json.loads(line[6:])


def human(value: Any, indent: str = "") -> str:
    """A readable rendering: strings as they are, mappings as 'key: value' lines."""
    if isinstance(value, str):
        return value.replace("\r\n", "\n").rstrip("\n")
    if isinstance(value, dict):
        if not value:
            return f"{indent}ok" if not indent else ""
        lines = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{indent}{key}:")
                lines.append(human(item, indent + "  "))
            else:
                lines.append(f"{indent}{key}: {json.dumps(item) if not isinstance(item, str) else item}")
        return "\n".join(lines)
    if isinstance(value, list):
        lines = []
        for item in value:
            if isinstance(item, dict):
                first = True
                for key, sub in item.items():
                    prefix = f"{indent}- " if first else f"{indent}  "
                    first = False
                    rendered = sub if isinstance(sub, str) else json.dumps(sub)
                    lines.append(f"{prefix}{key}: {rendered}")
            else:
                lines.append(f"{indent}- {item}")
        return "\n".join(lines)
    return f"{indent}{json.dumps(value)}"


def event_line(event: dict) -> str:
    ts = event.get("timestamp", {})
    stamp = f"{ts.get('seconds', -1)}.{ts.get('microseconds', 0):06d}"
    data = event.get("data")
    return f"{stamp} {event.get('event')}" + (f" {json.dumps(data)}" if data is not None else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vmctl", description="Client for vmd's QMP monitor and JSON-RPC API.",
        epilog="Commands are QMP command names (query-status, device_add, ...), plus 'hmp LINE' and 'events'.",
    )
    parser.add_argument("-s", "--socket", help="QMP socket path or HOST:PORT (default: the demo VM's)")
    parser.add_argument("--http", metavar="URL", help="use the JSON-RPC API at URL instead of QMP")
    parser.add_argument("--token-file", help="bearer token file for --http")
    parser.add_argument("--json", action="store_true", help="print raw JSON")
    parser.add_argument("command", help="command name, 'hmp' or 'events'")
    parser.add_argument("args", nargs="*", help="key=value arguments (or the HMP line)")
    opts = parser.parse_args(argv)
    try:
        if opts.http:
            token_file = opts.token_file or os.environ.get("VMD_TOKEN_FILE")
            if not token_file:
                print("vmctl: --http needs --token-file (or VMD_TOKEN_FILE)", file=sys.stderr)
                return EXIT_USAGE
            conn: Any = HttpConnection(opts.http, Path(token_file).read_text().strip())
        else:
            conn = QmpConnection(opts.socket or default_socket())
        if opts.command == "events":
            for event in conn.follow():
                print(json.dumps(event) if opts.json else event_line(event), flush=True)
            return 0
        if opts.command == "hmp":
            result = conn.execute("human-monitor-command", {"command-line": " ".join(opts.args)})
        else:
            result = conn.execute(opts.command, parse_arguments(opts.args))
    except ClientError as err:
        if opts.json:
            print(json.dumps({"error": {"class": err.error_class, "desc": err.desc}}))
        else:
            print(f"vmctl: {err.desc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except OSError as err:
        print(f"vmctl: {err}", file=sys.stderr)
        return EXIT_ERROR
    if opts.json:
        print(json.dumps(result))
    else:
        text = human(result)
        if text:
            print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
