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
    vmctl mkboot disk.img --kernel guests/bin/hello.elf   # a boot disk (local, no VM)

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


# --- vmctl mkboot: writes a boot disk locally, connects to nothing ---------------------------

MKBOOT_EPILOG = """\
The disk carries a zipl boot map of the SCSI type (docs/BOOTMAP.md), which
QEMU's s390-ccw firmware boots from a virtio-blk device:
  qemu-system-s390x -drive file=OUTPUT,format=raw,if=none,id=d0 \\
                    -device virtio-blk-ccw,drive=d0,bootindex=1
--kernel is the default entry (loadparm 0); the n-th --entry boots with
-machine loadparm=n. In --entry, ',,' stands for a comma in the paths, and
append= takes the rest of the text, commas included. With --block-size 4096
the device needs logical_block_size=4096."""


def parse_entry_spec(text: str) -> tuple[str, str | None, str | None]:
    """``KERNEL[,initrd=PATH][,append=CMDLINE]`` into (kernel, initrd, append)."""
    def field(start: int) -> tuple[str, int | None]:
        out, i = [], start
        while i < len(text):
            if text.startswith(",,", i):
                out.append(",")
                i += 2
            elif text[i] == ",":
                return "".join(out), i + 1
            else:
                out.append(text[i])
                i += 1
        return "".join(out), None

    kernel, pos = field(0)
    if not kernel:
        raise ValueError(f"--entry '{text}' names no kernel")
    options: dict[str, str] = {}
    while pos is not None:
        if text.startswith("append=", pos):
            options["append"] = text[pos + len("append="):]
            break
        item, pos = field(pos)
        key, eq, value = item.partition("=")
        if not eq or key != "initrd" or key in options:
            raise ValueError(f"--entry '{text}': '{item}' is not initrd=PATH or append=CMDLINE")
        options[key] = value
    return kernel, options.get("initrd"), options.get("append")


def mkboot(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="vmctl mkboot", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=MKBOOT_EPILOG,
        description="Write a disk image that s390x firmware boots: kernels (ELF or Linux image),\n"
                    "initrds and command lines, one boot entry per loadparm.")
    parser.add_argument("output", help="the disk image to write")
    parser.add_argument("--kernel", required=True, help="ELF executable or Linux image (the default entry)")
    parser.add_argument("--initrd", help="initial ramdisk of the default entry")
    parser.add_argument("--append", metavar="CMDLINE", help="command line of the default entry")
    parser.add_argument("--entry", action="append", default=[], metavar="KERNEL[,initrd=PATH][,append=CMDLINE]",
                        help="one more boot entry (repeatable)")
    parser.add_argument("--block-size", type=int, choices=(512, 4096), default=512,
                        help="the disk's logical block size (default 512)")
    parser.add_argument("--size", help="disk size, e.g. 64M (default: what the boot map needs)")
    parser.add_argument("--memory", default="128M",
                        help="guest storage the layout must fit below the firmware (default 128M)")
    parser.add_argument("--format", choices=("raw", "qcow2"), default="raw", help="image format (default raw)")
    opts = parser.parse_args(argv)
    from vmd.boot import zipl       # not on the QMP commands' start-up path

    try:
        specs = [(opts.kernel, opts.initrd, opts.append)] + [parse_entry_spec(text) for text in opts.entry]
        entries = []
        for kernel, initrd, append in specs:
            entries.append(zipl.BootEntry(_read_input(kernel, "kernel"),
                                          _read_input(initrd, "initrd") if initrd is not None else None,
                                          append, name=kernel))
        boot_map = zipl.write_boot_image(
            opts.output, entries, block_size=opts.block_size, image_format=opts.format,
            disk_size=zipl.parse_size(opts.size) if opts.size else None, memory=zipl.parse_size(opts.memory))
    except (ValueError, ClientError) as err:
        print(f"vmctl mkboot: {err}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        print(f"vmctl mkboot: {where}{err.strerror or err}", file=sys.stderr)
        return EXIT_ERROR
    print(f"{opts.output}: {len(entries)} boot entr{'y' if len(entries) == 1 else 'ies'}, "
          f"{boot_map.block_size}-byte blocks, {opts.format}")
    for position, program in sorted(boot_map.programs.items()):
        spans = ", ".join(f"0x{load.address:x}-0x{load.address + load.length - 1:x}" for load in program.loads)
        print(f"  loadparm {position}{' (default)' if position == 0 else ''}: {specs[position][0]}: loads {spans};"
              f" starts at 0x{program.entry_address:x} ({program.addressing_mode}-bit)")
    return 0


def _read_input(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise ClientError(f"{what} '{path}': {err.strerror or err}") from err


# --- end of vmctl mkboot ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["mkboot"]:
        return mkboot(args[1:])
    parser = argparse.ArgumentParser(
        prog="vmctl", description="Client for vmd's QMP monitor and JSON-RPC API.",
        epilog="Commands are QMP command names (query-status, device_add, ...), plus 'hmp LINE' and 'events'"
               "; 'vmctl mkboot --help' writes boot disks.",
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
