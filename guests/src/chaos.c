/*
 * chaos: a hostile guest.  Run with -smp 2 and a few virtio devices; it
 * throws pseudo-random (but reproducible: splitmix64 from a fixed seed)
 * input at the machine for a few thousand rounds:
 *   - channel programs of random CCWs (commands, flags, counts, data
 *     addresses anywhere, inside storage or not) on every subchannel, with
 *     format-0 and format-1 CCWs and random IDAW flags;
 *   - virtio-ccw set-up commands with random payloads (queue addresses,
 *     indicators, revisions, features), then kicks through DIAGNOSE 0x500
 *     for random subchannel ids and queue numbers, so devices walk rings
 *     made of whatever storage holds;
 *   - SIGP orders that leave the other CPU stopped (sense, external call,
 *     emergency signal, sense running status, set architecture, invalid
 *     orders) to random CPU addresses with random parameters.
 * The machine must answer each with an architected outcome (a condition
 * code, channel status, a broken virtqueue) and never stop; the guest then
 * prints how many rounds it survived and powers off.
 */
#include "guest.h"

#define ROUNDS 3000

struct orb {
    u32 intparm;
    u32 ctrl;
    u32 cpa;
    u32 reserved[5];
} __attribute__((packed, aligned(4)));

struct schib {
    u32 intparm;
    u16 flags;
    u16 devno;
    u8 rest[48];
} __attribute__((packed, aligned(4)));

static u64 state = 0x766d64u;   /* "vmd" */

