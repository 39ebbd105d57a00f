"""The channel I/O instructions: register decoding in front of :mod:`vmd.machine.channel`.

STSCH, MSCH, SSCH, TSCH, TPI, CSCH, HSCH, XSCH, RSCH and STCRW take the
subsystem-identification word in general register 1 (bit 15 one, the M bit
selecting MCSS-E addressing, the subchannel-set id, the subchannel number);
a malformed one is an operand exception, an absent subchannel condition code 3.
Each handler registers itself in the CPU's instruction table on import.
"""

from __future__ import annotations

from vmd.cpu import arch
from vmd.cpu.vcpu import INSTRUCTIONS, ProgramInterruption, Vcpu, _aligned, _s_addr, _set_cc

SID_ONE = 0x00010000
SID_M = 0x00080000


def _sid(cpu: Vcpu) -> tuple[int, int, int, bool]:
    """GR1's subsystem id as (cssid, ssid, schid, m).

    :raises ProgramInterruption: operand exception for a malformed SID.
    """
    sid = cpu.engine.gpr(1) & 0xFFFFFFFF
    if not sid & SID_ONE:
        raise ProgramInterruption(arch.PGM_OPERAND)
    m = bool(sid & SID_M)
    cssid = sid >> 24
    if not m and cssid:
        raise ProgramInterruption(arch.PGM_OPERAND)
    if sid & 0x00F00000 & ~SID_M:
        raise ProgramInterruption(arch.PGM_OPERAND)
    return cssid, (sid >> 17) & 3, sid & 0xFFFF, m


def _subchannel(cpu: Vcpu):
    """The subchannel GR1 names, or None when none is there (cc 3)."""
    cssid, ssid, schid, m = _sid(cpu)
    return cpu.io.css.lookup_guest(cssid, ssid, schid, m)


def _with_subchannel(handler):
    """The common frame of STSCH/MSCH/SSCH/TSCH: the subsystem id, the operand, then the subchannel;
    an absent subchannel is condition code 3 for every one of them."""

    def run(cpu: Vcpu, text: bytes):
        cssid, ssid, schid, m = _sid(cpu)  # QEMU's order: SID, operand alignment, operand, subchannel
        addr = _aligned(_s_addr(cpu, text), 4)
        operand = handler.fetch(cpu, addr) if hasattr(handler, "fetch") else None
        sch = cpu.io.css.lookup_guest(cssid, ssid, schid, m)
        if sch is None:
            _set_cc(cpu, 3)
            return
        _set_cc(cpu, handler(cpu, sch, addr, operand))

    return run


@_with_subchannel
def i_stsch(cpu: Vcpu, sch, addr: int, _operand) -> int:
    cpu.write(addr, cpu.io.store_schib(sch))
    return 0


def _fetch_schib(cpu: Vcpu, addr: int) -> bytes:
    return cpu.read(addr, 52)


def i_msch_body(cpu: Vcpu, sch, addr: int, schib: bytes) -> int:
    return cpu.io.modify(sch, schib)


i_msch_body.fetch = _fetch_schib  # type: ignore[attr-defined]
i_msch = _with_subchannel(i_msch_body)


#: ORB bits that must be zero (word 1 bit 13, bits 26-30) and the MIDAW bit (25), which QEMU does not offer
ORB_CTRL0_INVALID = 0x0004
ORB_CTRL1_INVALID = 0x3E
ORB_CTRL1_MIDAW = 0x40


def _fetch_orb(cpu: Vcpu, addr: int) -> bytes:
    orb = cpu.read(addr, 32)
    ctrl0 = (orb[4] << 8) | orb[5]
    if ctrl0 & ORB_CTRL0_INVALID or orb[7] & (ORB_CTRL1_INVALID | ORB_CTRL1_MIDAW) or orb[8] & 0x80:
        # reserved bits, MIDAW, or a channel-program address beyond 31 bits: operand exception (QEMU)
        raise ProgramInterruption(arch.PGM_OPERAND)
    return orb


def i_ssch_body(cpu: Vcpu, sch, addr: int, orb: bytes) -> int:
    return cpu.io.start(sch, orb)


i_ssch_body.fetch = _fetch_orb  # type: ignore[attr-defined]
i_ssch = _with_subchannel(i_ssch_body)


@_with_subchannel
def i_tsch(cpu: Vcpu, sch, addr: int, _operand) -> int:
    cc, irb = cpu.io.test(sch)
    cpu.write(addr, irb)
    return cc


def i_tpi(cpu: Vcpu, text: bytes):
    addr = _s_addr(cpu, text)
    item = cpu.io.take(cpu.engine.cr(6))
    if item is None:
        _set_cc(cpu, 0)
        return
    words = item.sid.to_bytes(4, "big") + item.intparm.to_bytes(4, "big")
    if addr == 0:
        cpu.lowcore_write(arch.LC_SUBCHANNEL_ID, words + item.word.to_bytes(4, "big"))
    else:
        cpu.write(_aligned(addr, 4), words)
    _set_cc(cpu, 1)


def _simple(method: str):
    def handler(cpu: Vcpu, text: bytes):
        sch = _subchannel(cpu)
        if sch is None:
            _set_cc(cpu, 3)
            return
        _set_cc(cpu, getattr(cpu.io, method)(sch))

    return handler


def i_stcrw(cpu: Vcpu, text: bytes):
    addr = _aligned(_s_addr(cpu, text), 4)
    crw = cpu.io.pop_crw()
    if crw is None:
        cpu.write(addr, bytes(4))
        _set_cc(cpu, 1)
        return
    cpu.write(addr, crw.to_bytes())
    _set_cc(cpu, 0)


INSTRUCTIONS.update({
    (0xB2, 0x30): _simple("clear"),
    (0xB2, 0x31): _simple("halt"),
    (0xB2, 0x32): i_msch,
    (0xB2, 0x33): i_ssch,
    (0xB2, 0x34): i_stsch,
    (0xB2, 0x35): i_tsch,
    (0xB2, 0x36): i_tpi,
    (0xB2, 0x38): _simple("resume"),
    (0xB2, 0x39): i_stcrw,
    (0xB2, 0x76): _simple("cancel"),
})
