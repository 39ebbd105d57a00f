/*
 * chsc: CHANNEL SUBSYSTEM CALL and channel-report machine checks (run with
 * -nic none -device virtio-rng-ccw -device virtio-rng-ccw,devno=fe.1.0042
 * -device virtio-rng-ccw,devno=2.0.0007: one device in each of the default
 * image's subchannel sets 0 and 1, and one in channel subsystem image 2).
 *
 * CHSC (B25F, RRE; general register R1 holds the 4 KiB-aligned address of
 * the request block, whose first halfword is its length; the response block
 * follows the request) as QEMU 7.2 answers it:
 *  - store channel subsystem characteristics (0x0010), store channel path
 *    description (0x0002, formats 0 and 1), set domain attributes (0x0031:
 *    enable MCSS-E, enable MSS), store event information (0x000e), and a
 *    command QEMU does not implement (store subchannel description, 0x0004):
 *    every answer's response code, length and parameter, and the data;
 *  - invalid requests (response codes 0x0003 invalid request, 0x0004 not
 *    supported, 0x0005 no event, 0x0007 invalid format, 0x0008 invalid
 *    channel subsystem) and the program interruptions: specification (block
 *    not on a 4 KiB boundary), operand (request length below 16, above 4088
 *    or not a multiple of 8), addressing (block outside storage), protection
 *    (response inside the low-address-protected area) and privileged
 *    operation (problem state).
 *
 * Then, enabled for channel-report machine checks (PSW bit 13, CR14 bit 35),
 * it prints "ready: ..." and waits (at most 5 s, clock comparator) for the
 * device that the test plugs or unplugs over QMP; the machine check: the
 * interruption code (MCIC) at 0xe8, old PSW at 0x160, the register save
 * areas at 0x1200-0x13ff, the architectural-mode id at 0xa3, the vector
 * registers in the extended save area that MCESAD (0x11b0) designates (QEMU
 * 7.2 reports them valid for any non-zero MCESAD, also one outside storage,
 * where nothing is stored); then STORE CHANNEL REPORT WORD until cc 1.  Without MSS and MCSS-E
 * a subchannel change is one CRW (and none for a subchannel the guest cannot
 * see); with them, two chained CRWs (subchannel number, then image and set).
 * A machine check is held pending while CR14 bit 35 is off.  Run without QMP
 * nobody plugs anything: the first wait ends after 5 s and the guest skips
 * the remaining waits.
 */
#include "guest.h"

#define CHSC_SCPD   0x0002
#define CHSC_SSD    0x0004
#define CHSC_SEI    0x000e
#define CHSC_SCSC   0x0010
#define CHSC_SDA    0x0031

#define TOD_MS      (1000UL * 4096)
#define CR14_CRW    (1UL << 28)     /* bit 35: channel-report-pending subclass */
#define LC_MCCK_SAVE 0x480          /* the stub's register save area (16 GPRs) */
#define LC_AR_MODE_ID 0xa3
#define LC_MCIC     0xe8
#define LC_MCESAD   0x11b0
#define LC_SAVE_AREA 0x1200         /* fprs 0x1200, gprs 0x1280, ..., crs 0x1380 */

static u8 block[4096] __attribute__((aligned(4096)));
static u8 ext_area[1024] __attribute__((aligned(1024)));
static u8 mcck_stack[8192] __attribute__((aligned(8)));
u64 mcck_stack_top;

struct chsc_response {
    u16 len;
    u16 code;
    u32 param;
    u32 data[];
};

static const char *yn(int b) { return b ? "yes" : "no"; }

static int chsc(void *request)
{
    register u64 r2 asm("2") = (u64)request;
    int cc;

    asm volatile("   .insn   rre,0xb25f0000,%[r],0\n"
                 "   ipm     %[cc]\n"
                 "   srl     %[cc],28\n"
                 : [cc] "=d"(cc) : [r] "d"(r2) : "cc", "memory");
    return cc;
}

static int stcrw(u32 *crw)
{
    int cc;

    asm volatile("stcrw %[c]\n\tipm %[cc]\n\tsrl %[cc],28"
                 : [cc] "=d"(cc), [c] "=Q"(*crw) : : "cc", "memory");
    return cc;
}

