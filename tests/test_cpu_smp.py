"""Several vCPUs on one engine instance, prefixing, and SIGNAL PROCESSOR.

The unit tests build a small machine by hand: guest storage, one
UnicornEngine, a few Vcpus sharing it.  They drive SIGP orders directly
(vmd.cpu.sigp.signal) and through hand-encoded instructions run by the
engine (encodings checked with s390x-linux-gnu-objdump), and check the
answers QEMU 7.2 gives (target/s390x/sigp.c): condition codes, status bits
and the state each order leaves behind.

The guest tests run guests/src/sigp.c under vmd with -smp 2 and 3 and compare
the console transcript with qemu-system-s390x's on the same binary, byte for
byte, and the vCPU states QMP query-cpus-fast reports against QEMU's.
"""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, wait_for_socket
from vmd.cpu import arch, libunicorn

pytestmark = pytest.mark.skipif(not libunicorn.is_patched(),
                                reason="the patched libunicorn is not built (scripts/build-libunicorn)")

from vmd.cpu import sigp  # noqa: E402  (registers SIGP)
from vmd.cpu.unicorn_engine import EnvLayout, UnicornEngine  # noqa: E402
from vmd.cpu.vcpu import MachineHooks, PendingExternal, Vcpu  # noqa: E402
from vmd.machine.execution import DEFAULT_FACILITIES  # noqa: E402
from vmd.machine.memory import GuestMemory  # noqa: E402

MEMORY = 4 << 20
CODE = 0x10000
WAIT_PSW_AT = 0x9000          # where the run-ending wait PSW lives (real = absolute here)
PSW_64 = arch.PSW_64BIT
ENABLED_WAIT = PSW_64 | arch.PSW_WAIT | arch.PSW_EXT
ZERO_PSW = struct.pack(">QQ", 0, 0)

# hand-encoded instructions (s390x-linux-gnu-objdump)
SIGP = "ae234000"       # sigp %r2,%r3,0(%r4)
SIGP_245 = "ae245000"   # sigp %r2,%r4,0(%r5): status r2, parameter r3, CPU address r4
IPM = "b2220050"        # ipm %r5
LPSWE_R6 = "b2b26000"   # lpswe 0(%r6): the enabled wait at WAIT_PSW_AT ends every run
SPX = "b2107000"        # spx 0(%r7)
STPX = "b2118000"       # stpx 0(%r8)
MVI_180 = "92ab0180"    # mvi 384,0xab
ASI_LOOP = "eb012000006a" "a737fffd"  # asi 0(%r2),1; brctg %r3,.-6
AGHI_R7 = "a77b0001"    # aghi %r7,1


class Machine:
    """A few Vcpus on one engine, with hooks that record what they ask of the machine."""

    def __init__(self, n: int = 3):
        self.memory = GuestMemory(MEMORY)
        self.engine = UnicornEngine(self.memory)
        self.engine.set_facilities(DEFAULT_FACILITIES)
        self.events: list[tuple] = []
        self.cpus: list[Vcpu] = []
        hooks = MachineHooks(
            service_call=lambda cpu, command, sccb: 0,
            disabled_wait=lambda cpu, mask, addr: self.events.append(("disabled-wait", cpu.address)),
            stop_all=lambda cpu: self.events.append(("stop-all", cpu.address)),
            cpus=self.cpus)
        for address in range(n):
            regs = self.engine.add_cpu()
            cpu = Vcpu(address, regs, self.memory, hooks, facilities=DEFAULT_FACILITIES)
            regs.on_trap = cpu.on_trap
            cpu.reset()
            self.cpus.append(cpu)
        self.cpus[0].operating = True
        self.memory.write(WAIT_PSW_AT, struct.pack(">QQ", ENABLED_WAIT, 0))

    def lowcore(self, cpu: Vcpu, offset: int, n: int) -> bytes:
        return self.memory.read(cpu.prefix + offset, n)

    def run(self, cpu: Vcpu, code_hex: str, at: int = CODE, write: bool = True, **regs: int) -> int:
        """Run code ending in the enabled wait (supervisor, 64-bit); returns the cc IPM saw in r5.

        Slices that an order ends early (a kick) are resumed, as the runner would; a CPU that
        stopped itself stays right after its SIGP, and the cc is then the PSW's.
        """
        code = bytes.fromhex(code_hex + LPSWE_R6)
        if write:
            self.memory.write(at, code)
        for name, value in regs.items():
            cpu.engine.set_gpr(int(name[1:]), value)
        cpu.engine.set_gpr(6, WAIT_PSW_AT)
        cpu.operating = True
        cpu.load_psw(PSW_64, at)
        for _ in range(100):
            cpu.engine.run(2_000_000)
            if cpu.waiting or cpu.stop_order:
                break
        if cpu.stop_order:
            return (cpu.psw()[0] >> 44) & 3
        assert cpu.waiting, f"cpu {cpu.address} did not reach its wait (psw {cpu.psw()})"
        return (cpu.engine.gpr(5) >> 28) & 3

    def sigp(self, source: Vcpu, order: int, address: int, param: int = 0, r1: int = 0xAAAA_AAAA_5555_5555):
        """SIGP through the instruction: (cc, R1 afterwards)."""
        cc = self.run(source, SIGP_245 + IPM, r2=r1, r3=param, r4=address, r5=order)
        return cc, source.engine.gpr(2)


