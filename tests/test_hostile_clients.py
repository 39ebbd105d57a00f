"""Hostile clients against a live vmd process, over real sockets.

The standard: no crash on any input from a client; the daemon stays responsive for other
clients, keeps its state unchanged by bad requests and bounds its memory.  Everything here
talks to a real ``python -m vmd`` through its QMP unix socket and its HTTP API:

* hypothesis fuzzes QMP (random bytes, random JSON, near-valid requests for the real
  commands with hostile arguments, QEMU's single quotes, invalid UTF-8, NULs, deep nesting)
  and JSON-RPC bodies against one long-lived daemon.  The expected number of answers comes
  from an oracle: QEMU's stream splitting as implemented by ``vmd.proto.qmp`` (one answer per
  complete message, in order), so lost, duplicated or reordered replies fail;
* floods and limits: an endless string, 200 pipelined requests, more than 64 clients,
  clients that never read (replies, events, SSE), abrupt and half-closed connections,
  token-dense partial messages, expensive pipelined commands, slowloris HTTP clients;
* after each hostile act a separate healthy client gets a correct ``query-status`` and the
  channel subsystem (``__org.vmd_query-css``) is exactly what it was.

Memory is read from ``/proc/PID/status`` (VmRSS).  Each memory bound is chosen so that the
behaviour being guarded against (buffering what the client sends, or what it does not read)
would exceed it by a wide margin, while the documented bounds (1 MiB per message, 1024
queued events per listener, a write high-water mark) stay well below it.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import http.client as httplib
import itertools
import json
import math
import os
import re
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import VmdProcess
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from vmd.proto import qmp as wire

MACHINE = ["-M", "s390-ccw-virtio", "-nographic", "-name", "hostile"]
RUNNING = {"return": {"status": "running", "singlestep": False, "running": True}}

#: The fuzzers send only commands that read (a random device_add may legitimately succeed,
#: pmemsave writes files), so any change of state is a bug.  By QMP's naming conventions:
READ_ONLY_PREFIXES = ("query-", "__org.vmd_query-")
READ_ONLY = frozenset({"qom-get", "qom-list", "device-list-properties", "human-monitor-command", "qmp_capabilities"})
#: every command vmd has that is not read-only (filled in from query-commands)
UNSAFE: set[str] = {"device_add", "device_del", "quit", "stop", "cont", "system_reset", "system_powerdown"}
#: HMP command lines the fuzzers send: only these first words (and words no command has)
HMP_READ_ONLY = frozenset({"info", "help", "?"})


def read_only(name: str) -> bool:
    return name.startswith(READ_ONLY_PREFIXES) or name in READ_ONLY

FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


# ----------------------------------------------------------------------------------------
# helpers


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


_BARE = re.compile(r'"(?:[^"\\]|\\.)*"|(-?)\b(inf|nan)\b')


def parse_reply(line: bytes) -> dict:
    """One server message: ASCII, CRLF-terminated JSON (QEMU writes inf/nan bare, as does vmd)."""
    assert line.endswith(b"\r\n"), f"not CRLF-terminated: {line[-80:]!r}"
    assert line.isascii(), f"non-ASCII output: {line[:200]!r}"
    text = line.decode("ascii")
    try:
        msg = json.loads(text)
    except ValueError:
        def fix(m: re.Match) -> str:
            if m.group(2) is None:
                return m.group(0)
            return ("-Infinity" if m.group(1) else "Infinity") if m.group(2) == "inf" else "NaN"

        msg = json.loads(_BARE.sub(fix, text))
    assert isinstance(msg, dict), msg
    return msg


class Qmp:
    """A raw, synchronous QMP client: bytes in, parsed messages out."""

    def __init__(self, path: Path, *, negotiate: bool = True, timeout: float = 10.0):
        self.sock = socket.socket(socket.AF_UNIX)
        self.buf = bytearray()
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(str(path))
            self.greeting = self.recv()
            assert "QMP" in self.greeting, self.greeting
            if negotiate:
                assert self.ask({"execute": "qmp_capabilities"}) == {"return": {}}
        except BaseException:
            self.sock.close()
            raise

    def line(self) -> bytes | None:
        """The next line, or None at EOF."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                assert not self.buf, f"partial message at EOF: {bytes(self.buf[:200])!r}"
                return None
            self.buf += chunk

    def recv(self) -> dict:
        line = self.line()
        assert line is not None, "vmd closed the connection"
        return parse_reply(line)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def ask(self, msg: Any) -> dict:
        self.send(json.dumps(msg).encode())
        reply = self.recv()
        assert "event" not in reply, f"unexpected event (state changed?): {reply}"
        return reply

    def close(self) -> None:
        self.sock.close()


