"""The virtual channel subsystem (CSS) of an s390-ccw-virtio machine.

This is the bookkeeping half of QEMU's ``hw/s390x/css.c``: which device sits at
which device number and subchannel, which channel paths (CHPIDs) exist, what a
guest can see, and which channel report words (CRWs) wait for the guest.  It
does no I/O and knows nothing about the devices it hands subchannels to.

The behaviour follows QEMU (checked against qemu-system-s390x 7.2 and the
``css.c`` of current QEMU; see ``tests/test_css.py`` for the cases):

* A device id is ``<cssid>.<ssid>.<devno>``; the default channel subsystem
  image is 0xfe, subchannel sets are 0-3 and device numbers 0-0xffff.
* An explicit device number takes the first free subchannel of its set
  (``Device %x.%x.%04x already exists`` / ``No free subchannel found for
  %x.%x.%04x``).
* Without one, the first free subchannel of the first set with room is used,
  starting at image 0xfe, and the device number is the first free one counting
  up from that subchannel number, modulo 0xffff (so 0xffff is never chosen
  automatically).  Images are tried in the order 0xfe, 0x00, 0x01 ... 0xfd
  (QEMU steps with ``(cssid + 1) % 255``); then ``Virtual channel subsystem is
  full!``.
* virtio devices all use CHPID 0x00 (type 0x32).  Any other emulated device
  defines the first CHPID of its image that was never defined (skipping 0x00),
  so two such devices never share a path in QEMU.  A defined CHPID stays
  defined when its devices go away, as in QEMU.
* A guest that has not enabled MCSS-E sees image 0xfe as image 0 and nothing of
  the others; one that has not enabled MSS sees only subchannel set 0.
* Adding a subchannel queues CRWs only when the device was hot-plugged and the
  guest can see the subchannel; removing one (device_del) always does when the
  guest can see it.

Where vmd differs from QEMU on purpose:

* ``ff.x.xxxx`` is refused with "Invalid cssid or ssid" (QEMU 7.2 accepts it
  and then aborts on an assertion, because image 0xff is reserved).
* The CRW queue is bounded (``max_pending_crws``); a CRW that does not fit is
  dropped and the next one queued carries the overflow (R) bit, exactly what
  QEMU does when it cannot allocate a CRW.
* Devices of a type that asks for it (``share_chpid=True``) can share one
  CHPID per image instead of defining a new one each (QEMU allows only one
  3270, so it never needed this).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple, Sequence

from vmd.errors import GenericError

__all__ = [
    "VIRTUAL_CSSID",
    "MAX_CSSID",
    "MAX_SSID",
    "MAX_DEVNO",
    "MAX_SCHID",
    "MAX_CHPID",
    "VIRTIO_CCW_CHPID",
    "CHPID_TYPE_VIRTIO",
    "CHPID_TYPE_3270",
    "CRW_RSC_SUBCH",
    "CRW_RSC_CHP",
    "CRW_RSC_CSS",
    "CRW_ERC_EVENT",
    "CRW_ERC_INIT",
    "CRW_ERC_IPI",
    "CssDevId",
    "devid_str",
    "Subchannel",
    "ChannelPath",
    "ChannelReportWord",
    "ChannelSubsystem",
]

# -- constants (include/hw/s390x/css.h, ioinst.h, virtio-ccw.h, 3270-ccw.h) --
VIRTUAL_CSSID = 0xFE  # the default channel subsystem image
MAX_CSSID = 0xFE  # highest usable image id (0xff is reserved)
MAX_SSID = 3
MAX_DEVNO = 0xFFFF
MAX_SCHID = 0xFFFF
MAX_CHPID = 0xFF

VIRTIO_CCW_CHPID = 0x00  # "used by convention" for every virtio-ccw device
CHPID_TYPE_VIRTIO = 0x32
CHPID_TYPE_3270 = 0x1A  # EMULATED_CCW_3270_CHPID_TYPE

#: QEMU's auto-assignment steps to the next image with ``(cssid + 1) % MAX_CSSID``
#: where QEMU's own MAX_CSSID is 255; so after 0xfe comes 0x00.
_CSSID_MODULUS = 0xFF

# Channel report word: reporting-source codes and error-recovery codes.
CRW_RSC_SUBCH = 0x3
CRW_RSC_CHP = 0x4
CRW_RSC_CSS = 0xB
CRW_ERC_EVENT = 0x00
CRW_ERC_INIT = 0x02
CRW_ERC_IPI = 0x04  # installed parameters initialized

#: glibc's isspace() in the C locale
_C_SPACE = frozenset(" \t\n\v\f\r")
_HEX = {c: int(c, 16) for c in "0123456789abcdefABCDEF"}


# ---------------------------------------------------------------------------
# Device ids
# ---------------------------------------------------------------------------
def _scan_hex(text: str, pos: int, width: int) -> tuple[int, int] | None:
    """One glibc ``%<width>x`` conversion at ``pos``: (value as a C unsigned int, new pos).

    Leading white space is skipped and not counted in the width; a sign and a
    ``0x``/``0X`` prefix count.  ``0x`` with no digit after it reads as 0 with
    both characters consumed (glibc does this).  None means a matching failure.
    """
    n = len(text)
    while pos < n and text[pos] in _C_SPACE:
        pos += 1
    left = width
    negative = False
    if left and pos < n and text[pos] in "+-":
        negative = text[pos] == "-"
        pos += 1
        left -= 1
    digits = 0
    value = 0
    if left and pos < n and text[pos] == "0":
        pos += 1
        left -= 1
        digits = 1
        if left and pos < n and text[pos] in "xX":
            pos += 1
            left -= 1
    while left and pos < n and text[pos] in _HEX:
        value = value * 16 + _HEX[text[pos]]
        pos += 1
        left -= 1
        digits += 1
    if not digits:
        return None
    if negative:
        value = -value
    return value & 0xFFFFFFFF, pos


@dataclass(frozen=True, order=True)
class CssDevId:
    """``<cssid>.<ssid>.<number>``: a device (devno) or subchannel (schid) id.

    ``devno`` holds the subchannel number when the id names a subchannel.
    """

    cssid: int
    ssid: int
    devno: int

    def __post_init__(self) -> None:
        if not (0 <= self.cssid <= MAX_CSSID and 0 <= self.ssid <= MAX_SSID and 0 <= self.devno <= MAX_DEVNO):
            raise ValueError(f"CSS id out of range: {self.cssid:#x}.{self.ssid:#x}.{self.devno:#x}")

    def __str__(self) -> str:
        # QEMU prints "%02x.%1x.%04x" and drops the leading zero of a cssid <= 0xf.
        return f"{self.cssid:x}.{self.ssid:x}.{self.devno:04x}"

    @classmethod
    def parse(cls, text: str, typename: str, prop: str = "devno") -> "CssDevId":
        """Parse a ``devno`` property value the way QEMU's ``set_css_devid`` does.

        That is ``sscanf(str, "%2x.%1x%n.%4x%n")`` with exactly three conversions,
        exactly five characters from the second dot to the end of the device
        number, and nothing after it.  The sscanf quirks are kept: leading white
        space before each number, a sign and a ``0x`` prefix are accepted
        (``" fe.0.0042"``, ``"fe.0.0x42"``, ``"fe.0.-042"`` = fe.0.ffbe).
        """
        # The value reaches QEMU as a C string.
        cstr = text.split("\x00", 1)[0]
        malformed = GenericError(f"Property '{typename}.{prop}' doesn't take value '{cstr}'")
        first = _scan_hex(cstr, 0, 2)
        if first is None:
            raise malformed
        cssid, pos = first
        if pos >= len(cstr) or cstr[pos] != ".":
            raise malformed
        second = _scan_hex(cstr, pos + 1, 1)
        if second is None:
            raise malformed
        ssid, n1 = second
        if n1 >= len(cstr) or cstr[n1] != ".":
            raise malformed
        third = _scan_hex(cstr, n1 + 1, 4)
        if third is None:
            raise malformed
        devid, n2 = third
        if n2 - n1 != 5 or n2 != len(cstr):
            raise malformed
        if cssid > MAX_CSSID or ssid > MAX_SSID:
            raise GenericError(f"Invalid cssid or ssid: cssid {cssid:x}, ssid {ssid:x}")
        return cls(cssid, ssid, devid & 0xFFFF)  # QEMU stores the number in a uint16_t


def devid_str(devid: CssDevId | None) -> str:
    """A ``dev_id``/``subch_id``/``devno`` property value as QEMU shows it (``<unset>`` if none)."""
    return "<unset>" if devid is None else str(devid)


# ---------------------------------------------------------------------------
# Subchannels, channel paths, channel report words
# ---------------------------------------------------------------------------
@dataclass(eq=False)
class Subchannel:
    """One I/O subchannel and the device behind it.  Compared by identity."""

    cssid: int
    ssid: int
    schid: int
    devno: int
    chpid: int
    chpid_type: int
    owner: object
    hotplugged: bool
    #: the distinct CHPIDs the subchannel uses (one for emulated devices; a
    #: passthrough subchannel's real paths, without the 0x00 "no path" entries)
    chpids: tuple[int, ...] = field(default=())

    @property
    def dev_id(self) -> CssDevId:
        return CssDevId(self.cssid, self.ssid, self.devno)

    @property
    def subch_id(self) -> CssDevId:
        return CssDevId(self.cssid, self.ssid, self.schid)

    def __repr__(self) -> str:
        return (
            f"Subchannel(subch={self.subch_id}, dev={self.dev_id}, chpid={self.cssid:x}.{self.chpid:02x}"
            f", type={self.chpid_type:#04x}, hotplugged={self.hotplugged})"
        )


class ChannelPath(NamedTuple):
    """A defined channel path: (cssid, chpid, type, in_use).

    ``in_use`` counts the subchannels using the path now; QEMU keeps a path
    defined after its last device is gone, so it can be 0.
    """

    cssid: int
    chpid: int
    type: int
    in_use: int

    @property
    def devices(self) -> int:
        return self.in_use


@dataclass(frozen=True)
class ChannelReportWord:
    """A z/Architecture channel report word (32 bits).

    Bit 0 is zero, bit 1 S (solicited), bit 2 R (overflow: CRWs were lost),
    bit 3 C (chaining: another CRW of the same report follows), bits 4-7 the
    reporting-source code, bit 8 A (ancillary report), bits 10-15 the
    error-recovery code and bits 16-31 the reporting-source id.
    """

    rsc: int
    erc: int
    rsid: int
    chaining: bool = False
    solicited: bool = False
    overflow: bool = False
    ancillary: bool = False

    def __post_init__(self) -> None:
        if not (0 <= self.rsc <= 0xF and 0 <= self.erc <= 0x3F and 0 <= self.rsid <= 0xFFFF):
            raise ValueError("CRW field out of range")

    @property
    def flags(self) -> int:
        """The upper halfword, QEMU's ``CRW.flags``."""
        return (
            (0x4000 if self.solicited else 0)
            | (0x2000 if self.overflow else 0)
            | (0x1000 if self.chaining else 0)
            | (self.rsc << 8)
            | (0x0080 if self.ancillary else 0)
            | self.erc
        )

    def encode(self) -> int:
        return (self.flags << 16) | self.rsid

    def to_bytes(self) -> bytes:
        """Big-endian, as STORE CHANNEL REPORT WORD stores it."""
        return self.encode().to_bytes(4, "big")

    @classmethod
    def decode(cls, word: int) -> "ChannelReportWord":
        if not 0 <= word <= 0xFFFFFFFF:
            raise ValueError("a CRW is 32 bits")
        flags = word >> 16
        return cls(
            rsc=(flags >> 8) & 0xF,
            erc=flags & 0x3F,
            rsid=word & 0xFFFF,
            chaining=bool(flags & 0x1000),
            solicited=bool(flags & 0x4000),
            overflow=bool(flags & 0x2000),
            ancillary=bool(flags & 0x0080),
        )


