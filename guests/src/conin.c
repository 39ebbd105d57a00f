/*
 * conin: console input through the SCLP event facility.  Run with
 *   (nothing)                      probes only
 *   -machine loadparm=VT220        plus one line typed on the VT220 console
 *                                  (QEMU's sclpconsole, -serial 0 / -nographic)
 *   -machine loadparm=LM -serial mon:stdio -serial <chardev>
 *                                  plus one line on the line-mode console
 *                                  (sclplmconsole, -serial 1)
 *   -machine loadparm=BOTH ...     both, VT220 first
 *
 * The guest enables the events a console sends (VT220 data 0x1a; operator
 * commands 0x01 and priority message commands 0x09) with Write Event Mask and
 * prints what the SCLP offers.  Input arrives as an attention:
 * a service-signal external interruption whose parameter has bit 31 set and
 * no SCCB address, or that bit on the completion of another service call
 * (the SCLP merges pending service signals).  The guest reads with Read Event
 * Data until a line is complete and echoes it in upper case: VT220 lines on
 * the VT220 console, line-mode lines as a message event (type 0x02) whose
 * message text object carries EBCDIC.  Last, it probes how the event facility
 * answers malformed requests (response codes only).
 *
 * Nothing printed depends on timing: reads that find nothing are not shown,
 * and a VT220 line may arrive in several event buffers (only their common
 * properties are printed).
 *
 * Formats (Linux drivers/s390/char/sclp.h, QEMU include/hw/s390x/event-facility.h):
 * Read Event Data needs a 4 KiB SCCB; each event buffer is u16 length, u8
 * type, u8 flags, u16 0.  VT220 data starts with 0x00 (session data).  An
 * operator command (0x01) carries a message unit: GDS vectors MDS-MU
 * (0x1310), CP-MSU (0x1212), text command (0x1320), then the subvectors
 * self-defining text message (key 0x31) and text message (key 0x30) with the
 * EBCDIC text.  A message (0x02) carries a message data block: u16 length,
 * u16 type 1, u32 tag "MDB ", u32 revision 1, then objects (u16 length,
 * u16 type); type 4, the message text object, is u16 line type flags, u8
 * alarm control, 3 reserved bytes and the EBCDIC text.
 */
#include "guest.h"

#define CMD_READ_SCP_INFO     0x00020001
#define CMD_READ_EVENT_DATA   0x00770005
#define CMD_WRITE_EVENT_DATA  0x00760005
#define CMD_WRITE_EVENT_MASK  0x00780005

#define RC_NORMAL             0x0020
#define RC_NO_EVENTS          0x60f0

#define EV_OPCMD              0x01
#define EV_MSG                0x02
#define EV_PMSGCMD            0x09
#define EV_VT220              0x1a
#define EVMASK(t)             (0x80000000u >> ((t) - 1))

#define MODE_VT220            1
#define MODE_LM               2

static u8 page[4096] __attribute__((aligned(4096)));

/* kept by the service-signal handler (lib/irq.c) */
extern volatile u32 sclp_ext_param;
extern volatile int sclp_ext_count;

static u16 get16(const u8 *p) { return (u16)(p[0] << 8 | p[1]); }
static u32 get32(const u8 *p) { return (u32)get16(p) << 16 | get16(p + 2); }
static void put16(u8 *p, u16 v) { p[0] = v >> 8; p[1] = v; }
static void put32(u8 *p, u32 v) { put16(p, v >> 16); put16(p + 2, v); }

/* Set when a service signal says an event is pending (parameter bit 31), or
 * when more signals came during a call than its completion: input may wait. */
static int attention;
static int read_lengths_ok = 1;

/* EBCDIC capital letters from 0xc1: three runs of nine, eight and eight ('.' between them) */
static const char ebcdic_upper[] = "ABCDEFGHI.......JKLMNOPQR........STUVWXYZ";

/* One service call on `page`; returns the response code, or -1 when SERVC was refused. */
static int call(u32 command, u16 length, u8 function)
{
    int before = sclp_ext_count, rc;

    put16(page, length);
    page[2] = function;
    flush();
    rc = sclp_call(command, page);
    if ((sclp_ext_param & 1) || sclp_ext_count - before > 1)
        attention = 1;
    return rc;
}