def same_json(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value (QEMU writes the float 1.0 as 1), bools apart from numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def hmp_mutates(line: Any) -> bool:
    """Whether an HMP command line might change something (its first word may be a command)."""
    if not isinstance(line, str):
        return False
    words = line.strip().split(None, 1)
    if not words or words[0] in HMP_READ_ONLY:
        return False
    return bool(re.fullmatch(r"[a-z_]{1,32}", words[0]))


def mutating_request(value: Any) -> bool:
    """Whether a parsed QMP message would run a state-changing command (in any session mode)."""
    if not isinstance(value, dict):
        return False
    request = wire.parse_request(value, oob_enabled=True)
    if isinstance(request, wire.DispatchError):
        return False
    if request.name in UNSAFE:
        return True
    return request.name == "human-monitor-command" and hmp_mutates(request.arguments.get("command-line"))


def short(obj: Any, limit: int = 500) -> str:
    try:
        text = repr(obj)
    except RecursionError:
        text = f"<{type(obj).__name__} nested too deep to show>"
    return text if len(text) <= limit else text[:limit] + "..."


def answer_kind(reply: dict) -> str:
    if "return" in reply:
        return "return"
    desc = str(reply.get("error", {}).get("desc"))
    for prefix in ("JSON", "QMP input", "Parameter", "Invalid parameter", "Expecting capabilities", "The command"):
        if desc.startswith(prefix):
            return prefix
    return desc[:50]


def check_replies(items: list, replies: list[dict]) -> None:
    """One reply per message the splitter yields, in order, each the right kind with its id."""
    assert len(replies) == len(items), (
        f"{len(items)} messages but {len(replies)} replies\nitems={short(items, 2000)}\nreplies={short(replies, 2000)}")
    for item, reply in zip(items, replies):
        if currently_in_test_context():
            event("answer: " + answer_kind(reply))
        assert set(reply) in ({"return"}, {"return", "id"}, {"error"}, {"error", "id"}), reply
        if "error" in reply:
            assert set(reply["error"]) == {"class", "desc"}, reply
            assert isinstance(reply["error"]["desc"], str) and isinstance(reply["error"]["class"], str)
            assert not reply["error"]["desc"].startswith("internal error"), \
                f"vmd bug behind {short(item)}: {short(reply)}"
        if isinstance(item, wire.WireError):
            assert reply == {"error": {"class": "GenericError", "desc": item.desc}}
        elif not isinstance(item.value, dict):
            assert reply == {"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}
        elif "id" in item.value:
            assert "id" in reply and same_json(reply["id"], item.value["id"]), (short(item), short(reply))
        else:
            assert "id" not in reply, (short(item), short(reply))


class OutputDrain:
    """Reads vmd's stdout and stderr while it runs, keeping the tail for diagnostics.

    The fixtures in conftest.py read them only at exit; a hostile client that makes vmd log
    (tracebacks of internal errors, aiohttp's bad-request reports) would otherwise fill the
    64 KiB pipe and block the daemon in write(2), which a supervisor (journald) never does.
    The threads read from duplicates of the pipes, so the fixtures' own reads stay safe.
    """

    def __init__(self, proc) -> None:
        self.tail: collections.deque[bytes] = collections.deque(maxlen=64)
        self.total = 0
        for stream in (proc.stdout, proc.stderr):
            fd = os.dup(stream.fileno())
            threading.Thread(target=self._read, args=(fd,), daemon=True).start()

    def _read(self, fd: int) -> None:
        try:
            while chunk := os.read(fd, 1 << 16):
                self.total += len(chunk)
                self.tail.append(chunk)
        except OSError:
            pass
        finally:
            os.close(fd)

    def text(self, limit: int = 4000) -> str:
        return b"".join(self.tail)[-limit:].decode(errors="replace")


def drained(vm: VmdProcess) -> VmdProcess:
    vm.output = OutputDrain(vm.proc)  # type: ignore[attr-defined]
    return vm


class Shared:
    """The long-lived daemon of this module and a healthy client watching it."""

    def __init__(self, vm: VmdProcess):
        self.vm = vm
        self.healthy = Qmp(vm.qmp_path)
        assert self.healthy.ask({"execute": "device_add", "arguments": {
            "driver": "virtio-rng-ccw", "id": "keep", "devno": "fe.0.0042"}}) == {"return": {}}
        self.css = self.healthy.ask({"execute": "__org.vmd_query-css"})
        assert "return" in self.css and self.css["return"]["subchannels"]
        names = [c["name"] for c in self.healthy.ask({"execute": "query-commands"})["return"]]
        schema = {e["name"]: e for e in self.healthy.ask({"execute": "query-qmp-schema"})["return"]}
        self.args: dict[str, list[str]] = {}
        for name in names:
            arg_type = schema.get(schema.get(name, {}).get("arg-type", ""), {})
            self.args[name] = [m["name"] for m in arg_type.get("members", [])]
        assert {"qom-get", "query-status", "human-monitor-command"} <= set(self.args)
        assert self.args["qom-get"] == ["path", "property"]
        self.harmless = sorted(n for n in names if read_only(n))
        UNSAFE.update(n for n in names if not read_only(n))
        self._long_lived: Qmp | None = None
        self.oracle = wire.JsonStreamSplitter()  # the long-lived connection's parser state
        self._pipelined: Qmp | None = None

    def long_lived(self) -> tuple[Qmp, wire.JsonStreamSplitter]:
        """A connection kept across fuzzing examples, and the splitter mirroring vmd's for it."""
        if self._long_lived is None:
            self._long_lived = Qmp(self.vm.qmp_path)
            self.oracle = wire.JsonStreamSplitter()
        return self._long_lived, self.oracle

    def drop_long_lived(self) -> None:
        if self._long_lived is not None:
            self._long_lived.close()
            self._long_lived = None

    def pipelined(self) -> Qmp:
        if self._pipelined is None:
            self._pipelined = Qmp(self.vm.qmp_path)
        return self._pipelined

    def drop_pipelined(self) -> None:
        if self._pipelined is not None:
            self._pipelined.close()
            self._pipelined = None

    def check(self) -> None:
        """The daemon lives, answers a healthy client correctly and its devices are unchanged."""
        assert self.vm.proc.poll() is None, f"vmd died ({self.vm.proc.returncode}): {self.vm.output.text()}"
        assert self.healthy.ask({"execute": "query-status"}) == RUNNING
        assert self.healthy.ask({"execute": "__org.vmd_query-css"}) == self.css


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    vm = drained(VmdProcess(tmp_path_factory.mktemp("hostile"), MACHINE))
    shared = Shared(vm)
    yield shared
    shared.drop_long_lived()
    shared.drop_pipelined()
    shared.healthy.close()
    code, _ = vm.stop()
    assert code == 0, f"vmd did not exit cleanly after the hostile clients ({code}): {vm.output.text()}"


def fresh_vmd(vmd_factory) -> VmdProcess:
    """A daemon of its own (memory baselines, exact client counts), fully started."""
    vm = drained(vmd_factory(*MACHINE))
    q = Qmp(vm.qmp_path)
    assert q.ask({"execute": "query-status"}) == RUNNING  # commands run once the machine is up
    q.close()
    return vm


# ----------------------------------------------------------------------------------------
# strategies

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30, -(10**300), 0])
    | st.floats()
    | st.text(max_size=24)
    | st.sampled_from(["", "\x00", "\ud800", "\ufffe", "\U0010ffff", "é", "'", '"', "\\", "\\u0000"])
)
json_values = st.recursive(
    _scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
#: argument values that get past type checks, by argument name
_PLAUSIBLE: dict[str, list] = {
    "path": ["/machine", "/machine/peripheral", "/machine/peripheral/keep", "/machine/peripheral-anon", "/", "",
             "//", "keep", "/machine/peripheral/keep/", "/machine/../machine", "/machine/peripheral/nope"],
    "property": ["dev_id", "subch_id", "type", "devno", "realized", "parent_bus", "", "nope", "dev_id\x00"],
    "typename": ["virtio-rng-ccw", "virtio-net-ccw", "virtio-blk-ccw", "virtio-rng", "device", "", "nope",
                 "virtio-rng-ccw,id=x"],
    "command-line": ["info status", "info qtree", "info chardev", "info", "help", "", "info  qtree", "\tinfo status",
                     "info qtree extra", "x" * 2000, "info \x00", "?", "device_add?", "info device_add"],
    "cpu-index": [0, -1, 1, 2**63, "0"],
    "enable": [["oob"], [], ["nope"], "oob", [None], ["oob", "oob"]],
    "id": ["keep", "", "nope"],
}
_plausible = st.sampled_from(sorted({v for vs in _PLAUSIBLE.values() for v in vs if isinstance(v, str)}))


ABSENT_ARG = object()


def argument_values(name: str, other: st.SearchStrategy | None = None) -> st.SearchStrategy:
    specific = st.sampled_from(_PLAUSIBLE[name]) if name in _PLAUSIBLE else _plausible
    return st.one_of(specific, specific, _plausible, json_values if other is None else other)


_INVALID_UTF8 = [b"\xc0\x80", b"\xff", b"\xfe", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc3", b"\xe0\x80\xaf",
                 b"\xef\xbf\xbf", b"\x80", b"\xf8\x88\x80\x80\x80"]


@st.composite
def mutated(draw, value: Any) -> bytes:
    """``value`` serialized, then damaged the ways QMP clients (and attackers) do."""
    ensure_ascii = draw(st.booleans())
    sep = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\t", "\n:\r")]))
    data = json.dumps(value, ensure_ascii=ensure_ascii, separators=sep).encode("utf-8", "surrogatepass")
    for op in draw(st.lists(st.sampled_from(
            ["quotes", "insert", "nul", "utf8", "truncate", "nest", "twice", "newline"]), max_size=3)):
        at = draw(st.integers(0, len(data)))
        if op == "quotes":
            data = data.replace(b'"', b"'")
        elif op == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
        elif op == "nul":
            data = data[:at] + b"\x00" + data[at:]
        elif op == "utf8":
            data = data[:at] + draw(st.sampled_from(_INVALID_UTF8)) + data[at:]
        elif op == "truncate":
            data = data[:at]
        elif op == "nest":
            depth = draw(st.sampled_from([1, 2, 1000, 1023, 1024, 1025, 3000]))
            data = b"[" * depth + data + b"]" * depth
        elif op == "twice":
            data = data + data
        elif op == "newline":
            data = data[:at] + b"\r\n" + data[at:]
    return data


def request_values(shared: Shared, envelope_damage: int = 3, random_names: bool = True) -> st.SearchStrategy:
    """Near-valid QMP requests: real command names and argument names, hostile values and shapes.

    About ``envelope_damage`` in 10 requests have a damaged envelope (execute not a string,
    arguments not an object, exec-oob, unexpected members); the others reach the command.
    """
    names = st.sampled_from(shared.harmless) | st.text(max_size=16) | st.sampled_from(
        ["qmp_capabilities", "QUERY-STATUS", "query-status\x00", "query_status", "query-status ", ""])
    names = st.one_of(st.sampled_from(shared.harmless), st.sampled_from(shared.harmless), names)
    if not random_names:
        names = st.sampled_from(shared.harmless)

    @st.composite
    def build(draw) -> Any:
        name = draw(names)
        known = shared.args.get(name, [])
        keys = (st.sampled_from(known) | st.text(max_size=10)) if known else st.text(max_size=10)
        args = {k: draw(argument_values(k)) for k in known if draw(st.integers(0, 4))}
        if draw(st.integers(0, 2)) == 0:
            args.update(draw(st.dictionaries(keys, json_values | _plausible, max_size=2)))
        damaged = draw(st.integers(0, 9)) < envelope_damage
        req: dict[str, Any] = {}
        for member in draw(st.permutations(["execute", "arguments", "id", "extra"])):
            kind = draw(st.integers(0, 9)) if damaged else 9
            if member == "execute":
                key = "exec-oob" if kind < 2 else "execute"
                req[key] = draw(json_values) if kind in (2, 3) else name
            elif member == "arguments" and kind != 4:
                req["arguments"] = draw(json_values) if kind == 5 else args
            elif member == "id" and draw(st.booleans()):
                req["id"] = draw(json_values)
            elif member == "extra" and kind == 6:
                req[draw(st.text(max_size=8))] = draw(json_values)
        return req

    return build()


def hostile_payload(shared: Shared) -> st.SearchStrategy:
    """Bytes for one QMP connection: garbage, JSON, requests, and mixtures."""
    one = st.one_of(
        st.binary(max_size=600),
        json_values.flatmap(mutated),
        request_values(shared).flatmap(mutated),
        request_values(shared).map(lambda r: json.dumps(r).encode("utf-8", "surrogatepass")),
    )
    return st.lists(one, min_size=1, max_size=6).map(b"".join)


def harmless_items(splitter: wire.JsonStreamSplitter, payload: bytes) -> list:
    items = splitter.feed(payload)
    assume(not any(isinstance(i, wire.Message) and mutating_request(i.value) for i in items))
    return items


def send_in_pieces(sock: socket.socket, payload: bytes, cuts: list[int]) -> None:
    last = 0
    for cut in sorted(c % (len(payload) + 1) for c in cuts):
        sock.sendall(payload[last:cut])
        last = cut
    sock.sendall(payload[last:])


# ----------------------------------------------------------------------------------------
# 1. QMP fuzzing against one live daemon


@settings(FUZZ, max_examples=250)
@given(data=st.data(), negotiate=st.booleans(), cuts=st.lists(st.integers(0, 1 << 16), max_size=4))
def test_fuzz_qmp_fresh_connections(hostile, data, negotiate, cuts):
    """Each example on a new connection, then EOF: every complete message gets exactly one answer.

    vmd answers everything it received before the client's EOF, then hangs up (as scripts
    piping into ``socat``/``nc -U`` expect), so reading to EOF collects every answer.
    """
    payload = data.draw(hostile_payload(hostile), label="payload")
    items = harmless_items(wire.JsonStreamSplitter(), payload)
    client = Qmp(hostile.vm.qmp_path, negotiate=negotiate)
    try:
        send_in_pieces(client.sock, payload, cuts)
        client.sock.shutdown(socket.SHUT_WR)
        replies = []
        while (line := client.line()) is not None:
            replies.append(parse_reply(line))
        check_replies(items, replies)
    finally:
        client.close()
    hostile.check()


@settings(FUZZ, max_examples=200)
@given(data=st.data(), cuts=st.lists(st.integers(0, 1 << 16), max_size=3))
def test_fuzz_qmp_one_long_lived_connection(hostile, data, cuts):
    """All examples on one connection: the parser must resynchronise after anything."""
    client, oracle = hostile.long_lived()
    payload = data.draw(hostile_payload(hostile), label="payload")
    oracle = copy.deepcopy(oracle)  # an example may be rejected before it is sent
    items = harmless_items(oracle, payload)
    hostile.oracle = oracle
    try:
        send_in_pieces(client.sock, payload, cuts)
        check_replies(items, [client.recv() for _ in items])
    except BaseException:
        hostile.drop_long_lived()  # out of step now: the next example starts afresh
        raise
    hostile.check()


def test_long_lived_connection_still_works_after_fuzzing(hostile):
    """Whatever state the fuzzing left, closing any open value and a request get answered."""
    client, _ = hostile.long_lived()
    # end any string (both quote kinds), then enough closers to end any nesting; errors expected
    client.send(b'"\'\n' + b"]}" * 1100 + b'\n{"execute":"query-name","id":"end"}')
    deadline = time.monotonic() + 10
    while True:
        reply = client.recv()
        if reply.get("id") == "end":
            break
        assert time.monotonic() < deadline
        assert "error" in reply
    assert reply == {"return": {"name": "hostile"}, "id": "end"}
    hostile.drop_long_lived()
    hostile.check()


@settings(FUZZ, max_examples=200)
@given(data=st.data(), count=st.integers(1, 6))
def test_fuzz_real_commands_with_hostile_arguments(hostile, data, count):
    """Pipelined near-valid requests for every command: wrong types, huge ints, unicode, junk members."""
    client = hostile.pipelined()
    strategy = request_values(hostile, envelope_damage=1, random_names=False)
    requests = [data.draw(strategy, label=f"request{i}") for i in range(count)]
    payload = b"".join(json.dumps(r, ensure_ascii=data.draw(st.booleans())).encode("utf-8", "surrogatepass")
                       for r in requests)
    items = harmless_items(wire.JsonStreamSplitter(), payload)
    try:
        client.send(payload)
        check_replies(items, [client.recv() for _ in items])
    except BaseException:
        hostile.drop_pipelined()
        raise
    hostile.check()


def test_every_command_with_every_plausible_and_wrong_argument(hostile):
    """The cross product of plausible and wrong-typed values for each command's arguments, pipelined."""
    wrong: list = [None, True, -1, 0, 2**63, 2**64, -(2**63) - 1, 1.5, 1e300, [], {}, ["oob"], {"a": 1},
                   "\u00e9\u0000", "x" * 5000, "\ud7ff\U0010fffd"]
    client = Qmp(hostile.vm.qmp_path)
    try:
        for name in hostile.harmless:
            arg_names = hostile.args[name]
            choices = [[ABSENT_ARG, *_PLAUSIBLE.get(a, []), *wrong] for a in arg_names]
            requests = []
            for combo in itertools.islice(itertools.product(*choices), 2000):
                args = {a: v for a, v in zip(arg_names, combo) if v is not ABSENT_ARG}
                if name == "human-monitor-command" and hmp_mutates(args.get("command-line")):
                    continue
                requests.append({"execute": name, "arguments": args, "id": len(requests)})
            for extra in ({"bogus": 1}, {"": None}, {"\u00e9": []}):
                requests.append({"execute": name, "arguments": extra, "id": len(requests)})
            payload = b"".join(json.dumps(r).encode() for r in requests)
            items = wire.JsonStreamSplitter().feed(payload)
            assert len(items) == len(requests)
            client.send(payload)
            check_replies(items, [client.recv() for _ in items])
            hostile.check()
    finally:
        client.close()


def test_deeply_nested_arguments_for_every_command(hostile):
    """Every argument of every command as a list or object nested to QMP's limit (1024) and beyond.

    QEMU answers each with an argument error; an "internal error" means vmd failed on the input.
    """
    client = Qmp(hostile.vm.qmp_path)
    oracle = wire.JsonStreamSplitter()
    internal = []
    try:
        for name in hostile.harmless:
            for arg in [*hostile.args[name], "bogus"]:
                for depth in (100, 500, 900, 985, 998, 1021, 1022, 1023, 1100):
                    for opener, closer in ((b"[", b"]"), (b'{"a":', b"}")):
                        value = opener * depth + b"1" + closer * depth
                        line = (b'{"execute":"%s","arguments":{"%s":%s},"id":%d}'
                                % (name.encode(), arg.encode(), value, depth))
                        items = oracle.feed(line)
                        client.send(line)
                        replies = [client.recv() for _ in items]
                        if any(r.get("error", {}).get("desc", "").startswith("internal error") for r in replies):
                            internal.append((name, arg, depth, opener.decode(), replies[0]["error"]["desc"]))
                            continue
                        check_replies(items, replies)
                        if depth + 2 > wire.MAX_NESTING:  # beyond QEMU's limit the message is refused
                            assert replies[0] == {"error": {"class": "GenericError",
                                                            "desc": "JSON nesting depth limit exceeded"}}
                        else:  # otherwise it is an argument error, in QEMU's words
                            assert len(replies) == 1 and replies[0]["id"] == depth, replies
                            assert "error" in replies[0], (name, arg, depth, replies)
            hostile.check()
    finally:
        client.close()
    assert not internal, f"{len(internal)} nested arguments made vmd fail, e.g. {internal[:6]}"


def test_deeply_nested_ids_are_echoed(hostile):
    """The id comes back whatever its depth (QEMU's JSON writer has no recursion limit)."""
    client = Qmp(hostile.vm.qmp_path)
    oracle = wire.JsonStreamSplitter()
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10000)  # to read the replies back with the json module
    try:
        for depth in (500, 1000, 1022, 1023):
            for opener, closer in ((b"[", b"]"), (b'{"a":', b"}")):
                for name in (b"query-name", b"nope", b"qom-get"):
                    line = b'{"execute":"%s","id":%s}' % (name, opener * depth + b"1" + closer * depth)
                    items = oracle.feed(line)
                    client.send(line)
                    check_replies(items, [client.recv() for _ in items])
    finally:
        sys.setrecursionlimit(limit)
        client.close()
    hostile.check()