@pytest.fixture
def m() -> Machine:
    machine = Machine(3)
    yield machine
    machine.engine.close()


def order(m: Machine, code: int, target: int, param: int = 0, source: int = 0):
    return sigp.signal(m.cpus[source], code, target, param)


# -- one engine, several CPUs ------------------------------------------------------------------
def test_layout_is_calibrated_and_pinned(m):
    layout = m.engine.layout
    assert isinstance(layout, EnvLayout)
    assert layout.psa == layout.psw_mask + 56 and layout.cregs == layout.psw_mask + 96
    assert layout.env < layout.psw_mask < layout.size


def test_one_cpu_never_switches_contexts():
    machine = Machine(1)
    cpu = machine.cpus[0]
    for i in range(5):
        machine.run(cpu, AGHI_R7, write=i == 0)
    assert cpu.engine.gpr(7) == 5
    assert machine.engine.switches == 0
    machine.engine.close()


def test_each_cpu_keeps_its_registers_across_switches(m):
    a, b, c = m.cpus
    for cpu, start in ((a, 100), (b, 200), (c, 300)):
        cpu.engine.set_gpr(7, start)
        cpu.engine.set_cr(9, start)
    m.memory.write(CODE, bytes.fromhex(AGHI_R7 + LPSWE_R6))
    for _ in range(3):
        for cpu in (a, b, c):
            m.run(cpu, AGHI_R7, write=False)
    assert [cpu.engine.gpr(7) for cpu in (a, b, c)] == [103, 203, 303]
    assert [cpu.engine.cr(9) for cpu in (a, b, c)] == [100, 200, 300]
    assert m.engine.switches >= 8
    # a CPU's registers read the same whether it is the live one or not
    assert not a.engine.live and c.engine.live
    assert a.psw() == c.psw() == (ENABLED_WAIT, 0)
    assert [cpu.engine.gpr(6) for cpu in (a, b, c)] == [WAIT_PSW_AT] * 3


def test_async_stops_never_split_an_instruction(m):
    """Patch (f): the slicer's asynchronous stops land at block starts only, so ASI (load, add,
    store) runs exactly once per iteration although the run is stopped thousands of times."""
    cpu = m.cpus[0]
    counter = 0x8000
    m.memory.write(counter, bytes(4))
    m.memory.write(CODE, bytes.fromhex(ASI_LOOP + LPSWE_R6))
    cpu.engine.set_gpr(2, counter)
    cpu.engine.set_gpr(3, 3_000_000)
    cpu.engine.set_gpr(6, WAIT_PSW_AT)
    cpu.load_psw(PSW_64, CODE)
    runs = 0
    while not cpu.waiting:
        cpu.engine.run(30)  # a 30 us slice: the slicer thread stops the run asynchronously
        runs += 1
    assert runs > 20
    assert m.memory.u32(counter) == 3_000_000


def test_a_slice_ends_even_when_its_first_stop_is_lost(m):
    """Unicorn drops an emu_stop that lands before emu_start has set the run up. The slicer
    repeats its stop until the run is over, so a slice stays bounded: here the first stop is
    dropped on purpose, and a loop of 10^9 ASIs must still end within its first run."""
    cpu = m.cpus[0]
    counter = 0x8000
    m.memory.write(counter, bytes(4))
    m.memory.write(CODE, bytes.fromhex(ASI_LOOP + LPSWE_R6))
    cpu.engine.set_gpr(2, counter)
    cpu.engine.set_gpr(3, 1_000_000_000)
    cpu.engine.set_gpr(6, WAIT_PSW_AT)
    cpu.load_psw(PSW_64, CODE)
    cpu.engine.run(1)  # starts the slicer thread
    slicer, dropped = m.engine._slicer, []
    stop = slicer._stop_engine
    slicer._stop_engine = lambda: dropped.append(True) if not dropped else stop()
    cpu.engine.run(1000)
    assert dropped and not cpu.waiting
    assert m.memory.u32(counter) < 1_000_000_000


