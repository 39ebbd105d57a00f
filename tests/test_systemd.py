"""Tests for vmd.systemd: the sd_notify protocol spoken without libsystemd.

A real AF_UNIX/SOCK_DGRAM socket plays the service manager (bound to a path
in tmp_path, or to an abstract-namespace name), and the tests check the exact
datagrams that arrive.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from vmd.systemd import Notifier, watchdog_loop


class FakeManager:
    """The receiving end of $NOTIFY_SOCKET."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name  # the NOTIFY_SOCKET value

    def recv(self, timeout: float = 1.0) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()

    def drain(self) -> list[str]:
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        return out

    def assert_empty(self) -> None:
        assert self.drain() == []


@pytest.fixture
def manager(tmp_path) -> Iterator[FakeManager]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        yield FakeManager(sock, str(path))
    finally:
        sock.close()


@pytest.fixture
def abstract_manager() -> Iterator[FakeManager]:
    name = f"vmd-test-notify-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    try:
        yield FakeManager(sock, "@" + name)
    finally:
        sock.close()


# -- datagrams -------------------------------------------------------------


def test_ready_with_status(manager):
    n = Notifier(manager.name)
    assert n.enabled
    assert n.ready("running") is True
    assert manager.recv() == "READY=1\nSTATUS=running"


def test_ready_without_status(manager):
    assert Notifier(manager.name).ready() is True
    assert manager.recv() == "READY=1"


def test_status_watchdog_stopping_errno_extend(manager):
    n = Notifier(manager.name)
    n.status("booting guest")
    n.watchdog()
    n.stopping()
    n.stopping("quitting")
    n.errno(5)
    n.extend_timeout(20_000_000)
    n.watchdog_trigger()
    n.mainpid(1234)
    assert [manager.recv() for _ in range(8)] == [
        "STATUS=booting guest",
        "WATCHDOG=1",
        "STOPPING=1",
        "STOPPING=1\nSTATUS=quitting",
        "ERRNO=5",
        "EXTEND_TIMEOUT_USEC=20000000",
        "WATCHDOG=trigger",
        "MAINPID=1234",
    ]


def test_status_newlines_cannot_inject_assignments(manager):
    Notifier(manager.name).status("line one\nREADY=1\x00x")
    assert manager.recv() == "STATUS=line one READY=1 x"


def test_reloading_carries_monotonic_usec(manager):
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert Notifier(manager.name).reloading() is True
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = manager.recv().split("\n")
    assert lines[0] == "RELOADING=1"
    assert len(lines) == 2
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert value.isdigit()
    assert before <= int(value) <= after


def test_reloading_with_status(manager):
    Notifier(manager.name).reloading("re-reading config")
    lines = manager.recv().split("\n")
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=")
    assert lines[2] == "STATUS=re-reading config"


def test_abstract_namespace_socket(abstract_manager):
    n = Notifier.from_env({"NOTIFY_SOCKET": abstract_manager.name})
    assert n.enabled
    assert n.ready("up") is True
    assert abstract_manager.recv() == "READY=1\nSTATUS=up"


