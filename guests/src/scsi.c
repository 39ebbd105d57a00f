/*
 * scsi: a virtio-scsi host adapter and the SCSI units behind it (virtio 1.2
 * section 5.6; SPC-4, SBC-3, MMC-6).  Run with
 *   -nic none -device virtio-scsi-ccw,id=scsi0,devno=fe.0.0005
 *   -drive file=scsi-hd.img,if=none,id=hd0,format=raw
 *   -device scsi-hd,drive=hd0,bus=scsi0.0,scsi-id=0,lun=0,serial=...
 *   -blockdev file,node-name=cd0,filename=scsi-cd.iso,read-only=on
 *   -device scsi-cd,drive=cd0,scsi-id=0,lun=1
 *   -device scsi-cd,scsi-id=0,lun=3                       (no disc)
 *   -drive file=scsi-script.img,if=none,id=script,format=raw,readonly=on
 *   -device scsi-hd,drive=script,scsi-id=2,lun=5,...
 * (the exact line is in tests/test_guests_qemu.py; the images come from
 * tests/test_virtio_scsi.py).
 *
 * 1. The transport as a modern (revision 1) driver: features, the
 *    configuration space, the control, event and request queues (polled,
 *    no interruptions), four event buffers.
 * 2. The script unit (target 2, LUN 5): TEST UNIT READY until the power-on
 *    unit attention is gone, then READ(10) of the script, a list of
 *    requests, each with its own request header (so LUN field, tag and CDB
 *    are the script's), data-out bytes, response and data-in sizes, and the
 *    descriptor layout.
 * 3. Every script entry runs on its queue and prints what came back: the
 *    used length, the response header (response code, status, sense length,
 *    residual, sense key/ASC/ASCQ) and FNV-1a hashes of the response and
 *    data-in areas, which were filled with 0xee first, so the hashes show
 *    how many bytes the device wrote as well as which; some entries print
 *    their data in hex too.  Control-queue entries print the response bytes.
 * 4. The event queue, which must still be empty (nothing was plugged);
 *    with the script's hot-plug flag, units are plugged in and out while
 *    the guest waits (enabled, for the event's I/O interruption) after its
 *    "ready" lines (tests/test_virtio_scsi.py sends the QMP commands): the
 *    events, the new LUNs, a dropped event and the "events missed" event
 *    after it; then
 *    the configuration space written (smaller sense and CDB sizes), a
 *    command with the smaller headers, and a device reset, after which
 *    every unit reports the reset again.
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
#define ORB_FMT1     0x00800000
#define ORB_LPM_ALL  0x0000ff00
#define ISC          3

#define CMD_SET_VQ          0x13
#define CMD_VDEV_RESET      0x33
#define CMD_READ_FEAT       0x12
#define CMD_WRITE_FEAT      0x11
#define CMD_READ_CONF       0x22
#define CMD_WRITE_CONF      0x21
#define CMD_WRITE_STATUS    0x31
#define CMD_READ_VQ_CONF    0x32
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

static void on_io(u32 sid, u32 parm, u32 word)
{
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

/* DIAGNOSE 0x500, function 3: notify queue `index` of subchannel `sid` */
static s64 notify(u32 sid, u64 index)
{
    register u64 r1 asm("1") = 3;
    register u64 r2 asm("2") = sid;
    register u64 r3 asm("3") = index;
    register u64 r4 asm("4") = 0;
    asm volatile("diag 2,4,0x500" : "+d"(r2) : "d"(r1), "d"(r3), "d"(r4) : "memory", "cc");
    return (s64)r2;
}

static void enable(u32 sid)
{
    stsch(sid, &schib);
    schib.intparm = sid;
    schib.flags = (schib.flags & ~0x3800) | (ISC << 11) | PMCW_ENABLED;
    msch(sid, &schib);
}

