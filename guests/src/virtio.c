/*
 * virtio: the virtio-ccw transport and two devices behind it (virtio 1.2,
 * sections 2 and 4.3; 5.2 block, 5.4 entropy).  Run with
 *   -nic none -device virtio-rng-ccw,devno=fe.0.0001
 *   -drive file=virtio-disk.img,if=none,id=d0,format=raw
 *   -device virtio-blk-ccw,drive=d0,devno=fe.0.0002,serial=VMDDISK1
 * where virtio-disk.img is 1 MiB whose byte i is (i * 7 + i / 512) & 0xff.
 *
 * 1. virtio-rng as a modern (revision 1) driver with classic indicators:
 *    revision and feature negotiation, the queue configuration, one buffer,
 *    DIAGNOSE 0x500 to notify, the I/O interruption with the indicator bit.
 * 2. virtio-blk as a legacy driver, the way the s390-ccw firmware drives it
 *    (no revision command, big-endian rings, polling the used ring): the
 *    configuration space, reads, a write and its read-back, flush, GET_ID,
 *    and requests that must fail (beyond the disk, misaligned, unknown type).
 * 3. virtio-blk again, modern, with adapter interruptions (summary and
 *    device indicators, the interruption-identification word's A bit) and
 *    event_idx.
 * 4. Transport errors: unknown command (unit check, command reject), wrong
 *    lengths (channel program check), a revision above the maximum, SET_IND
 *    once adapter indicators are set, and notifications for subchannels and
 *    queues that do not exist (general register 2 = -EINVAL).
 */
#include "guest.h"

struct schib {
    u32 intparm;
    u16 flags;
    u16 devno;
    u8 lpm, pnom, lpum, pim;
    u16 mbi;
    u8 pom, pam;
    u8 chpid[8];
    u32 flags2;
    u32 scsw[3];
    u8 mda[12];
} __attribute__((packed, aligned(4)));

struct orb {
    u32 intparm;
    u32 ctrl;
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
    u32 flags;
    u32 cpa;
    u8 dstat, cstat;
    u16 count;
    u8 esw[20];
    u8 ecw[32];
    u8 emw[32];
} __attribute__((packed, aligned(4)));

#define PMCW_ENABLED 0x0080
#define CCW_SLI      0x20
#define ORB_FMT1     0x00800000
#define ORB_LPM_ALL  0x0000ff00
#define ISC          3
#define ADAPTER_ISC  5

#define CMD_SET_VQ          0x13
#define CMD_VDEV_RESET      0x33
#define CMD_READ_FEAT       0x12
#define CMD_WRITE_FEAT      0x11
#define CMD_READ_CONF       0x22
#define CMD_WRITE_STATUS    0x31
#define CMD_READ_VQ_CONF    0x32
#define CMD_READ_STATUS     0x72
#define CMD_SET_IND         0x43
#define CMD_SET_IND_ADAPTER 0x73
#define CMD_SET_VIRTIO_REV  0x83

#define ST_ACK 1
#define ST_DRIVER 2
#define ST_DRIVER_OK 4
#define ST_FEATURES_OK 8

#define DESC_NEXT  1
#define DESC_WRITE 2

static struct orb orb;
static struct ccw1 ccw;
static struct irb irb;
static struct schib schib;

static volatile int io_count;
static volatile u32 io_sid, io_parm, io_word;

static void on_io(u32 sid, u32 parm, u32 word)
{
    io_sid = sid;
    io_parm = parm;
    io_word = word;
    io_count++;
}

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

static int tsch(u32 sid, struct irb *i)
{
    register u64 r1 asm("1") = sid;
    int cc;
    asm volatile("tsch %[i]\n\tipm %[cc]\n\tsrl %[cc],28"
                 : [cc] "=d"(cc), [i] "=Q"(*i) : "d"(r1) : "cc", "memory");
    return cc;
}

/* DIAGNOSE 0x500, function 3: notify queue `index` of subchannel `sid`; returns GR2 */
static s64 notify(u32 sid, u64 index)
{
    register u64 r1 asm("1") = 3;
    register u64 r2 asm("2") = sid;
    register u64 r3 asm("3") = index;
    register u64 r4 asm("4") = 0;
    asm volatile("diag 2,4,0x500" : "+d"(r2) : "d"(r1), "d"(r3), "d"(r4) : "memory", "cc");
    return (s64)r2;
}

