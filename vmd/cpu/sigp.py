"""SIGNAL PROCESSOR: the orders one CPU gives another (PoP ch. 4, "Signal-Processor Orders").

Importing this module registers SIGP (opcode 0xAE) in :data:`vmd.cpu.vcpu.INSTRUCTIONS`.

The answers are QEMU 7.2's under TCG (target/s390x/sigp.c), condition code and
status bits alike:

* cc 3 for a CPU address with no CPU; cc 2 (busy) while a stop is under way at
  the target, for every order but the two resets;
* cc 1 with a status word in bits 32-63 of R1 (bits 0-31 kept): invalid order,
  incorrect state, invalid parameter, external call pending, stopped;
* cc 0 otherwise.

The parameter is R1 when R1 is odd, else R1+1; the CPU address is bits 48-63
of R3.  Every CPU runs on the one vCPU thread, so the target of an order is
never executing while the order is carried out: what QEMU does in the target's
thread (``run_on_cpu``) happens here at once, on the target's saved registers.
Where QEMU makes the target act at its next instruction boundary (a stop of a
CPU that is not waiting, a restart of an operating CPU), the target gets the
request and the order ends the sender's slice, so the runner lets the target
act before the sender goes on; until a stop has taken effect the target reads
busy.  The last CPU to stop ends the machine (QEMU: SHUTDOWN guest-shutdown).

Deliberate differences from QEMU 7.2: a restart of a CPU that was stopped with
a wait PSW runs the restart PSW (QEMU leaves that CPU halted until some other
interruption arrives); the CPU timer stored by store status is its current
value (QEMU stores its internal deadline).
"""

from __future__ import annotations

from typing import Callable

from vmd.cpu import arch
from vmd.cpu.vcpu import INSTRUCTIONS, PSW_LOADED, PendingExternal, Vcpu, _s_addr, _set_cc

#: CPU-model facilities that orders depend on (bit numbers of STFLE)
FACILITY_SENSE_RUNNING_STATUS = 9
FACILITY_VECTOR = 129
FACILITY_GUARDED_STORAGE = 133

Answer = tuple[int, "int | None"]  # (condition code, status word for R1 or None)
ACCEPTED: Answer = (arch.SIGP_CC_ACCEPTED, None)


def _status(bits: int) -> Answer:
    return arch.SIGP_CC_STATUS_STORED, bits


def _has_facility(cpu: Vcpu, bit: int) -> bool:
    facilities = cpu.facilities
    return bit // 8 < len(facilities) and bool(facilities[bit // 8] & (0x80 >> (bit % 8)))


def _halted(cpu: Vcpu) -> bool:
    """QEMU's cs->halted: stopped, or operating in the wait state."""
    return not cpu.operating or cpu.waiting


def _ext_call_pending(cpu: Vcpu) -> bool:
    with cpu.lock:
        return any(p.code == arch.EXT_EXTERNAL_CALL for p in cpu.external)


def _emergency(source: Vcpu, target: Vcpu) -> None:
    """One emergency signal per sending CPU stays pending (QEMU keeps a bitmap of senders)."""
    with target.lock:
        if not any(p.code == arch.EXT_EMERGENCY_SIGNAL and p.cpu_address == source.address
                   for p in target.external):
            target.external.append(PendingExternal(arch.EXT_EMERGENCY_SIGNAL, cpu_address=source.address))
    target.kick()


# -- the orders (source, target, parameter) -> (cc, status) ----------------------------------
def o_sense(source: Vcpu, target: Vcpu, param: int) -> Answer:
    ext_call = _ext_call_pending(target)
    stopped = not target.operating
    if not stopped and not ext_call:
        return ACCEPTED
    return _status((arch.SIGP_STAT_EXT_CALL_PENDING if ext_call else 0)
                   | (arch.SIGP_STAT_STOPPED if stopped else 0))


def o_external_call(source: Vcpu, target: Vcpu, param: int) -> Answer:
    with target.lock:
        if any(p.code == arch.EXT_EXTERNAL_CALL for p in target.external):
            return _status(arch.SIGP_STAT_EXT_CALL_PENDING)
        target.external.append(PendingExternal(arch.EXT_EXTERNAL_CALL, cpu_address=source.address))
    target.kick()
    return ACCEPTED


