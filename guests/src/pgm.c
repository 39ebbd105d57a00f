/*
 * pgm: provokes program interruptions and prints, for each, the
 * interruption code, the instruction-length code and where the program old
 * PSW points relative to the instruction that caused it, then checks them
 * against the z/Architecture Principles of Operation (chapter 6, "Program-
 * Interruption Conditions"):
 *
 *   operation (0x0001), privileged operation (0x0002), execute (0x0003),
 *   protection (0x0004, low-address protection), addressing (0x0005),
 *   specification (0x0006), data (0x0007, with its data-exception code),
 *   fixed-point divide (0x0009); and the SVC interruption (code = the SVC
 *   number).
 *
 * Not probed: fixed-point overflow (0x0008) with the program-mask bit on,
 * because QEMU 7.2 TCG never raises it (the instruction completes silently),
 * so a QEMU transcript could not serve as the reference.
 *
 * All of these suppress or complete the instruction, so the old PSW points
 * past it (ILC * 2 bytes).  Each probe is an assembler routine: it stores its
 * continuation address in pgm_resume and the faulting instruction's address
 * in probe_at; the handler (lib/irq.c) records the interruption and resumes
 * there in supervisor state with the registers restored.
 */
#include "guest.h"

u64 probe_at;
extern volatile u64 pgm_resume;

#define PROBE_BEGIN(name)                                   \
    "   .text\n"                                            \
    "   .globl " #name "\n"                                 \
    #name ":\n"                                             \
    "   larl    %r1,9f\n"                                   \
    "   stgrl   %r1,pgm_resume\n"                           \
    "   larl    %r1,8f\n"                                   \
    "   stgrl   %r1,probe_at\n"
#define PROBE_END                                           \
    "9: br      %r14\n"

/* problem-state PSW used to enter problem state right before label 8 */
struct psw problem_psw = { PSW_64 | PSW_PSTATE, 0 };

asm(
    /* operation: opcode 00 (2-byte format) */
    PROBE_BEGIN(probe_op2)
    "8: .short  0x0000\n"
    PROBE_END

    /* operation: unassigned 6-byte opcode E3..FF */
    PROBE_BEGIN(probe_op6)
    "8: .long   0xe3000000\n"
    "   .short  0x00ff\n"
    PROBE_END

    /* privileged operation: PURGE TLB (4 bytes) in problem state */
    PROBE_BEGIN(probe_priv_ptlb)
    "   larl    %r1,problem_psw\n"
    "   larl    %r2,8f\n"
    "   stg     %r2,8(%r1)\n"
    "   lpswe   0(%r1)\n"
    "8: ptlb\n"
    PROBE_END

    /* privileged operation: STORE CONTROL (6 bytes) in problem state */
    PROBE_BEGIN(probe_priv_stctg)
    "   larl    %r1,problem_psw\n"
    "   larl    %r2,8f\n"
    "   stg     %r2,8(%r1)\n"
    "   larl    %r3,scratch\n"
    "   lpswe   0(%r1)\n"
    "8: stctg   %c0,%c0,0(%r3)\n"
    PROBE_END

    /* execute: the target of EXECUTE is an EXECUTE */
    PROBE_BEGIN(probe_execute)
    "   lghi    %r0,0\n"
    "8: ex      %r0,0(%r1)\n"           /* r1 = address of this EX */
    PROBE_END

    /* protection: MVI into the low 512 bytes with CR0.LAP on */
    PROBE_BEGIN(probe_lap)
    "   lghi    %r3,0x100\n"
    "8: mvi     0(%r3),0xaa\n"
    PROBE_END

    /* addressing: LG beyond the end of storage (DAT off) */
    PROBE_BEGIN(probe_addr_load)
    "   llihh   %r3,0x40\n"             /* 0x0040000000000000 */
    "8: lg      %r2,0(%r3)\n"
    PROBE_END

    /* addressing: STG beyond the end of storage */
    PROBE_BEGIN(probe_addr_store)
    "   llihh   %r3,0x40\n"
    "8: stg     %r2,0(%r3)\n"
    PROBE_END

    /* specification: DIVIDE (DR) with an odd R1 */
    PROBE_BEGIN(probe_spec_dr)
    "8: .short  0x1d12\n"               /* dr %r1,%r2 */
    PROBE_END

    /* specification: COMPARE AND SWAP (CSG) on a non-doubleword operand */
    PROBE_BEGIN(probe_spec_csg)
    "   larl    %r3,scratch\n"
    "   lghi    %r2,0\n"
    "8: csg     %r2,%r2,4(%r3)\n"
    PROBE_END

    /* fixed-point divide: DSGR by zero */
    PROBE_BEGIN(probe_div_zero)
    "   lghi    %r2,0\n"
    "   lghi    %r1,7\n"
    "8: dsgr    %r0,%r2\n"
    PROBE_END

    /* fixed-point divide: DR whose quotient does not fit in 32 bits */
    PROBE_BEGIN(probe_div_ovf)
    "   llilf   %r0,0x7fffffff\n"
    "   lghi    %r1,-1\n"
    "   lghi    %r2,1\n"
    "8: dr      %r0,%r2\n"
    PROBE_END

    /* data: an AFP register (f1) with CR0.AFP off: DXC 1 */
    PROBE_BEGIN(probe_data_afp)
    "8: .short  0x2813\n"               /* ldr %f1,%f3 */
    PROBE_END

    /* data: a vector instruction with CR0.VX off: DXC 0xfe */
    PROBE_BEGIN(probe_data_vx)
    "8: .long   0xe7120000\n"           /* vlr %v1,%v2 */
    "   .short  0x0056\n"
    PROBE_END

);