# ----------------------------------------------------------------------------------------
# 2. floods and limits


def test_hostile_clients_during_start_up(vmd_factory):
    """Clients that connect while the machine is still being built (the early monitor's watch).

    Each sends its bytes at once (some in two parts across the hand-over); each must get exactly
    the answers the same bytes get from a running daemon, and nothing more.
    """
    payloads = [
        b'{"execute":"qmp_capabilities"}{"execute":"query-status","id":1}',
        b'\xff\x00{]{"execute":"qmp_capabilities"}{"execute":"query-name","id":2}',
        b'{"execute":"query-status","id":3}{"execute":"qmp_capabilities","id":4}',
        b'"' + b"x" * (3 << 20) + b'"{"execute":"qmp_capabilities"}{"execute":"query-name"}',
        b"[" * 2000 + b"]" * 2000 + b'{"execute":"qmp_capabilities"}',
        b'{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}{"exec-oob":"query-name","id":"o"}',
        b'{"execute":"qmp_capabilities","arguments":{"enable":["nope"]}}{"execute":"qmp_capabilities","id":5}',
        b"{'execute': 'qmp_capabilities'}" + b'{"execute":"query-status"}' * 5000,
        b'{"execute":"qmp_capabilities"}{"execute":"query-st',
        b'{"execute":"qmp_capabilities"}{"execute":"quer\xc0\x80y-name"}{"execute":"query-name","id":"\xc0\x80"}',
    ]
    vm = drained(vmd_factory(*MACHINE, api=False))  # returns as soon as the QMP socket answers
    results: dict[int, Any] = {}

    def client(n: int, payload: bytes) -> None:
        try:
            c = Qmp(vm.qmp_path, negotiate=False, timeout=20)
            half = len(payload) // 2 if n % 2 else len(payload)
            c.send(payload[:half])
            time.sleep(0.3)
            c.send(payload[half:])
            replies = [c.recv() for _ in wire.JsonStreamSplitter().feed(payload)]
            c.sock.shutdown(socket.SHUT_WR)
            while (line := c.line()) is not None:
                replies.append(parse_reply(line))
            c.close()
            results[n] = replies
        except (OSError, AssertionError, ValueError) as err:  # reported below
            results[n] = err

    threads = [threading.Thread(target=client, args=(n, p)) for n, p in enumerate(payloads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for n, payload in enumerate(payloads):
        replies = results.get(n)
        assert isinstance(replies, list), f"client {n}: {replies!r}"
        check_replies(wire.JsonStreamSplitter().feed(payload), replies)
    q = Qmp(vm.qmp_path)
    assert q.ask({"execute": "query-status"}) == RUNNING
    q.close()


def test_200_pipelined_requests_in_one_write_get_200_answers_in_order(hostile):
    kinds = [
        (lambda i: {"execute": "query-status", "id": i}, lambda r, i: r == {**RUNNING, "id": i}),
        (lambda i: {"execute": "query-name", "id": i}, lambda r, i: r == {"return": {"name": "hostile"}, "id": i}),
        (lambda i: {"execute": "nope", "id": i},
         lambda r, i: r == {"id": i, "error": {"class": "CommandNotFound",
                                               "desc": "The command nope has not been found"}}),
        (lambda i: {"execute": "qom-get", "arguments": {"path": "/machine/peripheral/keep", "property": "dev_id"},
                    "id": i}, lambda r, i: r == {"return": "fe.0.0042", "id": i}),
        (lambda i: {"execute": "qom-get", "arguments": {"path": 5}, "id": i},
         lambda r, i: r["id"] == i and r["error"]["class"] == "GenericError"),
    ]
    client = Qmp(hostile.vm.qmp_path)
    try:
        client.send(b"".join(json.dumps(kinds[i % len(kinds)][0](i)).encode() for i in range(200)))
        replies = [client.recv() for _ in range(200)]
        for i, reply in enumerate(replies):
            assert kinds[i % len(kinds)][1](reply, i), (i, reply)
        # and with a malformed message every tenth: its error has no id and keeps its place
        client.send(b"".join(b"{'execute': 'query-name', 'id': %d}" % i if i % 10 else b"{]" for i in range(200)))
        for i in range(200):
            reply = client.recv()
            if i % 10:
                assert reply == {"return": {"name": "hostile"}, "id": i}
            else:
                assert reply == {"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}
    finally:
        client.close()
    hostile.check()


def test_endless_string_is_cut_off_with_bounded_memory(vmd_factory):
    """160 MiB of one unterminated string in 1 MiB writes: errors (or a hang-up), RSS +< 48 MiB.

    A daemon that kept the string would grow by at least its size (160 MiB), three times the bound.
    """
    vm = fresh_vmd(vmd_factory)
    base = peak = rss_mib(vm.proc.pid)
    client = Qmp(vm.qmp_path)
    replies: list[dict] = []
    reader_done = threading.Event()

    def reader() -> None:
        with contextlib.suppress(OSError, AssertionError):
            while (line := client.line()) is not None:
                replies.append(parse_reply(line))
        reader_done.set()

    threading.Thread(target=reader, daemon=True).start()
    chunk = b"x" * (1 << 20)
    closed_by_vmd = False
    try:
        client.send(b'{"execute":"qom-get","arguments":{"path":"')
        for i in range(160):
            client.send(chunk)
            if i % 8 == 0:
                peak = max(peak, rss_mib(vm.proc.pid))
                assert peak - base < 48, f"RSS grew by {peak - base:.0f} MiB on an endless string"
    except (BrokenPipeError, ConnectionResetError):
        closed_by_vmd = True
    peak = max(peak, rss_mib(vm.proc.pid))
    assert peak - base < 48, f"RSS grew by {peak - base:.0f} MiB on an endless string"
    if not closed_by_vmd:
        client.send(b'"\n{"execute":"query-status","id":"after"}')
        deadline = time.monotonic() + 10
        while not any(r.get("id") == "after" for r in replies) and time.monotonic() < deadline:
            assert not reader_done.is_set(), "vmd hung up without saying why"
            time.sleep(0.01)
        assert {**RUNNING, "id": "after"} in replies
        assert {"error": {"class": "GenericError", "desc": "JSON token size limit exceeded"}} in replies
    client.close()
    other = Qmp(vm.qmp_path)
    assert other.ask({"execute": "query-status"}) == RUNNING
    other.close()


def test_more_than_64_clients_are_refused_and_slots_come_back(vmd_factory):
    """After 100 abrupt disconnects (mid-message, mid-reply, RST), 64 clients fit and the 65th is closed."""
    vm = fresh_vmd(vmd_factory)
    for n in range(100):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(vm.qmp_path))
        if n % 4 == 0:  # mid-message
            s.sendall(b'{"execute":"qmp_capabilities"}{"execute":"query-st')
        elif n % 4 == 1:  # mid-reply: a big answer never read
            s.sendall(b'{"execute":"qmp_capabilities"}' + b'{"execute":"query-machines"}' * 20)
        elif n % 4 == 2:  # greeting not even read
            pass
        else:  # mid-request, reset instead of FIN
            s.sendall(b"{'execute': 'qmp_capabilities', 'arguments': {'enable': ['oo")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    clients = []
    deadline = time.monotonic() + 10
    while len(clients) < 64:
        try:
            clients.append(Qmp(vm.qmp_path, timeout=2))
        except AssertionError:  # refused: a disconnected client's slot is not free yet
            assert time.monotonic() < deadline, f"only {len(clients)} clients fit after the disconnects"
            time.sleep(0.05)
    extra = []
    for _ in range(6):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(str(vm.qmp_path))
        extra.append(s)
    for s in extra:
        assert s.recv(4096) == b"", "the 65th client was served"
        s.close()
    for c in clients:
        assert c.ask({"execute": "query-status"}) == RUNNING
    clients.pop().close()
    deadline = time.monotonic() + 5
    while True:
        try:
            clients.append(Qmp(vm.qmp_path, timeout=2))
            break
        except AssertionError:
            assert time.monotonic() < deadline, "a closed client's slot never came back"
            time.sleep(0.05)
    for c in clients:
        c.close()
    assert vm.proc.poll() is None


def test_half_closed_and_abruptly_closed_connections(hostile):
    # the client stops sending: what it sent is answered, then the server hangs up
    c = Qmp(hostile.vm.qmp_path)
    c.send(b'{"execute":"query-name","id":1}{"execute":"query-status","id":2}' * 300 + b'{"execute":"query-na')
    c.sock.shutdown(socket.SHUT_WR)
    for _ in range(300):
        assert c.recv() == {"return": {"name": "hostile"}, "id": 1}
        assert c.recv() == {**RUNNING, "id": 2}
    assert c.line() is None
    c.close()
    # the client stops receiving but keeps sending
    c = Qmp(hostile.vm.qmp_path)
    c.sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        for _ in range(50):
            c.send(b'{"execute":"query-machines"}' * 10)
    c.close()
    hostile.check()
    # disconnects right after asking for big replies, with FIN and with RST
    for linger in (False, True):
        for _ in range(20):
            c = Qmp(hostile.vm.qmp_path)
            c.send(b'{"execute":"query-qmp-schema"}{"execute":"query-machines"}' * 3)
            if linger:
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            c.close()
    hostile.check()
    # a client that connects and says nothing does not hold up anyone
    idle = socket.socket(socket.AF_UNIX)
    idle.connect(str(hostile.vm.qmp_path))
    hostile.check()
    idle.close()


def _nonblocking_client(vm: VmdProcess, rcvbuf: int = 4096) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(str(vm.qmp_path))
    s.sendall(b'{"execute":"qmp_capabilities"}')
    s.setblocking(False)
    return s


def test_client_that_never_reads_its_replies_is_throttled(vmd_factory):
    """A client streams requests with big replies and never reads them.

    The daemon must stop reading from it (its sends then block) instead of buffering the
    replies: growth stays < 64 MiB.  Without back-pressure every 28-byte request costs 4.5 KiB
    of buffered reply, so the bound is passed after ~15k requests (~400 KiB sent).
    """
    vm = fresh_vmd(vmd_factory)
    base = rss_mib(vm.proc.pid)
    s = _nonblocking_client(vm)
    data = b'{"execute":"query-machines"}' * 4096
    blocked_since = None
    sent = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            sent += s.send(data)
            blocked_since = None
        except BlockingIOError:
            blocked_since = blocked_since or time.monotonic()
            if time.monotonic() - blocked_since > 1.0:
                break  # the daemon stopped reading: back-pressure works
            time.sleep(0.01)
        growth = rss_mib(vm.proc.pid) - base
        assert growth < 64, (f"RSS grew by {growth:.0f} MiB buffering replies for a client that never reads "
                             f"({sent} bytes of requests accepted)")
    else:
        pytest.fail(f"vmd kept reading requests for 30 s from a client that never reads ({sent} bytes)")
    other = Qmp(vm.qmp_path)
    assert other.ask({"execute": "query-status"}) == RUNNING
    other.close()
    s.close()


def test_clients_that_never_read_events_cost_bounded_memory(vmd_factory):
    """16 clients never read while another makes 80 000 events (stop/cont): RSS +< 64 MiB.

    Each listener keeps at most 1024 events (events.py), so the 16 cost a few MiB; buffering
    every event for them would cost 16 x 80 000 x ~90 bytes, about 110 MiB.
    """
    vm = fresh_vmd(vmd_factory)
    sleepers = [_nonblocking_client(vm) for _ in range(16)]
    actor = Qmp(vm.qmp_path)
    time.sleep(0.2)
    base = rss_mib(vm.proc.pid)
    batch = b'{"execute":"stop"}{"execute":"cont"}' * 1000
    counted = 0
    for _ in range(40):
        actor.send(batch)
        seen = 0
        while seen < 2000:  # replies, and STOP/RESUME for the actor itself
            if "return" in actor.recv():
                seen += 1
        counted += 2000
        growth = rss_mib(vm.proc.pid) - base
        assert growth < 64, f"RSS grew by {growth:.0f} MiB after {counted} events for clients that never read"
    actor.close()
    other = Qmp(vm.qmp_path)
    assert other.ask({"execute": "query-status"}) == RUNNING
    other.close()
    for s in sleepers:
        s.close()


def test_partial_messages_cost_bounded_memory(vmd_factory):
    """4 clients each hold an unfinished message just under the 1 MiB limit, made of 3-byte tokens.

    vmd caps a message at 1 MiB of tokens to bound memory per connection; holding 4 MiB of
    input must not cost more than 8x that, 32 MiB (at 64 clients: 512 MiB, not gigabytes).
    """
    vm = fresh_vmd(vmd_factory)
    base = rss_mib(vm.proc.pid)
    body = b"[" + b"nul," * ((1 << 20) // 4 - 16)
    holders = [Qmp(vm.qmp_path, negotiate=False, timeout=30) for _ in range(4)]
    for h in holders:
        h.send(b'{"execute":"qmp_capabilities"}' + body)
    q = Qmp(vm.qmp_path, timeout=30)
    assert q.ask({"execute": "query-status"}) == RUNNING
    peak = rss_mib(vm.proc.pid)
    end = time.monotonic() + 1.0  # what is still in the socket buffers gets lexed meanwhile
    while time.monotonic() < end:
        peak = max(peak, rss_mib(vm.proc.pid))
        time.sleep(0.02)
    for h in holders:  # the messages were kept whole: finished, they are parsed (and refused)
        h.send(b"null]")
        assert h.recv() == {"return": {}}
        assert h.recv() == {"error": {"class": "GenericError", "desc": "JSON parse error, invalid keyword 'nul'"}}
        h.close()
    q.close()
    assert peak - base < 32, f"4 unfinished 1 MiB messages cost {peak - base:.0f} MiB of RSS"


def worst_wait(other: Qmp, busy: Any, seconds: float, limit: float = 0.5) -> float:
    """Ask query-status again and again while ``busy()`` (at most ``seconds``): the longest wait.

    Stops at the first answer slower than ``limit`` (returning infinity if there was none).
    """
    worst = 0.0
    other.sock.settimeout(limit)
    end = time.monotonic() + seconds
    while busy() and time.monotonic() < end:
        start = time.monotonic()
        other.send(b'{"execute":"query-status"}')
        try:
            assert other.recv() == RUNNING
        except TimeoutError:
            return math.inf
        worst = max(worst, time.monotonic() - start)
        time.sleep(0.05)
    return worst


def test_pipelined_expensive_commands_do_not_starve_other_clients(vmd_factory):
    """One client pipelines 2000 query-qmp-schema and 20 000 query-machines (and reads the answers).

    That is seconds of work; meanwhile another client's query-status must be answered within
    half a second each time it asks, not after the whole pipeline (QEMU dispatches one request
    per main-loop turn).
    """
    vm = fresh_vmd(vmd_factory)
    greedy = Qmp(vm.qmp_path, timeout=60)
    other = Qmp(vm.qmp_path)  # connected and negotiated before the flood
    total = 22000
    pipeline = b'{"execute":"query-qmp-schema"}' * 2000 + b'{"execute":"query-machines"}' * 20000
    got: list[float] = []

    def drain() -> None:
        with contextlib.suppress(OSError, AssertionError):
            for _ in range(total):
                greedy.recv()
                got.append(time.monotonic())

    def flood() -> None:
        with contextlib.suppress(OSError):
            greedy.send(pipeline)

    threading.Thread(target=drain, daemon=True).start()
    threading.Thread(target=flood, daemon=True).start()
    deadline = time.monotonic() + 30
    while not got:  # the greedy pipeline is being served
        assert time.monotonic() < deadline, "the pipeline is not answered at all"
        time.sleep(0.001)
    worst = worst_wait(other, lambda: len(got) < total, seconds=3.0)
    served = len(got)
    if worst == math.inf:
        vm.proc.kill()  # do not wait for the rest of the pipeline
    assert worst < 0.5, (f"query-status not answered within 0.5 s while another client's pipeline runs "
                         f"({served} of {total} answered to that client meanwhile)")
    greedy.close()
    other.close()


def test_a_big_jsonrpc_batch_does_not_starve_qmp_clients(vmd_factory):
    """A JSON-RPC batch of 256 query-qmp-schema runs while a QMP client asks query-status: < 0.5 s."""
    vm = fresh_vmd(vmd_factory)
    other = Qmp(vm.qmp_path)
    batch = json.dumps([{"jsonrpc": "2.0", "method": "query-qmp-schema", "id": i} for i in range(256)]).encode()
    done: list[float] = []

    def post() -> None:
        with contextlib.suppress(OSError):
            status, _, raw = http(vm, "POST", "/rpc", batch, timeout=60)
            if status == 200 and len(strict_json(raw)) == 256:
                done.append(time.monotonic())
        done.append(0.0)

    sent = time.monotonic()
    threading.Thread(target=post, daemon=True).start()
    worst = worst_wait(other, lambda: not done, seconds=30)
    while not done and time.monotonic() - sent < 30:
        time.sleep(0.01)
    assert done and done[0], "the batch was not answered"
    assert worst < 0.5, (f"query-status not answered within 0.5 s while a JSON-RPC batch ran "
                         f"(the batch took {done[0] - sent:.1f} s)")
    other.close()


def test_client_limit_holds_during_start_up(vmd_factory):
    """70 clients while the machine is still being built: 64 are served, 6 closed, all 64 work after."""
    vm = drained(vmd_factory(*MACHINE, api=False))
    clients, refused = [], 0
    for _ in range(70):
        try:
            clients.append(Qmp(vm.qmp_path, timeout=5))
        except AssertionError:  # closed without a greeting
            refused += 1
    assert (len(clients), refused) == (64, 6)
    for c in clients:
        assert c.ask({"execute": "query-status"}) == RUNNING
    with pytest.raises(AssertionError, match="closed the connection"):
        Qmp(vm.qmp_path, timeout=5)
    clients.pop().close()
    deadline = time.monotonic() + 5
    while True:
        try:
            clients.append(Qmp(vm.qmp_path, timeout=5))
            break
        except AssertionError:
            assert time.monotonic() < deadline, "a closed client's slot never came back"
            time.sleep(0.05)
    for c in clients:
        c.close()


# ----------------------------------------------------------------------------------------
# 3. HTTP


def http(vm: VmdProcess, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
         token: bool = True, timeout: float = 10) -> tuple[int, dict, bytes]:
    conn = httplib.HTTPConnection("127.0.0.1", vm.api_port, timeout=timeout)
    try:
        h = {"Authorization": f"Bearer {vm.token}"} if token else {}
        h.update(headers or {})
        if body is not None:
            h.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def strict_json(body: bytes) -> Any:
    """RFC 8259 JSON: no NaN, Infinity or -Infinity (JavaScript, Go and serde refuse them)."""
    def refuse(name: str) -> Any:
        raise AssertionError(f"not JSON: {name} in {body[:300]!r}")

    return json.loads(body, parse_constant=refuse)


def rpc(vm: VmdProcess, payload: Any) -> Any:
    status, _, body = http(vm, "POST", "/rpc", json.dumps(payload).encode())
    assert status == 200, (status, body)
    return strict_json(body)


def http_healthy(shared: Shared) -> None:
    assert rpc(shared.vm, {"jsonrpc": "2.0", "method": "query-status", "id": "h"}) == {
        "jsonrpc": "2.0", "result": RUNNING["return"], "id": "h"}
    shared.check()


_NO_ID = object()


def _expected_id(member: Any) -> Any:
    """The id of the response a JSON-RPC 2.0 member gets, or _NO_ID for a (valid) notification."""
    if not isinstance(member, dict):
        return None
    raw = member.get("id", _NO_ID)
    if raw is not _NO_ID and (isinstance(raw, bool) or not isinstance(raw, (str, int, float, type(None)))):
        return None
    valid = (member.get("jsonrpc") == "2.0" and isinstance(member.get("method"), str)
             and set(member) <= {"jsonrpc", "method", "params", "id"}
             and (isinstance(member.get("params", {}), dict) or member.get("params") == []))
    if raw is _NO_ID:
        return _NO_ID if valid else None
    return raw


def rpc_calls(shared: Shared) -> st.SearchStrategy:
    names = st.sampled_from(shared.harmless) | st.text(max_size=12)
    safe_values = st.recursive(
        st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=20) | _plausible,
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
        max_leaves=8)

    @st.composite
    def build(draw) -> Any:
        name = draw(names)
        known = shared.args.get(name, [])
        keys = (st.sampled_from(known) | st.text(max_size=8)) if known else st.text(max_size=8)
        call: dict[str, Any] = {}
        if draw(st.integers(0, 9)) < 9:
            call["jsonrpc"] = "2.0" if draw(st.integers(0, 5)) else draw(safe_values)
        call["method"] = name if draw(st.integers(0, 9)) else draw(safe_values)
        shape = draw(st.integers(0, 9))
        if shape < 6:
            call["params"] = {k: draw(argument_values(k, safe_values)) for k in known if draw(st.integers(0, 4))}
            if draw(st.integers(0, 3)) == 0:
                call["params"].update(draw(st.dictionaries(keys, safe_values, max_size=2)))
        elif shape < 8:
            call["params"] = draw(safe_values)
        if draw(st.integers(0, 3)):
            call["id"] = draw(st.integers(-(2**70), 2**70) | st.text(max_size=8) | st.none()
                              | st.floats(allow_nan=False, allow_infinity=False) | safe_values)
        if draw(st.integers(0, 15)) == 0:
            call[draw(st.text(max_size=6))] = draw(safe_values)
        return call

    return build()


@settings(FUZZ, max_examples=250)
@given(data=st.data())
def test_fuzz_jsonrpc_bodies(hostile, data):
    """Random bodies, calls and batches: a well-formed JSON-RPC answer per call, nothing else changes."""
    calls = rpc_calls(hostile)
    kind = data.draw(st.sampled_from(["bytes", "json", "call", "batch", "batch-of-junk"]), label="kind")
    if kind == "bytes":
        body = data.draw(st.binary(max_size=400), label="body")
    elif kind == "json":
        body = json.dumps(data.draw(json_values.filter(lambda v: "NaN" not in json.dumps(v)
                                                       and "Infinity" not in json.dumps(v)))).encode()
    elif kind == "call":
        body = json.dumps(data.draw(calls, label="call")).encode()
    elif kind == "batch":
        body = json.dumps(data.draw(st.lists(calls, max_size=8), label="batch")).encode()
    else:
        body = json.dumps(data.draw(st.lists(calls | st.integers() | st.text(max_size=5) | st.lists(st.none()),
                                             max_size=6), label="batch")).encode()
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        doc = _NO_ID
    members = doc if isinstance(doc, list) else [doc]
    assume(not any(isinstance(m, dict) and isinstance(m.get("method"), str) and (m["method"] in UNSAFE or (
        m.get("method") == "human-monitor-command" and isinstance(m.get("params"), dict)
        and hmp_mutates(m["params"].get("command-line")))) for m in members))
    status, _, raw = http(hostile.vm, "POST", "/rpc", body)
    if doc is _NO_ID or doc == [] or (isinstance(doc, list) and len(doc) > 256):
        assert status == 200, (status, raw)
        reply = strict_json(raw)
        assert reply["error"]["code"] == (-32700 if doc is _NO_ID else -32600) and reply["id"] is None, reply
    else:
        expected = [_expected_id(m) for m in members]
        answered = [e for e in expected if e is not _NO_ID]
        if not answered:
            assert status == 204 and raw == b"", (status, raw)
        else:
            assert status == 200, (status, raw)
            reply = strict_json(raw)
            replies = reply if isinstance(doc, list) else [reply]
            assert isinstance(reply, list) == isinstance(doc, list)
            assert len(replies) == len(answered), (members, replies)
            for want, got in zip(answered, replies):
                assert got["jsonrpc"] == "2.0" and same_json(got["id"], want), (want, got)
                assert ("result" in got) != ("error" in got), got
                if "error" in got:
                    assert isinstance(got["error"]["code"], int) and isinstance(got["error"]["message"], str)
                    assert got["error"]["code"] != -32603, f"vmd bug: {got}"
    http_healthy(hostile)


@pytest.mark.parametrize("body", [
    b'{"jsonrpc":"2.0","method":"query-status","id":NaN}',
    b'{"jsonrpc":"2.0","method":"query-status","id":Infinity}',
    b'[{"jsonrpc":"2.0","method":"query-status","id":-Infinity}]',
    b'{"jsonrpc":"2.0","method":"query-status","id":1e400}',
])
def test_jsonrpc_answers_are_json_even_for_non_json_numbers(hostile, body):
    """NaN/Infinity are not JSON (RFC 8259): refuse them (-32700) or at least never echo them back."""
    status, _, raw = http(hostile.vm, "POST", "/rpc", body)
    assert status == 200
    reply = strict_json(raw)
    replies = reply if isinstance(reply, list) else [reply]
    assert all(r["jsonrpc"] == "2.0" for r in replies)
    http_healthy(hostile)


def test_wrong_and_missing_tokens_change_nothing(hostile):
    vm = hostile.vm
    token = vm.token
    stop = json.dumps({"jsonrpc": "2.0", "method": "stop", "id": 1}).encode()
    bad_headers = [
        {}, {"Authorization": ""}, {"Authorization": "Bearer"}, {"Authorization": "Bearer "},
        {"Authorization": f"Bearer {token[:-1]}"}, {"Authorization": f"Bearer {token}x"},
        {"Authorization": f"Bearer {token[1:]}{token[0]}"}, {"Authorization": f"Basic {token}"},
        {"Authorization": token}, {"Authorization": f"Bearer{token}"}, {"Authorization": f"Bearer  x{token}"},
        {"Authorization": "Bearer " + "A" * 4000}, {"Authorization": f"Bearer {token.upper()}"},
        {"X-Token": token}, {"Cookie": f"token={token}"},
    ]
    for headers in bad_headers:
        for method, path, body in (("POST", "/rpc", stop), ("GET", "/events", None), ("GET", "/schema", None)):
            status, resp_headers, raw = http(vm, method, path, body, headers=headers, token=False)
            assert status == 401, (headers, path, status, raw)
            assert resp_headers.get("WWW-Authenticate", "").startswith("Bearer"), resp_headers
    # the token in the query string, or bytes that are not UTF-8 in the header, are no token either
    wrong = []
    for what, target, auth in (
        ("token in the query string", b"/rpc?token=" + token.encode(), b""),
        ("Latin-1 byte before the token", b"/rpc", b"Authorization: Bearer \xff" + token.encode() + b"\r\n"),
        ("Latin-1 token", b"/rpc", b"Authorization: Bearer caf\xe9\r\n"),
        ("UTF-8 token", b"/rpc", b"Authorization: Bearer caf\xc3\xa9\r\n"),
        ("NUL after the token", b"/rpc", b"Authorization: Bearer " + token.encode() + b"\x00\r\n"),
        ("Latin-1 scheme", b"/rpc", b"Authorization: B\xe9arer " + token.encode() + b"\r\n"),
    ):
        with socket.create_connection(("127.0.0.1", vm.api_port), timeout=10) as s:
            s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s"
                      % (target, auth, len(stop), stop))
            head = s.recv(4096).split(b"\r\n", 1)[0]
        if head not in (b"HTTP/1.1 401 Unauthorized", b"HTTP/1.1 400 Bad Request", b"HTTP/1.0 400 Bad Request"):
            wrong.append((what, head.decode(errors="replace")))
    assert not wrong, f"unauthenticated requests not refused with 401/400: {wrong}"
    http_healthy(hostile)  # running: no stop got through


def test_oversized_and_lying_bodies(hostile):
    vm = hostile.vm
    big = b'{"jsonrpc":"2.0","method":"query-status","id":"' + b"x" * (2 << 20) + b'"}'
    status, _, _ = http(vm, "POST", "/rpc", big)
    assert status == 413
    # chunked, no length given
    with socket.create_connection(("127.0.0.1", vm.api_port), timeout=10) as s:
        s.sendall(b"POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n"
                  % vm.token.encode())
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(40):
                s.sendall(b"10000\r\n" + b"[" * 0x10000 + b"\r\n")
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    # a length of 4 GiB announced: refused up front or after 1 MiB, never buffered
    with socket.create_connection(("127.0.0.1", vm.api_port), timeout=10) as s:
        s.sendall(b"POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n"
                  % (vm.token.encode(), 4 << 30))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(3):
                s.sendall(b" " * (1 << 20))
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    # a body shorter than announced, then the client leaves
    with socket.create_connection(("127.0.0.1", vm.api_port), timeout=10) as s:
        s.sendall(b"POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 100\r\n\r\n{\"js"
                  % vm.token.encode())
    # a deeply nested body below the size limit
    status, _, raw = http(vm, "POST", "/rpc", b"[" * 200000 + b"]" * 200000)
    assert status in (200, 413) and (status == 413 or strict_json(raw)["error"]["code"] == -32700)
    http_healthy(hostile)


def test_slowloris_clients_do_not_block_others(hostile):
    """100 connections with half-sent headers or bodies; healthy HTTP and QMP clients are served at once."""
    vm = hostile.vm
    token = vm.token.encode()
    slow = []
    for n in range(100):
        s = socket.create_connection(("127.0.0.1", vm.api_port), timeout=10)
        if n % 3 == 0:
            s.sendall(b"POST /rpc HTTP/1.1\r\nHost: x\r\nAuthori")
        elif n % 3 == 1:
            s.sendall(b"POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 1000\r\n\r\n"
                      b'{"jsonrpc":"2.0","method":"query-st' % token)
        else:
            s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n")
        slow.append(s)
    try:
        for _ in range(5):
            start = time.monotonic()
            http_healthy(hostile)
            assert time.monotonic() - start < 1.0
            for s in slow[::7]:  # keep dribbling
                s.sendall(b"X")
    finally:
        for s in slow:
            s.close()
    http_healthy(hostile)


def _open_stream(vm: VmdProcess) -> tuple[socket.socket, bytes]:
    s = socket.create_connection(("127.0.0.1", vm.api_port), timeout=10)
    s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % vm.token.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    return s, head


def test_event_streams_beyond_max_streams_and_their_slots(vmd_factory):
    """32 streams work, the 33rd gets 503; streams that go away free their slot promptly."""
    vm = fresh_vmd(vmd_factory)
    streams = []
    for _ in range(32):
        s, head = _open_stream(vm)
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
        streams.append((s, head))
    for _ in range(3):
        s, head = _open_stream(vm)
        assert head.startswith(b"HTTP/1.1 503"), head[:200]
        s.close()
    assert rpc(vm, {"jsonrpc": "2.0", "method": "stop", "id": 1})["result"] == {}
    assert rpc(vm, {"jsonrpc": "2.0", "method": "cont", "id": 2})["result"] == {}
    for s, head in streams:  # every stream still gets the events
        buf = head
        while b"event: RESUME" not in buf:
            chunk = s.recv(4096)
            assert chunk, "stream closed"
            buf += chunk
        assert b"event: STOP" in buf
    for s, _ in streams:  # the clients go away while nothing happens
        s.close()
    start = time.monotonic()
    while True:
        s, head = _open_stream(vm)
        s.close()
        if head.startswith(b"HTTP/1.1 200"):
            break
        waited = time.monotonic() - start
        assert waited < 2.0, ("32 event streams closed by their clients still hold every slot "
                              f"after {waited:.1f} s: {head[:40]!r}")
        time.sleep(0.1)


def test_event_streams_that_never_read_cost_bounded_memory(vmd_factory):
    """30 SSE clients never read while 40 000 events happen: RSS +< 64 MiB (buffering all: ~130 MiB)."""
    vm = fresh_vmd(vmd_factory)
    sleepers = []
    for _ in range(30):
        s = socket.socket(socket.AF_INET)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect(("127.0.0.1", vm.api_port))
        s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % vm.token.encode())
        assert s.recv(12).startswith(b"HTTP/1.1 200")
        sleepers.append(s)
    actor = Qmp(vm.qmp_path)
    base = rss_mib(vm.proc.pid)
    batch = b'{"execute":"stop"}{"execute":"cont"}' * 1000
    for round_ in range(20):
        actor.send(batch)
        seen = 0
        while seen < 2000:
            if "return" in actor.recv():
                seen += 1
        growth = rss_mib(vm.proc.pid) - base
        assert growth < 64, f"RSS grew by {growth:.0f} MiB after {(round_ + 1) * 2000} events for idle SSE clients"
    status, _, _ = http(vm, "GET", "/schema")
    assert status == 200
    actor.close()
    for s in sleepers:
        s.close()
