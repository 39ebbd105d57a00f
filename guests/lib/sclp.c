/*
 * vmd test guests: a minimal SCLP driver (service call, event masks, VT220
 * console output, Read SCP Info).
 *
 * SERVICE CALL (B220, privileged) takes the command word in R1 and the real
 * address of a Service Call Control Block (SCCB) in R2.  cc 0: the command
 * was accepted; the SCLP then stores its response code in the SCCB header and
 * signals completion with a service-signal external interruption (code
 * 0x2401) whose parameter is the SCCB address (low bits: bit 31 = event
 * pending).  cc 2: busy, cc 3: not operational.  This driver waits for that
 * interruption in an enabled wait before it reads the SCCB.
 *
 * The SCCB must lie outside the first 8 KiB and the prefix area, be
 * doubleword aligned and below 2 GiB, and not cross a 4 KiB boundary: it is
 * one page-aligned page here.
 *
 * SCCB header: u16 length, u8 function code, u8 control mask[3],
 * u16 response code (0x0010 normal read completion, 0x0020 normal completion).
 * Event buffer header: u16 length, u8 type, u8 flags (0x80 accepted), u16 0.
 * Event type 0x1a (ASCII console data, "VT220") carries the bytes right after
 * the event buffer header; QEMU's sclpconsole (the -nographic console, on
 * serial 0) writes them to its chardev unchanged.
 * Event masks: the bit for event type t is the (t-1)th bit from the left.
 */
#include "guest.h"

#define SCLP_CMD_READ_SCP_INFO     0x00020001
#define SCLP_CMD_WRITE_EVENT_DATA  0x00760005
#define SCLP_CMD_WRITE_EVENT_MASK  0x00780005

#define SCLP_RC_NORMAL_READ        0x0010
#define SCLP_RC_NORMAL             0x0020

#define EVTYP_VT220                0x1a
#define EVMASK(t)                  (0x80000000u >> ((t) - 1))

struct sccb_header {
    u16 length;
    u8 function_code;
    u8 control_mask[3];
    u16 response_code;
} __attribute__((packed));

struct evbuf_header {
    u16 length;
    u8 type;
    u8 flags;
    u16 reserved;
} __attribute__((packed));

struct write_event_mask {
    struct sccb_header h;
    u16 reserved;
    u16 mask_length;            /* 4 here */
    u32 cp_receive_mask;
    u32 cp_send_mask;
    u32 sclp_receive_mask;
    u32 sclp_send_mask;
} __attribute__((packed));

struct read_info {
    struct sccb_header h;
    u16 rnmax;                  /* 8 */
    u8 rnsize;                  /* 10: storage increment size in MiB */
    u8 reserved1[5];
    u16 entries_cpu;            /* 16 */
    u16 offset_cpu;             /* 18 */
    u8 reserved2[100 - 20];
    u32 rnsize2;                /* 100 */
    u64 rnmax2;                 /* 104 */
} __attribute__((packed));

static u8 sccb_page[4096] __attribute__((aligned(4096)));

extern volatile u32 sclp_ext_param;
extern volatile int sclp_ext_count;

u32 sclp_sclp_receive_mask, sclp_sclp_send_mask;
static int sclp_ready;
int sclp_errors;

int sclp_call(u32 command, void *sccb)
{
    u32 addr = (u32)(u64)sccb;
    int cc;

    cr0_set(CR0_SERVICE);
    sclp_ext_param = 0;
    do {
        asm volatile(
            "   .insn   rre,0xb2200000,%[cmd],%[sccb]\n"    /* SERVC */
            "   ipm     %[cc]\n"
            "   srl     %[cc],28\n"
            : [cc] "=d"(cc)
            : [cmd] "d"((u64)command), [sccb] "a"((u64)addr)
            : "cc", "memory");
    } while (cc == 2);
    if (cc != 0)
        return -1;
    while ((sclp_ext_param & ~7u) != addr)
        enabled_wait(PSW_EXT);
    return ((struct sccb_header *)sccb)->response_code;
}

void sclp_setup(void)
{
    struct write_event_mask *m = (void *)sccb_page;

    memset(sccb_page, 0, sizeof(struct write_event_mask));
    m->h.length = sizeof(*m);
    m->mask_length = 4;
    m->cp_receive_mask = 0;     /* no input: no unsolicited interruptions */
    m->cp_send_mask = EVMASK(EVTYP_VT220);
    if (sclp_call(SCLP_CMD_WRITE_EVENT_MASK, m) == SCLP_RC_NORMAL) {
        sclp_sclp_receive_mask = m->sclp_receive_mask;
        sclp_sclp_send_mask = m->sclp_send_mask;
    } else {
        sclp_errors++;
    }
    sclp_ready = 1;
}

void sclp_write(const char *s, int len)
{
    struct sccb_header *h = (void *)sccb_page;
    struct evbuf_header *ev = (void *)(h + 1);
    int n;

    if (!sclp_ready)
        sclp_setup();
    while (len > 0) {
        n = len > 4000 ? 4000 : len;
        memset(sccb_page, 0, sizeof(*h) + sizeof(*ev));
        h->length = sizeof(*h) + sizeof(*ev) + n;
        h->function_code = 0;               /* normal write */
        ev->length = sizeof(*ev) + n;
        ev->type = EVTYP_VT220;
        memcpy(ev + 1, s, n);
        if (sclp_call(SCLP_CMD_WRITE_EVENT_DATA, h) != SCLP_RC_NORMAL)
            sclp_errors++;
        s += n;
        len -= n;
    }
}

int sclp_read_info(struct sclp_info *info)
{
    struct read_info *ri = (void *)sccb_page;
    u64 rnmax, rnsize;
    int rc;

    flush();
    memset(sccb_page, 0, sizeof(sccb_page));
    ri->h.length = sizeof(sccb_page);
    rc = sclp_call(SCLP_CMD_READ_SCP_INFO, ri);
    info->response = rc;
    if (rc != SCLP_RC_NORMAL_READ)
        return -1;
    rnmax = ri->rnmax ? ri->rnmax : ri->rnmax2;
    rnsize = ri->rnsize ? ri->rnsize : ri->rnsize2;
    info->memory_mib = rnmax * rnsize;
    info->cpus = ri->entries_cpu;
    return 0;
}
