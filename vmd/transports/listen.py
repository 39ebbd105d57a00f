"""Listening sockets, stdlib only (this module is on the start-up fast path).

Unix sockets are born 0600: the umask is narrowed around ``bind`` so there is
no window in which another user could connect.  A stale socket file left by
a crash is removed; any other file at the path is never touched.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

from vmd.errors import ConfigError


def bind_unix(path: str, origin: str | None) -> socket.socket:
    remove_stale_socket(path, origin)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket file is born 0600
    try:
        sock.bind(path)
    except OSError as err:
        sock.close()
        raise ConfigError(f"Failed to bind socket to {path}: {err.strerror}", option=origin) from err
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def remove_stale_socket(path: str, origin: str | None) -> None:
    """Unlink a socket file nobody listens on any more (left by a crash); never another file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"Failed to bind socket to {path}: Address already in use", option=origin)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as err:
        if err.errno in (errno.ECONNREFUSED, errno.ENOENT):
            os.unlink(path)
            return
        raise ConfigError(f"Failed to bind socket to {path}: {err.strerror}", option=origin) from err
    finally:
        probe.close()
    raise ConfigError(f"Failed to bind socket to {path}: Address already in use", option=origin)


def bind_tcp(host: str | None, port: int, origin: str | None) -> socket.socket:
    host = host or "0.0.0.0"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise ConfigError(f"address resolution failed for {host}:{port}: {err.strerror}", option=origin) from err
    family, socktype, proto, _, addr = infos[0]
    sock = socket.socket(family, socktype, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as err:
        sock.close()
        raise ConfigError(f"Failed to bind socket: {err.strerror}", option=origin) from err
    sock.listen(128)
    sock.setblocking(False)
    return sock
