/*
 * hello: the demo guest.  Prints a banner, what the CPU says about itself
 * (STAP, STIDP, STPX), selected facility bits (STFLE, cross-checked with
 * STFL), facts derived from the TOD clock (STCK, STCKF, STCKE), what SCLP
 * Read SCP Info reports, then powers off.
 *
 * Everything printed is deterministic for a given machine configuration: the
 * TOD clock shows up only as derived facts ("advances: yes").
 */
#include "guest.h"

static const struct {
    int bit;
    const char *name;
} facilities[] = {
    { 0, "N3 instructions" },
    { 1, "z/Architecture installed" },
    { 2, "z/Architecture active" },
    { 7, "STFLE" },
    { 18, "long displacement" },
    { 21, "extended immediate" },
    { 25, "store clock fast" },
    { 34, "general instructions extension" },
    { 45, "distinct operands, high word, population count" },
    { 129, "vector" },
};

static u64 fac[4] __attribute__((aligned(8)));

static int stfle(u64 *list, int doublewords, int *needed)
{
    register u64 r0 asm("0") = doublewords - 1;
    int cc;

    asm volatile(
        "   stfle   %[list]\n"
        "   ipm     %[cc]\n"
        "   srl     %[cc],28\n"
        : [cc] "=d"(cc), "+d"(r0), [list] "=Q"(*(u64 (*)[4])list)
        :
        : "cc", "memory");
    *needed = (int)(r0 & 0xff) + 1;
    return cc;
}

static int facility(int bit)
{
    return (fac[bit / 64] >> (63 - bit % 64)) & 1;
}

static u64 stckf(void)
{
    u64 v;

    asm volatile("stckf %0" : "=Q"(v) : : "cc");
    return v;
}

static void stcke(u8 out[16])
{
    asm volatile("stcke %0" : "=Q"(*(u8 (*)[16])out) : : "cc");
}

static void delay(void)
{
    volatile long i;

    for (i = 0; i < 200000; i++)
        ;
}

int main(void)
{
    struct sclp_info info;
    u64 cpuid, t1, t2, t3, tf1, tf2, secs;
    u8 ext[16];
    u32 prefix, stfl;
    int cc, needed, i;

    printf("=====================================\n");
    printf(" vmd test guest: hello\n");
    printf(" Hello from a freestanding s390x guest\n");
    printf("=====================================\n");

    /* CPU identity */
    asm volatile("stidp %0" : "=Q"(cpuid));
    asm volatile("stpx %0" : "=Q"(prefix));
    printf("cpu address: %u\n", stap());
    printf("cpu id: %016lx (version %02lx, machine type %04lx, format %lu)\n",
           cpuid, cpuid >> 56, (cpuid >> 16) & 0xffff, (cpuid >> 15) & 1);
    printf("prefix: 0x%x\n", prefix);

    /* facilities */
    cc = stfle(fac, 4, &needed);
    printf("stfle: cc=%d doublewords=%d\n", cc, needed);
    for (i = 0; i < (int)ARRAY_SIZE(facilities); i++)
        printf("facility %3d %-48s %s\n", facilities[i].bit, facilities[i].name,
               facility(facilities[i].bit) ? "yes" : "no");
    asm volatile("stfl 0" : : : "memory");
    stfl = LOWCORE->stfl_fac_list;
    printf("stfl matches stfle bits 0-31: %s\n",
           stfl == (u32)(fac[0] >> 32) ? "yes" : "no");

    /* TOD clock */
    cc = stck(&t1);
    delay();
    stck(&t2);
    printf("tod clock: cc=%d (set)\n", cc);
    printf("tod advances: %s\n", t2 > t1 ? "yes" : "no");
    /* bit 51 is one microsecond; the epoch is 1900-01-01 00:00 UTC */
    secs = (t1 >> 12) / 1000000;
    printf("tod later than 2020-01-01: %s\n", secs > 3786825600UL ? "yes" : "no");
    tf1 = stckf();
    delay();
    tf2 = stckf();
    printf("stckf advances: %s\n", tf2 > tf1 && tf1 >= t2 ? "yes" : "no");
    stcke(ext);
    stck(&t3);
    memcpy(&t1, ext + 1, 8);   /* bytes 1-8: TOD bits 0-63 */
    printf("stcke epoch index: %u, consistent with stck: %s\n", ext[0],
           t1 >= tf2 && t1 <= t3 ? "yes" : "no");

    /* SCLP */
    if (sclp_read_info(&info) == 0) {
        printf("sclp read scp info: memory %lu MiB, %u cpu(s)\n",
               info.memory_mib, info.cpus);
    } else {
        printf("sclp read scp info: response 0x%04x\n", info.response);
    }
    printf("sclp event masks: sclp receive %08x, sclp send %08x\n",
           sclp_sclp_receive_mask, sclp_sclp_send_mask);

    printf("hello: done, powering off\n");
    return 0;
}
