"""Tests of the virtual channel subsystem model (vmd.machine.css).

Where a test states QEMU behaviour, it was checked against qemu-system-s390x
7.2 (Debian 1:7.2+dfsg-7) with ``-M s390-ccw-virtio -nodefaults -S`` and
``device_add``/``device_del``/``qom-get dev_id|subch_id`` over QMP or
``info qtree``; the ``qemu``-marked tests at the end repeat those checks when
the binary is installed.  The device number parser is also compared with the
C library's own ``sscanf("%2x.%1x%n.%4x%n")``, which is what QEMU calls.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import platform
import random
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from vmd.errors import GenericError
from vmd.machine.css import (
    CHPID_TYPE_3270,
    CHPID_TYPE_VIRTIO,
    CRW_ERC_IPI,
    CRW_RSC_SUBCH,
    MAX_CSSID,
    MAX_DEVNO,
    MAX_SCHID,
    MAX_SSID,
    VIRTIO_CCW_CHPID,
    VIRTUAL_CSSID,
    ChannelPath,
    ChannelReportWord,
    ChannelSubsystem,
    CssDevId,
    Subchannel,
    devid_str,
)

TYPENAME = "virtio-rng-ccw"


def P(text: str) -> CssDevId:
    return CssDevId.parse(text, TYPENAME)


def malformed(text: str, typename: str = TYPENAME, prop: str = "devno") -> str:
    return f"Property '{typename}.{prop}' doesn't take value '{text}'"


def add(css: ChannelSubsystem, devno: str | None = None, *, hot: bool = False, ctype: int = CHPID_TYPE_VIRTIO, **kw):
    return css.assign(object(), None if devno is None else P(devno), ctype, hot, **kw)


def ids(sch: Subchannel) -> tuple[str, str]:
    return str(sch.dev_id), str(sch.subch_id)


def state(css: ChannelSubsystem):
    """Everything a failed assign must leave alone."""
    return (
        tuple((str(s.subch_id), str(s.dev_id), s.chpids, id(s)) for s in css.subchannels()),
        tuple(css.channel_paths()),
        css.pending_crws,
        css.crws_lost,
        len(css),
    )


# ---------------------------------------------------------------------------
# docs/system/s390x/css.rst, the five examples in order
# ---------------------------------------------------------------------------
def test_css_rst_examples():
    css = ChannelSubsystem()
    net = add(css)  # -device virtio-net-ccw
    rng = add(css, "fe.0.0042")  # -device virtio-rng-ccw,devno=fe.0.0042
    gpu = add(css, "fe.2.1111")  # -device virtio-gpu-ccw,devno=fe.2.1111
    mouse = add(css, "2.0.2222")  # -device virtio-mouse-ccw,devno=2.0.2222
    kbd = add(css, "0.0.1234")  # -device virtio-keyboard-ccw,devno=0.0.1234

    # "The auto-assigned-properties in QEMU (as seen via e.g. info qtree)"
    assert ids(net) == ("fe.0.0000", "fe.0.0000")
    assert ids(rng) == ("fe.0.0042", "fe.0.0001")
    assert ids(gpu) == ("fe.2.1111", "fe.2.0000")
    assert ids(mouse) == ("2.0.2222", "2.0.0000")
    assert ids(kbd) == ("0.0.1234", "0.0.0000")

    # A Linux guest enables MSS but not MCSS-E.
    css.mss_enabled = True
    assert str(css.guest_view(net)) == "0.0.0000" and str(css.guest_subch_id(net)) == "0.0.0000"
    assert str(css.guest_view(rng)) == "0.0.0042" and str(css.guest_subch_id(rng)) == "0.0.0001"
    assert str(css.guest_view(gpu)) == "0.2.1111" and str(css.guest_subch_id(gpu)) == "0.2.0000"
    # "This would not show up in a standard Linux guest."
    assert css.guest_view(mouse) is None and not css.is_visible(mouse)
    # "... either, as 0 is not the standard channel subsystem image id."
    assert css.guest_view(kbd) is None and css.guest_subch_id(kbd) is None

    # "Devices with a ssid that is not 0 will not be visible if the guest OS does not enable MSS"
    css.mss_enabled = False
    assert css.guest_view(gpu) is None
    assert css.is_visible(net) and css.is_visible(rng)

    # With MCSS-E the real image ids show.
    css.mcsse_enabled = css.mss_enabled = True
    assert [str(css.guest_view(s)) for s in (net, rng, gpu, mouse, kbd)] == [
        "fe.0.0000", "fe.0.0042", "fe.2.1111", "2.0.2222", "0.0.1234"
    ]
    assert str(css.guest_subch_id(rng)) == "fe.0.0001"

    assert [ids(s)[1] for s in css.subchannels()] == [
        "0.0.0000", "2.0.0000", "fe.0.0000", "fe.0.0001", "fe.2.0000"
    ]
    # all virtio: CHPID 0x00, type 0x32, one per image
    assert css.channel_paths() == [
        ChannelPath(0, 0, 0x32, 1), ChannelPath(2, 0, 0x32, 1), ChannelPath(0xFE, 0, 0x32, 3)
    ]
    assert all(s.chpid == VIRTIO_CCW_CHPID and s.chpid_type == CHPID_TYPE_VIRTIO for s in css.subchannels())
    assert css.pending_crws == ()  # nothing was hot-plugged


# ---------------------------------------------------------------------------
# The devno parser
# ---------------------------------------------------------------------------
# Each accepted (value -> dev_id) and refused (value -> error) pair below was
# checked with device_add virtio-rng-ccw on qemu-system-s390x 7.2.
ACCEPTED = {
    "fe.0.0042": "fe.0.0042",
    "FE.0.0042": "fe.0.0042",
    " fe.0.0042": "fe.0.0042",  # %2x skips leading white space
    "\tfe.0.0042": "fe.0.0042",
    "fe. 1.  42": "fe.1.0042",  # ... before every number; ".  42" is still five characters
    "fe.0.0x42": "fe.0.0042",  # %x takes a 0x prefix
    "fe.0.+042": "fe.0.0042",  # ... and a sign
    "fe.0.-042": "fe.0.ffbe",  # -0x42 as unsigned, cut to 16 bits
    "fe.0.-0x1": "fe.0.ffff",
    "fe.0.+0x1": "fe.0.0001",
    "+1.0.0000": "1.0.0000",
    "-0.0.0000": "0.0.0000",
    "0x.0.0000": "0.0.0000",  # glibc reads a bare "0x" as 0
    "f.0.0000": "f.0.0000",
    "2.0.2222": "2.0.2222",
    "0.0.1234": "0.0.1234",
    "fe.0.ffff": "fe.0.ffff",
    "fe.3.FFFF": "fe.3.ffff",
}
MALFORMED = [
    "fe.0.42",  # fewer than 4 devno digits
    "fe.0.00042",  # more
    "0x1.0.0000",
    "",
    "fe..0000",
    "fe.0.0042x",  # something trailing
    "fe.0.004 ",
    "100.0.0000",
    "0fe.0.0000",
    "fe.00.0000",
    "fe.10.0000",
    "fe.0x0.0000",
    "fe.0.0 42",
    "1 .0.0000",
    "fe.0.0x",
    "fe.0.0042.",
    "fe-0-0042",
    "fe.0",
]
INVALID = {
    "fe.4.0000": "Invalid cssid or ssid: cssid fe, ssid 4",
    "fe.f.0000": "Invalid cssid or ssid: cssid fe, ssid f",
    "-1.0.0000": "Invalid cssid or ssid: cssid ffffffff, ssid 0",
    # QEMU 7.2 accepts cssid ff and then aborts (css_sch_build_virtual_schib:
    # Assertion `css != NULL' failed): vmd refuses it instead.
    "ff.0.0000": "Invalid cssid or ssid: cssid ff, ssid 0",
    "ff.4.0000": "Invalid cssid or ssid: cssid ff, ssid 4",
}


@pytest.mark.parametrize("text,expected", sorted(ACCEPTED.items()))
def test_parse_accepts(text, expected):
    assert str(P(text)) == expected


@pytest.mark.parametrize("text", MALFORMED)
def test_parse_malformed(text):
    with pytest.raises(GenericError) as ei:
        P(text)
    assert ei.value.desc == malformed(text)
    assert ei.value.to_qmp() == {"class": "GenericError", "desc": malformed(text)}


@pytest.mark.parametrize("text,message", sorted(INVALID.items()))
def test_parse_out_of_range(text, message):
    with pytest.raises(GenericError) as ei:
        P(text)
    assert ei.value.desc == message


def test_parse_message_names_type_and_property():
    with pytest.raises(GenericError) as ei:
        CssDevId.parse("fe.0.42", "x-terminal3270")
    assert ei.value.desc == "Property 'x-terminal3270.devno' doesn't take value 'fe.0.42'"
    with pytest.raises(GenericError) as ei:
        CssDevId.parse("junk", "vfio-ccw", "hostid")
    assert ei.value.desc == "Property 'vfio-ccw.hostid' doesn't take value 'junk'"


def test_parse_stops_at_nul_like_a_c_string():
    assert str(P("fe.0.0042\x00trailing")) == "fe.0.0042"
    with pytest.raises(GenericError) as ei:
        P("fe.0.42\x00")
    assert ei.value.desc == malformed("fe.0.42")


def test_print_form():
    # QEMU: "%02x.%1x.%04x", leading zero dropped for cssid <= 0xf
    assert str(CssDevId(0, 0, 0x1234)) == "0.0.1234"
    assert str(CssDevId(0xF, 1, 0)) == "f.1.0000"
    assert str(CssDevId(0x10, 3, 0xABCD)) == "10.3.abcd"
    assert str(CssDevId(0xFE, 0, 0x42)) == "fe.0.0042"
    assert devid_str(None) == "<unset>" and devid_str(CssDevId(2, 0, 0x2222)) == "2.0.2222"
    with pytest.raises(ValueError):
        CssDevId(0xFF, 0, 0)
    with pytest.raises(ValueError):
        CssDevId(0, 4, 0)
    with pytest.raises(ValueError):
        CssDevId(0, 0, 0x10000)


devids = st.builds(
    CssDevId, st.integers(0, MAX_CSSID), st.integers(0, MAX_SSID), st.integers(0, MAX_DEVNO)
)


@given(devids)
def test_parse_roundtrip(d):
    text = str(d)
    assert CssDevId.parse(text, TYPENAME) == d
    assert CssDevId.parse(text.upper(), TYPENAME) == d
    # the zero-padded two-digit cssid form is accepted too
    assert CssDevId.parse(f"{d.cssid:02x}.{d.ssid}.{d.devno:04X}", TYPENAME) == d


@given(devids, st.integers(1, 8).filter(lambda n: n != 4))
def test_parse_rejects_wrong_devno_width(d, width):
    text = f"{d.cssid:x}.{d.ssid:x}.{d.devno % 16**width:0{width}x}"
    with pytest.raises(GenericError) as ei:
        P(text)
    assert ei.value.desc == malformed(text)


@given(devids, st.text(min_size=1, max_size=4))
def test_parse_rejects_trailing(d, junk):
    text = str(d) + junk
    assume("\x00" not in junk)
    with pytest.raises(GenericError) as ei:
        P(text)
    assert ei.value.desc == malformed(text)


@given(st.integers(0, 0xFF), st.integers(0, 0xF), st.integers(0, MAX_DEVNO))
def test_parse_range_check(cssid, ssid, devno):
    text = f"{cssid:x}.{ssid:x}.{devno:04x}"
    if cssid <= MAX_CSSID and ssid <= MAX_SSID:
        assert P(text) == CssDevId(cssid, ssid, devno)
    else:
        with pytest.raises(GenericError) as ei:
            P(text)
        assert ei.value.desc == f"Invalid cssid or ssid: cssid {cssid:x}, ssid {ssid:x}"


# -- differential test against the C library's sscanf ----------------------
def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


LIBC = _glibc()


def c_parse(text: str):
    """What QEMU's set_css_devid decides, computed with the real sscanf."""
    raw = text.encode()
    cssid, ssid, devid = ctypes.c_uint(), ctypes.c_uint(), ctypes.c_uint()
    n1, n2 = ctypes.c_int(-1), ctypes.c_int(-1)
    num = LIBC.sscanf(
        ctypes.c_char_p(raw), b"%2x.%1x%n.%4x%n",
        ctypes.byref(cssid), ctypes.byref(ssid), ctypes.byref(n1), ctypes.byref(devid), ctypes.byref(n2),
    )
    cstr = raw.split(b"\x00", 1)[0]
    if num != 3 or n2.value - n1.value != 5 or len(cstr) != n2.value:
        return ("error", malformed(cstr.decode()))
    if cssid.value > MAX_CSSID or ssid.value > MAX_SSID:
        return ("error", f"Invalid cssid or ssid: cssid {cssid.value:x}, ssid {ssid.value:x}")
    return ("ok", CssDevId(cssid.value, ssid.value, devid.value & 0xFFFF))


