/*
 * ccw: channel I/O (run with -nic none -device virtio-rng-ccw; without
 * -nic none QEMU adds its default virtio-net-ccw first, and the guest handles
 * it as well).  PoP ch. 13-17: the subchannel-information block
 * (SCHIB: PMCW, SCSW), STORE SUBCHANNEL, MODIFY SUBCHANNEL, START
 * SUBCHANNEL with a format-1 CCW channel program, the I/O interruption
 * (lowcore 0xb8 subsystem-identification word, 0xbc interruption parameter,
 * 0xc0 interruption-identification word), TEST SUBCHANNEL and the IRB.
 *
 * For every subchannel of subchannel set 0 (STSCH until cc 3) it prints the
 * PMCW; then, per device: SSCH while the subchannel is disabled (cc 3), MSCH
 * to enable it with ISC 3 and an interruption parameter, a SENSE ID (0xe4)
 * channel program, an enabled wait for the I/O interruption (CR6 ISC mask),
 * TSCH and the SCSW, the sense-ID bytes (virtio: cu type 3832, cu model =
 * virtio device id), a second TSCH (cc 1: nothing pending), MSCH to disable.
 */
#include "guest.h"

struct pmcw {
    u32 intparm;
    u16 flags;          /* ISC bits 2-4, E bit 8, LM, MM, D, T, V bit 15 */
    u16 devno;
    u8 lpm, pnom, lpum, pim;
    u16 mbi;
    u8 pom, pam;
    u8 chpid[8];
    u32 flags2;
} __attribute__((packed, aligned(4)));

struct scsw {
    u32 flags;          /* key, S, L, CC, F..N, FC bits 17-19, AC 20-26, SC 27-31 */
    u32 cpa;
    u8 dstat;
    u8 cstat;
    u16 count;
} __attribute__((packed, aligned(4)));

struct schib {
    struct pmcw pmcw;
    struct scsw scsw;
    u8 mda[12];
} __attribute__((packed, aligned(4)));

struct orb {
    u32 intparm;
    u32 ctrl;           /* key, S, C, M, Y, F (bit 8: format-1 CCWs), ..., LPM bits 16-23 */
    u32 cpa;
    u32 reserved[5];
} __attribute__((packed, aligned(4)));

struct ccw1 {
    u8 cmd;
    u8 flags;
    u16 count;
    u32 cda;
} __attribute__((packed, aligned(8)));

struct irb {
    struct scsw scsw;
    u8 esw[20];
    u8 ecw[32];
    u8 emw[32];
} __attribute__((packed, aligned(4)));

_Static_assert(sizeof(struct pmcw) == 28, "pmcw");
_Static_assert(sizeof(struct schib) == 52, "schib");

#define PMCW_ISC_MASK   0x3800
#define PMCW_ISC_SHIFT  11
#define PMCW_ENABLED    0x0080
#define PMCW_DNV        0x0001

#define CCW_CMD_SENSE_ID 0xe4
#define CCW_FLAG_SLI     0x20
#define ORB_FORMAT1      0x00800000
#define ORB_LPM_ALL      0x0000ff00

#define ISC              3
#define INTPARM_BASE     0xc0ffee00u

static struct schib schib;
static struct orb orb;
static struct ccw1 ccw;
static struct irb irb;
static u8 sense[8] __attribute__((aligned(8)));     /* the basic sense-ID bytes */

static volatile int io_count;
static volatile u32 io_schid, io_intparm, io_iiw;

static void on_io(u32 schid, u32 intparm, u32 iiw)
{
    io_schid = schid;
    io_intparm = intparm;
    io_iiw = iiw;
    io_count++;
}

static int stsch(u32 schid, struct schib *s)
{
    register u64 r1 asm("1") = schid;
    int cc;

    asm volatile("stsch %[s]\n\tipm %[cc]\n\tsrl %[cc],28"
                 : [cc] "=d"(cc), [s] "=Q"(*s) : "d"(r1) : "cc", "memory");
    return cc;
}

static int msch(u32 schid, struct schib *s)
{
    register u64 r1 asm("1") = schid;
    int cc;

    asm volatile("msch %[s]\n\tipm %[cc]\n\tsrl %[cc],28"
                 : [cc] "=d"(cc) : "d"(r1), [s] "Q"(*s) : "cc", "memory");
    return cc;
}

static int ssch(u32 schid, struct orb *o)
{
    register u64 r1 asm("1") = schid;
    int cc;

    asm volatile("ssch %[o]\n\tipm %[cc]\n\tsrl %[cc],28"
                 : [cc] "=d"(cc) : "d"(r1), [o] "Q"(*o) : "cc", "memory");
    return cc;
}

static int tsch(u32 schid, struct irb *i)
{
    register u64 r1 asm("1") = schid;
    int cc;

    asm volatile("tsch %[i]\n\tipm %[cc]\n\tsrl %[cc],28"
                 : [cc] "=d"(cc), [i] "=Q"(*i) : "d"(r1) : "cc", "memory");
    return cc;
}

static const char *virtio_name(int id)
{
    switch (id) {
    case 1: return "virtio net";
    case 2: return "virtio block";
    case 3: return "virtio console";
    case 4: return "virtio rng";
    case 5: return "virtio balloon";
    case 8: return "virtio scsi";
    default: return "other";
    }
}

static const char *yn(int b) { return b ? "yes" : "no"; }

