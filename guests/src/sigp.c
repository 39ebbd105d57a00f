/*
 * sigp: SIGNAL PROCESSOR between two CPUs (run with -smp 2).
 * PoP ch. 4 "Signal-Processor Orders": sense, external call, emergency
 * signal, start, stop, restart, set prefix; the status bits stored with
 * condition code 1; condition code 3 for a CPU address that does not exist.
 *
 * CPU 0 does all the printing.  CPU 1 (stopped after IPL, as every CPU but
 * the IPL CPU) gets its own lowcore through SIGP set prefix, then a restart:
 * its restart new PSW enters secondary_main(), which enables the
 * emergency-signal and external-call subclasses and loops in an enabled
 * wait; its external-interruption handler logs the code and the sending
 * CPU's address for CPU 0 to check.  An external interruption is not taken
 * while the CPU is stopped, but after SIGP start.
 * The run ends with the usual power-off: SIGP stop of CPU 1, then of itself.
 *
 * Two QEMU 7.2 TCG defects shape the sequence: (1) a CPU stopped while
 * executing instructions and then started or restarted is now and then
 * reported operating but never runs again, so CPU 1 is stopped only while it
 * is in its enabled wait (CPU 0 waits for it to get back there); (2) SIGP
 * restart of a CPU that was stopped in the wait state leaves it halted
 * (QEMU makes it operating before it loads the restart PSW, and a wait PSW
 * keeps it halted), so the restart is sent to the operating CPU 1, which
 * the PoP allows as well: the restart interruption ends its wait.
 */
#include "guest.h"
#include "smp.h"

#define TOD_MS  (1000 * 4096UL)

static u8 lowcore1[8192] __attribute__((aligned(8192)));
static u8 cpu1_stack[16384] __attribute__((aligned(16)));
static u8 cpu1_irq_stacks[4 * 8192] __attribute__((aligned(16)));

static volatile int cpu1_alive;
static volatile u16 cpu1_addr;
static volatile u32 cpu1_prefix;
static volatile u64 cpu1_restart_old_mask;
static volatile int cpu1_waits;

static volatile int log_count;
static volatile struct {
    u16 code;
    u16 from;
} log[8];

static void cpu1_ext(u16 code, u16 cpu_addr, u32 param)
{
    if (log_count < (int)ARRAY_SIZE(log)) {
        log[log_count].code = code;
        log[log_count].from = cpu_addr;
    }
    log_count++;
}

void secondary_main(void)
{
    u32 prefix;

    asm volatile("stpx %0" : "=Q"(prefix));
    cpu1_prefix = prefix;
    cpu1_addr = stap();
    cpu1_restart_old_mask = LOWCORE->restart_old.mask;
    lctlg0(stctg0() | CR0_EMERG | CR0_EXTCALL);
    cpu1_alive++;
    for (;;) {
        cpu1_waits++;
        enabled_wait(PSW_EXT);
    }
}

static u64 tod(void)
{
    u64 t;

    stck(&t);
    return t;
}

/* spin until cond holds, for at most 5 s of TOD time; returns cond */
#define WAIT_FOR(cond) ({                                       \
    u64 _end = tod() + 5000 * TOD_MS;                           \
    while (!(cond) && tod() < _end)                             \
        barrier();                                              \
    (cond);                                                     \
})

static void delay_ms(u64 ms)
{
    u64 end = tod() + ms * TOD_MS;

    while (tod() < end)
        barrier();
}

static const char *yn(int b) { return b ? "yes" : "no"; }

/* one SIGP, printed as "name: cc=N [status=XXXXXXXX]" */
static int order(const char *name, u16 addr, u8 code, u64 param)
{
    u32 status = 0;
    int cc = sigp_retry(addr, code, param, &status);

    if (cc == 1)
        printf("sigp %-24s cpu %u: cc=1 status=%08x\n", name, addr, status);
    else
        printf("sigp %-24s cpu %u: cc=%d\n", name, addr, cc);
    return cc;
}