static u64 next(void)
{
    u64 z = (state += 0x9e3779b97f4a7c15UL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9UL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebUL;
    return z ^ (z >> 31);
}

static struct orb orb;
static struct schib schib;
static u8 irb[96] __attribute__((aligned(8)));
static u64 program[8] __attribute__((aligned(8)));
static u8 payload[64] __attribute__((aligned(8)));

static int stsch(u32 sid, struct schib *s)
{
    register u64 r1 asm("1") = sid;
    int cc;
    asm volatile("stsch %[s]\n\tipm %[cc]\n\tsrl %[cc],28"
                 : [cc] "=d"(cc), [s] "=Q"(*s) : "d"(r1) : "cc", "memory");
    return cc;
}

static int msch(u32 sid, struct schib *s)
{
    register u64 r1 asm("1") = sid;
    int cc;
    asm volatile("msch %[s]\n\tipm %[cc]\n\tsrl %[cc],28"
                 : [cc] "=d"(cc) : "d"(r1), [s] "Q"(*s) : "cc", "memory");
    return cc;
}

static int ssch(u32 sid, struct orb *o)
{
    register u64 r1 asm("1") = sid;
    int cc;
    asm volatile("ssch %[o]\n\tipm %[cc]\n\tsrl %[cc],28"
                 : [cc] "=d"(cc) : "d"(r1), [o] "Q"(*o) : "cc", "memory");
    return cc;
}

static int tsch(u32 sid, void *i)
{
    register u64 r1 asm("1") = sid;
    int cc;
    asm volatile("tsch 0(%[i])\n\tipm %[cc]\n\tsrl %[cc],28"
                 : [cc] "=d"(cc) : "d"(r1), [i] "a"(i) : "cc", "memory");
    return cc;
}

static s64 kick(u64 sid, u64 queue)
{
    register u64 r1 asm("1") = 3;
    register u64 r2 asm("2") = sid;
    register u64 r3 asm("3") = queue;
    register u64 r4 asm("4") = 0;
    asm volatile("diag 2,4,0x500" : "+d"(r2) : "d"(r1), "d"(r3), "d"(r4) : "memory", "cc");
    return (s64)r2;
}

static int sigp(u16 cpu, u8 order, u64 param)
{
    register u64 r1 asm("1") = param;
    int cc;
    asm volatile("sigp %%r1,%[cpu],0(%[order])\n\tipm %[cc]\n\tsrl %[cc],28"
                 : [cc] "=d"(cc), "+d"(r1) : [cpu] "d"((u64)cpu), [order] "a"((u64)order) : "cc", "memory");
    return cc;
}

/*
 * Device data lands in a region above the program (64 MiB + 32 MiB), or outside storage
 * altogether: the devices must cope with any address, but the guest should outlive its own
 * chaos long enough to report.  Words stored in the region are such addresses as well, so
 * whatever a device takes for a pointer (indicators, rings, IDAWs) stays there too.
 */
#define REGION      0x04000000UL
#define REGION_SIZE 0x02000000UL

static u32 random_address(void)
{
    u64 r = next();

    if ((r & 3) == 0)
        return 0x08000000u | ((u32)(r >> 32) & 0x77fffff8u);      /* beyond 128 MiB of storage */
    return (u32)(REGION + ((r >> 8) % (REGION_SIZE - 4096)));
}

static void seed_region(void)
{
    u64 *p = (u64 *)REGION, *end = (u64 *)(REGION + REGION_SIZE);

    for (; p < end; p += 512)                    /* one safe pointer per 4 KiB keeps this quick */
        *p = random_address();
}

static const u8 virtio_commands[] = { 0x13, 0x33, 0x12, 0x11, 0x22, 0x21, 0x31, 0x32, 0x72, 0x43, 0x53, 0x73,
                                      0x83, 0xe4, 0x04, 0x03, 0x08, 0x99 };
static const u8 safe_orders[] = { 0x01, 0x02, 0x03, 0x12, 0x15, 0x00, 0x7f, 0xff };

static int subchannels;

static void channel_round(u32 sid)
{
    int i, n = 1 + (int)(next() % 6), waits;

    for (i = 0; i < n; i++) {
        u64 r = next();
        u8 cmd = (r & 1) ? virtio_commands[(r >> 8) % sizeof(virtio_commands)] : (u8)(r >> 8);
        u8 flags = (u8)(r >> 16) & 0xfe;         /* every flag but MIDA, now and then chaining */
        u16 count = (r >> 24) & 0x8 ? (u16)(r >> 32) : (u16)((r >> 32) & 0x3f);
        u32 cda = random_address();

        if (i == n - 1)
            flags &= ~0xc0;                      /* the last CCW ends the chain */
        program[i] = ((u64)cmd << 56) | ((u64)flags << 48) | ((u64)count << 32) | cda;
    }
    for (i = 0; i < (int)(sizeof(payload) / 8); i++)
        ((u64 *)payload)[i] = random_address();
    memcpy((void *)(REGION + (next() % (REGION_SIZE - 64)) / 8 * 8), payload, sizeof(payload));
    memset(&orb, 0, sizeof(orb));
    orb.intparm = sid;
    orb.ctrl = 0x0080ff00 | ((next() & 1) ? 0x00020000 : 0);  /* format-1 CCWs, all paths, maybe 64-bit IDAWs */
    orb.cpa = (u32)(u64)program;
    if (ssch(sid, &orb) != 0)
        return;
    for (waits = 0; waits < 100 && tsch(sid, irb) != 0; waits++)
        ;
}

static void enable_all(void)
{
    u32 sid;

    for (sid = 0x00010000; sid < 0x00010040; sid++) {
        if (stsch(sid, &schib) == 3)
            break;
        schib.flags |= 0x0080;
        msch(sid, &schib);
        subchannels++;
    }
}

int main(void)
{
    int round, kicks = 0, orders = 0;

    printf("vmd test guest: chaos\n");
    seed_region();
    enable_all();
    printf("chaos: %d subchannels\n", subchannels);
    for (round = 0; round < ROUNDS; round++) {
        u64 r = next();

        if (subchannels)
            channel_round(0x00010000u | (u32)(r % (u64)subchannels));
        kick((r & 0x10) ? (0x00010000u | (u32)((r >> 8) & 0xffff)) : (u32)(r >> 16),
             (r & 0x20) ? (r >> 40) & 3 : (r >> 40) & 0xffff);
        kicks++;
        sigp((u16)((r >> 24) & 3), safe_orders[(r >> 32) % sizeof(safe_orders)], next());
        orders++;
    }
    printf("chaos: survived %d rounds (%d kicks, %d orders)\n", ROUNDS, kicks, orders);
    return 0;
}