static void enable(u32 sid, int on)
{
    stsch(sid, &schib);
    schib.intparm = sid;
    schib.flags = (schib.flags & ~0x3800) | (ISC << 11);
    if (on)
        schib.flags |= PMCW_ENABLED;
    else
        schib.flags &= ~PMCW_ENABLED;
    msch(sid, &schib);
}

/* Wait for the pending status of `sid` and collect it with TSCH. */
static void wait_status(u32 sid)
{
    int waits;

    for (waits = 0; waits < 1000 && io_count == 0; waits++)
        enabled_wait(PSW_IO);
    if (io_count == 0)
        fail("no I/O interruption");
    if (io_sid != sid)
        printf("  (interruption for %08x, expected %08x)\n", io_sid, sid);
    tsch(sid, &irb);
}

/* One CCW; returns "dstat<<8 | cstat", the residual count in *residual */
static int run(u32 sid, u8 cmd, u8 flags, void *data, u16 count, u16 *residual)
{
    int cc;

    memset(&orb, 0, sizeof(orb));
    ccw.cmd = cmd;
    ccw.flags = flags;
    ccw.count = count;
    ccw.cda = (u32)(u64)data;
    orb.intparm = sid;
    orb.ctrl = ORB_FMT1 | ORB_LPM_ALL;
    orb.cpa = (u32)(u64)&ccw;
    io_count = 0;
    cc = ssch(sid, &orb);
    if (cc) {
        printf("  ssch cc=%d\n", cc);
        return -1;
    }
    wait_status(sid);
    if (residual)
        *residual = irb.count;
    return irb.dstat << 8 | irb.cstat;
}

/* A command that must work: channel end + device end and no channel status */
static void must(u32 sid, const char *what, u8 cmd, u8 flags, void *data, u16 count)
{
    int st = run(sid, cmd, flags, data, count, NULL);

    if (st != 0x0c00) {
        printf("  %s: status %04x sense %02x: FAIL\n", what, st, irb.ecw[0]);
        fail(what);
    }
}

static const char *yn(int b) { return b ? "yes" : "no"; }

/* ---- rings ---------------------------------------------------------------- */
struct desc {
    u64 addr;
    u32 len;
    u16 flags;
    u16 next;
} __attribute__((packed));

/* Ring fields are big-endian for legacy devices and little-endian for modern ones. */
static int modern;
static u16 sw16(u16 v) { return modern ? __builtin_bswap16(v) : v; }
static u32 sw32(u32 v) { return modern ? __builtin_bswap32(v) : v; }
static u64 sw64(u64 v) { return modern ? __builtin_bswap64(v) : v; }

#define QSIZE 8
static u8 ring_area[3 * 4096] __attribute__((aligned(4096)));
static struct desc *descs = (struct desc *)ring_area;
static volatile u16 *avail;       /* flags, idx, ring[QSIZE], used_event */
static volatile u16 *used_hdr;    /* flags, idx */
static volatile u32 *used_ring;   /* id, len pairs */
static u16 avail_idx, used_seen, qnum = QSIZE;

static void ring_init(int legacy_layout)
{
    memset(ring_area, 0, sizeof(ring_area));
    avail = (volatile u16 *)(ring_area + QSIZE * 16);
    if (legacy_layout)
        used_hdr = (volatile u16 *)(ring_area + 4096);
    else
        used_hdr = (volatile u16 *)(ring_area + 2 * 4096);
    used_ring = (volatile u32 *)((u8 *)used_hdr + 4);
    avail_idx = used_seen = 0;
    qnum = QSIZE;
}

static void post(int head)
{
    avail[2 + avail_idx % qnum] = sw16(head);
    barrier();
    avail_idx++;
    avail[1] = sw16(avail_idx);
    barrier();
}

static int poll_used(void)
{
    int spins;

    for (spins = 0; spins < 1000000; spins++) {
        barrier();
        if (sw16(used_hdr[1]) != used_seen)
            return 1;
    }
    return 0;
}

/* ---- 1. virtio-rng: modern, classic indicators ------------------------------ */
static u64 indicator __attribute__((aligned(8)));
static u8 entropy[16] __attribute__((aligned(8)));
static u8 buf8[8] __attribute__((aligned(8)));
static u8 config[64] __attribute__((aligned(8)));

struct feat { u32 bits; u8 index; } __attribute__((packed));
struct rev { u16 revision; u16 length; } __attribute__((packed));
struct vq_info { u64 desc; u32 res; u16 index; u16 num; u64 avail; u64 used; } __attribute__((packed));
struct vq_info_legacy { u64 queue; u32 align; u16 index; u16 num; } __attribute__((packed));
struct vq_conf { u16 index; u16 num; } __attribute__((packed));
struct thinint { u64 summary; u64 indicators; u64 bit; u8 isc; } __attribute__((packed));