/* One CCW, waiting for its status; fails unless channel end + device end. */
static void must(u32 sid, const char *what, u8 cmd, void *data, u16 count)
{
    int waits, st;

    memset(&orb, 0, sizeof(orb));
    ccw.cmd = cmd;
    ccw.flags = 0;
    ccw.count = count;
    ccw.cda = (u32)(u64)data;
    orb.intparm = sid;
    orb.ctrl = ORB_FMT1 | ORB_LPM_ALL;
    orb.cpa = (u32)(u64)&ccw;
    tsch(sid, &irb);            /* a queue notification may have left status pending */
    io_count = 0;
    if (ssch(sid, &orb))
        fail(what);
    for (waits = 0; waits < 1000 && io_count == 0; waits++)
        enabled_wait(PSW_IO);
    if (io_count == 0)
        fail("no I/O interruption");
    tsch(sid, &irb);
    st = irb.dstat << 8 | irb.cstat;
    if (st != 0x0c00) {
        printf("  %s: status %04x sense %02x: FAIL\n", what, st, irb.ecw[0]);
        fail(what);
    }
}

static u32 le32(u32 v) { return __builtin_bswap32(v); }
static u16 le16(u16 v) { return __builtin_bswap16(v); }
static u64 le64(u64 v) { return __builtin_bswap64(v); }

static u32 fnv(const u8 *p, u32 n)
{
    u32 h = 0x811c9dc5;

    while (n--)
        h = (h ^ *p++) * 0x01000193;
    return h;
}

/* ---- queues ------------------------------------------------------------------- */
struct desc {
    u64 addr;
    u32 len;
    u16 flags;
    u16 next;
} __attribute__((packed));

#define QSIZE 16
#define QUEUES 3
#define CONTROLQ 0
#define EVENTQ 1
#define REQUESTQ 2

struct queue {
    struct desc *desc;
    volatile u16 *avail;        /* flags, idx, ring[QSIZE], used_event */
    volatile u16 *used;         /* flags, idx, then (id, len) pairs */
    u16 avail_idx, used_seen;
};

static u8 ring_area[QUEUES][3 * 4096] __attribute__((aligned(4096)));
static struct queue queues[QUEUES];
static u32 sid = 0x00010000;

struct feat { u32 bits; u8 index; } __attribute__((packed));
struct rev { u16 revision; u16 length; } __attribute__((packed));
struct vq_info { u64 desc; u32 res; u16 index; u16 num; u64 avail; u64 used; } __attribute__((packed));
struct vq_conf { u16 index; u16 num; } __attribute__((packed));

static struct feat feat __attribute__((aligned(8)));
static struct rev rev __attribute__((aligned(8)));
static struct vq_info info __attribute__((aligned(8)));
static struct vq_conf vqc __attribute__((aligned(8)));
static u8 status __attribute__((aligned(8)));
static u8 config[64] __attribute__((aligned(8)));

static u32 read_feat(int index)
{
    feat.bits = 0xdeadbeef;
    feat.index = index;
    must(sid, "read feat", CMD_READ_FEAT, &feat, sizeof(feat));
    return le32(feat.bits);
}

static void write_feat(int index, u32 bits)
{
    feat.bits = le32(bits);
    feat.index = index;
    must(sid, "write feat", CMD_WRITE_FEAT, &feat, sizeof(feat));
}

static void set_status(u8 s)
{
    status = s;
    must(sid, "write status", CMD_WRITE_STATUS, &status, 1);
}

static void setup_queue(int i)
{
    struct queue *q = &queues[i];

    memset(ring_area[i], 0, sizeof(ring_area[i]));
    q->desc = (struct desc *)ring_area[i];
    q->avail = (volatile u16 *)(ring_area[i] + 4096);
    q->used = (volatile u16 *)(ring_area[i] + 2 * 4096);
    q->avail_idx = q->used_seen = 0;
    memset(&info, 0, sizeof(info));
    info.desc = (u64)q->desc;
    info.index = i;
    info.num = QSIZE;
    info.avail = (u64)q->avail;
    info.used = (u64)q->used;
    must(sid, "set vq", CMD_SET_VQ, &info, sizeof(info));
}

static void post(struct queue *q, int head)
{
    q->avail[2 + q->avail_idx % QSIZE] = le16(head);
    barrier();
    q->avail_idx++;
    q->avail[1] = le16(q->avail_idx);
    barrier();
}

/* Waits up to ten seconds for the next used entry of queue i (QEMU completes a
 * flush on another thread); returns its length, -1 for none. */
