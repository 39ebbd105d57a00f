/*
 * vmd test guests: C side of the interruption handlers (see crt0.S).
 */
#include "guest.h"

volatile int pgm_count;
volatile u64 pgm_resume;
volatile struct pgm_event pgm_last;
volatile int svc_count;
volatile struct svc_event svc_last;
ext_handler_t ext_handler;
io_handler_t io_handler;

/* set by the service-signal handler (sclp.c waits for it) */
volatile u32 sclp_ext_param;
volatile int sclp_ext_count;

void c_pgm(void)
{
    volatile struct lowcore *lc = LOWCORE;
    u64 cr0 = stctg0();

    /* a probe may have turned low-address protection on; the handler must
     * be able to update the old PSW (the probe's caller restores CR0) */
    if (cr0 & CR0_LAP)
        lctlg0(cr0 & ~CR0_LAP);
    pgm_last.code = lc->pgm_code;
    pgm_last.ilc = lc->pgm_ilc;
    pgm_last.dxc = lc->data_exc_code;
    pgm_last.old.mask = lc->program_old.mask;
    pgm_last.old.addr = lc->program_old.addr;
    pgm_count++;
    if (!pgm_resume) {
        u64 addr = lc->program_old.addr;
        u16 code = lc->pgm_code, ilc = lc->pgm_ilc;

        pgm_resume = 0;
        printf("unexpected program interruption code=0x%04x ilc=%u psw=%016lx %016lx\n",
               code, ilc >> 1, lc->program_old.mask, addr);
        fail("program interruption");
    }
    /* resume at the probe's continuation, in supervisor state */
    lc->program_old.addr = pgm_resume;
    lc->program_old.mask &= ~(PSW_PSTATE | PSW_WAIT);
    pgm_resume = 0;
}

void c_svc(void)
{
    volatile struct lowcore *lc = LOWCORE;

    svc_last.code = lc->svc_code;
    svc_last.ilc = lc->svc_ilc;
    svc_last.old.mask = lc->svc_old.mask;
    svc_last.old.addr = lc->svc_old.addr;
    svc_count++;
}

void c_ext(void)
{
    volatile struct lowcore *lc = LOWCORE;
    u16 code = lc->ext_int_code;

    if (code == EXT_SERVICE) {
        sclp_ext_param = lc->ext_params;
        sclp_ext_count++;
        return;
    }
    if (ext_handler) {
        ext_handler(code, lc->ext_cpu_addr, lc->ext_params);
        return;
    }
    printf("unexpected external interruption code=0x%04x\n", code);
    fail("external interruption");
}

void c_io(void)
{
    volatile struct lowcore *lc = LOWCORE;

    if (io_handler) {
        io_handler(lc->subchannel_id, lc->io_int_parm, lc->io_int_word);
        return;
    }
    printf("unexpected I/O interruption schid=0x%08x\n", lc->subchannel_id);
    fail("I/O interruption");
}

/*
 * Enabled wait: load a wait PSW enabled for `masks` whose address is the
 * instruction after the LPSWE.  The interruption handler clears the wait bit
 * of the old PSW, so execution continues there, still enabled; STNSM then
 * turns the I/O and external masks off again.
 */
void enabled_wait(u64 masks)
{
    struct psw wait_psw;
    u8 old_sysmask;

    wait_psw.mask = PSW_64 | PSW_WAIT | masks;
    wait_psw.addr = 0;
    asm volatile(
        "       larl    %%r1,0f\n"
        "       stg     %%r1,8+%[psw]\n"
        "       lpswe   %[psw]\n"
        "0:     stnsm   %[sm],0xfc\n"
        : [psw] "+Q"(wait_psw), [sm] "=Q"(old_sysmask)
        :
        : "r1", "memory", "cc");
    (void)old_sysmask;
}
