/*
 * vserial: virtio-console with MULTIPORT behind virtio-ccw (virtio 1.2,
 * section 5.3).  Run with
 *   -nic none -chardev file,id=out,path=vserial-out.txt -chardev null,id=nul
 *   -device virtio-serial-ccw,id=vs0,devno=fe.0.0001
 *   -device virtconsole,chardev=out -device virtserialport,chardev=nul,name=org.vmd.null
 *
 * 1. A modern driver: features (MULTIPORT, EMERG_WRITE), the configuration
 *    space, queue sizes, then the control protocol: DEVICE_READY, the
 *    PORT_ADD of every port, PORT_READY for each, and what the device answers
 *    (CONSOLE_PORT, PORT_NAME, PORT_OPEN).  The ports it was told about are
 *    listed.  A line goes out through the console (into vserial-out.txt),
 *    then two emergency writes; the console's receive queue gets buffers and
 *    nothing arrives; output to a port whose host side is closed comes back
 *    unread; control messages for ports that do not exist, unknown events and
 *    short messages get no answer.
 * 2. When a port named org.vmd.echo exists (vmd's end-to-end test adds one on
 *    a socket), everything received there is sent back until the data ends
 *    in "quit\n"; adapter interruptions say when input arrived.
 * 3. A legacy driver without MULTIPORT (revision 0, big-endian rings): one
 *    line through port 0.
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
#define CMD_WRITE_CONF      0x21
#define CMD_WRITE_STATUS    0x31
#define CMD_READ_VQ_CONF    0x32
#define CMD_READ_STATUS     0x72
#define CMD_SET_IND_ADAPTER 0x73
#define CMD_SET_VIRTIO_REV  0x83

#define ST_ACK 1
#define ST_DRIVER 2
#define ST_DRIVER_OK 4
#define ST_FEATURES_OK 8

#define DESC_NEXT  1
#define DESC_WRITE 2

#define F_SIZE        0
#define F_MULTIPORT   1
#define F_EMERG_WRITE 2

/* control events */
#define DEVICE_READY 0
#define PORT_ADD     1
#define PORT_REMOVE  2
#define PORT_READY   3
#define CONSOLE_PORT 4
#define RESIZE       5
#define PORT_OPEN    6
#define PORT_NAME    7

static const char *event_name(u16 e)
{
    static const char *names[] = { "DEVICE_READY", "PORT_ADD", "PORT_REMOVE", "PORT_READY",
                                   "CONSOLE_PORT", "RESIZE", "PORT_OPEN", "PORT_NAME" };
    return e < ARRAY_SIZE(names) ? names[e] : "?";
}

static struct orb orb;
static struct ccw1 ccw;
static struct irb irb;
static struct schib schib;

static volatile int io_count;
static volatile u32 io_sid, io_word;

