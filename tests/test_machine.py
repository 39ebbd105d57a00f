"""The machine model without sockets: devices on the CSS, hot plug, run states."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from vmd.devices import registry
from vmd.errors import DeviceNotFound, GenericError
from vmd.events import EventBus
from vmd.machine.machine import Machine
from vmd.machine.runstate import IllegalTransition, RunState, RunStateMachine


def new_machine(**kw) -> tuple[Machine, list]:
    bus = EventBus()
    listener = bus.listen()
    deferred: list = []
    exits: list = []
    m = Machine(bus, defer=deferred.append, request_exit=exits.append, **kw)
    m._deferred, m._exits, m._listener = deferred, exits, listener  # for the tests
    return m, deferred


def names(m: Machine) -> list[str]:
    return [e.name for e in m._listener.drain()]


def test_css_rst_examples_in_order():
    """The five examples of css.rst, added to the same machine one after another."""
    m, _ = new_machine()
    net = m.add_device("virtio-net-ccw", None, None, {})
    assert (net.dev_id, net.subch_id) == ("fe.0.0000", "fe.0.0000")
    rng = m.add_device("virtio-rng-ccw", None, None, {"devno": "fe.0.0042"})
    assert (rng.dev_id, rng.subch_id) == ("fe.0.0042", "fe.0.0001")
    gpu = m.add_device("virtio-gpu-ccw", None, None, {"devno": "fe.2.1111"})
    assert (gpu.dev_id, gpu.subch_id) == ("fe.2.1111", "fe.2.0000")
    mouse = m.add_device("virtio-mouse-ccw", None, None, {"devno": "2.0.2222"})
    assert (mouse.dev_id, mouse.subch_id) == ("2.0.2222", "2.0.0000")
    kbd = m.add_device("virtio-keyboard-ccw", None, None, {"devno": "0.0.1234"})
    assert (kbd.dev_id, kbd.subch_id) == ("0.0.1234", "0.0.0000")
    # what a Linux guest (MSS on, MCSS-E off) sees
    m.css.mss_enabled = True
    views = {d.type_name: m.css.guest_view(d.subchannel) for d in (net, rng, gpu, mouse, kbd)}
    assert str(views["virtio-net-ccw"]) in ("0.0.0000",)
    assert views["virtio-mouse-ccw"] is None and views["virtio-keyboard-ccw"] is None


@pytest.mark.parametrize(
    "props, text",
    [
        ({"devno": "fe.0.42"}, "Property 'virtio-rng-ccw.devno' doesn't take value 'fe.0.42'"),
        ({"devno": "ff.0.0000"}, "Invalid cssid or ssid: cssid ff, ssid 0"),
        ({"devno": "fe.4.0000"}, "Invalid cssid or ssid: cssid fe, ssid 4"),
        ({"foo": "1"}, "Property 'virtio-rng-ccw.foo' not found"),
        ({"ioeventfd": "maybe"}, "Parameter 'ioeventfd' expects 'on' or 'off'"),
        ({"max-bytes": "abc"}, "Parameter 'max-bytes' expects integer"),
        ({"period": "99999999999"}, "Parameter 'period' expects uint32_t"),
    ],
)
def test_bad_properties_are_refused_with_qemu_texts_and_leave_nothing(props, text):
    m, _ = new_machine()
    with pytest.raises(GenericError) as exc:
        m.add_device("virtio-rng-ccw", "r1", None, props)
    assert exc.value.desc == text
    assert m.devices == {} and m.css.subchannels() == []
    # the id and the first devno are still free
    d = m.add_device("virtio-rng-ccw", "r1", None, {})
    assert d.dev_id == "fe.0.0000"


def test_duplicate_id_and_devno():
    m, _ = new_machine()
    m.add_device("virtio-rng", "r1", None, {"devno": "fe.0.0001"})
    with pytest.raises(GenericError, match="^Duplicate device ID 'r1'$"):
        m.add_device("virtio-rng", "r1", None, {})
    with pytest.raises(GenericError, match="^Device fe.0.0001 already exists$"):
        m.add_device("virtio-rng", "r2", None, {"devno": "fe.0.0001"})
    with pytest.raises(GenericError, match="^'nope' is not a valid device model name$"):
        m.add_device("nope", None, None, {})
    with pytest.raises(GenericError, match="^Parameter 'driver' is missing$"):
        m.add_device(None, None, None, {})
    with pytest.raises(GenericError, match="^Parameter 'id' expects an identifier$"):
        m.add_device("virtio-rng", "1x", None, {})
    with pytest.raises(GenericError, match="^Bus 'pci.0' not found$"):
        m.add_device("virtio-rng", "r3", "pci.0", {})
    assert len(m.css.subchannels()) == 1


def test_unplug_emits_device_deleted_after_the_reply_and_frees_everything():
    m, deferred = new_machine()
    m.boot()
    d = m.add_device("virtio-rng-ccw", "r1", None, {"devno": "fe.0.0007"})
    assert d.hotplugged
    m.delete_device("r1")
    assert names(m) == []  # nothing before the reply is written
    for fn in deferred:
        fn()
    events = [e.to_wire() for e in m._listener.drain()]
    assert [e["data"] for e in events] == [
        {"path": "/machine/peripheral/r1/virtio-backend"},
        {"device": "r1", "path": "/machine/peripheral/r1"},
    ]
    assert m.css.subchannels() == []
    again = m.add_device("virtio-rng-ccw", "r1", None, {"devno": "fe.0.0007"})
    assert again.dev_id == "fe.0.0007"
    with pytest.raises(DeviceNotFound, match="^Device 'nope' not found$"):
        m.delete_device("nope")


def test_anonymous_devices_get_increasing_qom_paths_and_can_be_deleted_by_path():
    m, deferred = new_machine()
    a = m.add_device("virtio-rng-ccw", None, None, {})
    b = m.add_device("virtio-rng-ccw", None, None, {})
    assert (a.qom_path, b.qom_path) == ("/machine/peripheral-anon/device[0]", "/machine/peripheral-anon/device[1]")
    m.delete_device(a.qom_path)
    c = m.add_device("virtio-rng-ccw", None, None, {})
    assert c.qom_path == "/machine/peripheral-anon/device[2]"


def test_sense_id_identity_of_every_virtio_model(tmp_path):
    from vmd.block import open_drive

    m, _ = new_machine()
    (tmp_path / "disk.img").write_bytes(bytes(1 << 16))
    m.block.add("d0", open_drive({"id": "d0", "file": str(tmp_path / "disk.img"), "format": "raw"}), from_drive=True)
    expected = {"virtio-net-ccw": 1, "virtio-blk-ccw": 2, "virtio-serial-ccw": 3, "virtio-rng-ccw": 4,
                "virtio-balloon-ccw": 5, "virtio-scsi-ccw": 8, "virtio-9p-ccw": 9, "virtio-gpu-ccw": 16,
                "virtio-keyboard-ccw": 18, "virtio-mouse-ccw": 18, "virtio-tablet-ccw": 18,
                "vhost-vsock-ccw": 19, "virtio-crypto-ccw": 20, "vhost-user-fs-ccw": 26}
    for driver, virtio_id in expected.items():
        d = m.add_device(driver, None, None, {"drive": "d0"} if driver == "virtio-blk-ccw" else {})
        assert d.sense_id() == bytes([0xFF, 0x38, 0x32, virtio_id, 0, 0, 0]), driver
        assert d.subchannel.chpid == 0x00 and d.subchannel.chpid_type == 0x32


def test_aliases_resolve_to_their_models():
    for alias, name in [("virtio-net", "virtio-net-ccw"), ("virtio-blk", "virtio-blk-ccw"),
                        ("virtio-rng", "virtio-rng-ccw"), ("virtio-9p", "virtio-9p-ccw")]:
        assert registry.resolve(alias).type_name == name


def test_loadparm_rules():
    m, _ = new_machine()
    d = m.add_device("virtio-net-ccw", None, None, {"bootindex": "1", "loadparm": "prompt"})
    assert d.props.loadparm == "PROMPT"
    with pytest.raises(GenericError, match="^LOADPARM is only valid for boot devices!$"):
        m.add_device("virtio-net-ccw", None, None, {"loadparm": "1"})
    with pytest.raises(GenericError, match="can only contain up to 8 characters"):
        m.add_device("virtio-net-ccw", None, None, {"bootindex": "2", "loadparm": "123456789"})
    with pytest.raises(GenericError, match=r"invalid character '\*' \(ASCII 0x2a\)"):
        m.add_device("virtio-net-ccw", None, None, {"bootindex": "2", "loadparm": "a*"})


# -- run states --------------------------------------------------------------------------
def test_runstates_follow_qemu():
    m, _ = new_machine(start_paused=True)
    m.boot()
    assert m.state is RunState.PRELAUNCH
    m.stop()  # QEMU: no-op unless running
    assert m.state is RunState.PRELAUNCH and names(m) == []
    m.cont()
    assert m.state is RunState.RUNNING and names(m) == ["RESUME"]
    m.cont()
    assert names(m) == []
    m.stop()
    assert m.state is RunState.PAUSED and names(m) == ["STOP"]
    m.reset()
    assert m.state is RunState.PAUSED and names(m) == ["RESET"]
    m.powerdown()
    assert names(m) == ["POWERDOWN"]


def test_guest_shutdown_with_no_shutdown_needs_a_reset():
    m, _ = new_machine(no_shutdown=True)
    m.boot()
    m.shutdown("guest-shutdown", guest=True)
    assert m.state is RunState.SHUTDOWN and names(m) == ["SHUTDOWN", "STOP"] and m._exits == []
    with pytest.raises(GenericError, match="^Resetting the Virtual Machine is required$"):
        m.cont()
    m.reset()
    assert m.state is RunState.PAUSED
    m.cont()
    assert m.state is RunState.RUNNING


def test_quit_exits_even_with_no_shutdown():
    m, _ = new_machine(no_shutdown=True)
    m.boot()
    m.shutdown("host-qmp-quit", guest=False)
    assert m._exits == [0]


@given(st.lists(st.sampled_from(list(RunState)), max_size=30))
def test_runstate_table_never_allows_a_move_outside_it(moves):
    from vmd.machine.runstate import TRANSITIONS

    sm = RunStateMachine(RunState.PRELAUNCH)
    for target in moves:
        before = sm.state
        if target == before or (before, target) in TRANSITIONS:
            sm.to(target)
            assert sm.state is target
        else:
            with pytest.raises(IllegalTransition):
                sm.to(target)
            assert sm.state is before


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 40)), max_size=40))
def test_plug_unplug_sequences_keep_devnos_and_subchannels_unique(ops):
    m, deferred = new_machine()
    m.boot()
    live: list[str] = []
    for n, (add, ssid, devno) in enumerate(ops):
        if add or not live:
            props = {"devno": f"fe.{ssid}.{devno:04x}"} if devno % 3 else {}
            try:
                live.append(m.add_device("virtio-rng-ccw", f"d{n}", None, props).id)
            except GenericError:
                pass
        else:
            m.delete_device(live.pop(devno % len(live)))
        schs = m.css.subchannels()
        assert len({(s.cssid, s.ssid, s.devno) for s in schs}) == len(schs) == len(m.devices)
        assert len({(s.cssid, s.ssid, s.schid) for s in schs}) == len(schs)
