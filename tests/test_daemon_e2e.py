"""The daemon as systemd and users run it: notify protocol, vmctl, the embedded default, bad options."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import IDLE_GUEST, ROOT, free_port, wait_for_socket, wait_for_tcp


def test_ready_is_sent_once_every_socket_listens_and_stopping_on_sigterm(vmd_factory, tmp_path):
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(10)
    vm = vmd_factory("-M", "s390-ccw-virtio", env={"NOTIFY_SOCKET": str(notify_path),
                                                    "WATCHDOG_USEC": "400000"})
    messages = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any("READY=1" in m for m in messages):
        messages.append(listener.recv(4096).decode())
    ready = next(m for m in messages if "READY=1" in m)
    assert "STATUS=" in ready and "qmp.sock" in ready
    # READY came after the sockets listen: both answer right away
    socket.create_connection(("127.0.0.1", vm.api_port), timeout=1).close()
    # the watchdog pings at half of WATCHDOG_USEC
    watchdog = listener.recv(4096).decode()
    assert watchdog.strip() == "WATCHDOG=1"
    vm.proc.terminate()
    assert vm.proc.wait(10) == 0
    rest = []
    try:
        while True:
            rest.append(listener.recv(4096).decode())
    except socket.timeout:
        pass
    assert any("STOPPING=1" in m for m in rest)


def test_vmctl_over_qmp_and_http(vmd):
    vmctl = [sys.executable, "-m", "vmd.vmctl"]
    out = subprocess.run(vmctl + ["-s", str(vmd.qmp_path), "query-status"], capture_output=True, text=True)
    assert out.returncode == 0 and "status: running" in out.stdout
    out = subprocess.run(vmctl + ["-s", str(vmd.qmp_path), "device_add", "driver=virtio-rng-ccw", "id=r1"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    out = subprocess.run(vmctl + ["-s", str(vmd.qmp_path), "--json", "qom-get", "path=/machine/peripheral/r1",
                                  "property=dev_id"], capture_output=True, text=True)
    assert json.loads(out.stdout) == "fe.0.0000"
    out = subprocess.run(vmctl + ["--http", vmd.api_url, "--token-file", str(vmd.token_file), "device_add",
                                  "driver=virtio-rng-ccw", "id=r1"], capture_output=True, text=True)
    assert out.returncode == 1 and "Duplicate device ID 'r1'" in out.stderr
    out = subprocess.run(vmctl + ["-s", str(vmd.qmp_path), "hmp", "info", "status"], capture_output=True, text=True)
    assert out.stdout.strip() == "VM status: running"


def test_embedded_default_vm(tmp_path):
    """No machine options: QMP in the runtime directory, the API on 127.0.0.1, a 3270 port."""
    port = free_port()
    tn_port = free_port()
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmd", "--api-listen", f"127.0.0.1:{port}", "--tn3270-listen", f"127.0.0.1:{tn_port}"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        sock = tmp_path / "vmd" / "demo" / "qmp.sock"
        wait_for_socket(sock, proc)
        wait_for_tcp(tn_port, proc)
        out = subprocess.run([sys.executable, "-m", "vmd.vmctl", "-s", str(sock), "--json", "query-chardev"],
                             capture_output=True, text=True, env=env)
        labels = {c["label"] for c in json.loads(out.stdout)}
        assert {"qmp0", "term0"} <= labels
    finally:
        proc.terminate()
        out_bytes, err = proc.communicate(timeout=10)
    log = err.decode()
    assert b"vmd test guest: hello" in out_bytes  # the demo guest greeted on the console
    assert "QMP monitor" in log and str(sock) in log
    assert "3270 terminal" in log and str(tn_port) in log
    assert f"127.0.0.1:{port}" in log


@pytest.mark.parametrize("args, message", [
    (["-device", "foo"], "vmd: -device foo: 'foo' is not a valid device model name"),
    (["-device", "virtio-rng-ccw,devno=fe.0.42"],
     "vmd: -device virtio-rng-ccw,devno=fe.0.42: Property 'virtio-rng-ccw.devno' doesn't take value 'fe.0.42'"),
    (["-device", "virtio-rng-ccw,devno=fe.0.0001", "-device", "virtio-rng-ccw,devno=fe.0.0001"],
     "vmd: -device virtio-rng-ccw,devno=fe.0.0001: Device fe.0.0001 already exists"),
])
def test_bad_options_fail_fast_with_exit_code_1(args, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vmd", "-M", "s390-ccw-virtio", "--runtime-dir", str(tmp_path),
                           *args], capture_output=True, text=True, timeout=20, cwd=ROOT)
    assert proc.returncode == 1
    assert message in proc.stderr.splitlines()


def test_print_config_round_trips_through_toml(tmp_path):
    args = ["-M", "s390-ccw-virtio", "-name", "web1", "-m", "1G", "-smp", "2",
            "-device", "virtio-rng-ccw,id=r1,devno=fe.0.0042",
            "-chardev", "socket,id=t0,host=127.0.0.1,port=2301,server=on,wait=off,tn3270=on"]
    out = subprocess.run([sys.executable, "-m", "vmd", "--print-config", *args], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    config = json.loads(out.stdout)
    assert config["name"] == "web1" and config["memory"]["size"] == 1 << 30 and config["smp"]["cpus"] == 2
    assert config["device"][0] == {"driver": "virtio-rng-ccw", "id": "r1", "devno": "fe.0.0042"}
    assert config["chardev"][0]["tn3270"] is True
    toml = tmp_path / "vm.toml"
    toml.write_text(
        'name = "web1"\n[memory]\nsize = 1073741824\n[smp]\ncpus = 2\n'
        '[[device]]\ndriver = "virtio-rng-ccw"\nid = "r1"\ndevno = "fe.0.0042"\n'
        '[[chardev]]\nbackend = "socket"\nid = "t0"\nhost = "127.0.0.1"\nport = 2301\nserver = true\n'
        'wait = false\ntn3270 = true\n')
    out2 = subprocess.run([sys.executable, "-m", "vmd", "--print-config", "--config", str(toml)],
                          capture_output=True, text=True, cwd=ROOT)
    assert out2.returncode == 0, out2.stderr
    from_toml = json.loads(out2.stdout)
    for key in ("name", "memory", "smp", "device", "chardev"):
        assert from_toml[key] == config[key], key


def test_server_wait_on_holds_the_machine_until_a_client_connects(tmp_path):
    """QEMU's default for a server socket is wait=on: nothing starts before a client is there."""
    sock = tmp_path / "q.sock"
    proc = subprocess.Popen([sys.executable, "-m", "vmd", "-M", "s390-ccw-virtio", "-qmp", f"unix:{sock},server=on",
                             "-kernel", str(IDLE_GUEST), "--runtime-dir", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        seen = []
        while not any("waiting for connection on: disconnected:unix:" in line for line in seen):
            line = proc.stderr.readline().decode()
            assert line, f"vmd ended before waiting: {seen}"
            seen.append(line)
        assert not any("is running" in line for line in seen)
        out = subprocess.run([sys.executable, "-m", "vmd.vmctl", "-s", str(sock), "--json", "query-status"],
                             capture_output=True, text=True, timeout=20)
        assert json.loads(out.stdout)["status"] == "running"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_human_monitor_on_a_socket(tmp_path):
    """-mon mode=readline (HMP): QEMU's banner and prompt, commands through the same registry."""
    qmp = tmp_path / "qmp.sock"
    hmp = tmp_path / "hmp.sock"
    proc = subprocess.Popen([sys.executable, "-m", "vmd", "-M", "s390-ccw-virtio", "-S",
                             "-qmp", f"unix:{qmp},server=on,wait=off",
                             "-chardev", f"socket,id=h,path={hmp},server=on,wait=off", "-mon", "chardev=h,mode=readline",
                             "--runtime-dir", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        wait_for_socket(hmp, proc)
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(str(hmp))
        s.sendall(b"device_add virtio-rng-ccw,id=r1,devno=fe.0.0042\ninfo status\ninfo qtree\n")
        data = b""
        while data.count(b"(qemu) ") < 4:
            data += s.recv(65536)
        s.close()
        text = data.decode()
        assert text.startswith("QEMU 7.2.0 monitor - type 'help' for more information\r\n(qemu) ")
        assert "VM status: paused (prelaunch)\r\n" in text
        assert 'dev_id = "fe.0.0042"' in text
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_qmp_on_stdio():
    proc = subprocess.run([sys.executable, "-m", "vmd", "-M", "s390-ccw-virtio", "-S", "-qmp", "stdio"],
                          input=b'{"execute":"qmp_capabilities"}\n{"execute":"query-status"}\n{"execute":"quit"}\n',
                          capture_output=True, timeout=30, cwd=ROOT)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert "QMP" in lines[0] and lines[1] == {"return": {}}
    assert lines[2]["return"]["status"] == "prelaunch"
    assert lines[3]["event"] == "SHUTDOWN" and lines[4] == {"return": {}}
    assert proc.returncode == 0