static struct feat feat __attribute__((aligned(8)));
static struct rev rev __attribute__((aligned(8)));
static struct vq_info info __attribute__((aligned(8)));
static struct vq_info_legacy linfo __attribute__((aligned(8)));
static struct vq_conf vqc __attribute__((aligned(8)));
static struct thinint ti __attribute__((aligned(8)));
static u8 status __attribute__((aligned(8)));

static u32 read_feat(u32 sid, int index)
{
    feat.bits = 0xdeadbeef;
    feat.index = index;
    must(sid, "read feat", CMD_READ_FEAT, 0, &feat, sizeof(feat));
    return __builtin_bswap32(feat.bits);        /* little-endian on the wire */
}

static void write_feat(u32 sid, int index, u32 bits)
{
    feat.bits = __builtin_bswap32(bits);
    feat.index = index;
    must(sid, "write feat", CMD_WRITE_FEAT, 0, &feat, sizeof(feat));
}

static void set_status(u32 sid, u8 s)
{
    status = s;
    must(sid, "write status", CMD_WRITE_STATUS, 0, &status, 1);
}

static void modern_queue(u32 sid, int index, int num)
{
    memset(&info, 0, sizeof(info));
    info.desc = (u64)descs;
    info.index = index;
    info.num = num;
    info.avail = (u64)avail;
    info.used = (u64)used_hdr;
    must(sid, "set vq", CMD_SET_VQ, 0, &info, sizeof(info));
}

static void test_rng(u32 sid)
{
    int i, nonzero = 0;
    u16 residual;

    printf("virtio-rng, modern driver with classic indicators:\n");
    enable(sid, 1);
    rev.revision = 1;
    rev.length = 0;
    must(sid, "set revision 1", CMD_SET_VIRTIO_REV, 0, &rev, sizeof(rev));
    must(sid, "reset", CMD_VDEV_RESET, 0, NULL, 0);
    set_status(sid, ST_ACK);
    set_status(sid, ST_ACK | ST_DRIVER);
    printf("  features[0]=%08x features[1]=%08x features[2]=%08x\n",
           read_feat(sid, 0), read_feat(sid, 1), read_feat(sid, 2));
    write_feat(sid, 0, 0);
    write_feat(sid, 1, 1);                      /* VERSION_1 */
    set_status(sid, ST_ACK | ST_DRIVER | ST_FEATURES_OK);
    status = 0;
    must(sid, "read status", CMD_READ_STATUS, 0, &status, 1);
    printf("  status after FEATURES_OK: %02x\n", status);
    vqc.index = 0;
    vqc.num = 0xffff;
    must(sid, "read vq conf", CMD_READ_VQ_CONF, 0, &vqc, sizeof(vqc));
    printf("  queue 0 size %u\n", vqc.num);
    vqc.index = 1;
    must(sid, "read vq conf 1", CMD_READ_VQ_CONF, 0, &vqc, sizeof(vqc));
    printf("  queue 1 size %u\n", vqc.num);
    modern = 1;
    ring_init(0);
    modern_queue(sid, 0, QSIZE);
    indicator = 0;
    u64 ind_addr = (u64)&indicator;
    must(sid, "set ind", CMD_SET_IND, 0, &ind_addr, 8);
    set_status(sid, ST_ACK | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);

    descs[0].addr = sw64((u64)entropy);
    descs[0].len = sw32(sizeof(entropy));
    descs[0].flags = sw16(DESC_WRITE);
    post(0);
    io_count = 0;
    printf("  notify: gr2=%ld\n", notify(sid, 0));
    wait_status(sid);
    printf("  i/o interruption: status control %02x dstat %02x, indicator %016lx\n",
           irb.flags & 0x1f, irb.dstat, indicator);
    printf("  used idx %u, id %u, len %u\n", sw16(used_hdr[1]), sw32(used_ring[0]), sw32(used_ring[1]));
    for (i = 0; i < (int)sizeof(entropy); i++)
        nonzero |= entropy[i];
    printf("  entropy received: %s\n", yn(nonzero != 0));

    /* transport errors on this device */
    printf("transport errors:\n");
    int st = run(sid, 0x99, 0, buf8, 8, NULL);
    printf("  unknown command: status %04x sense %02x\n", st, irb.ecw[0]);
    st = run(sid, CMD_READ_FEAT, 0, &feat, 8, NULL);
    printf("  read feat with 8 bytes: status %04x\n", st);
    st = run(sid, CMD_READ_FEAT, CCW_SLI, &feat, 8, &residual);
    printf("  read feat with 8 bytes and SLI: status %04x residual %u\n", st, residual);
    st = run(sid, CMD_READ_FEAT, 0, NULL, 5, NULL);
    printf("  read feat without data address: status %04x\n", st);
    rev.revision = 1;
    st = run(sid, CMD_SET_VIRTIO_REV, 0, &rev, sizeof(rev), NULL);
    printf("  second set revision: status %04x sense %02x\n", st, irb.ecw[0]);
    memset(&ti, 0, sizeof(ti));
    ti.summary = (u64)buf8;
    ti.indicators = (u64)&indicator;
    st = run(sid, CMD_SET_IND_ADAPTER, 0, &ti, sizeof(ti), NULL);
    printf("  set adapter indicators over classic ones: status %04x sense %02x\n", st, irb.ecw[0]);
    printf("  notify subchannel 0.0.ffff: gr2=%ld\n", notify(0x0001ffff, 0));
    printf("  notify queue 5: gr2=%ld, queue 1023: gr2=%ld, queue 1024: gr2=%ld\n", notify(sid, 5),
           notify(sid, 1023), notify(sid, 1024));
    enable(sid, 0);
    enable(sid, 1);
    rev.revision = 3;
    st = run(sid, CMD_SET_VIRTIO_REV, 0, &rev, sizeof(rev), NULL);
    printf("  revision 3 after re-enabling: status %04x sense %02x\n", st, irb.ecw[0]);
    rev.revision = 2;
    st = run(sid, CMD_SET_VIRTIO_REV, 0, &rev, sizeof(rev), NULL);
    printf("  revision 2: status %04x\n", st);
    enable(sid, 0);
}

