"""z/Architecture facts the CPU layer needs: PSW bits, lowcore layout, interruption codes.

Bit numbers follow the Principles of Operation (bit 0 is the leftmost of a
64-bit PSW mask); the constants are the resulting integer masks.
"""

from __future__ import annotations


def bit64(n: int) -> int:
    return 1 << (63 - n)


# -- PSW mask ------------------------------------------------------------------------
PSW_PER = bit64(1)
PSW_DAT = bit64(5)
PSW_IO = bit64(6)
PSW_EXT = bit64(7)
PSW_KEY = 0xF << (63 - 11)
PSW_MCHK = bit64(13)
PSW_WAIT = bit64(14)
PSW_PROBLEM = bit64(15)
PSW_ASC = 3 << (63 - 17)
PSW_CC = 3 << (63 - 19)
PSW_PROGRAM_MASK = 0xF << (63 - 23)
PSW_EA = bit64(31)
PSW_BA = bit64(32)
PSW_64BIT = PSW_EA | PSW_BA

# -- control register 0 external-interruption subclass masks ----------------------------
CR0_EMERGENCY_SIGNAL = bit64(49)
CR0_EXTERNAL_CALL = bit64(50)
CR0_CLOCK_COMPARATOR = bit64(52)
CR0_CPU_TIMER = bit64(53)
CR0_SERVICE_SIGNAL = bit64(54)
CR0_INTERRUPT_KEY = bit64(57)
# -- control register 14: machine-check subclass masks
CR14_CHANNEL_REPORT = bit64(35)

# -- lowcore (real addresses, relative to the prefix) ----------------------------------
LC_EXT_PARAMS = 0x80
LC_CPU_ADDRESS = 0x84
LC_EXT_INT_CODE = 0x86
LC_SVC_ILC = 0x88
LC_SVC_CODE = 0x8A
LC_PGM_ILC = 0x8C
LC_PGM_CODE = 0x8E
LC_SUBCHANNEL_ID = 0xB8
LC_IO_INT_PARM = 0xBC
LC_IO_INT_WORD = 0xC0
LC_AR_MODE_ID = 0xA3  # architectural-mode id, stored (absolute) by store status
LC_STFL_FAC_LIST = 0xC8
LC_MCCK_CODE = 0xE8
LC_RESTART_OLD_PSW = 0x120
LC_EXT_OLD_PSW = 0x130
LC_SVC_OLD_PSW = 0x140
LC_PGM_OLD_PSW = 0x150
LC_MCCK_OLD_PSW = 0x160
LC_IO_OLD_PSW = 0x170
LC_RESTART_NEW_PSW = 0x1A0
LC_EXT_NEW_PSW = 0x1B0
LC_SVC_NEW_PSW = 0x1C0
LC_PGM_NEW_PSW = 0x1D0
LC_MCCK_NEW_PSW = 0x1E0
LC_IO_NEW_PSW = 0x1F0
LC_FLOAT_SAVE = 0x1200
LC_GPR_SAVE = 0x1280
LC_PSW_SAVE = 0x1300
LC_PREFIX_SAVE = 0x1318
LC_FPC_SAVE = 0x131C
LC_TOD_PROG_SAVE = 0x1324
LC_CPU_TIMER_SAVE = 0x1328
LC_CLOCK_COMP_SAVE = 0x1330
LC_ACCESS_SAVE = 0x1340
LC_CREGS_SAVE = 0x1380

#: size of the save area SIGP store status fills (0x1200-0x13FF of a lowcore)
STATUS_SAVE_SIZE = 512

# -- SIGNAL PROCESSOR (PoP "Signal-Processor Orders"; QEMU's target/s390x/sigp.c) --------
SIGP_SENSE = 0x01
SIGP_EXTERNAL_CALL = 0x02
SIGP_EMERGENCY_SIGNAL = 0x03
SIGP_START = 0x04
SIGP_STOP = 0x05
SIGP_RESTART = 0x06
SIGP_STOP_AND_STORE_STATUS = 0x09
SIGP_INITIAL_CPU_RESET = 0x0B
SIGP_CPU_RESET = 0x0C
SIGP_SET_PREFIX = 0x0D
SIGP_STORE_STATUS_AT_ADDRESS = 0x0E
SIGP_SET_ARCHITECTURE = 0x12
SIGP_CONDITIONAL_EMERGENCY_SIGNAL = 0x13
SIGP_SENSE_RUNNING_STATUS = 0x15
SIGP_STORE_ADDITIONAL_STATUS = 0x17

SIGP_CC_ACCEPTED = 0
SIGP_CC_STATUS_STORED = 1
SIGP_CC_BUSY = 2
SIGP_CC_NOT_OPERATIONAL = 3

#: status bits stored in bits 32-63 of the R1 register with condition code 1
SIGP_STAT_EQUIPMENT_CHECK = 0x80000000
SIGP_STAT_NOT_RUNNING = 0x00000400
SIGP_STAT_INCORRECT_STATE = 0x00000200
SIGP_STAT_INVALID_PARAMETER = 0x00000100
SIGP_STAT_EXT_CALL_PENDING = 0x00000080
SIGP_STAT_STOPPED = 0x00000040
SIGP_STAT_OPERATOR_INTERV = 0x00000020
SIGP_STAT_CHECK_STOP = 0x00000010
SIGP_STAT_INOPERATIVE = 0x00000004
SIGP_STAT_INVALID_ORDER = 0x00000002
SIGP_STAT_RECEIVER_CHECK = 0x00000001

# -- interruption codes ----------------------------------------------------------------
EXT_EMERGENCY_SIGNAL = 0x1201
EXT_EXTERNAL_CALL = 0x1202
EXT_CLOCK_COMPARATOR = 0x1004
EXT_CPU_TIMER = 0x1005
EXT_SERVICE_SIGNAL = 0x2401

PGM_OPERATION = 0x01
PGM_PRIVILEGED = 0x02
PGM_EXECUTE = 0x03
PGM_PROTECTION = 0x04
PGM_ADDRESSING = 0x05
PGM_SPECIFICATION = 0x06
PGM_DATA = 0x07
PGM_SEGMENT_TRANSLATION = 0x10
PGM_PAGE_TRANSLATION = 0x11
PGM_ASCE_TYPE = 0x38
PGM_REGION_FIRST = 0x39
PGM_REGION_SECOND = 0x3A
PGM_REGION_THIRD = 0x3B
PGM_OPERAND = 0x15

#: program interruptions that nullify: the old PSW points at the instruction itself
NULLIFYING = frozenset({
    PGM_SEGMENT_TRANSLATION, PGM_PAGE_TRANSLATION, PGM_ASCE_TYPE,
    PGM_REGION_FIRST, PGM_REGION_SECOND, PGM_REGION_THIRD,
})


def ilc_of(first_opcode_byte: int) -> int:
    """Instruction length in bytes, from the two leftmost opcode bits (PoP "Instruction Formats")."""
    return (2, 4, 4, 6)[first_opcode_byte >> 6]