def o_emergency_signal(source: Vcpu, target: Vcpu, param: int) -> Answer:
    _emergency(source, target)
    return ACCEPTED


def o_start(source: Vcpu, target: Vcpu, param: int) -> Answer:
    if not target.operating:
        target.operating = True  # a wait PSW keeps it waiting
        target.kick()
    return ACCEPTED


def o_stop(source: Vcpu, target: Vcpu, param: int) -> Answer:
    if not target.operating:
        return ACCEPTED
    if target.waiting:
        target.enter_stopped(last_ends_machine=False)  # QEMU stops a halted CPU at once
    else:
        target.stop_order = arch.SIGP_STOP  # it stops at its next interruption point
        target.kick()
    return ACCEPTED


def o_stop_and_store_status(source: Vcpu, target: Vcpu, param: int) -> Answer:
    if target.operating and target.waiting:
        target.enter_stopped(last_ends_machine=False)
    if target.operating:
        target.stop_order = arch.SIGP_STOP_AND_STORE_STATUS  # status stored when it stops
        target.kick()
    else:
        target.store_status(arch.LC_FLOAT_SAVE, store_arch=True)
    return ACCEPTED


def o_restart(source: Vcpu, target: Vcpu, param: int) -> Answer:
    if target.operating:
        target.restart_pending = True  # taken at the next interruption point, even in a wait
    else:
        target.operating = True
        target.swap_psw(arch.LC_RESTART_OLD_PSW, arch.LC_RESTART_NEW_PSW)  # before anything else
    target.kick()
    return ACCEPTED


def o_initial_cpu_reset(source: Vcpu, target: Vcpu, param: int) -> Answer:
    target.reset(initial=True, keep_floating=True)
    target.kick()
    return ACCEPTED


def o_cpu_reset(source: Vcpu, target: Vcpu, param: int) -> Answer:
    target.reset(initial=False, keep_floating=True)
    target.kick()
    return ACCEPTED


def o_set_prefix(source: Vcpu, target: Vcpu, param: int) -> Answer:
    address = param & 0x7FFFE000
    if address + 0x2000 > target.memory.size:
        return _status(arch.SIGP_STAT_INVALID_PARAMETER)
    if target.operating:
        return _status(arch.SIGP_STAT_INCORRECT_STATE)
    target.set_prefix(address)
    return ACCEPTED


def o_store_status_at_address(source: Vcpu, target: Vcpu, param: int) -> Answer:
    if target.operating:
        return _status(arch.SIGP_STAT_INCORRECT_STATE)
    if not target.store_status(param & 0x7FFFFE00):
        return _status(arch.SIGP_STAT_INVALID_PARAMETER)
    return ACCEPTED


def o_store_additional_status(source: Vcpu, target: Vcpu, param: int) -> Answer:
    """The vector registers (and the guarded-storage control block with that facility)."""
    vector = _has_facility(source, FACILITY_VECTOR)
    guarded = _has_facility(source, FACILITY_GUARDED_STORAGE)
    if not vector and not guarded:
        return _status(arch.SIGP_STAT_INVALID_ORDER)
    if target.operating:
        return _status(arch.SIGP_STAT_INCORRECT_STATE)
    lc = param & 0xF
    address = param & ~0xF
    length = 1 << (lc or 10)
    if address & (length - 1):
        return _status(arch.SIGP_STAT_INVALID_PARAMETER)
    if lc not in ((0, 10, 11, 12) if guarded else (0,)):
        return _status(arch.SIGP_STAT_INVALID_PARAMETER)
    if address + length > target.memory.size:
        return _status(arch.SIGP_STAT_INVALID_PARAMETER)
    if vector:
        target.memory.write(address, b"".join(target.engine.vr(i).to_bytes(16, "big") for i in range(32)))
    return ACCEPTED