/* ---- 2. virtio-blk: legacy, polling ------------------------------------------ */
struct blk_req { u32 type; u32 ioprio; u64 sector; } __attribute__((packed));
static struct blk_req req __attribute__((aligned(16)));
static u8 sector_buf[1024] __attribute__((aligned(512)));
static u8 req_status;

static int blk_request(u32 sid, u32 type, u64 sector, void *data, u32 len, int write)
{
    int n = 0;

    req.type = sw32(type);
    req.ioprio = 0;
    req.sector = sw64(sector);
    req_status = 0xee;
    descs[0].addr = sw64((u64)&req);
    descs[0].len = sw32(sizeof(req));
    descs[0].flags = sw16(DESC_NEXT);
    descs[0].next = sw16(1);
    if (len) {
        descs[1].addr = sw64((u64)data);
        descs[1].len = sw32(len);
        descs[1].flags = sw16(DESC_NEXT | (write ? 0 : DESC_WRITE));
        descs[1].next = sw16(2);
        n = 2;
    } else {
        descs[0].next = sw16(2);
        n = 2;
    }
    descs[n].addr = sw64((u64)&req_status);
    descs[n].len = sw32(1);
    descs[n].flags = sw16(DESC_WRITE);
    post(0);
    notify(sid, 0);
    if (!poll_used())
        fail("no used buffer");
    used_seen++;
    return req_status;
}

static u8 expect(u64 i) { return (u8)(i * 7 + i / 512); }

static int check_sector(u8 *p, u64 sector)
{
    int i;

    for (i = 0; i < 512; i++)
        if (p[i] != expect(sector * 512 + i))
            return 0;
    return 1;
}