def test_runner_takes_busy_cpus_in_turn(m):
    """CPU 0 spins on a flag that CPU 1 sets after a long busy loop: only the runner's time
    slices let CPU 1 finish, and CPU 0 then sees the flag (no SIGP, no interruption involved)."""
    from vmd.cpu.runner import CpuRunner

    a, b, _ = m.cpus
    counter, flag = 0x8000, 0x8100
    spin = "95004000" "a784fffe"            # cli 0(%r4),0; je .-4
    busy = ASI_LOOP + "92014000"            # the ASI loop; mvi 0(%r4),1
    m.memory.write(0x11000, bytes.fromhex(busy + LPSWE_R6))
    m.memory.write(0x12000, bytes.fromhex(spin + LPSWE_R6))
    for cpu, at in ((a, 0x12000), (b, 0x11000)):
        cpu.engine.set_gpr(2, counter)
        cpu.engine.set_gpr(3, 20_000_000)
        cpu.engine.set_gpr(4, flag)
        cpu.engine.set_gpr(6, WAIT_PSW_AT)
        cpu.operating = True
        cpu.load_psw(PSW_64, at)
    runner = CpuRunner(m.cpus)
    m.engine.on_kick = runner.wake
    runner.start()
    runner.resume()
    deadline = time.monotonic() + 60
    while not (a.waiting and b.waiting) and time.monotonic() < deadline:
        time.sleep(0.01)
    runner.shutdown()
    assert runner.error is None
    assert a.waiting and b.waiting
    assert m.memory.u32(counter) == 20_000_000 and m.memory.u8(flag) == 1
    assert m.engine.switches >= 2


# -- prefixing -------------------------------------------------------------------------------
def test_spx_moves_the_engines_lowcore_and_stpx_reads_it(m):
    cpu = m.cpus[0]
    prefix = 0x20000
    m.memory.write(0x9100, prefix.to_bytes(4, "big"))
    m.run(cpu, SPX + MVI_180 + STPX, r7=0x9100, r8=0x9200)
    assert cpu.prefix == prefix and cpu.engine.prefix() == prefix
    assert m.memory.u8(prefix + 0x180) == 0xAB      # the guest's store went through the prefix
    assert m.memory.u8(0x180) == 0
    assert m.memory.u32(0x9200) == prefix           # STPX
    # vmd's own lowcore accesses follow: a program interruption lands in the new lowcore
    m.memory.write(prefix + arch.LC_PGM_NEW_PSW, struct.pack(">QQ", ENABLED_WAIT, 0x30000))
    m.memory.write(0x9100, MEMORY.to_bytes(4, "big"))
    m.run(cpu, SPX, r7=0x9100)                      # beyond storage: addressing exception
    assert m.memory.u16(prefix + arch.LC_PGM_CODE) == arch.PGM_ADDRESSING
    assert cpu.psw()[1] == 0x30000 and cpu.prefix == prefix


def test_each_cpu_sees_its_own_prefix(m):
    a, b, _ = m.cpus
    assert order(m, arch.SIGP_SET_PREFIX, 1, 0x40000) == sigp.ACCEPTED
    assert b.prefix == 0x40000 and b.engine.prefix() == 0x40000
    m.run(b, MVI_180 + STPX, r8=0x9300)
    assert m.memory.u8(0x40180) == 0xAB and m.memory.u32(0x9300) == 0x40000
    m.memory.write(0x180, b"\0")
    m.run(a, STPX, r8=0x9310)
    assert m.memory.u32(0x9310) == 0 and m.memory.u8(0x180) == 0


def test_prefixed_storage_access_by_vmd_is_split_at_the_swap(m):
    cpu = m.cpus[0]
    cpu.set_prefix(0x20000)
    m.memory.write(0x20000 + 0x1FF8, b"L" * 8)      # the end of the lowcore (real 0x1ff8)
    m.memory.write(0x2000, b"R" * 8)                # real 0x2000 is absolute 0x2000
    assert cpu.read(0x1FF8, 16) == b"L" * 8 + b"R" * 8
    cpu.write(0x1FFC, b"abcdefgh")
    assert m.memory.read(0x21FFC, 4) == b"abcd" and m.memory.read(0x2000, 4) == b"efgh"
    assert cpu.read(0x20000, 4) == m.memory.read(0, 4)  # the prefix area shows absolute 0


# -- SIGP: the instruction ------------------------------------------------------------------------
def test_sigp_status_goes_to_the_low_half_of_r1_and_cc_1(m):
    cc, r1 = m.sigp(m.cpus[0], arch.SIGP_SENSE, 1)
    assert cc == 1 and r1 == 0xAAAA_AAAA_0000_0040   # stopped; bits 0-31 kept
    cc, r1 = m.sigp(m.cpus[0], arch.SIGP_SENSE, 0)
    assert cc == 0 and r1 == 0xAAAA_AAAA_5555_5555   # accepted: R1 untouched


def test_sigp_cpu_address_is_the_low_16_bits_of_r3_and_unknown_cpus_give_cc_3(m):
    cc = m.run(m.cpus[0], SIGP + IPM, r2=0, r3=0xFFFF_0001, r4=arch.SIGP_SENSE)
    assert cc == 1  # CPU 1
    assert m.run(m.cpus[0], SIGP + IPM, r2=0, r3=3, r4=arch.SIGP_SENSE) == 3
    assert m.run(m.cpus[0], SIGP + IPM, r2=0, r3=0xFFFF, r4=arch.SIGP_SENSE) == 3


