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


def _subchannel(cpu: Vcpu):
    """The subchannel GR1 names, or None when none is there (cc 3).

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
    ssid = (sid >> 17) & 3
    schid = sid & 0xFFFF
    return cpu.io.css.lookup_guest(cssid, ssid, schid, m)


def i_stsch(cpu: Vcpu, text: bytes):
    addr = _aligned(_s_addr(cpu, text), 4)
    sch = _subchannel(cpu)
    if sch is None:
        _set_cc(cpu, 3)
        return
    cpu.write(addr, cpu.io.store_schib(sch))
    _set_cc(cpu, 0)


def i_msch(cpu: Vcpu, text: bytes):
    addr = _aligned(_s_addr(cpu, text), 4)
    schib = cpu.read(addr, 52)
    sch = _subchannel(cpu)
    if sch is None:
        _set_cc(cpu, 3)
        return
    _set_cc(cpu, cpu.io.modify(sch, schib))


def i_ssch(cpu: Vcpu, text: bytes):
    addr = _aligned(_s_addr(cpu, text), 4)
    orb = cpu.read(addr, 32)
    sch = _subchannel(cpu)
    if sch is None:
        _set_cc(cpu, 3)
        return
    if orb[8] & 0x80:
        # the channel-program address must be a 31-bit address (QEMU: operand exception)
        raise ProgramInterruption(arch.PGM_OPERAND)
    _set_cc(cpu, cpu.io.start(sch, orb))


def i_tsch(cpu: Vcpu, text: bytes):
    addr = _aligned(_s_addr(cpu, text), 4)
    sch = _subchannel(cpu)
    if sch is None:
        _set_cc(cpu, 3)
        return
    cc, irb = cpu.io.test(sch)
    cpu.write(addr, irb)
    _set_cc(cpu, cc)


def i_tpi(cpu: Vcpu, text: bytes):
    addr = _s_addr(cpu, text)
    item = cpu.io.take(cpu.engine.cr(6))
    if item is None:
        _set_cc(cpu, 0)
        return
    words = item.sid.to_bytes(4, "big") + item.intparm.to_bytes(4, "big")
    if addr == 0:
        cpu.lowcore_write(arch.LC_SUBCHANNEL_ID, words + (item.isc << 27).to_bytes(4, "big"))
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