static u64 stctg14(void)
{
    u64 v;

    asm volatile("stctg %%c14,%%c14,%0" : "=Q"(v));
    return v;
}

static void lctlg14(u64 v)
{
    asm volatile("lctlg %%c14,%%c14,%0" : : "Q"(v) : "memory");
}

static void sckc(u64 v) { asm volatile("sckc %0" : : "Q"(v)); }

static u64 tod(void)
{
    u64 t;

    stck(&t);
    return t;
}

/* A request block at `at`: length, command code, three parameter words. */
static struct chsc_response *request_at(u8 *at, u16 len, u16 command, u32 p0, u32 p1, u32 p2)
{
    memset(at, 0, 4096);
    *(u16 *)at = len;
    *(u16 *)(at + 2) = command;
    *(u32 *)(at + 4) = p0;
    *(u32 *)(at + 8) = p1;
    *(u32 *)(at + 12) = p2;
    return (struct chsc_response *)(at + len);
}

static struct chsc_response *request(u16 len, u16 command, u32 p0, u32 p1, u32 p2)
{
    return request_at(block, len, command, p0, p1, p2);
}

static void answer(const char *what, int cc, const struct chsc_response *r)
{
    printf("  %-40s cc=%d code=%04x len=%u param=%08x\n", what, cc, r->code, r->len, r->param);
}

/* store channel path description for CHPIDs first..last; prints the descriptors */
static void scpd(const char *what, u32 p0, u8 first, u8 last)
{
    struct chsc_response *r = request(16, CHSC_SCPD, p0 | first, last, 0);
    int cc = chsc(block), size, i, w;

    answer(what, cc, r);
    if (r->code != 1 || r->len < 8)
        return;
    size = r->param == 1 ? 32 : 8;
    for (i = 0; 8 + (i + 1) * size <= r->len; i++) {
        const u32 *d = r->data + i * size / 4;
        int rest_zero = 1;

        for (w = 1; w < size / 4; w++)
            rest_zero &= d[w] == 0;
        printf("    descriptor: %08x (valid %s, type %02x, chpid %02x), other words zero: %s\n",
               d[0], yn(d[0] >> 31), (d[0] >> 8) & 0xff, d[0] & 0xff, yn(rest_zero));
    }
}

static void scsc(const char *what, u32 p0)
{
    struct chsc_response *r = request(16, CHSC_SCSC, p0, 0, 0);
    int cc = chsc(block), i;

    answer(what, cc, r);
    if (r->code != 1)
        return;
    /* 510 words of general characteristics, then 508 of CHSC characteristics */
    for (i = 0; 8 + 4 * (i + 1) <= r->len; i++)
        if (r->data[i])
            printf("    %s word %d: %08x\n", i < 510 ? "general" : "chsc", i < 510 ? i : i - 510,
                   r->data[i]);
}

static void simple(const char *what, u16 len, u16 command, u32 p0, u32 p1, u32 p2)
{
    struct chsc_response *r = request(len, command, p0, p1, p2);
    int cc = chsc(block);

    answer(what, cc, r);
}

/* ---- program interruptions ------------------------------------------------ */
u64 probe_at;
u64 probe_operand;
struct psw problem_psw = { PSW_64 | PSW_PSTATE, 0 };

asm(
    "   .text\n"
    "   .globl  probe_chsc\n"
    "probe_chsc:\n"                     /* r2: the request block's address */
    "   larl    %r1,9f\n"
    "   stgrl   %r1,pgm_resume\n"
    "   larl    %r1,8f\n"
    "   stgrl   %r1,probe_at\n"
    "8: .insn   rre,0xb25f0000,%r2,0\n"
    "9: br      %r14\n"

    "   .globl  probe_chsc_problem\n"
    "probe_chsc_problem:\n"
    "   larl    %r1,9f\n"
    "   stgrl   %r1,pgm_resume\n"
    "   larl    %r1,8f\n"
    "   stgrl   %r1,probe_at\n"
    "   larl    %r1,problem_psw\n"
    "   larl    %r3,8f\n"
    "   stg     %r3,8(%r1)\n"
    "   lpswe   0(%r1)\n"
    "8: .insn   rre,0xb25f0000,%r2,0\n"
    "9: br      %r14\n"
);