# ---------------------------------------------------------------------------
# Internal bookkeeping
# ---------------------------------------------------------------------------
class _SubchSet:
    """One subchannel set of one image: used schids and devnos as byte maps."""

    __slots__ = ("schid_used", "devno_used", "by_schid", "by_devno")

    def __init__(self, max_schid: int):
        self.schid_used = bytearray(max_schid + 1)
        self.devno_used = bytearray(MAX_DEVNO + 1)
        self.by_schid: dict[int, Subchannel] = {}
        self.by_devno: dict[int, Subchannel] = {}

    def first_free_schid(self) -> int | None:
        i = self.schid_used.find(0)
        return None if i < 0 else i

    def first_free_devno(self, start: int, modulus: int) -> int | None:
        """QEMU's css_find_free_devno: from ``start`` upwards, wrapping modulo ``modulus``."""
        start %= modulus
        i = self.devno_used.find(0, start, modulus)
        if i < 0 and start:
            i = self.devno_used.find(0, 0, start)
        return None if i < 0 else i


class _ChpInfo:
    __slots__ = ("type", "is_virtual", "users")

    def __init__(self, type_: int, is_virtual: bool):
        self.type = type_
        self.is_virtual = is_virtual
        self.users = 0


class _CssImage:
    __slots__ = ("sets", "chpids")

    def __init__(self) -> None:
        self.sets: list[_SubchSet | None] = [None] * (MAX_SSID + 1)
        self.chpids: dict[int, _ChpInfo] = {}