def py_parse(text: str):
    try:
        return ("ok", P(text))
    except GenericError as err:
        return ("error", err.desc)


_num = st.tuples(
    st.sampled_from(["", "", " ", "\t", "\n ", "\x0b"]),
    st.sampled_from(["", "", "", "+", "-"]),
    st.sampled_from(["", "", "", "0x", "0X", "x"]),
    st.text("0123456789abcdefABCDEF", max_size=5),
).map("".join)
_near_valid = st.tuples(
    _num, st.sampled_from([".", ".", ". ", "..", ""]), _num,
    st.sampled_from([".", ".", " .", ""]), _num, st.sampled_from(["", "", "", " ", "x", "\x00zz", ".", "\u00e9"]),
).map("".join)
_noise = st.text("0123456789abcdefABCDEFxX.+- \t\n\x0b\x0c\r\x00\u00e9\u00a0", max_size=14)


@pytest.mark.skipif(LIBC is None, reason="needs glibc")
@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_near_valid, _noise))
def test_parse_matches_glibc_sscanf(text):
    assert py_parse(text) == c_parse(text)


# ---------------------------------------------------------------------------
# Assignment rules
# ---------------------------------------------------------------------------
def test_auto_devno_scans_from_the_free_schid():
    # QEMU 7.2: -device virtio-rng-ccw,devno=fe.0.0001 -device virtio-rng-ccw -device virtio-rng-ccw
    css = ChannelSubsystem()
    assert ids(add(css, "fe.0.0001")) == ("fe.0.0001", "fe.0.0000")
    assert ids(add(css)) == ("fe.0.0002", "fe.0.0001")
    assert ids(add(css)) == ("fe.0.0003", "fe.0.0002")