static void test_blk_legacy(u32 sid)
{
    u16 residual;
    int st;

    printf("virtio-blk, legacy driver (as firmware), polling:\n");
    enable(sid, 1);
    set_status(sid, 0);
    set_status(sid, ST_ACK | ST_DRIVER);
    printf("  features[0]=%08x features[1]=%08x\n", read_feat(sid, 0), read_feat(sid, 1));
    memset(config, 0xaa, sizeof(config));
    st = run(sid, CMD_READ_FEAT, CCW_SLI, &feat, 8, &residual);
    printf("  read feat with SLI and 8 bytes: status %04x residual %u\n", st, residual);
    /* (QEMU 7.2 leaves the residual count of READ_CONF stale, so it is not printed) */
    st = run(sid, CMD_READ_CONF, CCW_SLI, config, sizeof(config), &residual);
    printf("  read conf %u bytes with SLI: status %04x\n", (unsigned)sizeof(config), st);
    printf("  capacity %lu sectors, seg_max %u, geometry %u/%u/%u, blk_size %u\n",
           *(u64 *)config, *(u32 *)(config + 12), *(u16 *)(config + 16), config[18], config[19],
           *(u32 *)(config + 20));
    printf("  topology: exp %u align %u min_io %u opt_io %u; writeback %u; num_queues %u\n",
           config[24], config[25], *(u16 *)(config + 26), *(u32 *)(config + 28), config[32],
           *(u16 *)(config + 34));
    printf("  discard: max %u seg %u align %u; write zeroes: max %u seg %u unmap %u\n",
           *(u32 *)(config + 36), *(u32 *)(config + 40), *(u32 *)(config + 44),
           *(u32 *)(config + 48), *(u32 *)(config + 52), config[56]);
    {
        static const u16 sizes[] = { 8, 36, 48, 56, 57, 60, 61, 64 };
        unsigned k;

        printf("  read conf without SLI:");
        for (k = 0; k < ARRAY_SIZE(sizes); k++)
            printf(" %u:%04x", sizes[k], run(sid, CMD_READ_CONF, 0, config, sizes[k], NULL));
        printf("\n");
    }
    vqc.index = 0;
    must(sid, "read vq conf", CMD_READ_VQ_CONF, 0, &vqc, sizeof(vqc));
    printf("  queue 0 size %u\n", vqc.num);
    modern = 0;
    ring_init(1);
    linfo.queue = (u64)descs;
    linfo.align = 4096;
    linfo.index = 0;
    linfo.num = QSIZE;
    st = run(sid, CMD_SET_VQ, 0, &linfo, sizeof(linfo), NULL);
    printf("  legacy set vq with %u entries (device has %u): status %04x\n", QSIZE, vqc.num, st);
    linfo.num = vqc.num;
    must(sid, "set vq", CMD_SET_VQ, 0, &linfo, sizeof(linfo));
    linfo.align = 2048;
    st = run(sid, CMD_SET_VQ, 0, &linfo, sizeof(linfo), NULL);
    printf("  legacy set vq with align 2048: status %04x\n", st);
    /* the legacy layout for the device's size: used ring on the next 4 KiB boundary */
    qnum = vqc.num;
    avail = (volatile u16 *)(ring_area + qnum * 16);
    used_hdr = (volatile u16 *)(((u64)avail + 6 + 2 * qnum + 4095) & ~4095UL);
    used_ring = (volatile u32 *)((u8 *)used_hdr + 4);
    set_status(sid, ST_ACK | ST_DRIVER | ST_DRIVER_OK);
}

static void test_blk_io(u32 sid, const char *label)
{
    int st, i;
    u64 capacity = *(u64 *)config;

    memset(sector_buf, 0, sizeof(sector_buf));
    st = blk_request(sid, 0, 0, sector_buf, 1024, 0);
    printf("  %s read sectors 0-1: status %d, data %s\n", label, st,
           check_sector(sector_buf, 0) && check_sector(sector_buf + 512, 1) ? "matches" : "DIFFERS");
    for (i = 0; i < 512; i++)
        sector_buf[i] = (u8)(0x5a ^ i);
    st = blk_request(sid, 1, 3, sector_buf, 512, 1);
    printf("  %s write sector 3: status %d\n", label, st);
    memset(sector_buf, 0, 512);
    st = blk_request(sid, 0, 3, sector_buf, 512, 0);
    for (i = 0; i < 512 && sector_buf[i] == (u8)(0x5a ^ i); i++)
        ;
    printf("  %s read back sector 3: status %d, %s\n", label, st, i == 512 ? "as written" : "DIFFERS");
    st = blk_request(sid, 4, 0, NULL, 0, 0);
    printf("  %s flush: status %d\n", label, st);
    memset(sector_buf, 0, 32);
    st = blk_request(sid, 8, 0, sector_buf, 20, 0);
    printf("  %s get id: status %d, \"%s\"\n", label, st, (char *)sector_buf);
    st = blk_request(sid, 0, capacity, sector_buf, 512, 0);
    printf("  %s read at the capacity: status %d\n", label, st);
    st = blk_request(sid, 0, capacity - 1, sector_buf, 1024, 0);
    printf("  %s read across the end: status %d\n", label, st);
    st = blk_request(sid, 0, 1, sector_buf, 100, 0);
    printf("  %s read of 100 bytes: status %d\n", label, st);
    st = blk_request(sid, 77, 0, sector_buf, 512, 0);
    printf("  %s request type 77: status %d\n", label, st);
}