def test_sigp_parameter_is_r1_plus_1_for_an_even_r1_and_r1_for_an_odd_one(m):
    # sigp %r2,%r3,0(%r4): parameter from r3 (and r3 is also the address register here)
    cc = m.run(m.cpus[0], SIGP + IPM, r2=0, r3=1, r4=arch.SIGP_SET_PREFIX)
    assert cc == 0 and m.cpus[1].prefix == 0       # r3 = 1 -> prefix 0 (bits below 8K dropped)
    # sigp %r3,%r4,0(%r5) with odd r1: the parameter is r3 itself
    code = "ae345000" + IPM
    cc = m.run(m.cpus[0], code, r3=0x50000 | 2, r4=2, r5=arch.SIGP_SET_PREFIX)
    assert cc == 0 and m.cpus[2].prefix == 0x50000


def test_sigp_order_code_is_the_low_byte_of_the_address(m):
    cc, r1 = m.sigp(m.cpus[0], 0x1200 | arch.SIGP_SENSE, 1)
    assert (cc, r1 & 0xFFFFFFFF) == (1, arch.SIGP_STAT_STOPPED)


def test_sigp_in_problem_state_is_a_privileged_operation(m):
    cpu = m.cpus[0]
    m.memory.write(arch.LC_PGM_NEW_PSW, struct.pack(">QQ", ENABLED_WAIT, 0x30000))
    m.memory.write(CODE, bytes.fromhex(SIGP))
    cpu.load_psw(PSW_64 | arch.PSW_PROBLEM, CODE)
    cpu.engine.run(1_000_000)
    assert m.memory.u16(arch.LC_PGM_CODE) == arch.PGM_PRIVILEGED


# -- SIGP: the orders ---------------------------------------------------------------------------
@pytest.mark.parametrize("code", [0x00, 0x07, 0x08, 0x0A, 0x0F, 0x10, 0x11, 0x14, 0x16, 0xFF])
def test_unassigned_orders_are_invalid(m, code):
    assert order(m, code, 1) == (1, arch.SIGP_STAT_INVALID_ORDER)


def test_sense(m):
    assert order(m, arch.SIGP_SENSE, 0) == sigp.ACCEPTED
    assert order(m, arch.SIGP_SENSE, 1) == (1, arch.SIGP_STAT_STOPPED)
    assert order(m, arch.SIGP_SENSE, 3) == (3, None)
    m.cpus[1].operating = True
    assert order(m, arch.SIGP_SENSE, 1) == sigp.ACCEPTED


def test_external_call_one_pending_at_a_time(m):
    assert order(m, arch.SIGP_EXTERNAL_CALL, 1) == sigp.ACCEPTED
    assert order(m, arch.SIGP_EXTERNAL_CALL, 1, source=2) == (1, arch.SIGP_STAT_EXT_CALL_PENDING)
    assert order(m, arch.SIGP_SENSE, 1) == (1, arch.SIGP_STAT_EXT_CALL_PENDING | arch.SIGP_STAT_STOPPED)
    target = m.cpus[1]
    assert order(m, arch.SIGP_START, 1) == sigp.ACCEPTED
    target.engine.set_cr(0, arch.CR0_EXTERNAL_CALL)
    target.load_psw(ENABLED_WAIT, 0x1234)
    assert target.deliver_pending()
    assert m.lowcore(target, arch.LC_CPU_ADDRESS, 4) == struct.pack(">HH", 0, arch.EXT_EXTERNAL_CALL)
    old = struct.unpack(">QQ", m.lowcore(target, arch.LC_EXT_OLD_PSW, 16))
    assert old == (ENABLED_WAIT, 0x1234)            # the old PSW keeps the wait bit
    assert order(m, arch.SIGP_SENSE, 1) == sigp.ACCEPTED


def test_emergency_signals_one_per_sender_lowest_address_first(m):
    target = m.cpus[1]
    m.cpus[2].operating = True
    assert order(m, arch.SIGP_EMERGENCY_SIGNAL, 1, source=2) == sigp.ACCEPTED
    assert order(m, arch.SIGP_EMERGENCY_SIGNAL, 1, source=0) == sigp.ACCEPTED
    assert order(m, arch.SIGP_EMERGENCY_SIGNAL, 1, source=2) == sigp.ACCEPTED
    assert len(target.external) == 2
    target.operating = True
    target.engine.set_cr(0, arch.CR0_EMERGENCY_SIGNAL | arch.CR0_EXTERNAL_CALL)
    # QEMU stores no parameter word for an emergency signal: what was there stays
    m.memory.write(target.prefix + arch.LC_EXT_PARAMS, b"\x11\x22\x33\x44")
    seen = []
    for _ in range(2):
        target.load_psw(ENABLED_WAIT, 0x1000)
        assert target.deliver_pending()
        seen.append(struct.unpack(">IHH", m.lowcore(target, arch.LC_EXT_PARAMS, 8)))
    assert seen == [(0x11223344, 0, arch.EXT_EMERGENCY_SIGNAL), (0x11223344, 2, arch.EXT_EMERGENCY_SIGNAL)]