void probe_chsc(u64 address);
void probe_chsc_problem(u64 address);

static void program_check(const char *what, void (*probe)(u64), u64 address, u64 cr0_on)
{
    u64 cr0 = stctg0();
    int before = pgm_count;
    u16 ilc;
    s64 off;

    flush();
    lctlg0(cr0 | cr0_on);
    probe(address);
    lctlg0(cr0);
    pgm_resume = 0;
    if (pgm_count == before) {
        printf("  %-40s no program interruption\n", what);
        return;
    }
    ilc = (pgm_last.ilc >> 1) & 3;
    off = (s64)(pgm_last.old.addr - probe_at);
    printf("  %-40s code=0x%04x ilc=%u old psw=insn%+ld\n", what, pgm_last.code, ilc, off);
}

/* ---- machine checks ---------------------------------------------------------- */
asm(
    "   .text\n"
    "   .globl  mcck_entry\n"
    "mcck_entry:\n"
    "   stmg    %r0,%r15,0x480\n"
    "   lgrl    %r15,mcck_stack_top\n"
    "   aghi    %r15,-160\n"
    "   brasl   %r14,c_mcck\n"
    "   ni      0x161,0xfd\n"           /* the wait ends with the machine check */
    "   lmg     %r0,%r15,0x480\n"
    "   lpswe   0x160\n"
);
void mcck_entry(void);

static volatile int mcck_count, timed_out;
static u64 mcic, mcck_old_mask, mcck_old_addr;
static u8 save_area[512], gprs_at_entry[128], ar_mode_id;
static u64 crs_at_entry[16];

void c_mcck(void)
{
    volatile struct lowcore *lc = LOWCORE;

    mcic = *(volatile u64 *)LC_MCIC;
    mcck_old_mask = lc->mcck_old.mask;
    mcck_old_addr = lc->mcck_old.addr;
    memcpy(save_area, (void *)LC_SAVE_AREA, sizeof(save_area));
    memcpy(gprs_at_entry, (void *)LC_MCCK_SAVE, sizeof(gprs_at_entry));
    ar_mode_id = *(volatile u8 *)LC_AR_MODE_ID;
    asm volatile("stctg %%c0,%%c15,%0" : "=Q"(crs_at_entry));
    mcck_count++;
}

static void on_ext(u16 code, u16 cpu_addr, u32 param)
{
    if (code == EXT_CKC) {
        timed_out = 1;
        cr0_clear(CR0_CKC);
        return;
    }
    printf("unexpected external interruption code=0x%04x\n", code);
    fail("external interruption");
}

u64 wait_continuation;

/* An enabled wait for `masks`; back with every mask off after one interruption. */
static void wait_enabled(u64 masks)
{
    struct psw wait_psw, back;

    wait_psw.mask = PSW_64 | PSW_WAIT | masks;
    back.mask = PSW_64;
    asm volatile(
        "   larl    %%r1,0f\n"
        "   stg     %%r1,8+%[w]\n"
        "   stgrl   %%r1,wait_continuation\n"
        "   larl    %%r1,1f\n"
        "   stg     %%r1,8+%[b]\n"
        "   lpswe   %[w]\n"
        "0: lpswe   %[b]\n"
        "1:\n"
        : [w] "+Q"(wait_psw), [b] "+Q"(back) : : "r1", "memory", "cc");
}

static u64 armed_ckc;

/* Wait enabled for machine checks (and the clock comparator) for at most `ms`. */
static int wait_machine_check(u64 ms)
{
    int i;

    timed_out = 0;
    mcck_count = 0;
    armed_ckc = tod() + ms * TOD_MS;
    sckc(armed_ckc);
    cr0_set(CR0_CKC);
    for (i = 0; i < 1000 && !mcck_count && !timed_out; i++)
        wait_enabled(PSW_MCHK | PSW_EXT);
    cr0_clear(CR0_CKC);
    sckc(~0UL);
    return mcck_count;
}

static u64 vr_high(int n) { return 0x0123456789abcdefUL ^ ((u64)n << 56); }
static u64 vr_low(int n) { return 0xfedcba9876543210UL ^ (u64)n; }