def test_explicit_ffff_then_auto():
    # QEMU 7.2: devno=fe.0.ffff gets subch 0; the next automatic device gets devno 1 at subch 1
    css = ChannelSubsystem()
    assert ids(add(css, "fe.0.ffff")) == ("fe.0.ffff", "fe.0.0000")
    assert ids(add(css)) == ("fe.0.0001", "fe.0.0001")


def test_replug_takes_the_first_free_subchannel():
    # QEMU 7.2 over QMP: add a, b, c; device_del b; add d -> d is fe.0.0001 at subch 1
    css = ChannelSubsystem()
    a, b, c = add(css), add(css), add(css)
    css.release(b)
    d = add(css)
    assert ids(d) == ("fe.0.0001", "fe.0.0001")
    e = add(css, "fe.0.0042")
    assert ids(e) == ("fe.0.0042", "fe.0.0003")
    assert [ids(s)[0] for s in css.subchannels()] == ["fe.0.0000", "fe.0.0001", "fe.0.0002", "fe.0.0042"]
    css.release(a)
    # a re-plugged device may appear at a different subchannel (css.rst)
    assert ids(add(css, "fe.0.0000")) == ("fe.0.0000", "fe.0.0000")
    assert ids(add(css, "fe.0.0099")) == ("fe.0.0099", "fe.0.0004")


