/*
 * vmd firmware: the SCLP (console output, storage size, loadparm).
 *
 * SERVICE CALL (B220) takes the command word in R1 and the real address of a
 * Service Call Control Block (SCCB) in R2; cc 0 means accepted, cc 2 busy.
 * The SCLP stores its response code in the SCCB header and signals
 * completion with a service-signal external interruption (code 0x2401)
 * whose parameter is the SCCB address.  The firmware waits for it enabled
 * for external interruptions with only the service-signal subclass (CR0 bit
 * 54) on.
 *
 * The interruption stores into the lowcore (old PSW, code, parameter) and
 * the wait writes the external new PSW; after a program has been loaded at
 * address 0 those bytes are the program's.  sclp_call() therefore keeps a
 * copy of the first 512 bytes and puts them back after the wait.
 *
 * Commands: Write Event Mask (0x00780005; send mask: event type 0x1a, ASCII
 * console data, which QEMU's sclpconsole writes to its chardev unchanged),
 * Write Event Data (0x00760005; one event buffer per call, the bytes right
 * after the 6-byte event buffer header), Read SCP Info (0x00020001; storage
 * increments at 8/10 and 100/104, the loadparm in EBCDIC at 24).
 */
#include "fw.h"

#define SCLP_CMD_READ_SCP_INFO     0x00020001
#define SCLP_CMD_WRITE_EVENT_DATA  0x00760005
#define SCLP_CMD_WRITE_EVENT_MASK  0x00780005

#define SCLP_RC_NORMAL_READ        0x0010
#define SCLP_RC_NORMAL             0x0020

#define EVENT_ASCII_CONSOLE        0x1a
#define EVENT_MASK(type)           (0x80000000u >> ((type) - 1))

#define EXT_CODE_SERVICE_SIGNAL    0x2401
#define LOWCORE_KEPT               0x200

struct sccb_header {
    u16 length;
    u8 function_code;
    u8 control_mask[3];
    u16 response_code;
} packed;

struct event_buffer_header {
    u16 length;
    u8 type;
    u8 flags;
    u16 reserved;
} packed;

struct write_event_mask {
    struct sccb_header h;
    u16 reserved;
    u16 mask_length;
    u32 cp_receive_mask;
    u32 cp_send_mask;
    u32 sclp_receive_mask;
    u32 sclp_send_mask;
} packed;

struct read_info {
    struct sccb_header h;
    u16 rnmax;                  /* 8: storage increments */
    u8 rnsize;                  /* 10: increment size in MiB */
    u8 reserved1[13];
    u8 loadparm[8];             /* 24 */
    u8 reserved2[100 - 32];
    u32 rnsize2;                /* 100 */
    u64 rnmax2;                 /* 104 */
} packed;

_Static_assert(__builtin_offsetof(struct read_info, loadparm) == 24, "read info");
_Static_assert(__builtin_offsetof(struct read_info, rnmax2) == 104, "read info");

static u8 sccb[PAGE_SIZE] aligned(PAGE_SIZE);
static u8 kept_lowcore[LOWCORE_KEPT] aligned(8);
static int console_ready;
static u64 storage_bytes;
static u8 machine_loadparm[8];

static int sclp_call(u32 command)
{
    u32 sccb_addr = (u32)(u64)sccb;
    int cc, waits;

    memcpy(kept_lowcore, (const void *)lowcore(0), LOWCORE_KEPT);
    lctlg0(stctg0() | CR0_SERVICE_SIGNAL);
    do {
        asm volatile("   .insn   rre,0xb2200000,%[cmd],%[sccb]\n"   /* SERVC */
                     "   ipm     %[cc]\n"
                     "   srl     %[cc],28\n"
                     : [cc] "=d"(cc)
                     : [cmd] "d"((u64)command), [sccb] "a"((u64)sccb_addr)
                     : "cc", "memory");
    } while (cc == 2);
    if (cc == 0) {
        /* other service signals (an earlier, unconsumed one) are skipped */
        for (waits = 0; waits < 16; waits++) {
            wait_for_external();
            if (*(volatile u16 *)lowcore(LC_EXT_CODE) == EXT_CODE_SERVICE_SIGNAL &&
                (lc_read32(LC_EXT_PARAMS) & ~7u) == sccb_addr)
                break;
        }
    }
    lctlg0(stctg0() & ~CR0_SERVICE_SIGNAL);
    memcpy((void *)lowcore(0), kept_lowcore, LOWCORE_KEPT);
    return cc == 0 ? ((struct sccb_header *)sccb)->response_code : -1;
}

