"""Shared fixtures: a real vmd process on real sockets, and the peers for differential tests."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def require_peer(binary: str) -> str:
    """The path of a peer program; skipped when absent, a failure when CI requires the peers."""
    path = shutil.which(binary)
    if path:
        return path
    if os.environ.get("VMD_REQUIRE_PEERS") == "1":
        pytest.fail(f"{binary} is required (VMD_REQUIRE_PEERS=1) but not installed")
    pytest.skip(f"{binary} is not installed (scripts/setup --test installs it as root)")


@pytest.fixture
def qemu_binary() -> str:
    return require_peer("qemu-system-s390x")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_socket(path: Path, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise RuntimeError(f"process exited with {proc.returncode}: {err.decode(errors='replace')}")
        if path.exists():
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(str(path))
                return
            except OSError:
                pass
            finally:
                probe.close()
        time.sleep(0.01)
    raise TimeoutError(f"{path} did not appear")


def wait_for_tcp(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise RuntimeError(f"process exited with {proc.returncode}: {err.decode(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.01)
    raise TimeoutError(f"port {port} did not open")


#: a guest that waits for ever (guests/src/idle.c): the running OS of the control-plane tests
IDLE_GUEST = ROOT / "guests" / "bin" / "idle.elf"


class VmdProcess:
    """vmd started as its own process, as a user would start it."""

    def __init__(self, tmp: Path, args: list[str], api: bool = True, env: dict | None = None):
        self.tmp = tmp
        self.qmp_path = tmp / "qmp.sock"
        self.token_file = tmp / "token"
        self.api_port = free_port() if api else None
        cmd = [sys.executable, "-m", "vmd", *args]
        if args and not {"-kernel", "-bios"} & set(args):
            # something to run: without it the firmware finds no boot device and ends the machine, as in QEMU
            cmd += ["-kernel", str(IDLE_GUEST)]
        if not any(a.startswith("-qmp") or a == "-mon" for a in args):
            cmd += ["-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        if api:
            cmd += ["--api-listen", f"127.0.0.1:{self.api_port}", "--token-file", str(self.token_file)]
        cmd += ["--runtime-dir", str(tmp / "run")]
        self.cmd = cmd
        full_env = dict(os.environ, **(env or {}))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=full_env, cwd=ROOT)
        wait_for_socket(self.qmp_path, self.proc)
        if api:
            wait_for_tcp(self.api_port, self.proc)

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err.decode(errors="replace")


@pytest.fixture
def vmd_factory(tmp_path):
    started: list[VmdProcess] = []

    def start(*args: str, api: bool = True, env: dict | None = None) -> VmdProcess:
        sub = tmp_path / f"vm{len(started)}"
        sub.mkdir()
        vm = VmdProcess(sub, list(args), api=api, env=env)
        started.append(vm)
        return vm

    yield start
    for vm in started:
        vm.stop()


@pytest.fixture
def vmd(vmd_factory) -> VmdProcess:
    return vmd_factory("-M", "s390-ccw-virtio", "-nographic", "-name", "test")


def raw_qmp(path: Path, lines: list[bytes], timeout: float = 5.0) -> list[dict]:
    """Send raw lines to a QMP socket after negotiation; return every message received."""
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(timeout)
    sock.connect(str(path))
    f = sock.makefile("rb")
    out = [json.loads(f.readline())]
    for line in lines:
        sock.sendall(line)
    sock.shutdown(socket.SHUT_WR)
    for line in f:
        out.append(json.loads(line))
    sock.close()
    return out