static void on_io(u32 sid, u32 parm, u32 word)
{
    io_sid = sid;
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

/* One CCW; returns "dstat<<8 | cstat" */
static int run(u32 sid, u8 cmd, u8 flags, void *data, u16 count)
{
    int cc, waits;

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
    for (waits = 0; waits < 1000 && io_count == 0; waits++)
        enabled_wait(PSW_IO);
    if (io_count == 0)
        fail("no I/O interruption");
    tsch(sid, &irb);
    return irb.dstat << 8 | irb.cstat;
}

static void must(u32 sid, const char *what, u8 cmd, u8 flags, void *data, u16 count)
{
    int st = run(sid, cmd, flags, data, count);

    if (st != 0x0c00) {
        printf("  %s: status %04x sense %02x: FAIL\n", what, st, irb.ecw[0]);
        fail(what);
    }
}

static const char *yn(int b) { return b ? "yes" : "no"; }

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
static u8 config[16] __attribute__((aligned(8)));

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

/* ---- queues -------------------------------------------------------------------- */
struct desc {
    u64 addr;
    u32 len;
    u16 flags;
    u16 next;
} __attribute__((packed));

/* Ring fields are little-endian for the modern driver, big-endian for the legacy one. */
static int modern;
static u16 sw16(u16 v) { return modern ? __builtin_bswap16(v) : v; }
static u32 sw32(u32 v) { return modern ? __builtin_bswap32(v) : v; }
static u64 sw64(u64 v) { return modern ? __builtin_bswap64(v) : v; }

#define QSIZE   8
#define NQUEUES 10                      /* ports 0-3 and the control pair */
#define CONTROL_RX 2
#define CONTROL_TX 3

struct vq {
    struct desc *desc;
    volatile u16 *avail;                /* flags, idx, ring[num], used_event */
    volatile u16 *used;                 /* flags, idx, then (id, len) pairs of u32 */
    u16 num, avail_idx, used_seen, next_free;
};

static u8 ring_pages[NQUEUES][4096] __attribute__((aligned(4096)));
static struct vq vqs[NQUEUES];

static int rx_queue(int port) { return port == 0 ? 0 : 2 + 2 * port; }
static int tx_queue(int port) { return rx_queue(port) + 1; }

static void vq_layout(struct vq *q, u8 *area, u16 num, int legacy)
{
    q->desc = (struct desc *)area;
    q->avail = (volatile u16 *)(area + 16 * num);
    if (legacy)
        q->used = (volatile u16 *)(((u64)q->avail + 6 + 2 * num + 4095) & ~4095UL);
    else
        q->used = (volatile u16 *)(area + 16 * num + 512);
    q->num = num;
    q->avail_idx = q->used_seen = q->next_free = 0;
}

static void vq_modern(u32 sid, int index)
{
    struct vq *q = &vqs[index];

    memset(ring_pages[index], 0, 4096);
    vq_layout(q, ring_pages[index], QSIZE, 0);
    memset(&info, 0, sizeof(info));
    info.desc = (u64)q->desc;
    info.index = index;
    info.num = QSIZE;
    info.avail = (u64)q->avail;
    info.used = (u64)q->used;
    must(sid, "set vq", CMD_SET_VQ, 0, &info, sizeof(info));
}

/* Make descriptor `d` (one buffer) available. */
static void vq_post(struct vq *q, int d, void *buf, u32 len, int writable)
{
    q->desc[d].addr = sw64((u64)buf);
    q->desc[d].len = sw32(len);
    q->desc[d].flags = sw16(writable ? DESC_WRITE : 0);
    q->desc[d].next = 0;
    q->avail[2 + q->avail_idx % q->num] = sw16(d);
    barrier();
    q->avail_idx++;
    q->avail[1] = sw16(q->avail_idx);
    barrier();
}

/* The next used entry, or 0; its descriptor and length in *id and *len. */
static int vq_used(struct vq *q, u32 *id, u32 *len)
{
    volatile u32 *ring = (volatile u32 *)(q->used + 2);

    barrier();
    if (sw16(q->used[1]) == q->used_seen)
        return 0;
    *id = sw32(ring[2 * (q->used_seen % q->num)]);
    *len = sw32(ring[2 * (q->used_seen % q->num) + 1]);
    q->used_seen++;
    return 1;
}

/* Wait for the next used entry: QEMU may run the device in its main loop, after the kick returned. */
static int vq_wait_used(struct vq *q, u32 *id, u32 *len)
{
    int spins;

    for (spins = 0; spins < 10000000; spins++)
        if (vq_used(q, id, len))
            return 1;
    return 0;
}

/* Send one buffer on a transmit queue and wait until the device gives it back.  The device
 * returns a control message only after it queued its answers, so those are in place then. */
static u32 send(u32 sid, int index, const void *buf, u32 len)
{
    struct vq *q = &vqs[index];
    u32 id, used_len;

    vq_post(q, 0, (void *)buf, len, 0);
    notify(sid, index);
    if (!vq_wait_used(q, &id, &used_len))
        fail("transmit buffer not returned");
    return used_len;
}

/* ---- the control protocol -------------------------------------------------------- */
struct control { u32 id; u16 event; u16 value; } __attribute__((packed));

#define CONTROL_BUFS 8
static u8 control_bufs[CONTROL_BUFS][64] __attribute__((aligned(8)));
static struct control out_msg __attribute__((aligned(8)));

#define MAX_PORTS 4
struct port {
    int added, console, host_open;
    char name[48];
};
static struct port ports[MAX_PORTS];
static u32 sid;

static void control_send(u32 id, u16 event, u16 value)
{
    out_msg.id = sw32(id);
    out_msg.event = sw16(event);
    out_msg.value = sw16(value);
    send(sid, CONTROL_TX, &out_msg, sizeof(out_msg));
}

static void control_post_all(void)
{
    int i;

    for (i = 0; i < CONTROL_BUFS; i++)
        vq_post(&vqs[CONTROL_RX], i, control_bufs[i], sizeof(control_bufs[i]), 1);
    notify(sid, CONTROL_RX);
}

/* Handle what the device sent until it has nothing more to say.  Each buffer goes back to
 * the device before the driver answers, so the device always has somewhere to write. */
static int control_drain(void)
{
    struct control msg;
    u32 d, len;
    int handled = 0;

    while (vq_used(&vqs[CONTROL_RX], &d, &len)) {
        memcpy(&msg, control_bufs[d], sizeof(msg));
        msg.id = sw32(msg.id);
        msg.event = sw16(msg.event);
        msg.value = sw16(msg.value);
        handled++;
        printf("  device: %s port %u value %u", event_name(msg.event), msg.id, msg.value);
        if (msg.event == PORT_NAME && len > sizeof(msg) && len <= sizeof(control_bufs[d])) {
            control_bufs[d][len - 1] = 0;
            printf(" \"%s\" (length %u)", (char *)control_bufs[d] + sizeof(msg), len);
            if (msg.id < MAX_PORTS) {
                memcpy(ports[msg.id].name, control_bufs[d] + sizeof(msg),
                       len - sizeof(msg) < sizeof(ports[0].name) ? len - sizeof(msg) : sizeof(ports[0].name) - 1);
            }
        }
        printf("\n");
        memset(control_bufs[d], 0, sizeof(control_bufs[d]));
        vq_post(&vqs[CONTROL_RX], d, control_bufs[d], sizeof(control_bufs[d]), 1);
        notify(sid, CONTROL_RX);
        if (msg.id >= MAX_PORTS) {
            printf("  (port %u is beyond this driver's queues)\n", msg.id);
            continue;
        }
        switch (msg.event) {
        case PORT_ADD:
            ports[msg.id].added = 1;
            control_send(msg.id, PORT_READY, 1);
            break;
        case CONSOLE_PORT:
            ports[msg.id].console = 1;
            control_send(msg.id, PORT_OPEN, 1);     /* as Linux's hvc does for a console */
            break;
        case PORT_OPEN:
            ports[msg.id].host_open = msg.value;
            break;
        case PORT_REMOVE:
            ports[msg.id].added = 0;
            break;
        }
    }
    return handled;
}

/* ---- 2. echo ----------------------------------------------------------------------- */
static u8 summary __attribute__((aligned(8)));
static u8 dev_indicators[128] __attribute__((aligned(8)));
#define ECHO_BUFS 8
static u8 echo_bufs[ECHO_BUFS][64] __attribute__((aligned(8)));
static u8 tail[5];

/* Wait (enabled for the adapter interruption) for the next used entry of `q`; a congested host
 * keeps a transmit buffer as long as it needs. */
static void wait_used(struct vq *q, u32 *id, u32 *len)
{
    for (;;) {
        summary = 0;
        memset(dev_indicators, 0, sizeof(dev_indicators));
        barrier();
        if (vq_used(q, id, len))
            return;
        enabled_wait(PSW_IO);
    }
}

static void echo(int port)
{
    struct vq *rx = &vqs[rx_queue(port)];
    u32 d, len, tx_id, tx_len, total = 0, i;
    int done = 0;

    printf("echo on port %d:\n", port);
    control_send(port, PORT_OPEN, 1);
    for (i = 0; i < ECHO_BUFS; i++)
        vq_post(rx, i, echo_bufs[i], sizeof(echo_bufs[i]), 1);
    notify(sid, rx_queue(port));
    {
        u64 cr6 = (0x80000000UL >> ISC) | (0x80000000UL >> ADAPTER_ISC);
        asm volatile("lctlg %%c6,%%c6,%0" : : "Q"(cr6));
    }
    while (!done) {
        wait_used(rx, &d, &len);
        if (d >= ECHO_BUFS || len > sizeof(echo_bufs[0]))
            fail("echo: bad used entry");
        vq_post(&vqs[tx_queue(port)], 0, echo_bufs[d], len, 0);
        notify(sid, tx_queue(port));
        wait_used(&vqs[tx_queue(port)], &tx_id, &tx_len);
        for (i = 0; i < len; i++) {
            memcpy(tail, tail + 1, 4);
            tail[4] = echo_bufs[d][i];
        }
        total += len;
        done = memcmp(tail, "quit\n", 5) == 0;
        vq_post(rx, d, echo_bufs[d], sizeof(echo_bufs[d]), 1);
        notify(sid, rx_queue(port));
    }
    printf("  echoed %u bytes, the last ones \"quit\"\n", total);
}

/* ---- 1. the modern driver ---------------------------------------------------------- */
static const char line[] = "vserial: hello through the virtio console\n";
static u8 tx_buf[128] __attribute__((aligned(8)));
static u8 rx_bufs[2][64] __attribute__((aligned(8)));

static void modern_driver(void)
{
    u32 f0, f1, d, len;
    int i, st, echo_port = -1;

    printf("modern driver:\n");
    enable(sid, 1);
    rev.revision = 1;
    rev.length = 0;
    must(sid, "set revision 1", CMD_SET_VIRTIO_REV, 0, &rev, sizeof(rev));
    must(sid, "reset", CMD_VDEV_RESET, 0, NULL, 0);
    set_status(sid, ST_ACK);
    set_status(sid, ST_ACK | ST_DRIVER);
    f0 = read_feat(sid, 0);
    f1 = read_feat(sid, 1);
    printf("  features[0]=%08x features[1]=%08x: SIZE %s, MULTIPORT %s, EMERG_WRITE %s\n", f0, f1,
           yn(f0 >> F_SIZE & 1), yn(f0 >> F_MULTIPORT & 1), yn(f0 >> F_EMERG_WRITE & 1));
    write_feat(sid, 0, 1u << F_MULTIPORT | 1u << F_EMERG_WRITE);
    write_feat(sid, 1, 1);                      /* VERSION_1 */
    set_status(sid, ST_ACK | ST_DRIVER | ST_FEATURES_OK);
    memset(config, 0xaa, sizeof(config));
    must(sid, "read conf", CMD_READ_CONF, 0, config, 12);
    printf("  config: cols %u rows %u max_nr_ports %u emerg_wr %u\n", __builtin_bswap16(*(u16 *)config),
           __builtin_bswap16(*(u16 *)(config + 2)), __builtin_bswap32(*(u32 *)(config + 4)),
           __builtin_bswap32(*(u32 *)(config + 8)));
    st = run(sid, CMD_READ_CONF, 0, config, 16);
    printf("  read conf of 16 bytes: status %04x\n", st);
    {
        static const u16 idx[] = { 0, 1, 2, 3, 4, 63, 64 };
        unsigned k;

        printf("  queue sizes:");
        for (k = 0; k < ARRAY_SIZE(idx); k++) {
            vqc.index = idx[k];
            vqc.num = 0xffff;
            must(sid, "read vq conf", CMD_READ_VQ_CONF, 0, &vqc, sizeof(vqc));
            printf(" %u:%u", idx[k], vqc.num);
        }
        printf("\n");
    }
    modern = 1;
    for (i = 0; i < NQUEUES; i++)
        vq_modern(sid, i);
    summary = 0;
    memset(&ti, 0, sizeof(ti));
    ti.summary = (u64)&summary;
    ti.indicators = (u64)dev_indicators;
    ti.bit = 0;
    ti.isc = ADAPTER_ISC;
    must(sid, "set adapter indicators", CMD_SET_IND_ADAPTER, 0, &ti, sizeof(ti));
    set_status(sid, ST_ACK | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);

    printf("control:\n");
    control_post_all();
    printf("  driver: DEVICE_READY\n");
    control_send(0, DEVICE_READY, 1);
    while (control_drain())
        ;
    printf("ports:\n");
    for (i = 0; i < MAX_PORTS; i++) {
        if (!ports[i].added)
            continue;
        printf("  port %d: %s, name \"%s\", host %s\n", i, ports[i].console ? "console" : "serial port",
               ports[i].name, ports[i].host_open ? "open" : "closed");
        if (!memcmp(ports[i].name, "org.vmd.echo", 13))
            echo_port = i;
    }

    printf("console output:\n");
    memcpy(tx_buf, line, sizeof(line) - 1);
    printf("  one line: used length %u\n", send(sid, tx_queue(0), tx_buf, sizeof(line) - 1));
    for (i = 0; i < 2; i++) {
        memset(config, 0, sizeof(config));
        config[8] = i ? '\n' : '!';             /* emerg_wr, little-endian */
        must(sid, "emergency write", CMD_WRITE_CONF, 0, config, 12);
    }
    printf("  two emergency writes\n");
    memset(config, 0xaa, sizeof(config));
    must(sid, "read conf", CMD_READ_CONF, 0, config, 12);
    printf("  emerg_wr reads back %08x\n", *(u32 *)(config + 8));

    printf("console input:\n");
    for (i = 0; i < 2; i++)
        vq_post(&vqs[rx_queue(0)], i, rx_bufs[i], sizeof(rx_bufs[i]), 1);
    notify(sid, rx_queue(0));
    printf("  received: %s\n", vq_used(&vqs[rx_queue(0)], &d, &len) ? "something" : "nothing");

    printf("a closed port:\n");
    if (ports[1].added && !ports[1].host_open) {
        control_send(1, PORT_OPEN, 1);
        printf("  output to port 1 returned, used length %u\n", send(sid, tx_queue(1), tx_buf, 10));
        control_send(1, PORT_OPEN, 0);
    }

    printf("bad control messages:\n");
    control_send(77, PORT_READY, 1);
    control_send(MAX_PORTS + 100, PORT_OPEN, 1);
    control_send(0, 99, 1);
    control_send(0, PORT_READY, 0);
    out_msg.id = 0;
    printf("  short message: used length %u\n", send(sid, CONTROL_TX, &out_msg, 4));
    printf("  answers: %d\n", control_drain());
    printf("  notify queue 10 (no port 4): gr2=%ld, queue 63: gr2=%ld, queue 64: gr2=%ld\n",
           notify(sid, 10), notify(sid, 63), notify(sid, 64));

    if (echo_port >= 0)
        echo(echo_port);

    set_status(sid, 0);
    printf("  reset\n");
    enable(sid, 0);
}

/* ---- 3. the legacy driver ---------------------------------------------------------- */
static u8 legacy_ring[3 * 4096] __attribute__((aligned(4096)));
static const char legacy_line[] = "vserial: a legacy driver on port 0\n";

static void legacy_driver(void)
{
    struct vq *q = &vqs[1];
    u32 f0;

    printf("legacy driver:\n");
    enable(sid, 1);
    modern = 0;
    set_status(sid, 0);
    set_status(sid, ST_ACK | ST_DRIVER);
    f0 = read_feat(sid, 0);
    printf("  features[0]=%08x: MULTIPORT %s, EMERG_WRITE %s\n", f0, yn(f0 >> F_MULTIPORT & 1),
           yn(f0 >> F_EMERG_WRITE & 1));
    write_feat(sid, 0, 0);
    memset(config, 0xaa, sizeof(config));
    must(sid, "read conf", CMD_READ_CONF, 0, config, 12);
    printf("  config (big-endian): cols %u rows %u max_nr_ports %u\n", *(u16 *)config, *(u16 *)(config + 2),
           *(u32 *)(config + 4));
    vqc.index = 1;
    must(sid, "read vq conf", CMD_READ_VQ_CONF, 0, &vqc, sizeof(vqc));
    memset(legacy_ring, 0, sizeof(legacy_ring));
    vq_layout(q, legacy_ring, vqc.num, 1);
    linfo.queue = (u64)legacy_ring;
    linfo.align = 4096;
    linfo.index = 1;
    linfo.num = vqc.num;
    must(sid, "set vq", CMD_SET_VQ, 0, &linfo, sizeof(linfo));
    set_status(sid, ST_ACK | ST_DRIVER | ST_DRIVER_OK);
    memcpy(tx_buf, legacy_line, sizeof(legacy_line) - 1);
    printf("  one line on queue 1 (size %u): used length %u\n", vqc.num,
           send(sid, 1, tx_buf, sizeof(legacy_line) - 1));
    set_status(sid, 0);
    enable(sid, 0);
}

int main(void)
{
    printf("vmd test guest: vserial (virtio-console with MULTIPORT)\n");
    io_handler = on_io;
    {
        u64 cr6 = 0x80000000UL >> ISC;
        asm volatile("lctlg %%c6,%%c6,%0" : : "Q"(cr6));
    }
    sid = 0x00010000;
    if (stsch(sid, &schib) || schib.devno != 0x0001)
        fail("device: run with the devno the header comment names");
    modern_driver();
    legacy_driver();
    printf("vserial: done\n");
    return 0;
}