def test_emergency_signal_goes_before_external_call_and_service_signal(m):
    cpu = m.cpus[1]
    cpu.queue_external(PendingExternal(arch.EXT_SERVICE_SIGNAL, 0x99))
    order(m, arch.SIGP_EXTERNAL_CALL, 1)
    order(m, arch.SIGP_EMERGENCY_SIGNAL, 1)
    cpu.operating = True
    cpu.engine.set_cr(0, arch.CR0_EMERGENCY_SIGNAL | arch.CR0_EXTERNAL_CALL | arch.CR0_SERVICE_SIGNAL)
    codes = []
    for _ in range(3):
        cpu.load_psw(ENABLED_WAIT, 0x1000)
        cpu.deliver_pending()
        codes.append(m.memory.u16(arch.LC_EXT_INT_CODE))
    assert codes == [arch.EXT_EMERGENCY_SIGNAL, arch.EXT_EXTERNAL_CALL, arch.EXT_SERVICE_SIGNAL]
    assert m.memory.u32(arch.LC_EXT_PARAMS) == 0x99


def test_nothing_is_taken_while_stopped(m):
    order(m, arch.SIGP_EMERGENCY_SIGNAL, 1)
    cpu = m.cpus[1]
    cpu.engine.set_cr(0, arch.CR0_EMERGENCY_SIGNAL)
    cpu.load_psw(ENABLED_WAIT, 0x1000)
    assert not cpu.operating and cpu.external  # the runner skips stopped CPUs
    assert order(m, arch.SIGP_START, 1) == sigp.ACCEPTED and cpu.operating and cpu.waiting
    assert cpu.deliver_pending() and not cpu.external


def test_stop_of_a_waiting_cpu_is_immediate(m):
    cpu = m.cpus[1]
    cpu.operating = True
    cpu.load_psw(ENABLED_WAIT, 0x1000)
    assert order(m, arch.SIGP_STOP, 1) == sigp.ACCEPTED
    assert not cpu.operating and cpu.stop_order == 0
    assert order(m, arch.SIGP_STOP, 1) == sigp.ACCEPTED  # already stopped
    assert m.events == []                                 # CPU 0 still runs


def test_stop_of_a_running_cpu_is_busy_until_it_takes_effect(m):
    cpu = m.cpus[1]
    cpu.operating = True
    cpu.load_psw(PSW_64, CODE)
    assert order(m, arch.SIGP_STOP, 1) == sigp.ACCEPTED
    assert cpu.operating and cpu.stop_order == arch.SIGP_STOP
    for code in (arch.SIGP_SENSE, arch.SIGP_STOP, arch.SIGP_START, arch.SIGP_EXTERNAL_CALL,
                 arch.SIGP_SET_PREFIX, 0x00):
        assert order(m, code, 1) == (2, None)
    cpu.deliver_pending()                                 # its next interruption point
    assert not cpu.operating and cpu.stop_order == 0
    assert order(m, arch.SIGP_SENSE, 1) == (1, arch.SIGP_STAT_STOPPED)


def test_resets_are_never_busy(m):
    cpu = m.cpus[1]
    cpu.operating = True
    cpu.load_psw(PSW_64, CODE)
    order(m, arch.SIGP_STOP, 1)
    assert order(m, arch.SIGP_CPU_RESET, 1) == sigp.ACCEPTED
    assert cpu.stop_order == 0 and not cpu.operating


def test_last_cpu_to_stop_ends_the_machine(m):
    cpu = m.cpus[0]
    assert m.sigp(cpu, arch.SIGP_STOP, 0)[0] == 0         # stop itself: after the instruction
    assert cpu.stop_order == arch.SIGP_STOP and cpu.psw()[1] == CODE + 4
    cpu.deliver_pending()
    assert not cpu.operating
    assert m.events == [("stop-all", 0)]


def test_stop_and_store_status(m):
    cpu = m.cpus[1]
    cpu.set_prefix(0x60000)
    cpu.engine.set_gpr(9, 0x0909)
    cpu.engine.set_cr(5, 0x0505)
    cpu.engine.set_ar(3, 0x33)
    cpu.engine.set_fpr(2, 0x4000_0000_0000_0000)
    cpu.clock_comparator = 0x1234_5600
    cpu.load_psw(PSW_64, 0xABC0)
    m.memory.write(0x1310, b"\xEE" * 8)                   # a gap in the save area stays as it was
    assert order(m, arch.SIGP_STOP_AND_STORE_STATUS, 1) == sigp.ACCEPTED  # stopped: stored at once
    save = m.memory.read(arch.LC_FLOAT_SAVE, 512)         # absolute 0x1200, whatever the prefix
    assert struct.unpack_from(">Q", save, 0x10)[0] == 0x4000_0000_0000_0000   # FPR 2
    assert struct.unpack_from(">Q", save, 0x80 + 9 * 8)[0] == 0x0909          # GPR 9
    assert struct.unpack_from(">QQ", save, 0x100) == (PSW_64, 0xABC0)
    assert save[0x110:0x118] == b"\xEE" * 8
    assert struct.unpack_from(">I", save, 0x118)[0] == 0x60000               # prefix
    assert struct.unpack_from(">Q", save, 0x130)[0] == 0x12_3456              # clock comparator >> 8
    assert struct.unpack_from(">I", save, 0x140 + 3 * 4)[0] == 0x33           # AR 3
    assert struct.unpack_from(">Q", save, 0x180 + 5 * 8)[0] == 0x0505         # CR 5
    assert struct.unpack_from(">Q", save, 0x180)[0] == 0xE0                   # CR 0 after reset
    assert m.memory.u8(arch.LC_AR_MODE_ID) == 1