static s64 wait_used(int i)
{
    struct queue *q = &queues[i];
    volatile u32 *ring = (volatile u32 *)(q->used + 2);
    u64 start, now;
    u32 len;

    stck(&start);
    for (;;) {
        barrier();
        if (le16(q->used[1]) != q->used_seen) {
            len = le32(ring[2 * (q->used_seen % QSIZE) + 1]);
            q->used_seen++;
            return len;
        }
        stck(&now);
        if (now - start > (10000000UL << 12))
            return -1;
    }
}

/* ---- one request ------------------------------------------------------------------ */
struct entry {
    u8 queue;
    u8 flags;
    u8 header_len;
    u8 response_len;
    u32 out_len;
    u32 in_len;
    u8 out_seed;
    u8 pad[3];
    u8 header[64];
    u8 payload[48];
} __attribute__((packed));

#define E_PRINT_DATA   0x01     /* print the data-in bytes in hex */
#define E_MERGE_OUT    0x02     /* header and data-out in one descriptor */
#define E_MERGE_IN     0x04     /* response and data-in in one descriptor */
#define E_SPLIT_IN     0x08     /* data-in in two descriptors */

#define MAX_DATA (128 * 1024)
#define MAX_ENTRIES 1024

static u8 outbuf[64 + MAX_DATA] __attribute__((aligned(4096)));
static u8 inbuf[256 + MAX_DATA] __attribute__((aligned(4096)));
static struct entry script[MAX_ENTRIES] __attribute__((aligned(4096)));

static s64 run_entry(const struct entry *e)
{
    struct queue *q = &queues[e->queue];
    int n = 0, i;
    u32 k;

    memcpy(outbuf, e->header, e->header_len);
    for (k = 0; k < e->out_len; k++)
        outbuf[e->header_len + k] = k < sizeof(e->payload) ? e->payload[k] : (u8)(k * 13 + e->out_seed);
    memset(inbuf, 0xee, e->response_len + e->in_len);

    q->desc[n].addr = le64((u64)outbuf);
    q->desc[n].len = le32(e->header_len + (e->flags & E_MERGE_OUT ? e->out_len : 0));
    n++;
    if (e->out_len && !(e->flags & E_MERGE_OUT)) {
        q->desc[n].addr = le64((u64)outbuf + e->header_len);
        q->desc[n].len = le32(e->out_len);
        n++;
    }
    q->desc[n].addr = le64((u64)inbuf);
    q->desc[n].len = le32(e->response_len + (e->flags & E_MERGE_IN ? e->in_len : 0));
    q->desc[n].flags = DESC_WRITE;
    n++;
    if (e->in_len && !(e->flags & E_MERGE_IN)) {
        u32 first = e->flags & E_SPLIT_IN ? e->in_len / 2 : e->in_len;

        q->desc[n].addr = le64((u64)inbuf + e->response_len);
        q->desc[n].len = le32(first);
        q->desc[n].flags = DESC_WRITE;
        n++;
        if (first < e->in_len) {
            q->desc[n].addr = le64((u64)inbuf + e->response_len + first);
            q->desc[n].len = le32(e->in_len - first);
            q->desc[n].flags = DESC_WRITE;
            n++;
        }
    }
    for (i = 0; i < n; i++) {
        q->desc[i].flags = le16((q->desc[i].flags & DESC_WRITE) | (i + 1 < n ? DESC_NEXT : 0));
        q->desc[i].next = le16(i + 1);
    }
    post(q, 0);
    notify(sid, e->queue);
    return wait_used(e->queue);
}

static void print_hex(const char *label, const u8 *p, u32 n)
{
    u32 i;

    printf("%s", label);
    for (i = 0; i < n; i++)
        printf("%02x", p[i]);
    printf("\n");
}