def test_duplicate_devno():
    css = ChannelSubsystem()
    add(css, "fe.0.0042")
    before = state(css)
    for text in ("fe.0.0042", "FE.0.0042", "fe.0.0x42"):
        with pytest.raises(GenericError) as ei:
            add(css, text, hot=True)
        assert ei.value.desc == "Device fe.0.0042 already exists"
        assert state(css) == before
    add(css, "0.0.0000")
    with pytest.raises(GenericError) as ei:
        add(css, "-0.0.0000")
    assert ei.value.desc == "Device 0.0.0000 already exists"
    # same number, other set or image: fine
    assert ids(add(css, "fe.1.0042")) == ("fe.1.0042", "fe.1.0000")
    assert ids(add(css, "1.0.0042")) == ("1.0.0042", "1.0.0000")


def test_lookups():
    css = ChannelSubsystem()
    a = add(css, "fe.0.0042")
    b = add(css, "2.3.0001")
    assert css.lookup_devno(P("fe.0.0042")) is a
    assert css.lookup_devno(P("fe.0.0043")) is None
    assert css.lookup_devno(P("2.3.0001")) is b
    assert css.lookup_schid(0xFE, 0, 0) is a
    assert css.lookup_schid(2, 3, 0) is b
    assert css.lookup_schid(2, 2, 0) is None
    assert css.lookup_schid(0x17, 0, 0) is None
    assert css.devno_used(P("fe.0.0042")) and not css.devno_used(P("fe.1.0042"))
    # the guest's cssid 0 means image fe without MCSS-E
    assert css.lookup_guest(0, 0, 0) is a
    assert css.lookup_guest(2, 3, 0) is None  # hidden
    css.mcsse_enabled = css.mss_enabled = True
    assert css.lookup_guest(0, 0, 0) is None and css.lookup_guest(0xFE, 0, 0) is a
    assert css.lookup_guest(2, 3, 0) is b
    css.release(a)
    assert css.lookup_devno(P("fe.0.0042")) is None and css.lookup_schid(0xFE, 0, 0) is None
    with pytest.raises(ValueError):
        css.release(a)  # twice
    assert len(css) == 1 and list(css) == [b]


def test_fill_a_whole_subchannel_set_real_limits():
    css = ChannelSubsystem()
    subs = [add(css) for _ in range(MAX_DEVNO)]
    # every automatic device got devno == schid, 0 .. 0xfffe: 0xffff is never picked
    assert all(s.devno == s.schid == i and s.cssid == VIRTUAL_CSSID and s.ssid == 0 for i, s in enumerate(subs))
    # subch fe.0.ffff is free but no automatic devno is: the next device goes to ssid 1
    nxt = add(css)
    assert ids(nxt) == ("fe.1.0000", "fe.1.0000")
    # wrap-around of the devno search: free subch 0xfff0 and devno 3
    css.release(subs[3])
    css.release(subs[0xFFF0])
    assert ids(add(css, "fe.0.fff0")) == ("fe.0.fff0", "fe.0.0003")  # first free subchannel
    assert ids(add(css)) == ("fe.0.0003", "fe.0.fff0")  # scan from fff0 .. fffe, then wraps to 0
    # explicit 0xffff takes the last subchannel
    assert ids(add(css, "fe.0.ffff")) == ("fe.0.ffff", "fe.0.ffff")
    with pytest.raises(GenericError) as ei:
        add(css, "fe.0.1234")
    assert ei.value.desc == "Device fe.0.1234 already exists"
    # with real limits a full set always reports the devno: every subchannel holds one devno
    assert len(css) == MAX_SCHID + 2


def test_auto_search_start_ffff_wraps_to_zero():
    css = ChannelSubsystem()
    subs = [add(css) for _ in range(MAX_DEVNO)]
    css.release(subs[7])
    assert ids(add(css, "fe.0.ffff")) == ("fe.0.ffff", "fe.0.0007")
    # first free subchannel is 0xffff; the devno search starts at 0xffff % 0xffff = 0
    assert ids(add(css)) == ("fe.0.0007", "fe.0.ffff")


def test_no_free_subchannel_injected_limit():
    css = ChannelSubsystem(max_schid=3)
    for n in range(4):
        add(css, f"fe.0.{n + 0x40:04x}")
    before = state(css)
    with pytest.raises(GenericError) as ei:
        add(css, "fe.0.0042")
    assert ei.value.desc == "Device fe.0.0042 already exists"  # checked first
    with pytest.raises(GenericError) as ei:
        add(css, "fe.0.0099", hot=True)
    assert ei.value.desc == "No free subchannel found for fe.0.0099"
    assert state(css) == before
    assert ids(add(css)) == ("fe.1.0000", "fe.1.0000")


def test_auto_devno_wrap_injected_modulus():
    css = ChannelSubsystem(max_devno=8)
    for n in range(3, 8):
        add(css, f"fe.0.{n:04x}")  # schids 0..4
    # schid 5, devnos 5, 6, 7 taken -> wrap to 0
    assert ids(add(css)) == ("fe.0.0000", "fe.0.0005")
    assert ids(add(css)) == ("fe.0.0001", "fe.0.0006")
    assert ids(add(css)) == ("fe.0.0002", "fe.0.0007")
    # devnos 0..7 all used: ssid 0 has free subchannels but no automatic devno
    assert ids(add(css)) == ("fe.1.0000", "fe.1.0000")
    assert ids(add(css, "fe.0.0008")) == ("fe.0.0008", "fe.0.0008")


