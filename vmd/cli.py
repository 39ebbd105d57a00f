"""``vmd``: the daemon's entry point.

argv -> :func:`vmd.cmdline.parse_argv` (stdlib only) -> help/version/print-config
actions, or :func:`vmd.cmdline.build_config` -> :func:`vmd.daemon.run`.

Every configuration error is printed QEMU's way (``vmd: -device foo: ...``) on
stderr with exit code 1, before or while the machine is built; nothing is
left behind (sockets already bound are closed and unlinked).
"""

from __future__ import annotations

import logging
import sys


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="vmd: %(message)s", stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    from vmd.cmdline import build_config, parse_argv, perform_actions, render_error
    from vmd.errors import ConfigError

    args = sys.argv[1:] if argv is None else argv
    try:
        parsed = parse_argv(args)
        for warning in parsed.warnings:
            print(str(warning), file=sys.stderr)
        code = perform_actions(parsed)
        if code is not None:
            return code
        config = build_config(parsed)
    except ConfigError as err:
        print(render_error(err), file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    _setup_logging()
    from vmd.daemon import run

    try:
        return run(config)
    except ConfigError as err:
        print(render_error(err), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