int main(void)
{
    struct sclp_info info;
    volatile struct lowcore *lc1 = (volatile struct lowcore *)lowcore1;

    printf("vmd test guest: sigp (signal processor, 2 CPUs)\n");
    if (sclp_read_info(&info) == 0)
        printf("sclp: %u cpu(s)\n", info.cpus);
    printf("this cpu: address %u\n", stap());

    order("sense", 1, SIGP_SENSE, 0);
    order("sense", 9, SIGP_SENSE, 0);
    order("sense (self)", 0, SIGP_SENSE, 0);
    order("unassigned order 0x00", 1, 0x00, 0);

    /* CPU 1: own lowcore, then restart into secondary_main() */
    ext_handler = cpu1_ext;
    lowcore_init(lowcore1, (u64)cpu1_irq_stacks + sizeof(cpu1_irq_stacks));
    lc1->restart_new.mask = PSW_64;
    lc1->restart_new.addr = (u64)secondary_entry;
    secondary_stack_top = (u64)cpu1_stack + sizeof(cpu1_stack);
    order("set prefix", 1, SIGP_SET_PREFIX, (u64)lowcore1);
    order("restart", 1, SIGP_RESTART, 0);
    WAIT_FOR(cpu1_alive == 1 && cpu1_waits == 1);
    printf("cpu 1 running: %s, stap=%u, prefix as set: %s\n", yn(cpu1_alive == 1),
           cpu1_addr, yn(cpu1_prefix == (u32)(u64)lowcore1));
    order("sense", 1, SIGP_SENSE, 0);
    order("set prefix (operating)", 1, SIGP_SET_PREFIX, (u64)lowcore1);

    /* external-interruption orders */
    order("emergency signal", 1, SIGP_EMERGENCY_SIGNAL, 0);
    WAIT_FOR(log_count >= 1 && cpu1_waits == 2);
    printf("cpu 1 took: code 0x%04x from cpu %u\n", log[0].code, log[0].from);
    order("external call", 1, SIGP_EXTERNAL_CALL, 0);
    WAIT_FOR(log_count >= 2 && cpu1_waits == 3);
    printf("cpu 1 took: code 0x%04x from cpu %u\n", log[1].code, log[1].from);

    /* stop and start: no interruption is taken in the stopped state */
    delay_ms(10);                       /* CPU 1 is back in its wait */
    order("stop", 1, SIGP_STOP, 0);
    printf("cpu 1 sensed stopped: %s\n", yn(WAIT_FOR(cpu_stopped(1))));
    order("sense", 1, SIGP_SENSE, 0);
    order("emergency signal", 1, SIGP_EMERGENCY_SIGNAL, 0);
    delay_ms(20);
    printf("cpu 1 took it while stopped: %s\n", yn(log_count != 2));
    order("start", 1, SIGP_START, 0);
    WAIT_FOR(log_count >= 3 && cpu1_waits == 4);
    printf("cpu 1 took it after start: %s, code 0x%04x from cpu %u\n",
           yn(log_count == 3), log[2].code, log[2].from);
    order("sense", 1, SIGP_SENSE, 0);

    /* an external call stays pending at a stopped CPU until it starts */
    delay_ms(10);
    order("stop", 1, SIGP_STOP, 0);
    printf("cpu 1 sensed stopped: %s\n", yn(WAIT_FOR(cpu_stopped(1))));
    order("external call", 1, SIGP_EXTERNAL_CALL, 0);
    order("external call (again)", 1, SIGP_EXTERNAL_CALL, 0);
    order("sense", 1, SIGP_SENSE, 0);
    order("start", 1, SIGP_START, 0);
    WAIT_FOR(log_count >= 4 && cpu1_waits == 5);
    printf("cpu 1 took: code 0x%04x from cpu %u\n", log[3].code, log[3].from);
    order("sense", 1, SIGP_SENSE, 0);

    /* restart of an operating CPU (in its wait): restart interruption */
    delay_ms(10);
    order("restart", 1, SIGP_RESTART, 0);
    WAIT_FOR(cpu1_alive == 2 && cpu1_waits == 6);
    printf("cpu 1 restarted again: %s, restart old psw was its enabled wait: %s\n",
           yn(cpu1_alive == 2),
           yn((cpu1_restart_old_mask & (PSW_WAIT | PSW_EXT)) == (PSW_WAIT | PSW_EXT)));
    order("sense", 1, SIGP_SENSE, 0);
    printf("external interruptions at cpu 1: %d\n", log_count);

    printf("sigp: done, stopping both cpus\n");
    return 0;
}
