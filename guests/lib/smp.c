/*
 * vmd test guests: SIGNAL PROCESSOR helpers and the end of a run.
 *
 * Power-off follows what Linux does for "poweroff" (shutdown action "stop"):
 * every other CPU is stopped with SIGP stop (the caller waits until SIGP
 * sense reports it stopped), then the CPU stops itself with SIGP stop.  QEMU
 * (target/s390x/sigp.c, do_stop_interrupt) requests a guest shutdown when the
 * last operating CPU enters the stopped state: QMP SHUTDOWN {"guest": true,
 * "reason": "guest-shutdown"} and, without -no-shutdown, exit status 0.
 * Should the stop not take effect, the CPU loads the quiesce disabled-wait
 * PSW (address 0xfff), which QEMU also treats as a guest shutdown.
 */
#include "guest.h"
#include "smp.h"

extern void quiesce_wait(void) __attribute__((noreturn));
extern int sclp_errors;

u64 secondary_stack_top;

int sigp(u16 addr, u8 order, u64 param, u32 *status)
{
    register u64 r2 asm("2") = 0;
    register u64 r3 asm("3") = param;
    int cc;

    asm volatile(
        "   sigp    %%r2,%[addr],0(%[order])\n"
        "   ipm     %[cc]\n"
        "   srl     %[cc],28\n"
        : [cc] "=d"(cc), "+d"(r2)
        : "d"(r3), [addr] "d"((u64)addr), [order] "a"((u64)order)
        : "cc", "memory");
    if (status)
        *status = (u32)r2;
    return cc;
}

/* SIGP, retried while the order is rejected as busy (cc 2) */
int sigp_retry(u16 addr, u8 order, u64 param, u32 *status)
{
    int cc;

    do {
        cc = sigp(addr, order, param, status);
    } while (cc == 2);
    return cc;
}

int cpu_stopped(u16 addr)
{
    u32 status = 0;
    int cc = sigp_retry(addr, SIGP_SENSE, 0, &status);

    return cc == 1 && (status & SIGP_STAT_STOPPED);
}

/* Stop another CPU and wait (bounded) until it is sensed stopped. */
int stop_cpu(u16 addr)
{
    long i;

    if (sigp_retry(addr, SIGP_STOP, 0, NULL) != 0)
        return -1;
    for (i = 0; i < 100000000L; i++)
        if (cpu_stopped(addr))
            return 0;
    return -1;
}

void stop_self(void)
{
    sigp_retry(stap(), SIGP_STOP, 0, NULL);
    quiesce_wait();
}

void poweroff(void)
{
    u16 me = stap();
    u32 status;
    int a;

    flush();
    for (a = 0; a < 256; a++) {
        if (a == me)
            continue;
        if (sigp_retry(a, SIGP_SENSE, 0, &status) == 3)
            continue;                   /* no such CPU */
        stop_cpu(a);
    }
    stop_self();
    for (;;)
        ;
}

void finish(void)
{
    if (sclp_errors)
        printf("sclp errors: %d\n", sclp_errors);
    flush();
    poweroff();
}

void fail(const char *what)
{
    printf("FAIL: %s\n", what);
    flush();
    panic_wait(0xbad);
}

__attribute__((weak)) void secondary_main(void)
{
    fail("secondary CPU restarted");
}