def test_stop_and_store_status_of_a_running_cpu_stores_when_it_stops(m):
    cpu = m.cpus[0]
    assert m.sigp(cpu, arch.SIGP_STOP_AND_STORE_STATUS, 0)[0] == 0
    assert m.memory.u64(0x1300 + 8) == 0                  # not yet
    cpu.deliver_pending()
    assert not cpu.operating
    assert m.memory.u64(0x1300 + 8) == CODE + 4           # the PSW after the SIGP


def test_store_status_at_address(m):
    cpu = m.cpus[1]
    cpu.engine.set_gpr(15, 0xF15)
    assert order(m, arch.SIGP_STORE_STATUS_AT_ADDRESS, 1, 0x70000 | 0x1FF) == sigp.ACCEPTED
    assert m.memory.u64(0x70000 + 0x80 + 15 * 8) == 0xF15
    assert m.memory.u8(arch.LC_AR_MODE_ID) == 0           # only the default area stores the mode id
    assert order(m, arch.SIGP_STORE_STATUS_AT_ADDRESS, 1, MEMORY) == (1, arch.SIGP_STAT_INVALID_PARAMETER)
    cpu.operating = True
    assert order(m, arch.SIGP_STORE_STATUS_AT_ADDRESS, 1, 0x70000) == (1, arch.SIGP_STAT_INCORRECT_STATE)


def test_set_prefix(m):
    assert order(m, arch.SIGP_SET_PREFIX, 1, MEMORY - 0x2000) == sigp.ACCEPTED   # the last 8 KiB
    assert order(m, arch.SIGP_SET_PREFIX, 1, MEMORY) == (1, arch.SIGP_STAT_INVALID_PARAMETER)
    assert order(m, arch.SIGP_SET_PREFIX, 1, 0x80000 | 0x1FFF) == sigp.ACCEPTED
    assert m.cpus[1].prefix == 0x80000
    m.cpus[1].operating = True
    assert order(m, arch.SIGP_SET_PREFIX, 1, 0x90000) == (1, arch.SIGP_STAT_INCORRECT_STATE)
    # QEMU checks the address before the state
    assert order(m, arch.SIGP_SET_PREFIX, 1, MEMORY) == (1, arch.SIGP_STAT_INVALID_PARAMETER)


def test_restart_of_a_stopped_cpu_loads_the_restart_psw_at_once(m):
    cpu = m.cpus[1]
    order(m, arch.SIGP_SET_PREFIX, 1, 0x50000)
    m.memory.write(0x50000 + arch.LC_RESTART_NEW_PSW, struct.pack(">QQ", PSW_64, 0x44440))
    cpu.load_psw(PSW_64, 0x1110)
    assert order(m, arch.SIGP_RESTART, 1) == sigp.ACCEPTED
    assert cpu.operating and not cpu.waiting and cpu.psw() == (PSW_64, 0x44440)
    assert struct.unpack(">QQ", m.memory.read(0x50000 + arch.LC_RESTART_OLD_PSW, 16)) == (PSW_64, 0x1110)


def test_restart_of_an_operating_cpu_is_taken_at_its_next_interruption_point(m):
    cpu = m.cpus[1]
    m.memory.write(arch.LC_RESTART_NEW_PSW, struct.pack(">QQ", PSW_64, 0x44440))
    cpu.operating = True
    cpu.load_psw(ENABLED_WAIT, 0x2220)
    assert order(m, arch.SIGP_RESTART, 1) == sigp.ACCEPTED
    assert cpu.restart_pending and order(m, arch.SIGP_SENSE, 1) == sigp.ACCEPTED  # not busy
    assert cpu.deliver_pending()
    assert struct.unpack(">QQ", m.lowcore(cpu, arch.LC_RESTART_OLD_PSW, 16)) == (ENABLED_WAIT, 0x2220)
    assert cpu.psw() == (PSW_64, 0x44440) and not cpu.waiting


def test_initial_cpu_reset(m):
    cpu = m.cpus[1]
    cpu.operating = True
    cpu.set_prefix(0x30000)
    cpu.engine.set_gpr(4, 0x44)
    cpu.engine.set_cr(0, 0xFFFF)
    cpu.engine.set_cr(3, 0x33)
    cpu.engine.set_fpc(0x0808_0000)
    cpu.load_psw(PSW_64, 0x5550)
    order(m, arch.SIGP_EMERGENCY_SIGNAL, 1)
    assert order(m, arch.SIGP_INITIAL_CPU_RESET, 1) == sigp.ACCEPTED
    assert not cpu.operating and not cpu.external
    assert cpu.psw() == (0, 0) and cpu.prefix == 0 and cpu.engine.prefix() == 0
    assert [cpu.engine.cr(n) for n in (0, 3, 14)] == [0xE0, 0, 0xC2000000]
    assert cpu.engine.fpc() == 0
    assert cpu.engine.gpr(4) == 0x44                     # general registers are kept