#define SET_VR(n)                                                         \
    asm volatile(".machine push\n\t.machine z13\n\t"                      \
                 "vlvgp %%v" #n ",%[h],%[l]\n\t.machine pop"              \
                 : : [h] "d"(vr_high(n)), [l] "d"(vr_low(n)))

static const int vr_probe[] = { 0, 15, 16, 31 };

static void set_vector_registers(void)
{
    cr0_set(CR0_AFP | CR0_VX);
    SET_VR(0);
    SET_VR(15);
    SET_VR(16);
    SET_VR(31);
}

/* What the machine check stored, checked against what the guest knows. */
static void describe_machine_check(int full, int expect_vectors)
{
    u64 *fprs = (u64 *)save_area;
    int i, vr_ok = 1;

    printf("  machine check: mcic=%016lx (channel report pending: %s, vector registers valid: %s)\n",
           mcic, yn(!!(mcic & (1UL << 54))), yn(!!(mcic & (1UL << 38))));
    if (expect_vectors) {
        for (i = 0; i < (int)ARRAY_SIZE(vr_probe); i++) {
            int n = vr_probe[i];
            const u64 *v = (const u64 *)(ext_area + 16 * n);

            vr_ok &= v[0] == vr_high(n) && v[1] == vr_low(n);
        }
        printf("  extended save area holds v0 v15 v16 v31: %s, fpr save area f0 f15: %s\n",
               yn(vr_ok), yn(fprs[0] == vr_high(0) && fprs[15] == vr_high(15)));
    } else {
        int untouched = 1;

        for (i = 0; i < (int)sizeof(ext_area); i++)
            untouched &= ext_area[i] == 0xee;
        printf("  extended save area untouched: %s\n", yn(untouched));
    }
    if (!full)
        return;
    printf("  old psw: mask %016lx, address = wait continuation: %s\n", mcck_old_mask,
           yn(mcck_old_addr == wait_continuation));
    printf("  gpr save area = registers at the interruption: %s\n",
           yn(memcmp(save_area + 0x80, gprs_at_entry, 128) == 0));
    printf("  cr save area = control registers: %s\n", yn(memcmp(save_area + 0x180, crs_at_entry, 128) == 0));
    printf("  prefix save %08x, fpc save %08x, tod programmable save %08x\n",
           *(u32 *)(save_area + 0x118), *(u32 *)(save_area + 0x11c), *(u32 *)(save_area + 0x124));
    printf("  clock comparator save = comparator >> 8: %s\n",
           yn(*(u64 *)(save_area + 0x130) == armed_ckc >> 8));
    printf("  access register 2 save %08x, architectural-mode id %u\n",
           *(u32 *)(save_area + 0x148), ar_mode_id);
}

static void drain_channel_reports(void)
{
    int i, cc;
    u32 crw;

    for (i = 0; i < 8; i++) {
        crw = 0xffffffff;
        cc = stcrw(&crw);
        if (cc) {
            printf("  stcrw: cc=%d crw=%08x\n", cc, crw);
            return;
        }
        printf("  stcrw: cc=0 crw=%08x (chained %s, rsc %x, erc %02x, rsid %04x)\n", crw,
               yn(crw & 0x10000000), (crw >> 24) & 0xf, (crw >> 16) & 0x3f, crw & 0xffff);
    }
    printf("  more than 8 channel report words\n");
}

/*
 * One hot-plug step: announce it, wait for the machine check, show it, drain
 * the CRWs.  `mcesad` goes to the lowcore first.  Returns 0 after a timeout.
 */