def test_from_env_reads_os_environ(manager, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", manager.name)
    n = Notifier.from_env()
    assert n.socket_name == manager.name
    n.watchdog()
    assert manager.recv() == "WATCHDOG=1"
    # Default: the environment is left alone.
    assert os.environ["NOTIFY_SOCKET"] == manager.name


def test_from_env_unset_environment(manager):
    env = {
        "NOTIFY_SOCKET": manager.name,
        "WATCHDOG_USEC": "2000000",
        "WATCHDOG_PID": str(os.getpid()),
        "OTHER": "kept",
    }
    n = Notifier.from_env(env, unset_environment=True)
    assert env == {"OTHER": "kept"}
    # The snapshot still works after the variables are gone.
    assert n.watchdog_interval() == 2.0
    n.ready()
    assert manager.recv() == "READY=1"
    assert not Notifier.from_env(env).enabled


# -- disabled / failure paths ---------------------------------------------


@pytest.mark.parametrize("value", [None, ""])
def test_noop_without_notify_socket(value):
    env = {} if value is None else {"NOTIFY_SOCKET": value}
    env["WATCHDOG_USEC"] = "1000000"
    n = Notifier.from_env(env)
    assert not n.enabled
    assert n.socket_name is None
    for call in (n.ready, n.watchdog, n.stopping, n.reloading, lambda: n.status("x"),
                 lambda: n.errno(1), lambda: n.extend_timeout(1)):
        assert call() is False
    assert n.watchdog_interval() is None
    assert n.watchdog_ping_interval() is None


def test_unsupported_address_disables(caplog):
    n = Notifier("vsock:2:1234")
    assert not n.enabled
    assert n.ready() is False
    assert "NOTIFY_SOCKET" in caplog.text


def test_send_error_is_swallowed(tmp_path):
    n = Notifier(str(tmp_path / "nobody-listens"))
    assert n.enabled
    assert n.ready("x") is False  # ENOENT/ECONNREFUSED: logged, not raised


# -- watchdog_interval -----------------------------------------------------


def _wd(usec, pid=None, sock="/run/systemd/notify"):
    env = {"NOTIFY_SOCKET": sock}
    if usec is not None:
        env["WATCHDOG_USEC"] = usec
    if pid is not None:
        env["WATCHDOG_PID"] = pid
    return Notifier.from_env(env)


def test_watchdog_interval_without_pid():
    n = _wd("30000000")
    assert n.watchdog_interval() == 30.0
    assert n.watchdog_ping_interval() == 15.0


def test_watchdog_interval_with_matching_pid():
    assert _wd("500000", str(os.getpid())).watchdog_interval() == 0.5


def test_watchdog_interval_with_other_pid():
    assert _wd("500000", str(os.getpid() + 1)).watchdog_interval() is None


@pytest.mark.parametrize("usec", [None, "", "0", "-5", "abc", "1.5"])
def test_watchdog_interval_invalid_usec(usec):
    assert _wd(usec).watchdog_interval() is None


@pytest.mark.parametrize("pid", ["0", "junk", "-1"])
def test_watchdog_interval_invalid_pid(pid):
    assert _wd("1000000", pid).watchdog_interval() is None


# -- watchdog_loop ---------------------------------------------------------


async def _collect(manager: FakeManager, duration: float) -> list[tuple[float, str]]:
    """Receive datagrams for `duration` seconds without blocking the loop."""
    loop = asyncio.get_running_loop()
    manager.sock.setblocking(False)
    got: list[tuple[float, str]] = []
    end = loop.time() + duration
    while (left := end - loop.time()) > 0:
        try:
            data = await asyncio.wait_for(loop.sock_recv(manager.sock, 4096), left)
        except TimeoutError:
            break
        got.append((loop.time(), data.decode()))
    return got


async def test_watchdog_loop_cadence(manager):
    n = Notifier.from_env({"NOTIFY_SOCKET": manager.name, "WATCHDOG_USEC": "200000",
                           "WATCHDOG_PID": str(os.getpid())})
    task = asyncio.create_task(watchdog_loop(n, lambda: True))
    try:
        got = await _collect(manager, 0.55)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert all(msg == "WATCHDOG=1" for _, msg in got)
    # Ping at once, then every 0.1 s (half of 0.2 s): about 6 in 0.55 s.
    assert 4 <= len(got) <= 7, got
    gaps = [b - a for (a, _), (b, _) in zip(got, got[1:], strict=False)]
    assert all(0.05 <= g <= 0.2 for g in gaps), gaps


async def test_watchdog_loop_withholds_pings_while_unhealthy(manager):
    n = Notifier(manager.name)
    healthy = True
    checks = 0

    def is_healthy() -> bool:
        nonlocal checks
        checks += 1
        return healthy

    task = asyncio.create_task(watchdog_loop(n, is_healthy, interval=0.1))
    try:
        first = await _collect(manager, 0.18)
        assert len(first) >= 2
        healthy = False
        await asyncio.sleep(0.06)  # let an in-flight tick finish
        manager.drain()
        checks_before = checks
        silent = await _collect(manager, 0.3)
        assert silent == []
        assert checks > checks_before  # still checking, just not pinging
        healthy = True
        resumed = await _collect(manager, 0.2)
        assert [m for _, m in resumed][:1] == ["WATCHDOG=1"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watchdog_loop_failing_or_slow_check_counts_as_unhealthy(manager):
    n = Notifier(manager.name)

    def boom() -> bool:
        raise RuntimeError("sick")

    async def slow() -> bool:
        await asyncio.sleep(10)
        return True

    for check in (boom, slow):
        task = asyncio.create_task(watchdog_loop(n, check, interval=0.1))
        try:
            assert await _collect(manager, 0.25) == []
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


async def test_watchdog_loop_async_check(manager):
    n = Notifier(manager.name)

    async def ok() -> bool:
        return True

    task = asyncio.create_task(watchdog_loop(n, ok, interval=0.1))
    try:
        got = await _collect(manager, 0.12)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert got and got[0][1] == "WATCHDOG=1"


async def test_watchdog_loop_stops_pinging_when_event_loop_hangs(manager):
    n = Notifier(manager.name)
    task = asyncio.create_task(watchdog_loop(n, lambda: True, interval=0.1))
    try:
        await asyncio.sleep(0.01)
        manager.drain()
        time.sleep(0.3)  # a wedged event loop: the coroutine cannot run
        assert manager.drain() == []
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watchdog_loop_returns_when_disabled(manager):
    # No WATCHDOG_USEC: nothing to do.
    await asyncio.wait_for(watchdog_loop(Notifier(manager.name), lambda: True), 1)
    # WATCHDOG_PID names another process.
    other = Notifier.from_env({"NOTIFY_SOCKET": manager.name, "WATCHDOG_USEC": "100000",
                               "WATCHDOG_PID": "1" if os.getpid() != 1 else "2"})
    await asyncio.wait_for(watchdog_loop(other, lambda: True), 1)
    # No NOTIFY_SOCKET, even with an explicit interval.
    await asyncio.wait_for(watchdog_loop(Notifier(None), lambda: True, interval=0.1), 1)
    manager.assert_empty()


# -- import hygiene --------------------------------------------------------


def test_module_does_not_import_asyncio():
    code = "import sys, vmd.systemd; print('asyncio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.strip() == "False"


# -- packaging: the unit file and the container's sample config -------------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    with open(os.path.join(REPO, "systemd", "vmd@.service")) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", ";", "[")):
                key, _, value = line.partition("=")
                settings.setdefault(key, []).append(value)
    return settings


def test_unit_matches_the_notifier():
    s = _unit_settings()
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["WatchdogSec"] == ["30s"]
    assert s["RuntimeDirectory"] == ["vmd/%i"]
    assert s["ExecStart"] == ["vmd --config /etc/vmd/%i.toml"]
    assert "ExecStop" not in s  # SIGTERM is the clean quit
    assert "MemoryDenyWriteExecute" not in s  # a JIT backend needs W+X


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_unit_verifies(tmp_path):
    """systemd-analyze verify: no complaint but (possibly) the missing vmd binary."""
    unit = tmp_path / "vmd@.service"
    with open(os.path.join(REPO, "systemd", "vmd@.service")) as f:
        text = f.read()
    # Point ExecStart at a binary that exists so a clean unit verifies cleanly.
    unit.write_text(text.replace("ExecStart=vmd ", "ExecStart=/bin/true ", 1))
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                         timeout=30)
    # Other units on the host (targets it pulls in) may have complaints of their own.
    ours = [line for line in out.stderr.splitlines() if "vmd@" in line]
    assert ours == [], out.stderr
    assert out.returncode == 0, out.stderr


def test_container_sample_config_validates():
    tomllib = pytest.importorskip("tomllib")
    config = pytest.importorskip("vmd.config")
    with open(os.path.join(REPO, "docker", "vm.toml"), "rb") as f:
        cfg = config.Config.model_validate(tomllib.load(f))
    assert cfg.api.listen == "0.0.0.0:4480"
    assert cfg.api.token_file == "/run/vmd/token"
    term = cfg.chardev("term0")
    assert (term.host, term.port, term.tn3270) == ("0.0.0.0", 2300, True)
    assert cfg.chardev("qmp0").path == "/run/vmd/qmp.sock"
    assert [m.mode for m in cfg.monitors] == ["control"]