/* ---- 3. virtio-blk: modern with adapter interruptions -------------------------- */
static u8 summary __attribute__((aligned(8)));
static u8 dev_indicators[8] __attribute__((aligned(8)));

static void test_blk_adapter(u32 sid)
{
    int st;

    printf("virtio-blk, modern driver with adapter interruptions:\n");
    enable(sid, 0);                         /* a disabled subchannel forgets the revision */
    enable(sid, 1);
    rev.revision = 2;
    rev.length = 0;
    must(sid, "set revision 2", CMD_SET_VIRTIO_REV, 0, &rev, sizeof(rev));
    set_status(sid, 0);
    set_status(sid, ST_ACK | ST_DRIVER);
    printf("  features[0]=%08x features[1]=%08x\n", read_feat(sid, 0), read_feat(sid, 1));
    write_feat(sid, 0, 1u << 29);           /* RING_EVENT_IDX */
    write_feat(sid, 1, 1);                  /* VERSION_1 */
    set_status(sid, ST_ACK | ST_DRIVER | ST_FEATURES_OK);
    memset(config, 0, sizeof(config));
    must(sid, "read conf", CMD_READ_CONF, CCW_SLI, config, 8);
    printf("  capacity (little-endian now) %lu sectors\n", __builtin_bswap64(*(u64 *)config));
    modern = 1;
    ring_init(0);
    modern_queue(sid, 0, QSIZE);
    summary = 0;
    memset(dev_indicators, 0, sizeof(dev_indicators));
    memset(&ti, 0, sizeof(ti));
    ti.summary = (u64)&summary;
    ti.indicators = (u64)dev_indicators;
    ti.bit = 13;
    ti.isc = ADAPTER_ISC;
    must(sid, "set adapter indicators", CMD_SET_IND_ADAPTER, 0, &ti, sizeof(ti));
    u64 ind_addr = (u64)&indicator;
    st = run(sid, CMD_SET_IND, 0, &ind_addr, 8, NULL);
    printf("  set classic indicators after adapter ones: status %04x sense %02x\n", st, irb.ecw[0]);
    set_status(sid, ST_ACK | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);
    /* used_event = 0: interrupt after the first used buffer */
    avail[2 + qnum] = 0;
    {
        u64 cr6 = (0x80000000UL >> ISC) | (0x80000000UL >> ADAPTER_ISC);
        asm volatile("lctlg %%c6,%%c6,%0" : : "Q"(cr6));
    }
    req.type = sw32(0);
    req.sector = sw64(2);
    descs[0].addr = sw64((u64)&req);
    descs[0].len = sw32(sizeof(req));
    descs[0].flags = sw16(DESC_NEXT);
    descs[0].next = sw16(1);
    descs[1].addr = sw64((u64)sector_buf);
    descs[1].len = sw32(512);
    descs[1].flags = sw16(DESC_NEXT | DESC_WRITE);
    descs[1].next = sw16(2);
    descs[2].addr = sw64((u64)&req_status);
    descs[2].len = sw32(1);
    descs[2].flags = sw16(DESC_WRITE);
    post(0);
    io_count = 0;
    notify(sid, 0);
    while (io_count == 0)
        enabled_wait(PSW_IO);
    printf("  adapter interruption: subchannel id %08x parm %08x word %08x\n", io_sid, io_parm, io_word);
    printf("  summary %02x, device indicators %02x %02x, avail_event %u\n", summary,
           dev_indicators[1], dev_indicators[2], sw16(*(volatile u16 *)((u8 *)used_ring + 8 * qnum)));
    printf("  read sector 2: status %d, data %s\n", req_status,
           check_sector(sector_buf, 2) ? "matches" : "DIFFERS");
    enable(sid, 0);
}

int main(void)
{
    u32 rng = 0x00010000, blk = 0x00010001;

    printf("vmd test guest: virtio (virtio-ccw transport, virtio-rng, virtio-blk)\n");
    io_handler = on_io;
    {
        u64 cr6 = 0x80000000UL >> ISC;
        asm volatile("lctlg %%c6,%%c6,%0" : : "Q"(cr6));
    }
    if (stsch(rng, &schib) || schib.devno != 0x0001 || stsch(blk, &schib) || schib.devno != 0x0002)
        fail("devices: run with the devnos the header comment names");
    test_rng(rng);
    test_blk_legacy(blk);
    test_blk_io(blk, "legacy");
    test_blk_adapter(blk);
    printf("virtio: done\n");
    return 0;
}