def test_virtual_channel_subsystem_is_full():
    # One subchannel per set: 4 per image, 255 images (0x00 .. 0xfe)
    css = ChannelSubsystem(max_schid=0)
    order = [add(css) for _ in range(255 * 4)]
    # images are tried from the default 0xfe, then (cssid + 1) % 255: 0x00, 0x01, ... 0xfd
    assert [ids(s)[0] for s in order[:9]] == [
        "fe.0.0000", "fe.1.0000", "fe.2.0000", "fe.3.0000",
        "0.0.0000", "0.1.0000", "0.2.0000", "0.3.0000", "1.0.0000",
    ]
    assert ids(order[-1])[0] == "fd.3.0000"
    assert len({(s.cssid, s.ssid) for s in order}) == 255 * 4
    before = state(css)
    with pytest.raises(GenericError) as ei:
        add(css, hot=True)
    assert ei.value.desc == "Virtual channel subsystem is full!"
    assert state(css) == before
    css.release(order[500])
    again = add(css)
    assert (again.cssid, again.ssid, again.schid) == (order[500].cssid, order[500].ssid, 0)


# ---------------------------------------------------------------------------
# Channel paths
# ---------------------------------------------------------------------------
def test_chpids_virtio_shared_others_fresh_and_never_freed():
    css = ChannelSubsystem()
    v1, v2 = add(css), add(css)
    t1 = add(css, ctype=CHPID_TYPE_3270)
    t2 = add(css, ctype=CHPID_TYPE_3270)
    assert (v1.chpid, v2.chpid) == (0, 0)
    # css_find_free_chpid: first undefined CHPID, skipping VIRTIO_CCW_CHPID
    assert (t1.chpid, t1.chpid_type, t2.chpid) == (1, 0x1A, 2)
    assert css.channel_paths() == [(0xFE, 0, 0x32, 2), (0xFE, 1, 0x1A, 1), (0xFE, 2, 0x1A, 1)]
    assert css.channel_paths()[1].devices == 1
    css.release(t1)
    # the path stays defined (QEMU never clears in_use); the next device takes a new one
    t3 = add(css, ctype=CHPID_TYPE_3270)
    assert t3.chpid == 3
    assert css.channel_paths() == [
        (0xFE, 0, 0x32, 2), (0xFE, 1, 0x1A, 0), (0xFE, 2, 0x1A, 1), (0xFE, 3, 0x1A, 1)
    ]
    # other images number their paths separately
    t4 = add(css, "2.0.0001", ctype=CHPID_TYPE_3270)
    assert (t4.cssid, t4.chpid) == (2, 1)
    assert css.chpid_is_virtual(0xFE, 1) is True and css.chpid_is_virtual(0xFE, 9) is None


def test_chpid_sharing_option():
    css = ChannelSubsystem()
    a = add(css, ctype=CHPID_TYPE_3270, share_chpid=True)
    b = add(css, ctype=CHPID_TYPE_3270, share_chpid=True)
    c = add(css, ctype=0x1B, share_chpid=True)
    assert (a.chpid, b.chpid, c.chpid) == (1, 1, 2)
    assert css.channel_paths() == [(0xFE, 1, 0x1A, 2), (0xFE, 2, 0x1B, 1)]


def test_no_available_chpid():
    css = ChannelSubsystem()
    for n in range(255):
        assert add(css, ctype=CHPID_TYPE_3270).chpid == n + 1
    add(css)  # virtio still fine on 0x00
    before = state(css)
    with pytest.raises(GenericError) as ei:
        add(css, ctype=CHPID_TYPE_3270, hot=True)
    assert ei.value.desc == "No available chpid to use."
    assert state(css) == before
    # a devno error is reported before the chpid one, as QEMU creates the subchannel first
    with pytest.raises(GenericError) as ei:
        add(css, "fe.0.0000", ctype=CHPID_TYPE_3270)
    assert ei.value.desc == "Device fe.0.0000 already exists"


def test_host_chpids_for_passthrough():
    css = ChannelSubsystem()
    t = add(css, ctype=CHPID_TYPE_3270)  # defines 0x01 as a virtual 3270 path
    host = [(0x10, 0x1B), (0x01, 0x1B), (0, 0), (0, 0), (0, 0), (0, 0), (0, 0), (0, 0)]
    p = add(css, "fe.0.0313", ctype=0x1B, host_chpids=host)
    assert p.chpid == 0x10 and p.chpids == (0x10, 0x01) and p.chpid_type == 0x1B
    # an already defined CHPID keeps its definition (QEMU adds only unused ones); 0x00 means "no path"
    assert css.channel_paths() == [(0xFE, 0x01, 0x1A, 2), (0xFE, 0x10, 0x1B, 1)]
    assert css.chpid_is_virtual(0xFE, 0x10) is False
    css.release(p)
    css.release(t)
    assert css.channel_paths() == [(0xFE, 0x01, 0x1A, 0), (0xFE, 0x10, 0x1B, 0)]


