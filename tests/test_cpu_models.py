"""CPU models, -cpu, STIDP/STFLE/STSI and the QMP CPU-model commands, against qemu-system-s390x 7.2.

The differential tests start vmd and QEMU on the same command line
(``-M s390-ccw-virtio -cpu X -nographic -S -qmp unix:...``), send both the same
QMP requests (pipelined: thousands of them) and compare the reply lines byte for
byte: members in QEMU's order, QEMU's error texts.  The one deliberate
difference is vmd's accelerator: its engine lacks four facilities QEMU's TCG
offers (``models.ENGINE_LACKS``), so "qemu" and "max" have them off and a model
asking for them is refused; those answers are compared with that taken into
account, and checked on their own.

The stsi test guest (guests/src/stsi.c) prints STIDP on two CPUs, the facility
list and every SYSIB; its transcript must equal QEMU's golden file, and QEMU's
own runs with other models and without -name/-uuid.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT, require_peer
from test_guests_qemu import BIN, EXPECTED, GUESTS
from vmd.cmdline import CPU_MODELS
from vmd.cpu import models
from vmd.cpu.stsi import SYSIB_SIZE, SystemInformation, ebcdic

LACKING = {f.name for f in models.FEATURES if f.mask & models.ENGINE_LACKS}
MODEL_NAMES = list(models.MODEL_CLASSES)
NAMED_MODELS = [n for n in MODEL_NAMES if n not in ("qemu", "max")]
QMP_LINE = ["-M", "s390-ccw-virtio", "-nographic", "-nodefaults", "-S"]


# -- a pipelined QMP client ----------------------------------------------------------------
class Pipe:
    """One process (vmd or QEMU) answering QMP on a unix socket; requests go out in bulk."""

    def __init__(self, cmd: list[str], sock: Path):
        self.proc = subprocess.Popen([*cmd, *QMP_LINE, "-qmp", f"unix:{sock},server=on,wait=off"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, cwd=ROOT)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(str(sock))
                break
            except OSError:
                self.sock.close()
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(self.proc.stderr.read().decode(errors="replace"))
                time.sleep(0.02)
        self.sock.settimeout(60)
        self.file = self.sock.makefile("rb")
        self.file.readline()
        self.lines([{"execute": "qmp_capabilities"}])

    def lines(self, requests: list[dict]) -> list[bytes]:
        """The reply line to every request, in order (events skipped)."""
        data = b"".join(json.dumps(r).encode() + b"\n" for r in requests)
        sender = threading.Thread(target=self.sock.sendall, args=(data,))
        sender.start()
        out = []
        while len(out) < len(requests):
            line = self.file.readline()
            if not line:
                raise RuntimeError("connection closed")
            if not line.startswith(b'{"event"') and b'"timestamp"' not in line:
                out.append(line)
        sender.join()
        return out

    def replies(self, requests: list[dict]) -> list[dict]:
        return [json.loads(line) for line in self.lines(requests)]

    def close(self) -> None:
        self.sock.close()
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    """(vmd, QEMU), both with -cpu z900 (QMP's CPU-model answers do not depend on it)."""
    qemu = require_peer("qemu-system-s390x")
    tmp = tmp_path_factory.mktemp("cpumodels")
    ours = Pipe([sys.executable, "-m", "vmd", "-cpu", "z900", "--runtime-dir", str(tmp / "run")],
                tmp / "vmd.sock")
    try:
        theirs = Pipe([qemu, "-cpu", "z900"], tmp / "qemu.sock")
    except BaseException:
        ours.close()
        raise
    yield ours, theirs
    ours.close()
    theirs.close()


def same_lines(peers, requests: list[dict]) -> None:
    ours, theirs = peers
    for request, a, b in zip(requests, ours.lines(requests), theirs.lines(requests)):
        assert a == b, f"{json.dumps(request)}\n vmd:  {a[:400]!r}\n qemu: {b[:400]!r}"


def expansion(kind: str, name: str, props: dict | None = None) -> dict:
    model: dict = {"name": name}
    if props is not None:
        model["props"] = props
    return {"execute": "query-cpu-model-expansion", "arguments": {"type": kind, "model": model}}


def enabled(model: dict) -> set[str]:
    """The features a full expansion turns on, groups spelled out."""
    out = set()
    for name, on in model.get("props", {}).items():
        if on:
            group = models.GROUP_BY_NAME.get(name)
            out |= {f.name for f in models.FEATURES if group and f.mask & group.mask} if group else {name}
    return out


# -- the tables against QEMU -----------------------------------------------------------------
@pytest.mark.qemu
def test_features_groups_and_models_are_qemus(qemu_binary):
    """-cpu help lists QEMU's models, features and groups, each in its order of definition."""
    text = subprocess.run([qemu_binary, "-cpu", "help"], capture_output=True, text=True, timeout=30).stdout
    model_part, rest = text.split("\n\nRecognized feature flags:\n")
    feature_part, group_part = rest.split("\n\nRecognized feature groups:\n")
    assert [tuple(line.split(None, 1)) for line in feature_part.splitlines()] == [
        (f.name, f.description) for f in models.FEATURES]
    assert [tuple(line.split(None, 1)) for line in group_part.strip().splitlines()] == [
        (g.name, g.description) for g in models.GROUPS]
    lines = []
    for c in models.MODEL_CLASSES.values():
        flags = "static, migration-safe" if c.static else "migration-safe" if c.migration_safe else ""
        lines.append(f"s390 {c.name:<15} {c.description:<35} ({flags})" if flags
                     else f"s390 {c.name:<15} {c.description}")
    assert [line.rstrip() for line in model_part.splitlines()] == lines


def test_the_command_line_knows_the_same_models():
    assert [name for name, _desc, _flags in CPU_MODELS] == MODEL_NAMES
    for name, desc, flags in CPU_MODELS:
        model_class = models.MODEL_CLASSES[name]
        if name not in ("qemu", "max"):
            assert desc == model_class.description
        assert ("static" in flags) == model_class.static


def test_the_default_model_is_qemus_less_what_the_engine_lacks():
    """QEMU 7.2's "qemu" model under TCG stores this list (read from a guest); vmd's clears
    exactly facilities 58, 61, 135 and 148, which its engine does not execute."""
    qemu_list = bytearray.fromhex("f940f6d3f4c45c64" "059c000000000000" "7120280000000000")
    assert {f.bit for f in models.FEATURES if f.name in LACKING} == {58, 61, 135, 148}
    assert all(f.kind == models.STFL for f in models.FEATURES if f.name in LACKING)
    assert models.ResolvedModel("qemu", models.QEMU_TCG_DEFINITION, models.QEMU_TCG_FEATURES).facilities \
        == bytes(qemu_list)
    for bit in (58, 61, 135, 148):
        qemu_list[bit // 8] &= ~(0x80 >> (bit % 8))
    assert models.DEFAULT_MODEL.facilities == bytes(qemu_list)
    assert models.DEFAULT_MODEL.cpu_type == 0x8561 and models.DEFAULT_MODEL.cpu_id(0) == 0x85610000
    assert models.unavailable_features(models.MODEL_CLASSES["qemu"]) == []


@pytest.mark.qemu
def test_definitions_match_qemu(peers):
    """Same models and flags; unavailable-features name, in QEMU's order, what QEMU's TCG lacks
    plus what vmd's engine lacks."""
    ours, theirs = peers
    request = [{"execute": "query-cpu-definitions"}]
    mine = {d["name"]: d for d in ours.replies(request)[0]["return"]}
    qemus = {d["name"]: d for d in theirs.replies(request)[0]["return"]}
    assert set(mine) == set(qemus) == set(MODEL_NAMES)
    for name, theirs_entry in qemus.items():
        entry = dict(mine[name])
        missing = entry.pop("unavailable-features")
        expected_lack = [n for n in missing if n in LACKING]
        assert [n for n in missing if n not in LACKING] == theirs_entry.pop("unavailable-features"), name
        model_class = models.MODEL_CLASSES[name]
        assert set(expected_lack) == {n for n in LACKING if model_class.features & models.FEATURE_BY_NAME[n].mask}
        assert entry == theirs_entry, name


@pytest.mark.qemu
def test_expansions_match_qemu(peers):
    """Static and full expansion of every named model, byte for byte."""
    same_lines(peers, [expansion(kind, name) for name in NAMED_MODELS for kind in ("static", "full")])


@pytest.mark.qemu
def test_qemu_and_max_are_tcgs_without_what_the_engine_lacks(peers):
    ours, theirs = peers
    for name in ("qemu", "max"):
        request = [expansion("full", name)]
        mine = ours.replies(request)[0]["return"]["model"]
        qemus = theirs.replies(request)[0]["return"]["model"]
        assert mine["name"] == qemus["name"] == "gen15a-base"
        assert enabled(mine) == enabled(qemus) - LACKING
        assert LACKING <= enabled(qemus)


@pytest.mark.qemu
def test_full_feature_sets_match_qemu(peers):
    """Which features each generation can have at all: every feature on every base model."""
    levels = {}
    for d in models.DEFINITIONS:
        levels.setdefault((d.generation, d.ga), d.name)
    same_lines(peers, [expansion("static", f"{name}-base", {f.name: True}) for name in levels.values()
                       for f in models.FEATURES])
    same_lines(peers, [expansion("static", "z900", {g.name: True}) for g in models.GROUPS])


@pytest.mark.qemu
def test_comparison_and_baseline_match_qemu(peers):
    """Every pair of models: same and other generations, GA levels and CPU types (EC and BC)."""
    chosen = [d.name for d in models.DEFINITIONS] + [
        "z900-base", "z990.3-base", "z10BC-base", "z13s-base", "gen15b-base", "gen16a-base"]
    requests = []
    for a in chosen:
        for b in chosen:
            arguments = {"modela": {"name": a}, "modelb": {"name": b}}
            requests.append({"execute": "query-cpu-model-comparison", "arguments": arguments})
            requests.append({"execute": "query-cpu-model-baseline", "arguments": arguments})
    same_lines(peers, requests)


@pytest.mark.qemu
def test_random_property_sets_match_qemu(peers):
    """Several properties at once: applied in QEMU's (QDict) order, the first error reported."""
    rng = random.Random(7272)
    names = [f.name for f in models.FEATURES] + [g.name for g in models.GROUPS] + ["nope", "static"]
    requests = []
    for _ in range(600):
        props = {rng.choice(names): rng.random() < 0.5 for _ in range(rng.randint(1, 6))}
        model = rng.choice(NAMED_MODELS)
        if rng.random() < 0.5:
            requests.append(expansion(rng.choice(["static", "full"]), model, props))
        else:
            other = {"name": rng.choice(NAMED_MODELS),
                     "props": {rng.choice(names): rng.random() < 0.5 for _ in range(rng.randint(0, 3))}}
            command = rng.choice(["query-cpu-model-comparison", "query-cpu-model-baseline"])
            requests.append({"execute": command, "arguments": {"modela": {"name": model, "props": props},
                                                               "modelb": other}})
    same_lines(peers, requests)


BAD_REQUESTS = [
    expansion("static", "foo"),
    expansion("static", "host"),
    expansion("bogus", "z13"),
    {"execute": "query-cpu-model-expansion", "arguments": {"type": 5, "model": {"name": "z13"}}},
    {"execute": "query-cpu-model-expansion", "arguments": {"type": "static"}},
    {"execute": "query-cpu-model-expansion", "arguments": {"model": {"name": "z13"}}},
    {"execute": "query-cpu-model-expansion", "arguments": {"type": "static", "model": {}}},
    {"execute": "query-cpu-model-expansion", "arguments": {"type": "static", "model": []}},
    {"execute": "query-cpu-model-expansion", "arguments": {"type": "static", "model": {"name": 5}}},
    {"execute": "query-cpu-model-expansion", "arguments": {"type": "static", "model": {"name": "z13", "x": 1}}},
    {"execute": "query-cpu-model-expansion", "arguments": {"type": "static", "model": {"name": "z13"}, "x": 1}},
    expansion("static", "z13", 5),
    expansion("static", "z13", None),
    expansion("static", "z13", []),
    expansion("static", "foo", 5),
    expansion("static", "foo", {"vx": True}),
    expansion("static", "z13", {}),
    expansion("static", "z13", {"foo": True}),
    expansion("static", "z13", {"vx": "on"}),
    expansion("static", "z13", {"vx": 1}),
    expansion("static", "z13", {"vx": None}),
    expansion("static", "z13", {"vxeh": True}),
    expansion("static", "z13", {"msa9": True}),
    expansion("static", "qemu", {"nnpa": True}),
    expansion("static", "max", {"x": True}),
    expansion("static", "z13", {"description": "x"}),
    expansion("static", "z13", {"static": True}),
    expansion("static", "z13", {"type": "x"}),
    expansion("static", "z13", {"hotpluggable": False}),
    expansion("static", "z13", {"core-id": 5, "start-powered-off": True, "realized": False}),
    expansion("static", "z900", {"core-id": -1}),
    expansion("static", "z900", {"core-id": 1 << 33}),
    expansion("static", "z900", {"core-id": 1.5}),
    expansion("static", "z900", {"start-powered-off": 1}),
    expansion("static", "z900", {"realized": "x"}),
    expansion("static", "z13", {"realized": True}),
    expansion("static", "z900", {"memory": "x"}),
    expansion("static", "z900", {"zarch": False, "esan3": False, "plo": False}),
    expansion("static", "z13", {"msa": False, "kimd-sha-1": True}),
    expansion("static", "z13", {"kimd-sha-1": True, "msa": False}),
    {"execute": "query-cpu-model-comparison", "arguments": {"modela": {"name": "z900"}}},
    {"execute": "query-cpu-model-comparison", "arguments": {"modela": {"name": "z13", "props": 5},
                                                            "modelb": {"name": "foo"}}},
    {"execute": "query-cpu-model-comparison", "arguments": {"modela": {"name": "z13", "props": {"vx": 1}},
                                                            "modelb": {"name": "bar"}}},
    {"execute": "query-cpu-model-baseline", "arguments": {"modela": {"name": "z13"},
                                                          "modelb": {"name": "z900", "props": {"esan3": False}}}},
    {"execute": "query-cpu-model-baseline", "arguments": {"modela": {"name": "z13", "props": {"csske": False}},
                                                          "modelb": {"name": "z13"}}},
    {"execute": "query-cpu-model-baseline", "arguments": {"modela": {"name": "z13", "props": {"hfpm": False}},
                                                          "modelb": {"name": "z13"}}},
    {"execute": "query-cpu-definitions", "arguments": {"x": 1}},
]


@pytest.mark.qemu
def test_qmp_errors_and_edge_cases_match_qemu(peers):
    same_lines(peers, BAD_REQUESTS)


# -- -cpu on the command line ----------------------------------------------------------------
BAD_CPU_OPTIONS = [
    "host", "z15", "foo", "gen16a", "gen16b-base", "z13", "z13-base", "z13-base,vx=on", "z13,vxeh=on",
    "z13,foo=on", "z14,vx=off,foo=on", "z14,vx=off", "z900,vx=on", "z900,msa=on", "z900,msa9=on",
    "qemu,nnpa=on", "qemu,static=on", "max,description=off", "qemu,msa=on,kimd-sha-1=on,dfp=on",
]


def _vmd(args: list[str], tmp_path: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vmd", *args, "--runtime-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.qemu
@pytest.mark.parametrize("cpu", BAD_CPU_OPTIONS)
def test_bad_cpu_options_fail_like_qemu(qemu_binary, cpu, tmp_path):
    """Unknown models and properties, features a model cannot have, models the accelerator
    cannot run: QEMU's texts (warnings first), exit status 1."""
    base = ["-M", "s390-ccw-virtio", "-nodefaults", "-nographic", "-S", "-cpu", cpu]
    theirs = subprocess.run([qemu_binary, *base], capture_output=True, text=True, timeout=30)
    ours = _vmd(base, tmp_path)
    if cpu.startswith(("z14", "gen15")):
        # QEMU's list of what TCG lacks, plus the features vmd's engine lacks
        for name in LACKING:
            ours_stderr = ours.stderr.replace(f" {name} ", " ")
            ours = subprocess.CompletedProcess(ours.args, ours.returncode, ours.stdout, ours_stderr)
    assert (ours.returncode, theirs.returncode) == (1, 1)
    assert ours.stderr.replace("vmd:", "qemu-system-s390x:") == theirs.stderr


def _stderr_of_started(cmd: list[str], sock: Path) -> str:
    """Start a machine (-S), quit it over QMP, return its stderr."""
    pipe = Pipe(cmd, sock)
    pipe.sock.sendall(b'{"execute": "quit"}\n')
    try:
        pipe.proc.wait(30)
    finally:
        pipe.sock.close()
    return pipe.proc.stderr.read().decode()


@pytest.mark.qemu
def test_dependency_warnings_like_qemu(qemu_binary, tmp_path):
    """A model that breaks a dependency is used with QEMU's warnings, printed once per CPU."""
    args = ["-cpu", "qemu,dateh=off", "-smp", "2"]
    theirs = _stderr_of_started([qemu_binary, *args], tmp_path / "q.sock")
    ours = _stderr_of_started([sys.executable, "-m", "vmd", *args, "--runtime-dir", str(tmp_path)],
                              tmp_path / "v.sock")
    warnings = [line.replace("vmd:", "qemu-system-s390x:", 1) for line in ours.splitlines() if ": warning: " in line]
    assert warnings == [line for line in theirs.splitlines() if ": warning: " in line]
    assert len(warnings) == 2 * 2


def test_what_the_engine_lacks_is_refused(tmp_path):
    for cpu, names in (("qemu,vxeh=on", "vxeh"), ("max,minste3=on,minste2=on", "minste3 minste2")):
        proc = _vmd(["-M", "s390-ccw-virtio", "-nodefaults", "-S", "-cpu", cpu], tmp_path)
        assert proc.returncode == 1
        assert proc.stderr == ("vmd: Some features requested in the CPU model are not available in the "
                               f"configuration: {names}  \n")


def test_resolution_errors_carry_qemus_texts():
    with pytest.raises(models.CpuModelError, match=r"^unable to find CPU model 'host'$"):
        models.resolve_cpu_model("host")
    with pytest.raises(models.CpuModelError) as err:
        models.resolve_cpu_model("z14", {"vx": False})
    assert err.value.warnings == ("'vxpd' requires 'vx'.", "'vxeh' requires 'vx'.")
    resolved = models.resolve_cpu_model("z900", {"zarch": False})
    assert resolved.facilities == bytes.fromhex("8000000000000000")  # without zarch, not 2 and 138
    assert resolved.cpu_id(3) == 0x0030000020640000


# -- properties of the model algebra ------------------------------------------------------------
model_names = st.sampled_from(MODEL_NAMES)
toggles = st.dictionaries(st.sampled_from([f.name for f in models.FEATURES] + [g.name for g in models.GROUPS]),
                          st.booleans(), max_size=8)


def _model(name: str, props: dict) -> models.CpuModel | None:
    model = models.CpuModel.named(name)
    try:
        for key, value in props.items():
            model.set_property(key, value)
    except models.GenericError:
        return None
    return model


@settings(max_examples=300, deadline=None)
@given(model_names, toggles, st.booleans())
def test_an_expansion_sets_up_the_same_model(name, props, full):
    model = _model(name, props)
    if model is None:
        return
    base, expanded = models.expansion(model, full)
    again = models.CpuModel.named(base)
    for key, value in expanded:
        again.set_property(key, value)
    assert again.features == model.features and again.definition == model.definition


@settings(max_examples=300, deadline=None)
@given(model_names, toggles, model_names, toggles)
def test_comparison_and_baseline_are_consistent(name_a, props_a, name_b, props_b):
    a, b = _model(name_a, props_a), _model(name_b, props_b)
    if a is None or b is None:
        return
    result, responsible = models.comparison(a, b)
    mirrored = {"subset": "superset", "superset": "subset"}.get(result, result)
    assert models.comparison(b, a)[0] == mirrored
    assert (result == "identical") == (responsible == [])
    assert models.comparison(a, a) == ("identical", [])
    try:
        common = models.baseline(a, b)
    except models.GenericError as err:
        assert "important base features are disabled" in err.desc
        return
    assert common.features & ~(a.features & b.features) == 0
    assert common.features & ~common.definition.full == 0
    older = min(a.definition, b.definition, key=lambda d: (d.generation, d.ga))
    assert (common.definition.generation, common.definition.ga) <= (older.generation, older.ga)


@settings(max_examples=300, deadline=None)
@given(model_names, toggles)
def test_resolution_either_works_or_says_why(name, props):
    try:
        resolved = models.resolve_cpu_model(name, props)
    except models.CpuModelError as err:
        assert err.desc
        return
    assert resolved.features & ~models.MAX_FEATURES == 0
    facilities = resolved.facilities
    assert len(facilities) % 8 == 0 and (not facilities or any(facilities[-8:]))


# -- STSI ---------------------------------------------------------------------------------------
def test_only_qemus_blocks_exist():
    info = SystemInformation(0x8561, 2, 3, "vm", None)
    stored = {(fc, s1, s2) for fc in range(1, 4) for s1 in range(0, 5) for s2 in range(0, 5)
              if info.block(0, fc, s1, s2) is not None}
    assert stored == {(1, 1, 1), (1, 2, 1), (1, 2, 2), (2, 2, 1), (2, 2, 2), (3, 2, 2)}
    assert all(len(info.block(1, *which)) == SYSIB_SIZE for which in stored)


@given(st.text(min_size=1, max_size=300), st.uuids())
def test_the_vm_block_names_the_machine(name, machine_uuid):
    sysib = SystemInformation(0x2964, 1, 1, name, machine_uuid).block(0, 3, 2, 2)
    raw = name.encode()
    assert sysib[44:52] == ebcdic(raw[:8]).ljust(8, b"\x40")
    assert sysib[2048:2304] == raw[:256].ljust(256, b"\0")
    assert sysib[80:96] == machine_uuid.bytes
    assert sysib[2304:] == bytes(SYSIB_SIZE - 2304)


def test_ebcdic_is_qemus_table():
    assert ebcdic("QEMU KVM/Linux 0-9_") == bytes.fromhex("d8c5d4e440d2e5d461d38995a4a740f060f96d")
    assert ebcdic(b"\n\x1c\x7f\xc3\xa9") == bytes.fromhex("1522073f3f")


# -- the stsi test guest ---------------------------------------------------------------------------
def _guest_under_vmd(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vmd", "-M", "s390-ccw-virtio", "-nographic", "-nodefaults",
                           *args, "-kernel", str(BIN / "stsi.elf"), "--runtime-dir", str(tmp_path)],
                          capture_output=True, timeout=120, cwd=ROOT)


def _guest_under_qemu(qemu: str, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([qemu, "-M", "s390-ccw-virtio", "-nographic", "-action", "panic=exit-failure", *args,
                           "-kernel", str(BIN / "stsi.elf")], capture_output=True, timeout=120, cwd=tmp_path,
                          stdin=subprocess.DEVNULL)


def test_stsi_guest_transcript_matches_qemu(tmp_path):
    proc = _guest_under_vmd(GUESTS["stsi"], tmp_path)
    assert proc.stdout.decode(errors="replace") == (EXPECTED / "stsi.txt").read_text()
    assert proc.returncode == 0, proc.stderr.decode()


def _without_cpu(args: list[str]) -> list[str]:
    i = args.index("-cpu")
    return args[:i] + args[i + 2:]


def test_stsi_guest_under_the_default_model(tmp_path):
    """Without -cpu vmd runs "qemu" less what its engine lacks: the golden file's model."""
    proc = _guest_under_vmd(_without_cpu(GUESTS["stsi"]), tmp_path)
    assert proc.stdout.decode(errors="replace") == (EXPECTED / "stsi.txt").read_text()


@pytest.mark.qemu
def test_qemus_default_model_differs_only_in_what_the_engine_lacks(qemu_binary, tmp_path):
    theirs = _guest_under_qemu(qemu_binary, _without_cpu(GUESTS["stsi"]), tmp_path).stdout.decode()
    golden = (EXPECTED / "stsi.txt").read_text()
    differing = [(a, b) for a, b in zip(theirs.splitlines(), golden.splitlines()) if a != b]
    assert len(theirs.splitlines()) == len(golden.splitlines())
    cleared = []
    for a, b in differing:
        assert a.startswith("  facilities") and a.split(":")[0] == b.split(":")[0]
        first = int(a.split()[1].split("-")[0])
        words = int(a.split()[-1], 16), int(b.split()[-1], 16)
        assert words[1] & ~words[0] == 0
        cleared += [first + n for n in range(64) if (words[0] ^ words[1]) >> (63 - n) & 1]
    assert cleared == [58, 61, 135, 148]


@pytest.mark.qemu
@pytest.mark.parametrize("args", [["-cpu", "z900"], ["-cpu", "z800", "-smp", "2"],
                                  ["-cpu", "max,minste2=off,minste3=off,vxeh=off,vxeh2=off,vx=off", "-m", "256M",
                                   "-name", "ÄÖ mixed\tCase and longer than 8", "-uuid", str(uuid.UUID(int=1))]],
                         ids=["z900", "z800-smp2", "max-name-uuid"])
def test_stsi_guest_matches_qemu_with_other_models(qemu_binary, args, tmp_path):
    theirs = _guest_under_qemu(qemu_binary, args, tmp_path)
    ours = _guest_under_vmd(args, tmp_path)
    assert theirs.returncode == 0, theirs.stderr.decode()
    assert ours.stdout.decode(errors="replace") == theirs.stdout.decode(errors="replace")
    assert ours.returncode == 0, ours.stderr.decode()
