/*
 * stsi: what the CPU and the machine say about themselves.
 *
 *   STIDP (version, CPU identification, machine type) on every CPU;
 *   STFLE: the whole facility list, its condition code and the doubleword
 *   count in GR0, then with room for one doubleword only (cc 3); STFL at
 *   real location 200;
 *   STORE SYSTEM INFORMATION (PoP chapter 10): function code 0 (the current
 *   configuration level in GR0), every block QEMU stores (1.1.1 basic
 *   machine, 1.2.1 and 1.2.2 its CPUs, 2.2.1 and 2.2.2 the LPAR's, 3.2.2 the
 *   virtual machine's) as the hex lines that are not zero, with the EBCDIC
 *   fields decoded, and whether all 4096 bytes were stored; the selector
 *   combinations without a block (cc 3); function codes 4 to 15 (cc 3, also
 *   with reserved bits set, which are not looked at then); reserved bits in
 *   GR0 or GR1 and an operand off a 4 KiB boundary (specification); an
 *   operand beyond the end of storage (addressing).
 *
 * CPU 1, restarted into its own lowcore, stores its STIDP, STAP and the
 * per-CPU blocks 1.2.1 and 2.2.1 before it stops itself.
 *
 * Run with -smp 2,maxcpus=3 (the CPU counts of 1.2.2, 2.2.2 and 3.2.2), a
 * -name longer than 8 bytes (3.2.2 has its first 8 in EBCDIC and the whole
 * name as the UTF-8 extended name) and a -uuid.
 */
#include "guest.h"
#include "smp.h"

#define SYSIB_SIZE 4096
#define UNTOUCHED  0xee         /* the fill byte: what STSI did not store */

static u8 sysib[SYSIB_SIZE] __attribute__((aligned(4096)));
static u8 cpu1_sysib[2][SYSIB_SIZE] __attribute__((aligned(4096)));
static u8 lowcore1[8192] __attribute__((aligned(8192)));
static u8 cpu1_stack[16384] __attribute__((aligned(16)));
static u8 cpu1_irq_stacks[4 * 8192] __attribute__((aligned(16)));

static volatile int cpu1_done;
static volatile u64 cpu1_cpuid;
static volatile u16 cpu1_addr;
static volatile int cpu1_cc[2];

static const char *yn(int b) { return b ? "yes" : "no"; }

static u64 stidp(void)
{
    u64 id;

    asm volatile("stidp %0" : "=Q"(id));
    return id;
}

/*
 * STSI with GR0, GR1 and the operand address as given.  Returns the
 * condition code, or -1 after a program interruption (its code in *pgm).
 * GR0 after the instruction goes back to *r0.
 */
static int stsi(u64 *r0, u64 r1, void *addr, u16 *pgm)
{
    register u64 reg0 asm("0") = *r0;
    register u64 reg1 asm("1") = r1;
    int before = pgm_count;
    int cc;

    asm volatile(
        "   larl    %%r14,1f\n"
        "   stgrl   %%r14,pgm_resume\n"
        "   lhi     %[cc],-1\n"
        "   stsi    0(%[addr])\n"
        "   ipm     %[cc]\n"
        "   srl     %[cc],28\n"
        "1:\n"
        : [cc] "=&d"(cc), "+d"(reg0)
        : "d"(reg1), [addr] "a"(addr)
        : "cc", "memory", "r14");
    pgm_resume = 0;
    *r0 = reg0;
    if (pgm_count != before) {
        *pgm = pgm_last.code;
        return -1;
    }
    return cc;
}

static u64 stsi_r0(int fc, int sel1) { return ((u64)fc << 28) | (u64)sel1; }

/* EBCDIC to ASCII for the characters the blocks use; '.' for the rest */
static char ascii(u8 c)
{
    static const char upper[] = "ABCDEFGHI.......JKLMNOPQR........STUVWXYZ";
    static const char lower[] = "abcdefghi.......jklmnopqr........stuvwxyz";

    if (c == 0x40)
        return ' ';
    if (c >= 0xf0 && c <= 0xf9)
        return '0' + (c - 0xf0);
    if (c >= 0xc1 && c <= 0xe9)
        return upper[c - 0xc1];
    if (c >= 0x81 && c <= 0xa9)
        return lower[c - 0x81];
    if (c == 0x61)
        return '/';
    if (c == 0x60)
        return '-';
    if (c == 0x6d)
        return '_';
    if (c == 0x4b)
        return '.';
    return '.';
}

static void ebcdic_field(const char *name, const u8 *p, int len)
{
    char text[17];
    int i;

    for (i = 0; i < len && i < 16; i++)
        text[i] = ascii(p[i]);
    text[i] = 0;
    printf("  %-10s '%s'\n", name, text);
}

static u32 be32(const u8 *p) { return (u32)p[0] << 24 | (u32)p[1] << 16 | (u32)p[2] << 8 | p[3]; }
static u16 be16(const u8 *p) { return (u16)(p[0] << 8 | p[1]); }