# ---------------------------------------------------------------------------
# Channel report words
# ---------------------------------------------------------------------------
def test_crw_encoding():
    crw = ChannelReportWord(rsc=CRW_RSC_SUBCH, erc=CRW_ERC_IPI, rsid=0x1234)
    assert crw.encode() == 0x03041234 and crw.to_bytes() == bytes.fromhex("03041234")
    chained = ChannelReportWord(rsc=3, erc=4, rsid=5, chaining=True)
    assert chained.encode() == 0x13040005
    full = ChannelReportWord(
        rsc=0xB, erc=0x3F, rsid=0xFFFF, chaining=True, solicited=True, overflow=True, ancillary=True
    )
    assert full.encode() == 0x7BBFFFFF
    for word in (0x03041234, 0x13040005, 0x7BBFFFFF, 0x00000000):
        assert ChannelReportWord.decode(word).encode() == word


def test_crws_only_for_hotplugged_visible_subchannels():
    css = ChannelSubsystem()
    add(css)  # cold plugged: nothing
    assert css.pending_crws == ()
    s = add(css, hot=True)
    assert [c.encode() for c in css.pending_crws] == [0x03040000 | s.schid]
    assert css.pop_crw().encode() == 0x03040001
    assert css.pop_crw() is None
    add(css, "fe.1.0000", hot=True)  # ssid 1 without MSS: invisible
    add(css, "2.0.0000", hot=True)  # other image without MCSS-E: invisible
    add(css, "0.0.0000", hot=True)  # image 0 is not the default one
    assert css.pending_crws == ()


def test_crws_chained_with_mss_or_mcsse():
    css = ChannelSubsystem(mss_enabled=True)
    s = add(css, "fe.2.1111", hot=True)
    # first CRW names the subchannel number, the chained second one cssid/ssid
    assert [c.encode() for c in css.pending_crws] == [0x13040000 | s.schid, 0x03040000 | (0 << 8) | (2 << 4)]
    first, second = css.pending_crws
    assert first.chaining and not second.chaining and first.rsc == second.rsc == 3 and first.erc == 4
    css.reset()
    assert css.pending_crws == () and not css.mss_enabled
    css.mcsse_enabled = True
    m = add(css, "2.0.2222", hot=True)
    d = add(css, "fe.0.0001", hot=True)
    assert [c.rsid for c in css.pending_crws] == [m.schid, 0x0200, d.schid, 0xFE00]


def test_crws_on_release():
    css = ChannelSubsystem()
    cold = add(css)
    css.release(cold)  # device_del of a cold-plugged device still notifies
    assert [c.encode() for c in css.pending_crws] == [0x03040000]
    css.pop_crw()
    s = add(css, hot=True, notify=False)
    assert css.pending_crws == ()
    css.notify_added(s)
    assert len(css.pending_crws) == 1
    css.release(s, notify=False)
    hidden = add(css, "fe.3.0000")
    css.release(hidden)
    assert len(css.pending_crws) == 1


def test_crw_overflow_and_machine_check():
    calls = []
    css = ChannelSubsystem(max_pending_crws=2, on_crw_pending=lambda: calls.append(1))
    for _ in range(4):
        add(css, hot=True)
    assert len(calls) == 1  # one machine check until the guest drains the queue
    assert css.crws_lost and len(css.pending_crws) == 2
    assert css.pop_crw().rsid == 0 and css.pop_crw().rsid == 1
    assert css.pop_crw() is None  # empty: re-arms the machine check
    add(css, hot=True)
    assert len(calls) == 2
    crw = css.pop_crw()
    assert crw.overflow and crw.rsid == 4 and not css.crws_lost
    css.undo_pop(crw)
    assert css.pending_crws == (crw,)


# ---------------------------------------------------------------------------
# Stateful test against a literal model of QEMU's css.c
# ---------------------------------------------------------------------------
class RefCss:
    """A slow transcription of QEMU's rules, with plain loops and dicts."""

    def __init__(self, max_schid: int, modulus: int):
        self.max_schid = max_schid
        self.modulus = modulus
        self.schids: dict[tuple[int, int, int], int] = {}  # (cssid, ssid, schid) -> devno
        self.devnos: dict[tuple[int, int, int], int] = {}  # (cssid, ssid, devno) -> schid
        self.chpids: dict[tuple[int, int], int] = {}  # (cssid, chpid) -> type, never removed
        self.crws: list[int] = []
        self.mcsse = self.mss = False

    def free_schid(self, cssid, ssid):
        for schid in range(self.max_schid + 1):
            if (cssid, ssid, schid) not in self.schids:
                return schid
        return None

    def free_devno(self, cssid, ssid, start):
        for rnd in range(self.modulus + 1):
            devno = (start + rnd) % self.modulus
            if (cssid, ssid, devno) not in self.devnos:
                return devno
        return None

    def place(self, devno):
        if devno is not None:
            c, s, d = devno
            if (c, s, d) in self.devnos:
                raise GenericError(f"Device {c:x}.{s:x}.{d:04x} already exists")
            schid = self.free_schid(c, s)
            if schid is None:
                raise GenericError(f"No free subchannel found for {c:x}.{s:x}.{d:04x}")
            return c, s, schid, d
        cssid = 0xFE
        while True:
            for ssid in range(4):
                schid = self.free_schid(cssid, ssid)
                if schid is None:
                    continue
                d = self.free_devno(cssid, ssid, schid)
                if d is None:
                    continue
                return cssid, ssid, schid, d
            cssid = (cssid + 1) % 255
            if cssid == 0xFE:
                raise GenericError("Virtual channel subsystem is full!")

    def chpid_for(self, cssid, ctype, share):
        if ctype == 0x32:
            return 0
        if share:
            for (c, chpid), t in sorted(self.chpids.items()):
                if c == cssid and chpid != 0 and t == ctype:
                    return chpid
        for chpid in range(1, 256):
            if (cssid, chpid) not in self.chpids:
                return chpid
        raise GenericError("No available chpid to use.")

    def visible(self, cssid, ssid):
        if ssid > 0 and not self.mss:
            return False
        return cssid == 0xFE or self.mcsse

    def notify(self, cssid, ssid, schid):
        if not self.visible(cssid, ssid):
            return
        chained = self.mss or self.mcsse
        self.crws.append(((0x1304 if chained else 0x0304) << 16) | schid)
        if chained:
            guest_cssid = cssid if self.mcsse else 0
            self.crws.append((0x0304 << 16) | (guest_cssid << 8) | (ssid << 4))