def test_cpu_reset_keeps_psw_prefix_and_control_registers(m):
    cpu = m.cpus[1]
    cpu.operating = True
    cpu.set_prefix(0x30000)
    cpu.engine.set_cr(3, 0x33)
    cpu.load_psw(PSW_64, 0x5550)
    cpu.queue_external(PendingExternal(arch.EXT_SERVICE_SIGNAL, 1))
    order(m, arch.SIGP_EXTERNAL_CALL, 1)
    cpu.restart_pending = True
    assert order(m, arch.SIGP_CPU_RESET, 1) == sigp.ACCEPTED
    assert not cpu.operating and not cpu.restart_pending
    assert [p.code for p in cpu.external] == [arch.EXT_SERVICE_SIGNAL]  # floating in QEMU: kept
    assert cpu.psw() == (PSW_64, 0x5550) and cpu.prefix == 0x30000 and cpu.engine.cr(3) == 0x33


def test_set_architecture_is_always_refused(m):
    assert order(m, arch.SIGP_SET_ARCHITECTURE, 7, 1) == (1, arch.SIGP_STAT_INVALID_PARAMETER)
    m.cpus[2].operating = True
    assert order(m, arch.SIGP_SET_ARCHITECTURE, 7, 1) == (1, arch.SIGP_STAT_INCORRECT_STATE)


def test_conditional_emergency_signal(m):
    cpu = m.cpus[1]
    # stopped, enabled for I/O and external interruptions, PSW address 0: QEMU stores the
    # incorrect-state status and yet answers cc 0, and signals nothing
    cpu.load_psw(PSW_64 | arch.PSW_IO | arch.PSW_EXT, 0)
    assert order(m, arch.SIGP_CONDITIONAL_EMERGENCY_SIGNAL, 1) == (0, arch.SIGP_STAT_INCORRECT_STATE)
    assert not cpu.external
    cc, r1 = m.sigp(m.cpus[0], arch.SIGP_CONDITIONAL_EMERGENCY_SIGNAL, 1)
    assert cc == 0 and r1 & 0xFFFFFFFF == arch.SIGP_STAT_INCORRECT_STATE
    # otherwise: the emergency signal
    cpu.load_psw(PSW_64 | arch.PSW_EXT, 0)
    assert order(m, arch.SIGP_CONDITIONAL_EMERGENCY_SIGNAL, 1) == sigp.ACCEPTED
    assert [p.code for p in cpu.external] == [arch.EXT_EMERGENCY_SIGNAL]


def test_sense_running_status_answers_as_qemu(m):
    assert order(m, arch.SIGP_SENSE_RUNNING_STATUS, 1) == sigp.ACCEPTED       # stopped
    cpu = m.cpus[1]
    cpu.operating = True
    cpu.load_psw(ENABLED_WAIT, 0x1000)
    assert order(m, arch.SIGP_SENSE_RUNNING_STATUS, 1) == sigp.ACCEPTED       # waiting
    cpu.load_psw(PSW_64, 0x1000)
    assert order(m, arch.SIGP_SENSE_RUNNING_STATUS, 1) == (1, arch.SIGP_STAT_NOT_RUNNING)
    m.cpus[0].facilities = bytes(8)
    assert order(m, arch.SIGP_SENSE_RUNNING_STATUS, 1) == (1, arch.SIGP_STAT_INVALID_ORDER)


def test_store_additional_status(m):
    cpu = m.cpus[1]
    cpu.engine.set_vr(1, 0x0102030405060708_1112131415161718)
    assert order(m, arch.SIGP_STORE_ADDITIONAL_STATUS, 1, 0x70200) == (1, arch.SIGP_STAT_INVALID_PARAMETER)
    assert order(m, arch.SIGP_STORE_ADDITIONAL_STATUS, 1, 0x70000 | 11) == (1, arch.SIGP_STAT_INVALID_PARAMETER)
    assert order(m, arch.SIGP_STORE_ADDITIONAL_STATUS, 1, 0x70400) == sigp.ACCEPTED
    assert m.memory.read(0x70410, 16) == bytes.fromhex("0102030405060708" "1112131415161718")
    cpu.operating = True
    assert order(m, arch.SIGP_STORE_ADDITIONAL_STATUS, 1, 0x70400) == (1, arch.SIGP_STAT_INCORRECT_STATE)


# -- the machine ---------------------------------------------------------------------------------
class _Recorder:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, *args))