/* SENSE ID on one subchannel; returns the cu model (virtio id) or -1 */
static int sense_id(u16 sch)
{
    u32 schid = 0x00010000u | sch;
    u32 intparm = INTPARM_BASE | sch;
    int cc, i, n, model = -1, waits;

    printf("subchannel 0.0.%04x:\n", sch);
    memset(&orb, 0, sizeof(orb));
    memset(sense, 0, sizeof(sense));
    ccw.cmd = CCW_CMD_SENSE_ID;
    ccw.flags = CCW_FLAG_SLI;
    ccw.count = sizeof(sense);
    ccw.cda = (u32)(u64)sense;
    orb.intparm = intparm;
    orb.ctrl = ORB_FORMAT1 | ORB_LPM_ALL;
    orb.cpa = (u32)(u64)&ccw;

    cc = ssch(schid, &orb);
    printf("  ssch while disabled: cc=%d\n", cc);

    stsch(schid, &schib);
    schib.pmcw.intparm = intparm;
    schib.pmcw.flags = (schib.pmcw.flags & ~PMCW_ISC_MASK) | (ISC << PMCW_ISC_SHIFT) |
                       PMCW_ENABLED;
    cc = msch(schid, &schib);
    stsch(schid, &schib);
    printf("  msch enable: cc=%d, enabled=%s isc=%u intparm=%08x\n", cc,
           yn(schib.pmcw.flags & PMCW_ENABLED),
           (schib.pmcw.flags & PMCW_ISC_MASK) >> PMCW_ISC_SHIFT, schib.pmcw.intparm);

    io_count = 0;
    cc = ssch(schid, &orb);
    printf("  ssch sense id: cc=%d\n", cc);
    if (cc == 0) {
        for (waits = 0; waits < 1000 && io_count == 0; waits++)
            enabled_wait(PSW_IO);
        printf("  i/o interruption: %d, subchannel id %08x, intparm matches: %s, isc %u\n",
               io_count, io_schid, yn(io_intparm == intparm), (io_iiw >> 27) & 7);
        cc = tsch(schid, &irb);
        printf("  tsch: cc=%d fc=%x ac=%02x sc=%02x dstat=%02x cstat=%02x"
               " residual=%u cpa after ccw: %s\n", cc,
               (irb.scsw.flags >> 12) & 7, (irb.scsw.flags >> 5) & 0x7f,
               irb.scsw.flags & 0x1f, irb.scsw.dstat, irb.scsw.cstat, irb.scsw.count,
               yn(irb.scsw.cpa == (u32)(u64)&ccw + 8));
        n = sizeof(sense) - irb.scsw.count;
        printf("  sense id (%d bytes):", n);
        for (i = 0; i < n && i < (int)sizeof(sense); i++)
            printf(" %02x", sense[i]);
        printf("\n");
        if (n >= 4 && sense[0] == 0xff) {
            printf("  control unit %02x%02x model %02x: %s\n", sense[1], sense[2],
                   sense[3], sense[1] == 0x38 && sense[2] == 0x32 ?
                   virtio_name(sense[3]) : "not virtio");
            model = sense[3];
        }
        cc = tsch(schid, &irb);
        printf("  tsch again: cc=%d\n", cc);
    }

    stsch(schid, &schib);
    schib.pmcw.flags &= ~PMCW_ENABLED;
    cc = msch(schid, &schib);
    stsch(schid, &schib);
    printf("  msch disable: cc=%d, enabled=%s\n", cc, yn(schib.pmcw.flags & PMCW_ENABLED));
    return model;
}

int main(void)
{
    u16 sch, count = 0, rng = 0xffff;
    int cc;

    printf("vmd test guest: ccw (channel subsystem, SENSE ID)\n");
    io_handler = on_io;
    {
        u64 cr6 = 0x80000000UL >> ISC;      /* CR6 bits 32-39: ISC masks */

        asm volatile("lctlg %%c6,%%c6,%0" : : "Q"(cr6));
    }

    for (sch = 0; sch < 64; sch++) {
        cc = stsch(0x00010000u | sch, &schib);
        if (cc == 3)
            break;
        count++;
        printf("stsch 0.0.%04x: cc=%d devno %s0.0.%04x enabled=%s isc=%u"
               " lpm=%02x pim=%02x pam=%02x pom=%02x chpid=%02x\n",
               sch, cc, schib.pmcw.flags & PMCW_DNV ? "" : "(invalid) ",
               schib.pmcw.devno, yn(schib.pmcw.flags & PMCW_ENABLED),
               (schib.pmcw.flags & PMCW_ISC_MASK) >> PMCW_ISC_SHIFT,
               schib.pmcw.lpm, schib.pmcw.pim, schib.pmcw.pam, schib.pmcw.pom,
               schib.pmcw.chpid[0]);
    }
    printf("stsch 0.0.%04x: cc=%d (no such subchannel)\n", sch, cc);

    for (sch = 0; sch < count; sch++) {
        stsch(0x00010000u | sch, &schib);
        if (!(schib.pmcw.flags & PMCW_DNV))
            continue;
        if (sense_id(sch) == 4 && rng == 0xffff)
            rng = sch;
    }
    if (rng != 0xffff)
        printf("virtio rng found: subchannel 0.0.%04x\n", rng);
    else
        printf("virtio rng found: no (run with -device virtio-rng-ccw)\n");
    printf("ccw: done\n");
    return 0;
}