EXPLICIT = st.tuples(
    st.sampled_from([0xFE, 0xFE, 0xFE, 0x00, 0x02]),
    st.sampled_from([0, 0, 1, 3]),
    st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 0x42, 0xFFFE, 0xFFFF]),
)
KINDS = st.sampled_from([(CHPID_TYPE_VIRTIO, False), (CHPID_TYPE_3270, False), (CHPID_TYPE_3270, True)])


class CssMachine(RuleBasedStateMachine):
    MAX_SCHID = MAX_SCHID
    MAX_DEVNO = MAX_DEVNO

    @initialize()
    def setup(self):
        self.css = ChannelSubsystem(max_schid=self.MAX_SCHID, max_devno=self.MAX_DEVNO)
        self.ref = RefCss(self.MAX_SCHID, self.MAX_DEVNO)
        self.live: list[Subchannel] = []
        self.auto: set[int] = set()  # ids of auto-assigned subchannels

    def _assign(self, devno, kind, hot):
        ctype, share = kind
        before = state(self.css)
        try:
            c, s, schid, d = self.ref.place(devno)
            chpid = self.ref.chpid_for(c, ctype, share)
        except GenericError as expected:
            with pytest.raises(GenericError) as ei:
                self.css.assign("dev", None if devno is None else CssDevId(*devno), ctype, hot, share_chpid=share)
            assert ei.value.desc == expected.desc
            assert state(self.css) == before, "a failed assign changed the CSS"
            return
        sch = self.css.assign("dev", None if devno is None else CssDevId(*devno), ctype, hot, share_chpid=share)
        assert (sch.cssid, sch.ssid, sch.schid, sch.devno, sch.chpid) == (c, s, schid, d, chpid)
        assert sch.hotplugged == hot and sch.chpid_type == ctype
        self.ref.schids[(c, s, schid)] = d
        self.ref.devnos[(c, s, d)] = schid
        self.ref.chpids.setdefault((c, chpid), ctype)
        if hot:
            self.ref.notify(c, s, schid)
        self.live.append(sch)
        if devno is None:
            self.auto.add(id(sch))

    @rule(kind=KINDS, hot=st.booleans())
    def assign_auto(self, kind, hot):
        self._assign(None, kind, hot)

    @rule(devno=EXPLICIT, kind=KINDS, hot=st.booleans())
    def assign_explicit(self, devno, kind, hot):
        self._assign(devno, kind, hot)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), notify=st.booleans())
    def release(self, data, notify):
        sch = data.draw(st.sampled_from(self.live))
        self.css.release(sch, notify=notify)
        self.live.remove(sch)
        self.auto.discard(id(sch))
        del self.ref.schids[(sch.cssid, sch.ssid, sch.schid)]
        del self.ref.devnos[(sch.cssid, sch.ssid, sch.devno)]
        if notify:
            self.ref.notify(sch.cssid, sch.ssid, sch.schid)
        with pytest.raises(ValueError):
            self.css.release(sch)

    @rule(mcsse=st.booleans(), mss=st.booleans())
    def guest_facilities(self, mcsse, mss):
        self.css.mcsse_enabled = self.ref.mcsse = mcsse
        self.css.mss_enabled = self.ref.mss = mss

    @rule()
    def pop_crw(self):
        crw = self.css.pop_crw()
        if self.ref.crws:
            assert crw is not None and crw.encode() == self.ref.crws.pop(0)
        else:
            assert crw is None

    @invariant()
    def unique_and_consistent(self):
        if not hasattr(self, "css"):
            return
        subs = self.css.subchannels()
        assert len(subs) == len(self.live) == len(self.css)
        assert {id(s) for s in subs} == {id(s) for s in self.live}
        keys = [(s.cssid, s.ssid, s.schid) for s in subs]
        assert keys == sorted(keys)
        assert len(set(keys)) == len(keys), "two subchannels share a schid"
        devs = [(s.cssid, s.ssid, s.devno) for s in subs]
        assert len(set(devs)) == len(devs), "two subchannels share a devno"
        for s in subs:
            assert self.css.lookup_devno(s.dev_id) is s
            assert self.css.lookup_schid(s.cssid, s.ssid, s.schid) is s
            assert self.css.is_visible(s) == self.ref.visible(s.cssid, s.ssid)
            if id(s) in self.auto:
                assert s.devno != 0xFFFF and s.devno < self.MAX_DEVNO
        assert sorted(keys) == sorted(self.ref.schids)
        users: dict[tuple[int, int], int] = {}
        for s in subs:
            users[(s.cssid, s.chpid)] = users.get((s.cssid, s.chpid), 0) + 1
        assert [(p.cssid, p.chpid, p.type, p.in_use) for p in self.css.channel_paths()] == [
            (c, chpid, t, users.get((c, chpid), 0)) for (c, chpid), t in sorted(self.ref.chpids.items())
        ]
        assert [c.encode() for c in self.css.pending_crws] == self.ref.crws


