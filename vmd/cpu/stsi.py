"""STORE SYSTEM INFORMATION (B27D), as QEMU 7.2 answers it under TCG.

General register 0 holds the function code (bits 32-35: 0 asks for the current
configuration level, 1-3 for the basic-machine, LPAR and virtual-machine level)
and selector 1 (bits 56-63); general register 1 selector 2 (bits 48-63).  The
checks come in QEMU's order: a function code above 3 is condition code 3 and
nothing else is looked at (so 15.1.x, the topology blocks, is cc 3: QEMU's TCG
has no configuration-topology facility); reserved bits in either register are a
specification exception; function code 0 sets general register 0 to level 3,
"virtual machine", as QEMU reports it to Linux; an operand that is not on a 4 KiB
boundary is a specification exception.  Then the 4 KiB SYSIB is stored whole
(zeros where nothing is reported) with condition code 0, or condition code 3
for a selector combination without a block.

The blocks are QEMU's: manufacturer, model, sequence and plant "QEMU"; the
machine type in 1.1.1 is the CPU model's type; 1.2.2, 2.2.2 and 3.2.2 count the
possible CPUs (``maxcpus``), the configured ones and the reserved rest; 3.2.2
names the virtual machine (``-name``: the first 8 bytes in EBCDIC, the whole
name padded with zeros as the UTF-8 extended name; "TCGguest" without one) and
carries the ``-uuid``.  Importing this module registers the instruction in
:data:`vmd.cpu.vcpu.INSTRUCTIONS`.
"""

from __future__ import annotations

import struct
import uuid as uuid_mod
from dataclasses import dataclass

from vmd.cpu import arch
from vmd.cpu.vcpu import INSTRUCTIONS, ProgramInterruption, Vcpu, _s_addr, _set_cc

SYSIB_SIZE = 4096
R0_FUNCTION_CODE = 0xF0000000
R0_RESERVED = 0x0FFFFF00
R0_SELECTOR_1 = 0xFF
R1_RESERVED = 0xFFFF0000
R1_SELECTOR_2 = 0xFFFF
#: function code 0 answers with the level of the configuration: 3, a virtual machine
LEVEL_VIRTUAL_MACHINE = 3
#: QEMU's 1.2.2 capability value and the capability adjustment factor of 2.2.2 and 3.2.2
CAPABILITY = 0x443AFC29
ADJUSTMENT_FACTOR = 1000
#: 3.2.2 extended-name encoding: UTF-8
EXT_NAME_UTF8 = 2


def ebcdic(text: str | bytes) -> bytes:
    """ASCII to EBCDIC as QEMU converts (code page 037 but for LF and FS); bytes beyond ASCII
    become 0x3F."""
    data = text.encode() if isinstance(text, str) else text
    out = bytearray()
    for byte in data:
        if byte == 0x0A:
            out.append(0x15)
        elif byte == 0x1C:
            out.append(0x22)
        elif byte < 0x80:
            out += chr(byte).encode("cp037")
        else:
            out.append(0x3F)
    return bytes(out)


@dataclass(frozen=True)
class SystemInformation:
    """What STSI reports about the machine; ``store`` is the CPU's ``MachineHooks.stsi``."""

    cpu_type: int
    configured_cpus: int
    total_cpus: int
    name: str | None = None
    uuid: uuid_mod.UUID | None = None

    def block(self, cpu_address: int, function_code: int, selector_1: int, selector_2: int) -> bytes | None:
        """The SYSIB for a function code (1-3) and selectors, or None (condition code 3)."""
        sysib = bytearray(SYSIB_SIZE)
        reserved = self.total_cpus - self.configured_cpus
        counts = struct.pack(">HHHH", self.total_cpus, self.configured_cpus, 0, reserved)
        which = (function_code, selector_1, selector_2)
        if which == (1, 1, 1):  # basic-machine configuration
            sysib[32:48] = ebcdic("QEMU".ljust(16))
            sysib[48:52] = ebcdic(f"{self.cpu_type:X}"[:4].ljust(4, "\0"))
            sysib[64:80] = ebcdic("QEMU".ljust(16))
            sysib[80:96] = ebcdic("QEMU".ljust(16))
            sysib[96:100] = ebcdic("QEMU")
        elif which in ((1, 2, 1), (2, 2, 1)):  # basic-machine CPU, LPAR CPU
            sysib[80:96] = ebcdic("QEMU" * 4)
            sysib[96:100] = ebcdic("QEMU")
            struct.pack_into(">H", sysib, 102, cpu_address)
        elif which == (1, 2, 2):  # basic-machine CPUs
            struct.pack_into(">I", sysib, 32, CAPABILITY)
            sysib[36:44] = counts
        elif which == (2, 2, 2):  # LPAR CPUs: all of them dedicated
            sysib[35] = 0x80
            sysib[36:44] = counts
            sysib[44:52] = ebcdic("QEMU    ")
            struct.pack_into(">I", sysib, 52, ADJUSTMENT_FACTOR)
            struct.pack_into(">H", sysib, 72, self.configured_cpus)
        elif which == (3, 2, 2):  # virtual-machine CPUs: one level, this machine
            sysib[31] = 1
            sysib[36:44] = counts
            if self.name is not None:
                name = self.name.encode()
                sysib[44:52] = ebcdic(name[:8]).ljust(8, b"\x40")
                sysib[2048:2048 + 256] = name[:256].ljust(256, b"\0")
            else:
                sysib[44:52] = ebcdic("TCGguest")
                sysib[2048:2048 + 8] = b"TCGguest"
            struct.pack_into(">I", sysib, 52, ADJUSTMENT_FACTOR)
            sysib[56:72] = ebcdic("KVM/Linux".ljust(16))  # Linux tells KVM from z/VM by it
            sysib[75] = EXT_NAME_UTF8
            if self.uuid is not None:
                sysib[80:96] = self.uuid.bytes
        else:
            return None
        return bytes(sysib)

    def store(self, cpu: Vcpu, function_code: int, selector_1: int, selector_2: int, address: int) -> int:
        """Store the SYSIB at a real address; the condition code."""
        sysib = self.block(cpu.address, function_code, selector_1, selector_2)
        if sysib is None:
            return 3
        cpu.write(address, sysib)
        return 0


def i_stsi(cpu: Vcpu, text: bytes):
    address = _s_addr(cpu, text)
    r0 = cpu.engine.gpr(0)
    r1 = cpu.engine.gpr(1)
    function_code = (r0 & R0_FUNCTION_CODE) >> 28
    if function_code > LEVEL_VIRTUAL_MACHINE:
        _set_cc(cpu, 3)  # no other check is made
        return
    if r0 & R0_RESERVED or r1 & R1_RESERVED:
        raise ProgramInterruption(arch.PGM_SPECIFICATION)
    if function_code == 0:
        cpu.engine.set_gpr(0, LEVEL_VIRTUAL_MACHINE << 28)  # the whole register, as QEMU sets it
        _set_cc(cpu, 0)
        return
    if address & (SYSIB_SIZE - 1):
        raise ProgramInterruption(arch.PGM_SPECIFICATION)
    store = cpu.hooks.stsi
    cc = 3 if store is None else store(cpu, function_code, r0 & R0_SELECTOR_1, r1 & R1_SELECTOR_2, address)
    _set_cc(cpu, cc)


INSTRUCTIONS[(0xB2, 0x7D)] = i_stsi