static void report(int number, const struct entry *e, s64 used)
{
    if (used < 0) {
        printf("%03d: no completion\n", number);
        fail("a request did not complete");
    }
    if (e->queue == REQUESTQ) {
        u32 sense_len = le32(*(u32 *)inbuf), resid = le32(*(u32 *)(inbuf + 4));
        u8 st = inbuf[10], resp = inbuf[11];
        u8 key = 0, asc = 0, ascq = 0;

        if (sense_len >= 14 && e->response_len >= 26) {
            key = inbuf[12 + 2];
            asc = inbuf[12 + 12];
            ascq = inbuf[12 + 13];
        }
        printf("%03d: used %lu resp %u status %02x sense %u %x/%02x/%02x resid %u hashes %08x %08x\n",
               number, (u64)used, resp, st, sense_len, key, asc, ascq, resid,
               fnv(inbuf, e->response_len), fnv(inbuf + e->response_len, e->in_len));
    } else {
        printf("%03d: queue %u used %lu", number, e->queue, (u64)used);
        print_hex(" response ", inbuf, e->response_len);
    }
    if (e->flags & E_PRINT_DATA && e->in_len)
        print_hex("     data ", inbuf + e->response_len, e->in_len < 96 ? e->in_len : 96);
}

/* A command built here (the script unit's own, and the ones around the script). */
static s64 command(int target, int lun, const u8 *cdb, int cdb_len, u32 in_len, int header_len, int response_len)
{
    static struct entry e;

    memset(&e, 0, sizeof(e));
    e.queue = REQUESTQ;
    e.header_len = header_len;
    e.response_len = response_len;
    e.in_len = in_len;
    e.header[0] = 1;
    e.header[1] = target;
    e.header[2] = lun >> 8;
    e.header[3] = lun & 0xff;
    memcpy(e.header + 19, cdb, cdb_len);
    return run_entry(&e);
}

static void print_command(const char *what, s64 used, u32 in_len, int response_len)
{
    u32 sense_len = le32(*(u32 *)inbuf);

    printf("  %s: used %lu resp %u status %02x sense %u %x/%02x/%02x resid %u\n", what, (u64)used,
           inbuf[11], inbuf[10], sense_len, sense_len >= 14 ? inbuf[14] : 0, sense_len >= 14 ? inbuf[24] : 0,
           sense_len >= 14 ? inbuf[25] : 0, le32(*(u32 *)(inbuf + 4)));
    if (sense_len > 0 && sense_len < 14)
        print_hex("    sense ", inbuf + 12, sense_len);
}

static u8 events[4][16] __attribute__((aligned(8)));

/* ---- the script ------------------------------------------------------------------------ */
#define SCRIPT_TARGET 2
#define SCRIPT_LUN 5

static u32 script_flags;
#define SCRIPT_HOTPLUG 1        /* the test plugs units in and out at the "ready" lines */

static int load_script(void)
{
    static const u8 tur[6] = {0x00};
    u8 read10[10] = {0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0};
    u32 count, sectors, done;
    int tries;
    s64 used;

    printf("script unit %d/%d:\n", SCRIPT_TARGET, SCRIPT_LUN);
    for (tries = 0; tries < 4; tries++) {
        used = command(SCRIPT_TARGET, SCRIPT_LUN, tur, 6, 0, 51, 108);
        print_command("test unit ready", used, 0, 108);
        if (inbuf[10] == 0 && inbuf[11] == 0)
            break;
    }
    used = command(SCRIPT_TARGET, SCRIPT_LUN, read10, 10, 512, 51, 108);
    print_command("read header", used, 512, 108);
    if (memcmp(inbuf + 108, "VMDSCSI1", 8))
        fail("no script on the script unit");
    count = *(u32 *)(inbuf + 108 + 8);
    script_flags = *(u32 *)(inbuf + 108 + 12);
    if (count > MAX_ENTRIES)
        fail("script too long");
    sectors = (count * sizeof(struct entry) + 511) / 512;
    for (done = 0; done < sectors; done += 64) {
        u32 n = sectors - done > 64 ? 64 : sectors - done;

        read10[2] = (1 + done) >> 24;
        read10[3] = (1 + done) >> 16;
        read10[4] = (1 + done) >> 8;
        read10[5] = 1 + done;
        read10[7] = n >> 8;
        read10[8] = n;
        used = command(SCRIPT_TARGET, SCRIPT_LUN, read10, 10, n * 512, 51, 108);
        if (inbuf[10] || inbuf[11])
            fail("script read failed");
        memcpy((u8 *)script + done * 512, inbuf + 108, n * 512);
    }
    printf("  %u entries\n", count);
    return count;
}

/* ---- main -------------------------------------------------------------------------------- */