class SmallCssMachine(CssMachine):
    """Tiny sets (4 subchannels, automatic devnos 0-5) so that full sets, the
    devno wrap-around and the move to the next set or image happen often."""

    MAX_SCHID = 3
    MAX_DEVNO = 6


_stateful = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestCssStateful = CssMachine.TestCase
TestCssStateful.settings = _stateful
TestSmallCssStateful = SmallCssMachine.TestCase
TestSmallCssStateful.settings = settings(max_examples=120, stateful_step_count=50, deadline=None)


def test_many_add_del_pairs_are_fast():
    import time

    css = ChannelSubsystem()
    for _ in range(200):
        add(css)
    t0 = time.perf_counter()
    for _ in range(2000):
        s = add(css, hot=True)
        css.release(s)
        css.pop_crw(), css.pop_crw()
    assert time.perf_counter() - t0 < 1.0


# ---------------------------------------------------------------------------
# Differential tests against qemu-system-s390x itself
# ---------------------------------------------------------------------------
QEMU = shutil.which("qemu-system-s390x")


def qmp_session(commands: list[dict]) -> list[dict]:
    """Run QMP commands in one paused QEMU; return one reply per command."""
    lines = [{"execute": "qmp_capabilities"}, *commands, {"execute": "quit"}]
    proc = subprocess.run(
        [QEMU, "-M", "s390-ccw-virtio", "-nodefaults", "-S", "-display", "none", "-serial", "none", "-qmp", "stdio"],
        input="".join(json.dumps(c) + "\n" for c in lines),
        capture_output=True, text=True, timeout=120,
    )
    replies = []
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            msg = json.loads(line)
            if "return" in msg or "error" in msg:
                replies.append(msg)
    assert len(replies) == len(lines), proc.stdout + proc.stderr
    return replies[1:-1]


def _qemu_add(i, devno):
    args = {"driver": TYPENAME, "id": f"d{i}"}
    if devno is not None:
        args["devno"] = devno
    return {"execute": "device_add", "arguments": args}


def _qemu_get(i, prop):
    return {"execute": "qom-get", "arguments": {"path": f"/machine/peripheral/d{i}", "property": prop}}


@pytest.mark.qemu
@pytest.mark.skipif(QEMU is None, reason="qemu-system-s390x not installed")
def test_parser_against_qemu():
    cases = sorted(ACCEPTED) + MALFORMED + [k for k in INVALID if not k.startswith("ff")]
    cmds = []
    for i, text in enumerate(cases):
        cmds += [_qemu_add(i, text), _qemu_get(i, "dev_id"), {"execute": "device_del", "arguments": {"id": f"d{i}"}}]
    replies = qmp_session(cmds)
    for i, text in enumerate(cases):
        added, dev_id, _ = replies[3 * i: 3 * i + 3]
        mine = py_parse(text)
        if "error" in added:
            assert mine == ("error", added["error"]["desc"]), text
        else:
            assert mine == ("ok", P(dev_id["return"])), text


@pytest.mark.qemu
@pytest.mark.skipif(QEMU is None, reason="qemu-system-s390x not installed")
def test_assignment_against_qemu():
    """A seeded random plug/unplug sequence, compared step by step with QEMU."""
    rnd = random.Random(20240617)
    pool = ["fe.0.0000", "fe.0.0001", "fe.0.0003", "fe.0.0042", "fe.0.ffff", "fe.1.0000", "fe.3.0001", "2.0.2222",
            "0.0.1234", "fe.0.0005"]
    ops: list[tuple[str, int, str | None]] = []
    live: list[int] = []
    for i in range(60):
        r = rnd.random()
        if r < 0.3 and live:
            victim = live.pop(rnd.randrange(len(live)))
            ops.append(("del", victim, None))
        else:
            ops.append(("add", i, None if r < 0.65 else rnd.choice(pool)))
            live.append(i)
    cmds = []
    for op, i, devno in ops:
        if op == "add":
            cmds += [_qemu_add(i, devno), _qemu_get(i, "dev_id"), _qemu_get(i, "subch_id")]
        else:
            cmds.append({"execute": "device_del", "arguments": {"id": f"d{i}"}})
    replies = iter(qmp_session(cmds))

    css = ChannelSubsystem()
    mine: dict[int, Subchannel] = {}
    for op, i, devno in ops:
        if op == "del":
            reply = next(replies)
            if i in mine:
                assert "return" in reply
                css.release(mine.pop(i))
            else:
                assert "error" in reply  # the add had failed
            continue
        added, dev_id, subch_id = next(replies), next(replies), next(replies)
        try:
            sch = css.assign(i, None if devno is None else P(devno), CHPID_TYPE_VIRTIO, True)
        except GenericError as err:
            assert added == {"error": {"class": "GenericError", "desc": err.desc}}, (i, devno)
            continue
        assert "return" in added, (i, devno, added)
        assert (dev_id["return"], subch_id["return"]) == ids(sch), (i, devno)
        mine[i] = sch