static int step(const char *ready, u64 mcesad, int full, int cr14_off_first)
{
    int vectors = mcesad && mcesad < (1UL << 40);

    memset(ext_area, 0xee, sizeof(ext_area));
    *(volatile u64 *)LC_MCESAD = mcesad;
    *(volatile u8 *)LC_AR_MODE_ID = 0;
    printf("ready: %s\n", ready);
    if (vectors)
        set_vector_registers();
    if (full) {
        /* values the save areas must show (SFPC needs CR0.AFP) */
        cr0_set(CR0_AFP);
        asm volatile("sar %%a2,%0\n\tsfpc %1" : : "d"(0xa2a2a2a2u), "d"(3u));
    }
    if (cr14_off_first) {
        lctlg14(stctg14() & ~CR14_CRW);
        printf("  cr14 bit 35 off, 1 s: machine check taken: %s\n", yn(wait_machine_check(1000)));
    }
    lctlg14(stctg14() | CR14_CRW);
    if (!wait_machine_check(5000)) {
        printf("  no machine check within 5 s (nothing was plugged)\n");
        return 0;
    }
    cr0_set(CR0_AFP);
    asm volatile("sar %%a2,%0\n\tsfpc %0" : : "d"(0u));
    cr0_clear(CR0_AFP | CR0_VX);
    describe_machine_check(full, vectors);
    drain_channel_reports();
    return 1;
}