# ---------------------------------------------------------------------------
# The channel subsystem
# ---------------------------------------------------------------------------
class ChannelSubsystem:
    """Subchannel, device number and channel path assignment, guest visibility and CRWs.

    ``mcsse_enabled``/``mss_enabled`` say what the guest has enabled (CHSC
    "set domain attributes"); they may be changed at any time.
    """

    def __init__(
        self,
        mcsse_enabled: bool = False,
        mss_enabled: bool = False,
        *,
        max_pending_crws: int | None = 4096,
        on_crw_pending: Callable[[], None] | None = None,
        max_schid: int = MAX_SCHID,
        max_devno: int = MAX_DEVNO,
    ):
        """``max_schid``/``max_devno`` shrink the subchannel sets for tests only.

        ``max_devno`` is the modulus of the automatic device number search, as
        MAX_DEVNO is in QEMU: numbers from ``max_devno`` up are never chosen
        automatically (explicit ones up to 0xffff still are accepted).
        ``on_crw_pending`` is called when QEMU would inject a CRW-pending machine
        check: when a CRW is queued while the guest has not yet been told.
        """
        if not (0 <= max_schid <= MAX_SCHID and 1 <= max_devno <= MAX_DEVNO):
            raise ValueError("bad CSS limits")
        self.mcsse_enabled = mcsse_enabled
        self.mss_enabled = mss_enabled
        self.default_cssid = VIRTUAL_CSSID
        self.max_pending_crws = max_pending_crws
        self.on_crw_pending = on_crw_pending
        self._max_schid = max_schid
        self._devno_modulus = max_devno
        self._images: dict[int, _CssImage] = {}
        self._crws: deque[ChannelReportWord] = deque()
        self._crws_lost = False
        self._do_crw_mchk = True
        self._count = 0

    # -- guest facilities ---------------------------------------------------
    def enable_mcsse(self) -> None:
        self.mcsse_enabled = True

    def enable_mss(self) -> None:
        self.mss_enabled = True

    def reset(self) -> None:
        """Subsystem reset (QEMU css_reset): drop pending CRWs, forget MCSS-E/MSS."""
        self._crws.clear()
        self._crws_lost = False
        self._do_crw_mchk = True
        self.mcsse_enabled = False
        self.mss_enabled = False

    # -- assignment -----------------------------------------------------------
    def assign(
        self,
        owner: object,
        devno: CssDevId | None,
        chpid_type: int,
        hotplugged: bool,
        *,
        notify: bool = True,
        share_chpid: bool = False,
        host_chpids: Sequence[tuple[int, int]] | None = None,
    ) -> Subchannel:
        """Give ``owner`` a subchannel (and a device number if ``devno`` is None).

        ``chpid_type`` CHPID_TYPE_VIRTIO puts the subchannel on CHPID 0x00; any
        other type defines a new CHPID (``share_chpid`` reuses one of the same
        type in that image if there is one).  ``host_chpids`` gives a
        passthrough subchannel's real (chpid, type) pairs instead; CHPID 0x00
        there means "no path", as in QEMU.

        With ``notify`` (the default) the CRWs for a hot-plugged, visible
        subchannel are queued now; pass False and call :meth:`notify_added`
        once the device is really there if it can still fail.

        Raises GenericError with QEMU's text; a failed call changes nothing.
        """
        if devno is not None:
            cssid, ssid, number = devno.cssid, devno.ssid, devno.devno
            sset = self._peek_set(cssid, ssid)
            if sset is not None and sset.devno_used[number]:
                raise GenericError(f"Device {devno} already exists")
            schid = 0 if sset is None else sset.first_free_schid()
            if schid is None:
                raise GenericError(f"No free subchannel found for {devno}")
        else:
            cssid, ssid, schid, number = self._find_auto()

        chpids, chp_new = self._choose_chpids(cssid, chpid_type, share_chpid, host_chpids)

        # -- nothing can fail from here on: commit --
        image = self._image(cssid)
        sset = image.sets[ssid]
        if sset is None:
            sset = image.sets[ssid] = _SubchSet(self._max_schid)
        for chpid, (ctype, virtual) in chp_new.items():
            image.chpids[chpid] = _ChpInfo(ctype, virtual)
        for chpid in chpids:
            image.chpids[chpid].users += 1
        first = chpids[0] if chpids else 0
        sch = Subchannel(
            cssid=cssid,
            ssid=ssid,
            schid=schid,
            devno=number,
            chpid=first,
            chpid_type=image.chpids[first].type if first in image.chpids else chpid_type,
            owner=owner,
            hotplugged=bool(hotplugged),
            chpids=tuple(chpids),
        )
        sset.schid_used[schid] = 1
        sset.devno_used[number] = 1
        sset.by_schid[schid] = sch
        sset.by_devno[number] = sch
        self._count += 1
        if notify and hotplugged:
            self._generate_sch_crws(cssid, ssid, schid)
        return sch

    def notify_added(self, sch: Subchannel) -> None:
        """Queue the CRWs for a hot-plugged subchannel (after ``assign(notify=False)``)."""
        if self._owned(sch) and sch.hotplugged:
            self._generate_sch_crws(sch.cssid, sch.ssid, sch.schid)

    def release(self, sch: Subchannel, *, notify: bool = True) -> None:
        """Free the subchannel and its device number.

        ``notify`` (device_del) queues CRWs if the guest can see the subchannel,
        whether or not it was hot-plugged, as QEMU's unplug does; pass False
        when undoing a device that never came up.  CHPIDs stay defined.
        """
        if not self._owned(sch):
            raise ValueError(f"{sch!r} is not assigned in this channel subsystem")
        image = self._images[sch.cssid]
        sset = image.sets[sch.ssid]
        assert sset is not None
        if notify:
            self._generate_sch_crws(sch.cssid, sch.ssid, sch.schid)
        sset.schid_used[sch.schid] = 0
        sset.devno_used[sch.devno] = 0
        del sset.by_schid[sch.schid]
        del sset.by_devno[sch.devno]
        for chpid in sch.chpids:
            info = image.chpids.get(chpid)
            if info is not None and info.users:
                info.users -= 1
        self._count -= 1

    def _owned(self, sch: Subchannel) -> bool:
        return self.lookup_schid(sch.cssid, sch.ssid, sch.schid) is sch

    def _peek_set(self, cssid: int, ssid: int) -> _SubchSet | None:
        image = self._images.get(cssid)
        return None if image is None else image.sets[ssid]

    def _image(self, cssid: int) -> _CssImage:
        image = self._images.get(cssid)
        if image is None:
            image = self._images[cssid] = _CssImage()
        return image

    def _find_auto(self) -> tuple[int, int, int, int]:
        """(cssid, ssid, schid, devno) the way QEMU's css_create_sch picks them."""
        cssid = self.default_cssid
        while True:
            for ssid in range(MAX_SSID + 1):
                sset = self._peek_set(cssid, ssid)
                if sset is None:
                    return cssid, ssid, 0, 0
                schid = sset.first_free_schid()
                if schid is None:
                    continue
                devno = sset.first_free_devno(schid, self._devno_modulus)
                if devno is None:
                    continue
                return cssid, ssid, schid, devno
            cssid = (cssid + 1) % _CSSID_MODULUS
            if cssid == self.default_cssid:
                raise GenericError("Virtual channel subsystem is full!")

    def _choose_chpids(
        self,
        cssid: int,
        chpid_type: int,
        share: bool,
        host_chpids: Sequence[tuple[int, int]] | None,
    ) -> tuple[list[int], dict[int, tuple[int, bool]]]:
        """The subchannel's CHPIDs and the CHPIDs to define (chpid -> (type, virtual))."""
        image = self._images.get(cssid)
        defined: dict[int, _ChpInfo] = {} if image is None else image.chpids
        if host_chpids is not None:
            chpids: list[int] = []
            new: dict[int, tuple[int, bool]] = {}
            for chpid, ctype in list(host_chpids)[:8]:
                if not 0 <= chpid <= MAX_CHPID:
                    raise ValueError(f"bad chpid {chpid!r}")
                if chpid and chpid not in chpids:
                    chpids.append(chpid)
                    if chpid not in defined:
                        new[chpid] = (ctype, False)
            return chpids, new
        if chpid_type == CHPID_TYPE_VIRTIO:
            chpid = VIRTIO_CCW_CHPID
            return [chpid], ({} if chpid in defined else {chpid: (chpid_type, True)})
        if share:
            for chpid in sorted(defined):
                info = defined[chpid]
                if chpid != VIRTIO_CCW_CHPID and info.is_virtual and info.type == chpid_type:
                    return [chpid], {}
        for chpid in range(MAX_CHPID + 1):
            if chpid != VIRTIO_CCW_CHPID and chpid not in defined:
                return [chpid], {chpid: (chpid_type, True)}
        raise GenericError("No available chpid to use.")

    # -- lookups --------------------------------------------------------------
    def lookup_devno(self, devid: CssDevId) -> Subchannel | None:
        sset = self._peek_set(devid.cssid, devid.ssid)
        return None if sset is None else sset.by_devno.get(devid.devno)

    def lookup_schid(self, cssid: int, ssid: int, schid: int) -> Subchannel | None:
        if not (0 <= ssid <= MAX_SSID):
            return None
        sset = self._peek_set(cssid, ssid)
        return None if sset is None else sset.by_schid.get(schid)

    def lookup_guest(self, cssid: int, ssid: int, schid: int, m: bool | None = None) -> Subchannel | None:
        """The subchannel a guest means by ``cssid.ssid.schid`` (only if it can see it).

        ``m`` is the MCSS-E bit of the guest's subsystem id; by default it is
        what the guest has enabled.  Without it, cssid 0 means image 0xfe.
        """
        if m is None:
            m = self.mcsse_enabled
        real = self.default_cssid if (not m and cssid == 0) else cssid
        sch = self.lookup_schid(real, ssid, schid)
        return sch if sch is not None and self.is_visible(sch) else None

    def devno_used(self, devid: CssDevId) -> bool:
        return self.lookup_devno(devid) is not None

    def subchannels(self) -> list[Subchannel]:
        """Every subchannel, sorted by (cssid, ssid, schid)."""
        out: list[Subchannel] = []
        for cssid in sorted(self._images):
            for sset in self._images[cssid].sets:
                if sset is not None and sset.by_schid:
                    out.extend(sset.by_schid[k] for k in sorted(sset.by_schid))
        return out

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Subchannel]:
        return iter(self.subchannels())

    # -- guest view -------------------------------------------------------------
    def is_visible(self, sch: Subchannel) -> bool:
        """QEMU css_subch_visible."""
        if sch.ssid > 0 and not self.mss_enabled:
            return False
        if sch.cssid != self.default_cssid:
            return self.mcsse_enabled
        return True

    def _guest_cssid(self, cssid: int) -> int:
        if self.mcsse_enabled:
            return cssid
        return 0 if cssid == self.default_cssid else cssid

    def guest_view(self, sch: Subchannel) -> CssDevId | None:
        """The device's bus id as the guest sees it (``0.0.0042`` for fe.0.0042), or None if hidden."""
        if not self.is_visible(sch):
            return None
        return CssDevId(self._guest_cssid(sch.cssid), sch.ssid, sch.devno)

    def guest_subch_id(self, sch: Subchannel) -> CssDevId | None:
        """The subchannel id as the guest sees it (``0.0.0001`` for fe.0.0001), or None if hidden."""
        if not self.is_visible(sch):
            return None
        return CssDevId(self._guest_cssid(sch.cssid), sch.ssid, sch.schid)

    # -- channel paths ----------------------------------------------------------
    def channel_paths(self) -> list[ChannelPath]:
        """Every defined CHPID: (cssid, chpid, type, in_use), sorted."""
        out = []
        for cssid in sorted(self._images):
            chpids = self._images[cssid].chpids
            for chpid in sorted(chpids):
                info = chpids[chpid]
                out.append(ChannelPath(cssid, chpid, info.type, info.users))
        return out

    def chpid_is_virtual(self, cssid: int, chpid: int) -> bool | None:
        """None if the CHPID is not defined."""
        image = self._images.get(cssid)
        info = None if image is None else image.chpids.get(chpid)
        return None if info is None else info.is_virtual

    # -- channel report words -----------------------------------------------------
    @property
    def pending_crws(self) -> tuple[ChannelReportWord, ...]:
        return tuple(self._crws)

    @property
    def crws_lost(self) -> bool:
        """A CRW was dropped and the next one queued will carry the overflow bit."""
        return self._crws_lost

    def pop_crw(self) -> ChannelReportWord | None:
        """STORE CHANNEL REPORT WORD: the oldest CRW, or None (which re-arms the machine check)."""
        if self._crws:
            return self._crws.popleft()
        self._do_crw_mchk = True
        return None

    def undo_pop(self, crw: ChannelReportWord) -> None:
        """Put a CRW back at the head of the queue (QEMU css_undo_stcrw)."""
        self._crws.appendleft(crw)

    def queue_crw(self, rsc: int, erc: int, solicited: bool, chain: bool, rsid: int) -> None:
        """QEMU css_queue_crw."""
        overflow = self._crws_lost
        self._crws_lost = False
        crw = ChannelReportWord(rsc, erc, rsid, chaining=chain, solicited=solicited, overflow=overflow)
        if self.max_pending_crws is not None and len(self._crws) >= self.max_pending_crws:
            self._crws_lost = True
            return
        self._crws.append(crw)
        if self._do_crw_mchk:
            self._do_crw_mchk = False
            if self.on_crw_pending is not None:
                self.on_crw_pending()

    def _generate_sch_crws(self, cssid: int, ssid: int, schid: int) -> None:
        """QEMU css_generate_sch_crws for a visible subchannel (the hot-plug check is the caller's)."""
        guest_cssid = self._guest_cssid(cssid)
        if ssid > 0 and not self.mss_enabled:
            return
        if not self.mcsse_enabled and cssid != self.default_cssid:
            return
        chain = self.mss_enabled or self.mcsse_enabled
        self.queue_crw(CRW_RSC_SUBCH, CRW_ERC_IPI, False, chain, schid)
        if chain:
            self.queue_crw(CRW_RSC_SUBCH, CRW_ERC_IPI, False, False, (guest_cssid << 8) | (ssid << 4))