static void post_events(void)
{
    struct queue *q = &queues[EVENTQ];
    int i;

    memset(events, 0xee, sizeof(events));
    for (i = 0; i < 4; i++) {
        q->desc[i].addr = le64((u64)events[i]);
        q->desc[i].len = le32(16);
        q->desc[i].flags = le16(DESC_WRITE);
        post(q, i);
    }
    notify(sid, EVENTQ);
}

static void post_event_buffer(int i)
{
    struct queue *q = &queues[EVENTQ];

    memset(events[i], 0xee, sizeof(events[i]));
    q->desc[i].addr = le64((u64)events[i]);
    q->desc[i].len = le32(16);
    q->desc[i].flags = le16(DESC_WRITE);
    post(q, i);
    notify(sid, EVENTQ);
}

/* ---- waiting for the host: enabled, so that no guest code runs while it plugs ---- */
#define TOD_SECOND (1000000UL << 12)
static volatile int timed_out;
static u64 indicator __attribute__((aligned(8)));

static void on_ext(u16 code, u16 cpu_addr, u32 param)
{
    if (code == EXT_CKC)
        timed_out = 1;
}

static void sckc(u64 v) { asm volatile("sckc %0" : : "Q"(v)); }

/* Waits for the next used entry of the event queue (its notification is an I/O
 * interruption through the classic indicators) or `seconds`; -1 on a timeout. */
static s64 wait_event(int seconds)
{
    struct queue *q = &queues[EVENTQ];
    volatile u32 *ring = (volatile u32 *)(q->used + 2);
    u64 now;
    s64 len = -1;

    stck(&now);
    timed_out = 0;
    sckc(now + seconds * TOD_SECOND);
    cr0_set(CR0_CKC);
    while (le16(q->used[1]) == q->used_seen && !timed_out) {
        enabled_wait(PSW_IO | PSW_EXT);
        tsch(sid, &irb);        /* the notification's status, if that was it */
    }
    cr0_clear(CR0_CKC);
    sckc(~0UL);
    if (le16(q->used[1]) != q->used_seen) {
        len = le32(ring[2 * (q->used_seen % QSIZE) + 1]);
        q->used_seen++;
    }
    return len;
}

/* The next event: its buffer's head and contents. */
static void print_event(void)
{
    struct queue *q = &queues[EVENTQ];
    volatile u32 *ring = (volatile u32 *)(q->used + 2);
    u32 head;
    s64 used = wait_event(10);

    if (used < 0) {
        printf("  no event\n");
        return;
    }
    head = le32(ring[2 * ((q->used_seen - 1) % QSIZE)]);
    printf("  event in buffer %u, used %lu:", head, (u64)used);
    print_hex(" ", events[head % 4], 16);
}

static void tur_report(const char *what, int target, int lun)
{
    static const u8 tur[6] = {0x00};

    print_command(what, command(target, lun, tur, 6, 0, 51, 108), 0, 108);
}

static void report_luns(int target)
{
    static const u8 report[12] = {0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0};

    print_command("report luns", command(target, 0, report, 12, 64, 51, 108), 64, 108);
    print_hex("    luns ", inbuf + 108, 32);
}

/* Units plugged in and out while the guest waits (the test sends device_add/device_del). */
static void hotplug(void)
{
    u64 ind_addr = (u64)&indicator;

    must(sid, "set ind", 0x43, &ind_addr, 8);
    ext_handler = on_ext;
    printf("hotplug: ready\n");
    print_event();
    report_luns(4);
    tur_report("test unit ready 4/2", 4, 2);
    tur_report("test unit ready 4/2 again", 4, 2);
    tur_report("test unit ready 0/0", 0, 0);
    printf("unplug: ready\n");
    print_event();
    tur_report("test unit ready 4/2", 4, 2);
    printf("hotplug two: ready\n");
    print_event();
    print_event();
    report_luns(4);
    /* no event buffer is left: the next plug's event is dropped */
    printf("hotplug without buffers: ready\n");
    wait_event(3);              /* no buffer, no event: just time for the host */
    tur_report("test unit ready 5/0", 5, 0);
    post_event_buffer(0);
    print_event();
}