int main(void)
{
    volatile struct lowcore *lc = LOWCORE;
    struct chsc_response *r;
    u32 crw;
    int cc, plugged;

    printf("vmd test guest: chsc (channel subsystem call, channel report words)\n");
    ext_handler = on_ext;
    mcck_stack_top = (u64)(mcck_stack + sizeof(mcck_stack));
    lc->mcck_new.addr = (u64)mcck_entry;

    crw = 0xffffffff;
    cc = stcrw(&crw);
    printf("stcrw with nothing pending: cc=%d crw=%08x\n", cc, crw);

    printf("store channel subsystem characteristics:\n");
    scsc("scsc", 0);
    printf("store channel path description:\n");
    scpd("scpd chpids 00-ff, format 0", 0, 0x00, 0xff);
    scpd("scpd chpids 00-ff, c bit (format 1)", 0x10000000, 0x00, 0xff);
    scpd("scpd rfmt 1 without c bit", 0x00000100, 0x00, 0xff);
    scpd("scpd rfmt 2", 0x00000200, 0x00, 0xff);
    scpd("scpd chpids 01-ff", 0, 0x01, 0xff);
    scpd("scpd chpid 00 only", 0, 0x00, 0x00);
    scpd("scpd cssid 2 without m", 0x00020000, 0x00, 0xff);
    scpd("scpd cssid 2 with m", 0x20020000, 0x00, 0xff);
    scpd("scpd cssid fe with m", 0x20fe0000, 0x00, 0xff);
    scpd("scpd cssid 7 with m (no such image)", 0x20070000, 0x00, 0xff);
    scpd("scpd cssid 0 with m", 0x20000000, 0x00, 0xff);

    printf("invalid requests:\n");
    simple("scsc length 0x18", 0x18, CHSC_SCSC, 0, 0, 0);
    simple("scsc format 1", 16, CHSC_SCSC, 0x00010000, 0, 0);
    simple("scsc reserved bit", 16, CHSC_SCSC, 0x00000001, 0, 0);
    simple("scsc second word", 16, CHSC_SCSC, 0, 1, 0);
    simple("scsc cssid 2 without m", 16, CHSC_SCSC, 0x00000200, 0, 0);
    simple("scsc cssid 2 with m", 16, CHSC_SCSC, 0x20000200, 0, 0);
    simple("scsc cssid 5 with m", 16, CHSC_SCSC, 0x20000500, 0, 0);
    simple("scsc cssid fe with m", 16, CHSC_SCSC, 0x2000fe00, 0, 0);
    simple("scsc length 4088", 4088, CHSC_SCSC, 0, 0, 0);
    simple("scpd length 0x18", 0x18, CHSC_SCPD, 0, 0xff, 0);
    simple("scpd reserved bit 0", 16, CHSC_SCPD, 0x80000000, 0xff, 0);
    simple("scpd reserved bits in word 2", 16, CHSC_SCPD, 0, 0x1ff, 0);
    simple("scpd third word", 16, CHSC_SCPD, 0, 0xff, 4);
    simple("scpd format 2", 16, CHSC_SCPD, 0x02000000, 0xff, 0);
    simple("scpd last chpid below first", 16, CHSC_SCPD, 0x00000005, 0x04, 0);
    simple("sda length 0x10", 16, CHSC_SDA, 0x00000002, 0, 0);
    simple("sda format 1", 0x400, CHSC_SDA, 0x01000002, 0, 0);
    simple("sda reserved bit", 0x400, CHSC_SDA, 0x00010002, 0, 0);
    simple("sda operation code 1", 0x400, CHSC_SDA, 0x00000001, 0, 0);
    simple("sda operation code 3", 0x400, CHSC_SDA, 0x00000003, 0, 0);
    simple("ssd (store subchannel description)", 16, CHSC_SSD, 0, 0, 0);
    simple("sei (store event information)", 16, CHSC_SEI, 0, 0, 0);
    simple("sei, every event type selected", 16, CHSC_SEI, 0, 0xffffffff, 0xffffffff);
    simple("sei length 4088", 4088, CHSC_SEI, 0, 0, 0);
    simple("command 0x0000", 16, 0x0000, 0, 0, 0);
    simple("command 0x1234", 16, 0x1234, 0, 0, 0);
    simple("command 0xffff", 16, 0xffff, 0, 0, 0);

    printf("program interruptions:\n");
    request(16, CHSC_SCSC, 0, 0, 0);
    program_check("block at +8", probe_chsc, (u64)block + 8, 0);
    program_check("block at +0x800", probe_chsc, (u64)block + 0x800, 0);
    request(0, CHSC_SCSC, 0, 0, 0);
    program_check("length 0", probe_chsc, (u64)block, 0);
    request(8, CHSC_SCSC, 0, 0, 0);
    program_check("length 8", probe_chsc, (u64)block, 0);
    request(20, CHSC_SCSC, 0, 0, 0);
    program_check("length 20", probe_chsc, (u64)block, 0);
    request(4096, CHSC_SCSC, 0, 0, 0);
    program_check("length 4096", probe_chsc, (u64)block, 0);
    request(0xfff8, CHSC_SCSC, 0, 0, 0);
    program_check("length 0xfff8", probe_chsc, (u64)block, 0);
    program_check("block outside storage", probe_chsc, 1UL << 40, 0);
    program_check("block at the top bit", probe_chsc, 1UL << 63, 0);
    r = request(16, CHSC_SCSC, 0, 0, 0);
    program_check("problem state", probe_chsc_problem, (u64)block, 0);
    printf("  (response code after the privileged-operation probe: %04x)\n", r->code);
    request_at((u8 *)0x1000, 16, CHSC_SCSC, 0, 0, 0);
    program_check("response low-address protected", probe_chsc, 0x1000, CR0_LAP);
    printf("  (response code after the protection probe: %04x)\n", ((struct chsc_response *)0x1010)->code);
    memset((void *)0x1000, 0, 64);
    request(16, CHSC_SCSC, 0, 0, 0);
    program_check("a valid request", probe_chsc, (u64)block, 0);

    printf("channel report words, without mss and mcss-e:\n");
    lc->mcck_new.mask = PSW_64;
    plugged = step("plug 1", 0, 1, 0);
    if (plugged)
        plugged = step("unplug 1", (u64)ext_area, 0, 0);

    printf("set domain attributes:\n");
    simple("sda enable mcss-e", 0x400, CHSC_SDA, 0x00000000, 0, 0);
    simple("sda enable mss", 0x400, CHSC_SDA, 0x00000002, 0, 0);
    simple("sda enable mss again", 0x400, CHSC_SDA, 0x00000002, 0, 0);
    scsc("scsc cssid 2 with m", 0x20000200);
    scpd("scpd cssid 0 without m", 0, 0x00, 0xff);
    scpd("scpd cssid 0 with m", 0x20000000, 0x00, 0xff);
    scpd("scpd cssid 2 with m", 0x20020000, 0x00, 0xff);
    crw = 0xffffffff;
    cc = stcrw(&crw);
    printf("stcrw with nothing pending: cc=%d crw=%08x\n", cc, crw);

    if (plugged) {
        printf("channel report words, with mss and mcss-e:\n");
        plugged = step("plug 2", 1UL << 40, 0, 1);
        if (plugged)
            plugged = step("unplug 2", (u64)ext_area | 1, 0, 0);
        if (plugged)
            plugged = step("plug 3", 0, 0, 0);
        if (plugged)
            plugged = step("unplug 3", 0, 0, 0);
    }
    printf("chsc: done\n");
    return 0;
}