static void read_scp_info(void)
{
    struct read_info *info = (void *)sccb;
    u64 increments, size_mib;

    memset(sccb, 0, sizeof(sccb));
    info->h.length = sizeof(sccb);
    if (sclp_call(SCLP_CMD_READ_SCP_INFO) != SCLP_RC_NORMAL_READ) {
        memset(machine_loadparm, 0x40, sizeof(machine_loadparm));     /* EBCDIC blanks */
        return;
    }
    increments = info->rnmax ? info->rnmax : info->rnmax2;
    size_mib = info->rnsize ? info->rnsize : info->rnsize2;
    storage_bytes = increments * size_mib << 20;
    memcpy(machine_loadparm, info->loadparm, sizeof(machine_loadparm));
}

void sclp_setup(void)
{
    struct write_event_mask *m = (void *)sccb;

    memset(sccb, 0, sizeof(*m));
    m->h.length = sizeof(*m);
    m->mask_length = 4;
    m->cp_receive_mask = 0;     /* no input: nothing arrives unasked */
    m->cp_send_mask = EVENT_MASK(EVENT_ASCII_CONSOLE);
    /* output only when the SCLP takes ASCII console data (a console is there) */
    console_ready = sclp_call(SCLP_CMD_WRITE_EVENT_MASK) == SCLP_RC_NORMAL &&
                    (m->sclp_receive_mask & EVENT_MASK(EVENT_ASCII_CONSOLE));
    read_scp_info();
}

void sclp_write(const char *text, int len)
{
    struct sccb_header *h = (void *)sccb;
    struct event_buffer_header *ev = (void *)(h + 1);
    int n;

    if (!console_ready)
        return;
    while (len > 0) {
        n = len > 2048 ? 2048 : len;
        memset(sccb, 0, sizeof(*h) + sizeof(*ev));
        h->length = sizeof(*h) + sizeof(*ev) + n;
        ev->length = sizeof(*ev) + n;
        ev->type = EVENT_ASCII_CONSOLE;
        memcpy(ev + 1, text, n);
        sclp_call(SCLP_CMD_WRITE_EVENT_DATA);
        text += n;
        len -= n;
    }
}

u64 sclp_memory_size(void)
{
    return storage_bytes;
}

void sclp_loadparm(char ascii[9])
{
    ebcdic_to_ascii(machine_loadparm, ascii, 8);
    ascii[8] = 0;
}

/* EBCDIC (code page 037) for the characters a loadparm may hold; others '?' */
void ebcdic_to_ascii(const u8 *in, char *out, int len)
{
    static const char letters[] = "ABCDEFGHI.......JKLMNOPQR........STUVWXYZ";
    int i;

    for (i = 0; i < len; i++) {
        u8 c = in[i];
        char a = '?';

        if (c == 0x40 || c == 0x00)
            a = ' ';
        else if (c == 0x4b)
            a = '.';
        else if (c >= 0xf0 && c <= 0xf9)
            a = (char)('0' + c - 0xf0);
        else if (c >= 0xc1 && c <= 0xe9 && letters[c - 0xc1] != '.')
            a = letters[c - 0xc1];
        else if (c >= 0x81 && c <= 0xa9 && letters[c - 0x81] != '.')
            a = (char)(letters[c - 0x81] + ('a' - 'A'));
        out[i] = a;
    }
}