static void clear(void)
{
    memset(page, 0, sizeof(page));
}

static int write_mask(u16 mask_length, u32 receive, u32 send, u32 *sclp_receive, u32 *sclp_send)
{
    int rc;

    clear();
    put16(page + 10, mask_length);
    put32(page + 12, receive);
    put32(page + 12 + mask_length, send);
    rc = call(CMD_WRITE_EVENT_MASK, 12 + 4 * mask_length, 0);
    if (sclp_receive) {
        *sclp_receive = get32(page + 12 + 2 * mask_length);
        *sclp_send = get32(page + 12 + 3 * mask_length);
    }
    return rc;
}

static char loadparm[9];

static void read_loadparm(void)
{
    int i;

    clear();
    if (call(CMD_READ_SCP_INFO, sizeof(page), 0) != 0x0010)
        fail("read scp info");
    for (i = 0; i < 8; i++) {
        u8 c = page[24 + i];
        char a = ' ';

        /* letters and digits only: what -machine loadparm accepts besides '.' and ' ' */
        if (c >= 0xc1 && c <= 0xe9 && ebcdic_upper[c - 0xc1] != '.')
            a = ebcdic_upper[c - 0xc1];
        else if (c >= 0xf0 && c <= 0xf9)
            a = '0' + (c - 0xf0);
        loadparm[i] = a;
    }
    for (i = 8; i > 0 && loadparm[i - 1] == ' '; i--)
        loadparm[i - 1] = 0;
}

