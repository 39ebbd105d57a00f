"""``vmd``: the daemon's entry point.

argv -> :func:`vmd.cmdline.parse_argv` (stdlib only) -> help/version/print-config
actions, or :func:`vmd.cmdline.build_config` -> :func:`vmd.daemon.run`.

Every configuration error is printed QEMU's way (``vmd: -device foo: ...``) on
stderr with exit code 1, before or while the machine is built; nothing is
left behind (sockets already bound are closed and unlinked).
"""

from __future__ import annotations

import sys


def _setup_logging() -> None:
    import logging  # 10 ms: kept off the path to the first socket

    logging.basicConfig(level=logging.INFO, format="vmd: %(message)s", stream=sys.stderr)


def start_early_monitor(raw: dict):
    """Bind the QMP sockets and greet clients while the machine is still being built."""
    from vmd.proto.qmp import greeting
    from vmd.transports.early_monitor import EarlyMonitor, monitor_sockets
    from vmd.version import version_info

    from vmd.defaults import runtime_dir_for

    name = raw.get("name") if isinstance(raw.get("name"), str) else None
    runtime_dir_for(name, raw.get("runtime-dir")).mkdir(parents=True, exist_ok=True, mode=0o700)
    early = EarlyMonitor(greeting(version_info(), ["oob"]))
    try:
        for chardev in monitor_sockets(raw):
            early.bind(chardev)
    except BaseException:
        _discard_early(early)
        raise
    early.start()
    return early


def _discard_early(early) -> None:
    """Close and unlink what the fast path bound (the daemon will not take it over)."""
    import os

    listeners, clients = early.handover()
    for group in clients.values():
        for client in group:
            client.sock.close()
    for sock in listeners.values():
        name = sock.getsockname()
        sock.close()
        if isinstance(name, str) and name:
            try:
                os.unlink(name)
            except OSError:
                pass


def main(argv: list[str] | None = None) -> int:
    from vmd.cmdline import build_config, effective_raw, parse_argv, perform_actions, render_error
    from vmd.errors import ConfigError

    args = sys.argv[1:] if argv is None else argv
    early = None
    try:
        parsed = parse_argv(args)
        for warning in parsed.warnings:
            print(str(warning), file=sys.stderr)
        code = perform_actions(parsed)
        if code is not None:
            return code
        early = start_early_monitor(effective_raw(parsed))
        config = build_config(parsed)
    except ConfigError as err:
        if early is not None:
            _discard_early(early)
        print(render_error(err), file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    _setup_logging()
    from vmd.daemon import run

    try:
        return run(config, early)
    except ConfigError as err:
        print(render_error(err), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