def test_execution_runs_every_cpu_on_one_engine_and_ends_when_the_last_stops():
    from vmd.machine.css import ChannelSubsystem
    from vmd.machine.execution import Execution

    machine = _Recorder()
    machine.css = ChannelSubsystem()
    machine.devices = {}
    execution = Execution(machine, 8 << 20, 2, call_soon_threadsafe=lambda fn, *a: fn(*a),
                          console=lambda data: None)
    try:
        a, b = execution.cpus
        assert a.engine.engine is b.engine.engine is execution.engine
        assert [c.operating for c in execution.cpus] == [False, False]
        assert a.engine.cr(0) == 0xE0 and b.engine.cr(14) == 0xC2000000
        a.operating = b.operating = True
        b.load_psw(PSW_64, 0x1000)
        a.load_psw(PSW_64 | arch.PSW_WAIT, 0x5000)       # a disabled wait while CPU 1 runs
        assert machine.calls == [] and not execution.ended
        b.enter_stopped()                                # CPU 1 stops: nothing runs any more
        assert machine.calls == [("shutdown", "guest-shutdown", True)]
    finally:
        execution.shutdown()


# -- the sigp guest against QEMU ------------------------------------------------------------------
def sigp_guest(tmp_path: Path) -> Path:
    """guests/src/sigp.c built into tmp_path when the cross compiler is there, else the committed binary."""
    if shutil.which("s390x-linux-gnu-gcc") and shutil.which("make"):
        out = tmp_path / "gbin"
        subprocess.run(["make", "-s", "-C", str(ROOT / "guests"), f"OUT={out}", f"{out}/sigp.elf"],
                       check=True, capture_output=True, timeout=300)
        return out / "sigp.elf"
    prebuilt = ROOT / "guests" / "bin" / "sigp.elf"
    if prebuilt.is_file():
        return prebuilt
    pytest.skip("no s390x-linux-gnu-gcc to build guests/src/sigp.c and no guests/bin/sigp.elf")


def run_vmd(elf: Path, smp: int, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vmd", "-M", "s390-ccw-virtio", "-smp", str(smp), "-nographic", "-nodefaults",
         "-kernel", str(elf), "--runtime-dir", str(tmp_path / f"run{smp}")],
        capture_output=True, timeout=120, cwd=ROOT)


def run_qemu(qemu: str, elf: Path, smp: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [qemu, "-M", "s390-ccw-virtio", "-smp", str(smp), "-nographic", "-nodefaults", "-serial", "stdio",
         "-kernel", str(elf)],
        capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("smp", [2, 3])
def test_sigp_guest_transcript_equals_qemus(qemu_binary, tmp_path, smp):
    elf = sigp_guest(tmp_path)
    qemu = run_qemu(qemu_binary, elf, smp)
    assert qemu.returncode == 0, qemu.stderr.decode(errors="replace")
    assert b"sigp: done" in qemu.stdout
    ours = run_vmd(elf, smp, tmp_path)
    assert ours.stdout.decode(errors="replace") == qemu.stdout.decode(errors="replace")
    assert ours.returncode == 0, ours.stderr.decode(errors="replace")


def _qmp(path: Path, proc: subprocess.Popen):
    wait_for_socket(path, proc)
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(60)
    sock.connect(str(path))
    reader = sock.makefile("rb")
    json.loads(reader.readline())

    def call(command: str) -> object:
        sock.sendall(json.dumps({"execute": command}).encode() + b"\n")
        while True:
            message = json.loads(reader.readline())
            if "return" in message or "error" in message:
                return message.get("return", message)

    def until_event(name: str) -> None:
        while json.loads(reader.readline()).get("event") != name:
            pass

    call("qmp_capabilities")
    return sock, call, until_event


def _cpu_states(cmd: list[str], qmp: Path) -> list[list[str]]:
    """query-cpus-fast before the start and after the guest powered off (-no-shutdown)."""
    proc = subprocess.Popen(cmd + ["-S", "-no-shutdown", "-qmp", f"unix:{qmp},server=on,wait=off"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        sock, call, until_event = _qmp(qmp, proc)
        before = [cpu["cpu-state"] for cpu in call("query-cpus-fast")]
        call("cont")
        until_event("SHUTDOWN")
        deadline = time.monotonic() + 10
        while call("query-status")["status"] != "shutdown" and time.monotonic() < deadline:
            time.sleep(0.05)
        after = [cpu["cpu-state"] for cpu in call("query-cpus-fast")]
        call("quit")
        sock.close()
        return [before, after]
    finally:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_query_cpus_fast_states_equal_qemus(qemu_binary, tmp_path):
    elf = sigp_guest(tmp_path)
    qemu = _cpu_states([qemu_binary, "-M", "s390-ccw-virtio", "-smp", "3", "-nographic", "-nodefaults",
                        "-kernel", str(elf)], tmp_path / "q.sock")
    ours = _cpu_states([sys.executable, "-m", "vmd", "-M", "s390-ccw-virtio", "-smp", "3", "-nographic",
                        "-nodefaults", "-kernel", str(elf), "--runtime-dir", str(tmp_path / "run")],
                       tmp_path / "v.sock")
    assert qemu == [["operating", "stopped", "stopped"], ["stopped", "stopped", "stopped"]]
    assert ours == qemu