/* the 16-byte lines that are not zero, then how many bytes were not stored */
static void dump(const u8 *b)
{
    int line, i, untouched = 0;

    for (i = 0; i < SYSIB_SIZE; i++)
        untouched += b[i] == UNTOUCHED;
    for (line = 0; line < SYSIB_SIZE; line += 16) {
        int zero = 1;

        for (i = 0; i < 16; i++)
            zero &= b[line + i] == 0;
        if (zero)
            continue;
        printf("  +%03x:", line);
        for (i = 0; i < 16; i += 4)
            printf(" %08x", be32(b + line + i));
        printf("\n");
    }
    printf("  bytes not stored: %d\n", untouched);
}

static void decode(int fc, int sel1, int sel2, const u8 *b)
{
    if (fc == 1 && sel1 == 1 && sel2 == 1) {
        ebcdic_field("manufact.", b + 32, 16);
        ebcdic_field("type", b + 48, 4);
        ebcdic_field("model", b + 64, 16);
        ebcdic_field("sequence", b + 80, 16);
        ebcdic_field("plant", b + 96, 4);
    } else if (sel1 == 2 && sel2 == 1) {
        ebcdic_field("sequence", b + 80, 16);
        ebcdic_field("plant", b + 96, 4);
        printf("  cpu address %u\n", be16(b + 102));
    } else if (sel1 == 2 && sel2 == 2) {
        printf("  cpus: total %u configured %u standby %u reserved %u\n", be16(b + 36),
               be16(b + 38), be16(b + 40), be16(b + 42));
        if (fc == 1)
            printf("  capability %08x\n", be32(b + 32));
        if (fc == 2) {
            ebcdic_field("lpar name", b + 44, 8);
            printf("  lpar number %u, characteristics %02x, caf %u, dedicated %u, shared %u\n",
                   be16(b + 32), b[35], be32(b + 52), be16(b + 72), be16(b + 74));
        }
        if (fc == 3) {
            char ext[33];
            int i;

            printf("  levels %u\n", b[31]);
            ebcdic_field("vm name", b + 44, 8);
            ebcdic_field("cpi", b + 56, 16);
            printf("  caf %u, extended name encoding %u\n", be32(b + 52), b[75]);
            for (i = 0; i < 32 && b[2048 + i] >= 0x20 && b[2048 + i] < 0x7f; i++)
                ext[i] = (char)b[2048 + i];
            ext[i] = 0;
            printf("  extended name '%s'\n", ext);
            printf("  uuid %08x%08x%08x%08x\n", be32(b + 80), be32(b + 84), be32(b + 88), be32(b + 92));
        }
    }
}

static void block(int fc, int sel1, int sel2)
{
    u64 r0 = stsi_r0(fc, sel1);
    u16 pgm = 0;
    int cc;

    memset(sysib, UNTOUCHED, sizeof(sysib));
    cc = stsi(&r0, sel2, sysib, &pgm);
    if (cc < 0) {
        printf("stsi %d.%d.%d: program interruption 0x%04x\n", fc, sel1, sel2, pgm);
        return;
    }
    printf("stsi %d.%d.%d: cc=%d\n", fc, sel1, sel2, cc);
    if (cc == 0) {
        dump(sysib);
        decode(fc, sel1, sel2, sysib);
    }
}

/* one STSI that is to fail: its condition code or interruption */
static void check(const char *what, u64 r0, u64 r1, void *addr)
{
    u16 pgm = 0;
    int cc = stsi(&r0, r1, addr, &pgm);

    if (cc < 0)
        printf("stsi %-42s program interruption 0x%04x\n", what, pgm);
    else
        printf("stsi %-42s cc=%d\n", what, cc);
}

static void print_cpuid(const char *who, u64 id)
{
    printf("%s stidp: %016lx (version %02x, cpu id %06x, machine type %04x, format %u)\n", who, id,
           (unsigned)(id >> 56), (unsigned)(id >> 32) & 0xffffff, (unsigned)(id >> 16) & 0xffff,
           (unsigned)(id >> 15) & 1);
}

static u64 fac[8] __attribute__((aligned(8)));

static int stfle(int doublewords, u64 *r0_out)
{
    register u64 r0 asm("0") = doublewords - 1;
    int cc;

    asm volatile(
        "   stfle   %[list]\n"
        "   ipm     %[cc]\n"
        "   srl     %[cc],28\n"
        : [cc] "=d"(cc), "+d"(r0), [list] "=Q"(*(u64 (*)[8])fac)
        :
        : "cc", "memory");
    *r0_out = r0;
    return cc;
}

void secondary_main(void)
{
    u64 r0;
    u16 pgm;

    cpu1_cpuid = stidp();
    cpu1_addr = stap();
    r0 = stsi_r0(1, 2);
    cpu1_cc[0] = stsi(&r0, 1, cpu1_sysib[0], &pgm);
    r0 = stsi_r0(2, 2);
    cpu1_cc[1] = stsi(&r0, 1, cpu1_sysib[1], &pgm);
    cpu1_done = 1;
}

