/*
 * bench: fixed amounts of guest work for bench/cpu_bench.py, which times this
 * guest under vmd and under QEMU.  The work is chosen at build time
 * (-DBENCH_LOOP, -DBENCH_CALLS, -DBENCH_TRAP, -DBENCH_SSCH); the guest prints a
 * checksum so both emulators are seen to do the same work, then powers off.
 *
 *   loop:  arithmetic and loads over 1 MiB, 1024 rounds (few stores): CPU-bound code
 *   calls: recursive calls, stack stores, a hash table: call/store-heavy code
 *   trap:  100,000 STPX: privileged instructions the emulator must intercept
 *   ssch:  5,000 NOP channel programs (SSCH, I/O interruption, TSCH) on the first subchannel
 */
#include "guest.h"

#ifdef BENCH_LOOP
static u8 area[1 << 20] __attribute__((aligned(4096)));
#endif

#ifdef BENCH_LOOP
static u64 work(void)
{
    u64 sum = 0;
    int round, i;

    for (i = 0; i < (int)sizeof(area); i++)
        area[i] = (u8)(i * 7 + 3);
    for (round = 0; round < 1024; round++)
        for (i = 0; i < (int)sizeof(area); i += 8)
            sum = (sum ^ *(u64 *)&area[i]) * 0x100000001b3ULL + round;
    return sum;
}
#endif

#ifdef BENCH_CALLS
static u32 table[4096];

static __attribute__((noinline)) u64 fib(int n)
{
    return n < 2 ? (u64)n : fib(n - 1) + fib(n - 2);
}

static u64 work(void)
{
    u64 sum = fib(32);
    u32 x = 1;
    int i;

    for (i = 0; i < 20000000; i++) {
        x = x * 1103515245u + 12345u;
        table[x % 4096] += x;
    }
    for (i = 0; i < 4096; i++)
        sum += table[i];
    return sum;
}
#endif

#ifdef BENCH_TRAP
static u64 work(void)
{
    u32 prefix = 0;
    u64 sum = 0;
    int i;

    for (i = 0; i < 100000; i++) {
        asm volatile("stpx %0" : "=Q"(prefix));
        sum += prefix + 1;
    }
    return sum;
}
#endif

#ifdef BENCH_SSCH
struct schib_words { u32 w[13]; } __attribute__((aligned(4)));
static struct schib_words schib;
static u32 orb[8] __attribute__((aligned(8)));
static u64 ccw __attribute__((aligned(8)));
static u32 irb[24] __attribute__((aligned(4)));

static int io(const char *op, u32 sid)
{
    int cc;
    register u32 r1 asm("1") = sid;

    if (op[0] == 's' && op[1] == 't')
        asm volatile("stsch %1\n\tipm %0\n\tsrl %0,28" : "=d"(cc), "=Q"(schib) : "d"(r1) : "cc", "memory");
    else if (op[0] == 'm')
        asm volatile("msch %1\n\tipm %0\n\tsrl %0,28" : "=d"(cc) : "Q"(schib), "d"(r1) : "cc", "memory");
    else if (op[0] == 's')
        asm volatile("ssch %1\n\tipm %0\n\tsrl %0,28" : "=d"(cc) : "Q"(*orb), "d"(r1) : "cc", "memory");
    else
        asm volatile("tsch %1\n\tipm %0\n\tsrl %0,28" : "=d"(cc), "=Q"(*irb) : "d"(r1) : "cc", "memory");
    return cc;
}

static u64 work(void)
{
    u32 sid = 0x00010000;
    u64 sum = 0;
    u32 tpi[3];
    int i, cc;

    if (io("stsch", sid))
        return 0;
    schib.w[1] |= 0x00800000 | (3 << 27);   /* enabled, ISC 3 */
    io("msch", sid);
    ccw = (0x03ULL << 56) | (0x20ULL << 48) | (1ULL << 32);   /* NOP, SLI, count 1 */
    orb[1] = 0x00800000 | 0x8000;          /* format-1 CCWs, LPM 80 */
    orb[2] = (u32)(u64)&ccw;
    for (i = 0; i < 5000; i++) {
        orb[0] = i;
        cc = io("ssch", sid);
        do {    /* poll for the interruption with TEST PENDING INTERRUPTION (CR6 enables ISC 3) */
            asm volatile("lctlg 6,6,%0" : : "Q"(*(const u64[]){0x10000000}));
            asm volatile("tpi %1\n\tipm %0\n\tsrl %0,28" : "=d"(cc), "=Q"(tpi) : : "cc", "memory");
        } while (cc == 0);
        io("tsch", sid);
        sum += tpi[1];
    }
    return sum;
}
#endif

int main(void)
{
    u64 sum = work();

    printf("bench: checksum %08x%08x\n", (u32)(sum >> 32), (u32)sum);
    return 0;
}