static void print_config(void)
{
    u32 *w = (u32 *)config;

    memset(config, 0, sizeof(config));
    must(sid, "read conf", CMD_READ_CONF, config, 36);
    printf("  config: num_queues %u seg_max %u max_sectors %u cmd_per_lun %u event_info_size %u\n",
           le32(w[0]), le32(w[1]), le32(w[2]), le32(w[3]), le32(w[4]));
    printf("  config: sense_size %u cdb_size %u max_channel %u max_target %u max_lun %u\n",
           le32(w[5]), le32(w[6]), le16(*(u16 *)(config + 28)), le16(*(u16 *)(config + 30)),
           le32(*(u32 *)(config + 32)));
}

static void init_device(void)
{
    int i;

    set_status(0);
    set_status(ST_ACK | ST_DRIVER);
    write_feat(0, (1u << 1) | (1u << 2));       /* HOTPLUG, CHANGE */
    write_feat(1, 1);                           /* VERSION_1 */
    set_status(ST_ACK | ST_DRIVER | ST_FEATURES_OK);
    for (i = 0; i < QUEUES; i++)
        setup_queue(i);
    set_status(ST_ACK | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);
}

int main(void)
{
    static const u8 tur[6] = {0x00};
    int count, i;
    s64 used;

    printf("vmd test guest: scsi (virtio-scsi, scsi-hd, scsi-cd)\n");
    io_handler = on_io;
    {
        u64 cr6 = 0x80000000UL >> ISC;
        asm volatile("lctlg %%c6,%%c6,%0" : : "Q"(cr6));
    }
    if (stsch(sid, &schib) || schib.devno != 0x0005)
        fail("run with the devno the header comment names");
    enable(sid);
    printf("virtio-scsi, modern driver:\n");
    rev.revision = 1;
    rev.length = 0;
    must(sid, "set revision 1", CMD_SET_VIRTIO_REV, &rev, sizeof(rev));
    set_status(ST_ACK | ST_DRIVER);
    printf("  features[0]=%08x features[1]=%08x\n", read_feat(0), read_feat(1));
    for (i = 0; i < 4; i++) {
        vqc.index = i;
        vqc.num = 0xffff;
        must(sid, "read vq conf", CMD_READ_VQ_CONF, &vqc, sizeof(vqc));
        printf("  queue %d size %u\n", i, vqc.num);
    }
    printf("  before the features are set (legacy byte order):\n");
    print_config();
    init_device();
    printf("  with VERSION_1:\n");
    print_config();
    post_events();

    count = load_script();
    for (i = 0; i < count; i++) {
        used = run_entry(&script[i]);
        report(i, &script[i], used);
    }

    printf("events: used idx %u\n", le16(queues[EVENTQ].used[1]));
    if (script_flags & SCRIPT_HOTPLUG)
        hotplug();
    printf("smaller headers (sense 8 bytes, CDB 16 bytes):\n");
    must(sid, "read conf", CMD_READ_CONF, config, 36);
    *(u32 *)(config + 20) = le32(8);
    *(u32 *)(config + 24) = le32(16);
    must(sid, "write conf", CMD_WRITE_CONF, config, 36);
    print_config();
    {
        static const u8 bad_opcode[6] = {0xc0};
        static const u8 read10[10] = {0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0};

        used = command(0, 0, bad_opcode, 6, 0, 35, 20);
        print_command("opcode c0", used, 0, 20);
        printf("CDB of 8 bytes:\n");
        *(u32 *)(config + 24) = le32(8);
        must(sid, "write conf", CMD_WRITE_CONF, config, 36);
        used = command(0, 0, read10, 8, 512, 27, 20);
        print_command("read(10), cut to 8 bytes", used, 512, 20);
    }

    printf("device reset:\n");
    init_device();
    used = command(0, 0, tur, 6, 0, 51, 108);
    print_command("test unit ready, lun 0", used, 0, 108);
    used = command(0, 1, tur, 6, 0, 51, 108);
    print_command("test unit ready, lun 1", used, 0, 108);
    used = command(0, 0, tur, 6, 0, 51, 108);
    print_command("test unit ready, lun 0 again", used, 0, 108);
    print_config();
    printf("scsi: done\n");
    return 0;
}