static int streq(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

/* ---- probes: response codes for malformed requests ----------------------------- */
static void probes(void)
{
    u8 *ev = page + 8;
    int rc;

    clear();
    rc = call(CMD_READ_EVENT_DATA, 2048, 0);
    printf("read event data, 2048-byte sccb: rc=%04x\n", rc);
    clear();
    rc = call(CMD_READ_EVENT_DATA, 4096, 0x55);
    printf("read event data, function 0x55: rc=%04x\n", rc);
    /* the selection mask takes the place of the first event buffer header */
    clear();
    put32(page + 8, EVMASK(EV_VT220) | EVMASK(0x1d));
    rc = call(CMD_READ_EVENT_DATA, 4096, 1);
    printf("selective read of an event not enabled: rc=%04x\n", rc);
    clear();
    put32(page + 8, EVMASK(EV_VT220));
    rc = call(CMD_READ_EVENT_DATA, 4096, 1);
    printf("selective read of vt220, nothing pending: rc=%04x length=%u\n", rc, get16(page));
    clear();
    page[5] = 0x80;                     /* variable-length response */
    rc = call(CMD_READ_EVENT_DATA, 4096, 0);
    printf("read with variable-length response: rc=%04x length=%u control=%02x\n", rc, get16(page), page[5]);
    clear();
    rc = call(CMD_READ_EVENT_DATA, 4096, 2);
    printf("read event data, function 2: rc=%04x\n", rc);
    clear();
    rc = call(CMD_WRITE_EVENT_DATA, 8, 0);
    printf("write event data without buffers: rc=%04x\n", rc);
    clear();
    put16(ev, 6);
    ev[2] = 0x33;
    rc = call(CMD_WRITE_EVENT_DATA, 14, 0);
    printf("write of an unknown event type: rc=%04x flags=%02x\n", rc, ev[3]);
    clear();
    put16(ev, 4);
    ev[2] = EV_VT220;
    rc = call(CMD_WRITE_EVENT_DATA, 14, 0);
    printf("write with a 4-byte event buffer: rc=%04x\n", rc);
    clear();
    put16(ev, 60);
    ev[2] = EV_VT220;
    rc = call(CMD_WRITE_EVENT_DATA, 14, 0);
    printf("write with an event buffer beyond the sccb: rc=%04x\n", rc);
    clear();
    put16(ev, 6);
    ev[2] = EV_VT220;
    rc = call(CMD_WRITE_EVENT_DATA, 16, 0);
    printf("write with 2 bytes after the last buffer: rc=%04x\n", rc);
    clear();
    put16(ev, 6);
    ev[2] = EV_VT220;
    rc = call(CMD_WRITE_EVENT_DATA, 14, 1);
    printf("write event data, function 1: rc=%04x\n", rc);
    rc = write_mask(0, 0, 0, NULL, NULL);
    printf("write event mask, mask length 0: rc=%04x\n", rc);
}

/* ---- line-mode messages ------------------------------------------------------------ */

/* A message event with one message text object per line; the text is EBCDIC. */
static int lm_write(const u8 *const *lines, const int *lengths, int count, const u16 *mdb_length_override)
{
    u8 *ev = page + 8, *mdb = ev + 6, *obj;
    int i, rc;
    u16 mdb_length = 12;

    clear();
    obj = mdb + 12;
    for (i = 0; i < count; i++) {
        put16(obj, 10 + lengths[i]);
        put16(obj + 2, 4);              /* message text object */
        put16(obj + 4, 0x1000);         /* line type flags: data */
        memcpy(obj + 10, lines[i], lengths[i]);
        mdb_length += 10 + lengths[i];
        obj += 10 + lengths[i];
    }
    put16(mdb, mdb_length);
    put16(mdb + 2, 1);
    put32(mdb + 4, 0xd4c4c240);         /* "MDB " */
    put32(mdb + 8, 1);
    if (mdb_length_override)
        put16(mdb, *mdb_length_override);
    put16(ev, 6 + mdb_length);
    ev[2] = EV_MSG;
    rc = call(CMD_WRITE_EVENT_DATA, 8 + 6 + mdb_length, 0);
    return rc;
}

static void to_ebcdic(const char *s, u8 *out, int *len)
{
    int n = 0;

    for (; *s; s++, n++) {
        char c = *s;
        int i;

        if (c == ' ') {
            out[n] = 0x40;
        } else if (c >= '0' && c <= '9') {
            out[n] = 0xf0 + (c - '0');
        } else {
            out[n] = 0x4b;              /* '.' for anything else */
            for (i = 0; ebcdic_upper[i]; i++)
                if (ebcdic_upper[i] == c)
                    out[n] = 0xc1 + i;
        }
    }
    *len = n;
}

static void lm_greeting(void)
{
    static u8 a[64], b[64];
    const u8 *lines[2] = { a, b };
    int lengths[2], rc;
    u16 bad = 400;

    to_ebcdic("CONIN LINE MODE", a, &lengths[0]);
    to_ebcdic("TYPE A LINE", b, &lengths[1]);
    rc = lm_write(lines, lengths, 2, NULL);
    printf("line-mode message, 2 text objects: rc=%04x flags=%02x\n", rc, page[8 + 3]);
    rc = lm_write(lines, lengths, 1, &bad);
    printf("line-mode message, mdb length beyond its objects: rc=%04x\n", rc);
}

/* ---- reading ---------------------------------------------------------------------------- */
static char vt_line[256];
static int vt_len, vt_done, vt_marker_ok = 1, vt_accepted_ok = 1;
static u8 lm_text[256];
static int lm_len, lm_done;
static u8 lm_head[28];
static int lm_head_len;

static void take_event(const u8 *ev, int len)
{
    int i;

    if (ev[2] == EV_VT220) {
        if (len < 7 || ev[6] != 0)
            vt_marker_ok = 0;
        if (!(ev[3] & 0x80))
            vt_accepted_ok = 0;
        for (i = 7; i < len && !vt_done; i++) {
            char c = ev[i];

            if (c == '\n' || c == '\r')
                vt_done = 1;
            else if (vt_len < (int)sizeof(vt_line) - 1)
                vt_line[vt_len++] = c;
        }
    } else if (ev[2] == EV_OPCMD && !lm_done) {
        lm_head_len = len < 22 ? len : 22;
        memcpy(lm_head, ev, lm_head_len);
        for (i = 22; i < len && lm_len < (int)sizeof(lm_text); i++)
            lm_text[lm_len++] = ev[i];
        lm_done = 1;
    } else {
        printf("unexpected event type %02x, length %d\n", ev[2], len);
    }
}

/* Read Event Data until nothing is pending. */
static void read_events(void)
{
    int rc, pos, end;

    for (;;) {
        clear();
        rc = call(CMD_READ_EVENT_DATA, sizeof(page), 0);
        if (rc == RC_NO_EVENTS)
            return;
        if (rc != RC_NORMAL) {
            printf("read event data: rc=%04x\n", rc);
            fail("read event data");
        }
        /* the SCLP leaves the SCCB length as it was: the buffers end at a zero length */
        end = get16(page);
        if (end != sizeof(page))
            read_lengths_ok = 0;
        for (pos = 8; pos + 6 <= end; ) {
            int len = get16(page + pos);

            if (len < 6 || pos + len > end)
                break;
            take_event(page + pos, len);
            pos += len;
        }
    }
}

static void wait_for(int *done)
{
    while (!*done) {
        attention = 0;
        read_events();
        if (*done || attention)
            continue;
        enabled_wait(PSW_EXT);          /* the next service signal: an attention */
    }
}

int main(void)
{
    u32 sclp_receive, sclp_send, lm_console, i;
    int mode = 0, rc;

    printf("conin: console input through the SCLP\n");
    read_loadparm();
    if (streq(loadparm, "VT220"))
        mode = MODE_VT220;
    else if (streq(loadparm, "LM"))
        mode = MODE_LM;
    else if (streq(loadparm, "BOTH"))
        mode = MODE_VT220 | MODE_LM;
    printf("loadparm: '%s'\n", loadparm);
    rc = write_mask(4, EVMASK(EV_VT220) | EVMASK(EV_OPCMD) | EVMASK(EV_PMSGCMD),
                    EVMASK(EV_VT220) | EVMASK(EV_MSG) | EVMASK(EV_PMSGCMD), &sclp_receive, &sclp_send);
    printf("write event mask: rc=%04x sclp receive %08x, sclp send %08x\n", rc, sclp_receive, sclp_send);
    lm_console = sclp_receive & EVMASK(EV_MSG);
    rc = write_mask(8, EVMASK(EV_VT220), EVMASK(EV_VT220), &sclp_receive, &sclp_send);
    printf("8-byte masks: rc=%04x sclp receive %08x %08x, sclp send %08x %08x\n", rc,
           get32(page + 12 + 16), get32(page + 12 + 20), get32(page + 12 + 24), get32(page + 12 + 28));
    rc = write_mask(4, EVMASK(EV_VT220) | EVMASK(EV_OPCMD) | EVMASK(EV_PMSGCMD),
                    EVMASK(EV_VT220) | EVMASK(EV_MSG) | EVMASK(EV_PMSGCMD), NULL, NULL);
    if (lm_console)
        lm_greeting();
    else
        printf("no line-mode console\n");

    if (mode & MODE_VT220) {
        printf("vt220: type a line\n");
        wait_for(&vt_done);
        for (i = 0; i < (u32)vt_len; i++)
            if (vt_line[i] >= 'a' && vt_line[i] <= 'z')
                vt_line[i] -= 'a' - 'A';
        vt_line[vt_len] = 0;
        printf("vt220 line: '%s' (%d bytes)\n", vt_line, vt_len);
        printf("vt220 events start with 0x00: %s, accepted flag set: %s\n",
               vt_marker_ok ? "yes" : "no", vt_accepted_ok ? "yes" : "no");
    }
    if (mode & MODE_LM) {
        static u8 reply[300];
        const u8 *lines[1] = { reply };
        int lengths[1];

        wait_for(&lm_done);
        printf("line-mode event:");
        for (i = 0; i < (u32)lm_head_len; i++)
            printf("%s%02x", (i == 6 || i == 10 || i == 14 || i == 18 || i == 20) ? " " : "", lm_head[i]);
        printf("\nline-mode text (%d bytes):", lm_len);
        for (i = 0; i < (u32)lm_len; i++)
            printf(" %02x", lm_text[i]);
        printf("\n");
        /* EBCDIC lower-case letters are the upper-case ones less 0x40 */
        for (i = 0; i < (u32)lm_len; i++) {
            u8 c = lm_text[i];

            reply[i] = ((c >= 0x81 && c <= 0x89) || (c >= 0x91 && c <= 0x99) || (c >= 0xa2 && c <= 0xa9))
                       ? c + 0x40 : c;
        }
        lengths[0] = lm_len;
        rc = lm_write(lines, lengths, 1, NULL);
        printf("line-mode echo: rc=%04x\n", rc);
    }
    /* after the input: a probe's read would take what was typed */
    probes();
    if (mode)
        printf("read event data left the sccb length alone: %s\n", read_lengths_ok ? "yes" : "no");
    printf("conin: done\n");
    finish();
}