def o_conditional_emergency_signal(source: Vcpu, target: Vcpu, param: int) -> Answer:
    """QEMU's test, including its answer: the incorrect-state status is stored, yet cc is 0."""
    idle = _halted(target)
    mask, address = target.psw()
    asn = param & 0xFFFF
    primary = target.engine.cr(4) & 0xFFFF
    secondary = target.engine.cr(3) & 0xFFFF
    both = arch.PSW_IO | arch.PSW_EXT
    if (target.operating or mask & both != both or (idle and address != 0)
            or (not idle and asn in (primary, secondary))):
        _emergency(source, target)
        return ACCEPTED
    return arch.SIGP_CC_ACCEPTED, arch.SIGP_STAT_INCORRECT_STATE


def o_sense_running_status(source: Vcpu, target: Vcpu, param: int) -> Answer:
    """As QEMU 7.2: cc 0 when the target is halted (stopped or waiting), else the not-running status."""
    if not _has_facility(source, FACILITY_SENSE_RUNNING_STATUS):
        return _status(arch.SIGP_STAT_INVALID_ORDER)
    if _halted(target):
        return ACCEPTED
    return _status(arch.SIGP_STAT_NOT_RUNNING)


ORDERS: dict[int, Callable[[Vcpu, Vcpu, int], Answer]] = {
    arch.SIGP_SENSE: o_sense,
    arch.SIGP_EXTERNAL_CALL: o_external_call,
    arch.SIGP_EMERGENCY_SIGNAL: o_emergency_signal,
    arch.SIGP_START: o_start,
    arch.SIGP_STOP: o_stop,
    arch.SIGP_RESTART: o_restart,
    arch.SIGP_STOP_AND_STORE_STATUS: o_stop_and_store_status,
    arch.SIGP_INITIAL_CPU_RESET: o_initial_cpu_reset,
    arch.SIGP_CPU_RESET: o_cpu_reset,
    arch.SIGP_SET_PREFIX: o_set_prefix,
    arch.SIGP_STORE_STATUS_AT_ADDRESS: o_store_status_at_address,
    arch.SIGP_STORE_ADDITIONAL_STATUS: o_store_additional_status,
    arch.SIGP_CONDITIONAL_EMERGENCY_SIGNAL: o_conditional_emergency_signal,
    arch.SIGP_SENSE_RUNNING_STATUS: o_sense_running_status,
}
RESETS = frozenset({arch.SIGP_CPU_RESET, arch.SIGP_INITIAL_CPU_RESET})


def set_architecture(source: Vcpu) -> Answer:
    """Always refused (z/Architecture only): invalid parameter when every other CPU is stopped,
    else incorrect state."""
    others_stopped = all(not cpu.operating for cpu in (source.hooks.cpus or [source]) if cpu is not source)
    return _status(arch.SIGP_STAT_INVALID_PARAMETER if others_stopped else arch.SIGP_STAT_INCORRECT_STATE)


def signal(source: Vcpu, order: int, address: int, param: int) -> Answer:
    """Carry out one order from ``source`` to the CPU at ``address``: (cc, status for R1 or None)."""
    if order == arch.SIGP_SET_ARCHITECTURE:
        return set_architecture(source)
    cpus = source.hooks.cpus or [source]
    if address >= len(cpus):
        return arch.SIGP_CC_NOT_OPERATIONAL, None
    target = cpus[address]
    if target.stop_order and order not in RESETS:
        return arch.SIGP_CC_BUSY, None
    handler = ORDERS.get(order)
    if handler is None:
        return _status(arch.SIGP_STAT_INVALID_ORDER)
    return handler(source, target, param)


def i_sigp(cpu: Vcpu, text: bytes):
    """SIGP R1,R3,D2(B2): order code in bits 56-63 of the second-operand address."""
    r1, r3 = text[1] >> 4, text[1] & 0xF
    order = _s_addr(cpu, text) & 0xFF
    param = cpu.engine.gpr(r1 | 1)
    address = cpu.engine.gpr(r3) & 0xFFFF
    cc, status = signal(cpu, order, address, param)
    if status is not None:
        cpu.engine.set_gpr(r1, (cpu.engine.gpr(r1) & ~0xFFFFFFFF) | status)
    if order == arch.SIGP_INITIAL_CPU_RESET and address == cpu.address:
        return PSW_LOADED  # the CPU reset itself: its PSW is the reset one
    _set_cc(cpu, cc)
    return None


INSTRUCTIONS[0xAE] = i_sigp