static void other_cpu(void)
{
    volatile struct lowcore *lc1 = (volatile struct lowcore *)lowcore1;
    long i;

    memset(cpu1_sysib, UNTOUCHED, sizeof(cpu1_sysib));
    lowcore_init(lowcore1, (u64)cpu1_irq_stacks + sizeof(cpu1_irq_stacks));
    lc1->restart_new.mask = PSW_64;
    lc1->restart_new.addr = (u64)secondary_entry;
    secondary_stack_top = (u64)cpu1_stack + sizeof(cpu1_stack);
    if (sigp_retry(1, SIGP_SET_PREFIX, (u64)lowcore1, NULL) != 0 ||
        sigp_retry(1, SIGP_RESTART, 0, NULL) != 0) {
        printf("cpu 1: not there\n");
        return;
    }
    for (i = 0; i < 100000000L && !cpu1_done; i++)
        barrier();
    for (i = 0; i < 100000000L && !cpu_stopped(1); i++)
        ;
    printf("cpu 1: done %s, stap %u\n", yn(cpu1_done), cpu1_addr);
    print_cpuid("cpu 1", cpu1_cpuid);
    printf("cpu 1 stsi 1.2.1: cc=%d\n", cpu1_cc[0]);
    if (cpu1_cc[0] == 0) {
        dump(cpu1_sysib[0]);
        decode(1, 2, 1, cpu1_sysib[0]);
    }
    printf("cpu 1 stsi 2.2.1: cc=%d\n", cpu1_cc[1]);
    if (cpu1_cc[1] == 0) {
        dump(cpu1_sysib[1]);
        decode(2, 2, 1, cpu1_sysib[1]);
    }
}

int main(void)
{
    static const int blocks[][3] = {
        { 1, 1, 1 }, { 1, 2, 1 }, { 1, 2, 2 }, { 2, 2, 1 }, { 2, 2, 2 }, { 3, 2, 2 },
    };
    static const int empty[][3] = {
        { 1, 0, 0 }, { 1, 1, 2 }, { 1, 2, 3 }, { 1, 3, 1 }, { 2, 1, 1 }, { 2, 2, 3 },
        { 3, 1, 1 }, { 3, 2, 1 }, { 3, 3, 3 },
    };
    u64 r0;
    u32 stfl;
    int cc, i, n;

    printf("vmd test guest: stsi (store system information)\n");
    print_cpuid("cpu 0", stidp());

    cc = stfle(8, &r0);
    n = (int)(r0 & 0xff) + 1;
    printf("stfle: cc=%d doublewords=%d\n", cc, n);
    for (i = 0; i < n && i < 8; i++)
        printf("  facilities %3d-%3d: %016lx\n", i * 64, i * 64 + 63, fac[i]);
    memset(fac, 0xff, sizeof(fac));
    cc = stfle(1, &r0);
    printf("stfle with one doubleword: cc=%d doublewords=%d, second untouched: %s\n", cc,
           (int)(r0 & 0xff) + 1, yn(fac[1] == ~0UL));
    asm volatile("stfl 0" : : : "memory");
    stfl = LOWCORE->stfl_fac_list;
    printf("stfl: %08x\n", stfl);

    /* function code 0: the level, in the whole of GR0 as QEMU sets it; no operand check */
    r0 = 0x1234567800000000UL;
    cc = stsi(&r0, 0, sysib + 8, &(u16){ 0 });
    printf("stsi 0 (operand off a page, bits 0-31 of gr0 set): cc=%d gr0=%016lx\n", cc, r0);

    for (i = 0; i < (int)ARRAY_SIZE(blocks); i++)
        block(blocks[i][0], blocks[i][1], blocks[i][2]);
    for (i = 0; i < (int)ARRAY_SIZE(empty); i++) {
        r0 = stsi_r0(empty[i][0], empty[i][1]);
        cc = stsi(&r0, empty[i][2], sysib, &(u16){ 0 });
        printf("stsi %d.%d.%d: cc=%d\n", empty[i][0], empty[i][1], empty[i][2], cc);
    }

    check("4.2.2", stsi_r0(4, 2), 2, sysib);
    check("7.0.0", stsi_r0(7, 0), 0, sysib);
    check("15.1.2 (topology)", stsi_r0(15, 1), 2, sysib);
    check("15.1.3", stsi_r0(15, 1), 3, sysib);
    check("15 with reserved bits in gr0 and gr1", stsi_r0(15, 1) | 0x100, 0x10002, sysib);
    check("1.1.1 with a reserved bit in gr0", stsi_r0(1, 1) | 0x800, 1, sysib);
    check("1.1.1 with a reserved bit in gr1", stsi_r0(1, 1), 0x10001, sysib);
    check("0 with a reserved bit in gr0", 0x100, 0, sysib);
    check("1.1.1 with gr0/gr1 bits 0-31 set", stsi_r0(1, 1) | 0xffffffff00000000UL,
          0xffffffff00000001UL, sysib);
    check("1.1.1 off a 4 KiB boundary", stsi_r0(1, 1), 1, sysib + 8);
    check("1.2.2 beyond the end of storage", stsi_r0(1, 2), 2, (void *)(1UL << 40));
    check("3.3.3 beyond the end of storage", stsi_r0(3, 3), 3, (void *)(1UL << 40));

    other_cpu();
    printf("stsi: done\n");
    return 0;
}
