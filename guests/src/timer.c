/*
 * timer: clock-comparator and CPU-timer external interruptions
 * (PoP ch. 4 "Timing", ch. 6 "External Interruption").
 *
 * - clock comparator: SCKC to now + 2 ms, CR0 bit 52 on, enabled wait:
 *   interruption code 0x1004, taken only once the TOD clock has passed the
 *   comparator; a comparator in the past is pending at once; with the
 *   subclass mask off the condition stays pending and is taken when the mask
 *   is turned on;
 * - CPU timer: SPT 2 ms, CR0 bit 53 on, enabled wait: code 0x1005, taken
 *   once 2 ms of TOD time have passed (a CPU timer decrements in the wait
 *   state too);
 * - both pending at once: the clock comparator is taken first (QEMU's
 *   priority among external interruptions: emergency signal, external
 *   call, clock comparator, CPU timer, service signal);
 * - STCKC and STPT read back what SCKC and SPT set.
 * Only derived facts are printed, never raw clock values.
 *
 * Not checked, because QEMU 7.2 TCG gets them wrong (its nanosecond
 * conversion treats the CPU timer as unsigned): that STPT reads a negative
 * value once the timer has expired, and that SPT of a negative value makes
 * the CPU-timer condition pending at once.
 */
#include "guest.h"

#define TOD_US          4096UL          /* bit 51 of the TOD clock is 1 us */
#define TOD_MS          (1000 * TOD_US)

static volatile int ext_count;
static volatile u16 ext_codes[16];

static void on_ext(u16 code, u16 cpu_addr, u32 param)
{
    if (ext_count < (int)ARRAY_SIZE(ext_codes))
        ext_codes[ext_count] = code;
    ext_count++;
    /* the conditions stay pending while they hold: disarm them here */
    if (code == EXT_CKC)
        cr0_clear(CR0_CKC);
    if (code == EXT_CPU_TIMER)
        cr0_clear(CR0_CPUTIMER);
}

static void sckc(u64 v) { asm volatile("sckc %0" : : "Q"(v)); }
static u64 stckc(void) { u64 v; asm volatile("stckc %0" : "=Q"(v)); return v; }
static void spt(s64 v) { asm volatile("spt %0" : : "Q"(v)); }
static s64 stpt(void) { s64 v; asm volatile("stpt %0" : "=Q"(v)); return v; }

static u64 tod(void)
{
    u64 t;

    stck(&t);
    return t;
}

/* wait, bounded, until n external interruptions have been counted */
static int wait_ext(int n)
{
    int i;

    for (i = 0; i < 1000 && ext_count < n; i++)
        enabled_wait(PSW_EXT);
    return ext_count >= n;
}

/* briefly enable external interruptions (a window of ~`us` microseconds) */
static void ext_window(u64 us)
{
    u64 end = tod() + us * TOD_US;
    u8 old;

    asm volatile("stosm %0,0x01" : "=Q"(old) : : "memory");
    while (tod() < end)
        barrier();
    asm volatile("stnsm %0,0xfe" : "=Q"(old) : : "memory");
}

static void delay_us(u64 us)
{
    u64 end = tod() + us * TOD_US;

    while (tod() < end)
        barrier();
}

static const char *yn(int b) { return b ? "yes" : "no"; }

int main(void)
{
    u64 t0, when, after;
    s64 left;

    printf("vmd test guest: timer (clock comparator, CPU timer)\n");
    ext_handler = on_ext;
    cr0_clear(CR0_CKC | CR0_CPUTIMER);
    spt(0x7fffffffffffffffL);
    sckc(~0UL);

    /* clock comparator in the future */
    t0 = tod();
    when = t0 + 2 * TOD_MS;
    sckc(when);
    printf("stckc reads back sckc: %s\n", yn(stckc() == when));
    cr0_set(CR0_CKC);
    wait_ext(1);
    after = tod();
    printf("clock comparator: code 0x%04x, taken after the comparator: %s\n",
           ext_codes[0], yn(ext_count == 1 && after >= when));

    /* clock comparator in the past: pending at once */
    ext_count = 0;
    sckc(tod() - TOD_MS);
    cr0_set(CR0_CKC);
    wait_ext(1);
    printf("comparator in the past: %d interruption(s), code 0x%04x\n",
           ext_count, ext_codes[0]);

    /* subclass mask off: stays pending, taken when the mask goes on */
    ext_count = 0;
    cr0_clear(CR0_CKC);
    sckc(tod());
    ext_window(3000);
    printf("cr0 bit 52 off: %d interruption(s) in 3 ms\n", ext_count);
    cr0_set(CR0_CKC);
    wait_ext(1);
    printf("cr0 bit 52 on: %d interruption(s), code 0x%04x\n", ext_count, ext_codes[0]);

    /* CPU timer: read back (100 ms, so that it cannot expire meanwhile:
     * QEMU 7.2 misreads an expired CPU timer), then 2 ms and wait */
    ext_count = 0;
    spt(100 * TOD_MS);
    left = stpt();
    printf("stpt after spt: positive, at most the value set: %s\n",
           yn(left > 0 && left <= (s64)(100 * TOD_MS)));
    delay_us(100);
    printf("cpu timer counts down: %s\n", yn(stpt() < left));
    t0 = tod();
    spt(2 * TOD_MS);
    cr0_set(CR0_CPUTIMER);
    wait_ext(1);
    after = tod();
    printf("cpu timer: code 0x%04x, taken after the interval: %s\n",
           ext_codes[0], yn(ext_count == 1 && after - t0 >= 2 * TOD_MS));

    /* both pending (disabled for 2 ms): the clock comparator is taken first
     * (also should the CPU timer become pending only later) */
    ext_count = 0;
    sckc(tod() - TOD_MS);
    spt(TOD_US);
    cr0_set(CR0_CKC | CR0_CPUTIMER);
    delay_us(2000);
    wait_ext(2);
    printf("both pending: %d interruptions, order 0x%04x 0x%04x\n",
           ext_count, ext_codes[0], ext_codes[1]);

    spt(0x7fffffffffffffffL);
    sckc(~0UL);
    printf("timer: done\n");
    return 0;
}
