/*
 * vmd firmware: channel-subsystem helpers (PoP chapters 13-17).
 *
 * STORE SUBCHANNEL finds devices (the PMCW's device number and its
 * device-number-valid bit), MODIFY SUBCHANNEL enables a subchannel, and
 * START SUBCHANNEL runs a one-CCW channel program (format-1 CCW, all paths).
 * Completion is polled with TEST SUBCHANNEL: CR6 enables no interruption
 * subclass, so the I/O interruption stays pending at the subchannel until
 * TEST SUBCHANNEL clears it; no lowcore is involved.
 *
 * Subchannel sets 1-3 are visible only after CHSC "set domain attributes"
 * (command 0x0031) enabled the multiple-subchannel-sets facility
 * (operation code 2).
 */
#include "fw.h"

struct pmcw {
    u32 intparm;
    u16 flags;              /* ISC bits 2-4, E bit 8, ..., DNV bit 15 */
    u16 devno;
    u8 lpm, pnom, lpum, pim;
    u16 mbi;
    u8 pom, pam;
    u8 chpid[8];
    u32 flags2;
} packed aligned(4);

struct scsw {
    u32 flags;              /* ..., FC bits 17-19, AC 20-26, SC 27-31 */
    u32 cpa;
    u8 dstat;
    u8 cstat;
    u16 count;
} packed aligned(4);

struct schib {
    struct pmcw pmcw;
    struct scsw scsw;
    u8 model_dependent[12];
} packed aligned(4);

struct orb {
    u32 intparm;
    u32 ctrl;               /* key, S, C, M, Y, F (format-1 CCWs) ..., LPM bits 16-23 */
    u32 cpa;
    u32 reserved[5];
} packed aligned(4);

struct ccw1 {
    u8 cmd;
    u8 flags;
    u16 count;
    u32 cda;
} packed aligned(8);

struct irb {
    struct scsw scsw;
    u8 esw[20];
    u8 ecw[32];
    u8 emw[32];
} packed aligned(4);

_Static_assert(sizeof(struct schib) == 52, "schib");
_Static_assert(sizeof(struct irb) == 96, "irb");

#define PMCW_ENABLED        0x0080
#define PMCW_DNV            0x0001
#define PMCW_ISC_MASK       0x3800

#define ORB_FORMAT1         0x00800000
#define ORB_LPM_ALL         0x0000ff00

#define SC_ALERT            0x10
#define SC_PRIMARY          0x04
#define SC_PENDING          0x01

#define DEV_CHANNEL_END     0x08
#define DEV_DEVICE_END      0x04
#define DEV_UNIT_CHECK      0x02
#define DEV_UNIT_EXCEPTION  0x01

#define CHAN_INCORRECT_LENGTH 0x40

#define CCW_CMD_SENSE_ID    0xe4

#define IO_TIMEOUT          (30 * TOD_SECOND)

static struct schib schib;
static struct orb orb;
static struct ccw1 ccw;
static struct irb irb;

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

int css_devno(u32 schid)
{
    if (stsch(schid, &schib) == 3)
        return -1;
    return schib.pmcw.flags & PMCW_DNV ? schib.pmcw.devno : 0x10000;
}

int css_enable(u32 schid)
{
    int tries;

    for (tries = 0; tries < 8; tries++) {
        if (stsch(schid, &schib) == 3)
            return -1;
        if (schib.pmcw.flags & PMCW_ENABLED)
            return 0;
        schib.pmcw.flags = (schib.pmcw.flags & ~PMCW_ISC_MASK) | PMCW_ENABLED;
        schib.pmcw.intparm = schid;
        switch (msch(schid, &schib)) {
        case 0:
            break;
        case 1:                 /* status pending: clear it, then again */
            tsch(schid, &irb);
            break;
        case 3:
            return -1;
        }
    }
    return stsch(schid, &schib) == 0 && (schib.pmcw.flags & PMCW_ENABLED) ? 0 : -1;
}

/* Polls TEST SUBCHANNEL until the start function has ended. */
static int wait_for_status(u32 schid)
{
    u64 deadline = tod_now() + IO_TIMEOUT;

    for (;;) {
        int cc = tsch(schid, &irb);

        if (cc == 3)
            return CCW_ERROR;
        if (cc == 0 && (irb.scsw.flags & SC_PENDING) &&
            (irb.scsw.flags & (SC_PRIMARY | SC_ALERT)))
            return CCW_OK;
        if (tod_now() > deadline)
            return CCW_TIMEOUT;
    }
}

int css_run(u32 schid, u8 cmd, u8 flags, void *data, u16 count, u16 *residual)
{
    int cc, rc, tries;

    ccw.cmd = cmd;
    ccw.flags = flags;
    ccw.count = count;
    ccw.cda = (u32)(u64)data;
    memset(&orb, 0, sizeof(orb));
    orb.intparm = schid;
    orb.ctrl = ORB_FORMAT1 | ORB_LPM_ALL;
    orb.cpa = (u32)(u64)&ccw;

    for (tries = 0;; tries++) {
        cc = ssch(schid, &orb);
        if (cc == 0)
            break;
        if (cc == 3 || tries == 8)
            return CCW_ERROR;
        tsch(schid, &irb);      /* cc 1 status pending, cc 2 busy: clear and retry */
    }
    rc = wait_for_status(schid);
    if (rc != CCW_OK)
        return rc;
    if (residual)
        *residual = irb.scsw.count;
    if (irb.scsw.dstat & DEV_UNIT_CHECK)
        return CCW_UNIT_CHECK;
    if ((irb.scsw.cstat & ~CHAN_INCORRECT_LENGTH) ||
        ((irb.scsw.cstat & CHAN_INCORRECT_LENGTH) && !(flags & CCW_FLAG_SLI)))
        return CCW_ERROR;
    if ((irb.scsw.dstat & (DEV_CHANNEL_END | DEV_DEVICE_END)) != (DEV_CHANNEL_END | DEV_DEVICE_END))
        return CCW_ERROR;
    return CCW_OK;
}

int css_sense_id(u32 schid, struct sense_id *id)
{
    static u8 data[8] aligned(8);
    u16 residual = 0;

    memset(data, 0, sizeof(data));
    if (css_run(schid, CCW_CMD_SENSE_ID, CCW_FLAG_SLI, data, sizeof(data), &residual) != CCW_OK)
        return -1;
    if (sizeof(data) - residual < 4 || data[0] != 0xff)
        return -1;
    memcpy(id, data, sizeof(*id));
    return 0;
}

/* CHSC set domain attributes, enabling the multiple-subchannel-sets facility. */
int css_enable_mss(void)
{
    static u8 area[PAGE_SIZE] aligned(PAGE_SIZE);
    static struct jmp_state probe;
    volatile int cc = -1;

    memset(area, 0, sizeof(area));
    area[0] = 0x04;             /* request length 0x0400 */
    area[3] = 0x31;             /* command code 0x0031 */
    area[7] = 0x02;             /* operation code: MSS */
    if (fw_setjmp(&probe) == 0) {
        probe_state = &probe;
        asm volatile("   .insn   rre,0xb25f0000,%[area],0\n"       /* CHSC */
                     "   ipm     %[cc]\n"
                     "   srl     %[cc],28\n"
                     : [cc] "=d"(cc) : [area] "a"((u64)area) : "cc", "memory");
        probe_state = NULL;
    }
    /* response block at 0x400: length, code 0x0001 is success */
    if (cc != 0 || area[0x402] != 0x00 || area[0x403] != 0x01)
        return -1;
    return 0;
}