/* SVC is not a program interruption; its own new PSW is used */
asm(
    "   .text\n"
    "   .globl  probe_svc\n"
    "probe_svc:\n"
    "   larl    %r1,8f\n"
    "   stgrl   %r1,probe_at\n"
    "8: svc     0x42\n"
    "   br      %r14\n"
);

u64 scratch[4];

void probe_op2(void), probe_op6(void), probe_priv_ptlb(void),
     probe_priv_stctg(void), probe_execute(void), probe_lap(void),
     probe_addr_load(void), probe_addr_store(void), probe_spec_dr(void),
     probe_spec_csg(void), probe_div_zero(void), probe_div_ovf(void),
     probe_data_afp(void), probe_data_vx(void),
     probe_svc(void);

struct probe {
    const char *name;
    void (*fn)(void);
    u16 code;           /* expected, per the PoP */
    u16 ilc;
    int dxc;            /* -1: not a data exception */
    int problem_state;  /* old PSW must show problem state */
    u64 cr0_on, cr0_off;
};

static const struct probe probes[] = {
    { "operation, opcode 00",             probe_op2,        0x0001, 1, -1, 0, 0, 0 },
    { "operation, 6-byte opcode e3..ff",  probe_op6,        0x0001, 3, -1, 0, 0, 0 },
    { "privileged operation, ptlb",       probe_priv_ptlb,  0x0002, 2, -1, 1, 0, 0 },
    { "privileged operation, stctg",      probe_priv_stctg, 0x0002, 3, -1, 1, 0, 0 },
    { "execute, ex of ex",                probe_execute,    0x0003, 2, -1, 0, 0, 0 },
    { "protection, low-address",          probe_lap,        0x0004, 2, -1, 0, CR0_LAP, 0 },
    { "addressing, load",                 probe_addr_load,  0x0005, 3, -1, 0, 0, 0 },
    { "addressing, store",                probe_addr_store, 0x0005, 3, -1, 0, 0, 0 },
    { "specification, dr odd r1",         probe_spec_dr,    0x0006, 1, -1, 0, 0, 0 },
    { "specification, csg unaligned",     probe_spec_csg,   0x0006, 3, -1, 0, 0, 0 },
    { "fixed-point divide, dsgr by 0",    probe_div_zero,   0x0009, 2, -1, 0, 0, 0 },
    { "fixed-point divide, dr quotient",  probe_div_ovf,    0x0009, 1, -1, 0, 0, 0 },
    { "data, afp register, cr0.afp off",  probe_data_afp,   0x0007, 1, 0x01, 0, 0, CR0_AFP | CR0_VX },
    { "data, vector, cr0.vx off",         probe_data_vx,    0x0007, 3, 0xfe, 0, 0, CR0_VX },
};

int main(void)
{
    int i, bad = 0;

    printf("vmd test guest: pgm (program interruptions)\n");
    for (i = 0; i < (int)ARRAY_SIZE(probes); i++) {
        const struct probe *p = &probes[i];
        u64 cr0 = stctg0();
        int before = pgm_count, ok;
        s64 off;
        u16 ilc;

        flush();
        lctlg0((cr0 | p->cr0_on) & ~p->cr0_off);
        p->fn();
        lctlg0(cr0);
        if (pgm_count == before) {
            printf("%-34s no interruption  MISMATCH\n", p->name);
            bad++;
            continue;
        }
        ilc = (pgm_last.ilc >> 1) & 3;
        off = (s64)(pgm_last.old.addr - probe_at);
        ok = pgm_last.code == p->code && ilc == p->ilc && off == 2 * p->ilc;
        printf("%-34s code=0x%04x ilc=%u old psw=insn%+ld", p->name,
               pgm_last.code, ilc, off);
        if (p->dxc >= 0) {
            printf(" dxc=0x%02x", pgm_last.dxc & 0xff);
            ok = ok && (int)(pgm_last.dxc & 0xff) == p->dxc;
        }
        if (p->problem_state) {
            int ps = !!(pgm_last.old.mask & PSW_PSTATE);

            printf(" problem-state=%s", ps ? "yes" : "no");
            ok = ok && ps;
        }
        printf("  %s\n", ok ? "ok" : "MISMATCH");
        bad += !ok;
    }

    /* SVC 0x42: interruption code 0x0042, ILC 1, old PSW after the SVC */
    {
        int before = svc_count, ok;
        s64 off;

        probe_svc();
        off = (s64)(svc_last.old.addr - probe_at);
        ok = svc_count == before + 1 && svc_last.code == 0x42 &&
             ((svc_last.ilc >> 1) & 3) == 1 && off == 2;
        printf("%-34s code=0x%04x ilc=%u old psw=insn%+ld  %s\n", "supervisor call, svc 0x42",
               svc_last.code, (svc_last.ilc >> 1) & 3, off, ok ? "ok" : "MISMATCH");
        bad += !ok;
    }

    printf("pgm: %d probes, %d mismatches\n", (int)ARRAY_SIZE(probes) + 1, bad);
    return 0;
}
