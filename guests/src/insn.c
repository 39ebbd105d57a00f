/*
 * insn: exercises general instructions (arithmetic, logical, shift and
 * rotate, branch, string and storage-to-storage, decimal conversion) and
 * prints each result with its condition code, checked against values worked
 * out from the z/Architecture Principles of Operation (ch. 7 "General
 * Instructions"); then runs a few compiled algorithms (built for z13, so the
 * compiler's own instruction choice is exercised too) and prints their
 * checksums, checked against a Python model of the same algorithms.
 *
 * Instructions up to z13 only (vmd's engine is ~z13): z196 LOCGR, POPCNT,
 * z13 LLZRGF, LOCHI; no vector instructions (CR0.VX is off).
 */
#include "guest.h"

static int tests, failures;

static void report(const char *name, u64 got, int cc, u64 want, int want_cc)
{
    int ok = got == want && (want_cc < 0 || cc == want_cc);

    tests++;
    failures += !ok;
    if (want_cc < 0)
        printf("%-10s %016lx      %s\n", name, got, ok ? "ok" : "MISMATCH");
    else
        printf("%-10s %016lx cc=%d %s\n", name, got, cc, ok ? "ok" : "MISMATCH");
    if (!ok)
        printf("%-10s want %016lx cc=%d\n", "", want, want_cc);
}

/* "insn R1,R2" on (a, b): R1's result and the condition code */
#define RR(name, insn, a, b, want, want_cc) do {                            \
        u64 _x = (a), _y = (b);                                             \
        int _cc;                                                            \
        asm volatile(insn " %[x],%[y]\n\tipm %[cc]\n\tsrl %[cc],28"          \
                     : [x] "+&d"(_x), [cc] "=&d"(_cc) : [y] "d"(_y) : "cc");\
        report(name, _x, _cc, want, want_cc);                               \
    } while (0)

/* "insn R1,R3,IMM" forms (shifts, rotates): R1 = f(R3) */
#define RSI(name, insn, a, want, want_cc) do {                              \
        u64 _x = 0, _y = (a);                                               \
        int _cc;                                                            \
        asm volatile(insn "\n\tipm %[cc]\n\tsrl %[cc],28"                    \
                     : [x] "+&d"(_x), [cc] "=&d"(_cc) : [y] "d"(_y) : "cc");\
        report(name, _x, _cc, want, want_cc);                               \
    } while (0)

/* even/odd pair instructions: "insn %r2,R2" with r2:r3 = (hi, lo) */
#define PAIR(name, insn, hi, lo, b, want_hi, want_lo, want_cc) do {         \
        register u64 _h asm("2") = (hi);                                    \
        register u64 _l asm("3") = (lo);                                    \
        u64 _y = (b);                                                       \
        int _cc;                                                            \
        asm volatile(insn " %%r2,%[y]\n\tipm %[cc]\n\tsrl %[cc],28"          \
                     : "+d"(_h), "+d"(_l), [cc] "=&d"(_cc) : [y] "d"(_y)    \
                     : "cc");                                               \
        u64 _hv = _h, _lv = _l;                                             \
        report(name ".hi", _hv, _cc, want_hi, want_cc);                     \
        report(name ".lo", _lv, _cc, want_lo, want_cc);                     \
    } while (0)

static void arithmetic(void)
{
    printf("-- arithmetic and logical\n");
    RR("agr", "agr", 0x7fffffffffffffffUL, 1, 0x8000000000000000UL, 3);
    RR("ar", "ar", 0x123456789abcdef0UL, 0x65432110UL, 0x1234567800000000UL, 0);
    RR("alr", "alr", 0x123456789abcdef0UL, 0x65432110UL, 0x1234567800000000UL, 2);
    RR("algr", "algr", 0xffffffffffffffffUL, 2, 1, 3);
    RR("sgr", "sgr", 5, 7, 0xfffffffffffffffeUL, 1);
    RR("slgr", "slgr", 5, 7, 0xfffffffffffffffeUL, 1);
    RR("slgr=", "slgr", 7, 7, 0, 2);
    RR("msgr", "msgr", 0x123456789UL, 0x987654321UL, 0xd77d742cce1833a9UL, -1);
    RR("ngr", "ngr", 0xf0f0f0f0f0f0f0f0UL, 0x0f0f0f0f0f0f0f0fUL, 0, 0);
    RR("ogr", "ogr", 0xf0f0f0f000000000UL, 0x0f0f0f0f0f0f0f0fUL, 0xffffffff0f0f0f0fUL, 1);
    RR("xgr", "xgr", 0xffff0000ffff0000UL, 0xff00ff00ff00ff00UL, 0x00ffff0000ffff00UL, 1);
    RR("lcgr", "lcgr", 0, 5, 0xfffffffffffffffbUL, 1);
    RR("lcgr max", "lcgr", 0, 0x8000000000000000UL, 0x8000000000000000UL, 3);
    RR("lpgr", "lpgr", 0, 0xfffffffffffffffbUL, 5, 2);
    RR("lngr", "lngr", 0, 5, 0xfffffffffffffffbUL, 1);
    RR("ltgr", "ltgr", 1, 0, 0, 0);
    RR("lgfr", "lgfr", 0, 0x80000000UL, 0xffffffff80000000UL, -1);
    RR("llgtr", "llgtr", 0, 0xffffffffffffffffUL, 0x7fffffffUL, -1);
    RR("cgr", "cgr", 0xffffffffffffffffUL, 1, 0xffffffffffffffffUL, 1);
    RR("clgr", "clgr", 0xffffffffffffffffUL, 1, 0xffffffffffffffffUL, 2);
    RR("popcnt", "popcnt", 0, 0x0102030405060708UL, 0x0101020102020301UL, 1);
    PAIR("mlgr", "mlgr", 0, 0xfedcba9876543210UL, 0x0123456789abcdefUL,
         0x0121fa00ad77d742UL, 0x2236d88fe5618cf0UL, -1);
    PAIR("dlgr", "dlgr", 1, 0x23456789abcdef01UL, 0x1000000007UL,
         0x92c5f91b9UL, 0x12345678UL, -1);
    PAIR("dsgr", "dsgr", 0, (u64)-100L, 7, (u64)-2L, (u64)-14L, -1);
    PAIR("flogr", "flogr", 0, 0, 0x0000100000000000UL, 19, 0, 2);
    PAIR("flogr 0", "flogr", 0, 0, 0, 64, 0, 0);

    /* 128-bit addition and subtraction through the carry/borrow */
    {
        u64 hi = 1, lo = 0xffffffffffffffffUL;

        asm("algr %[lo],%[blo]\n\talcgr %[hi],%[bhi]"
            : [hi] "+&d"(hi), [lo] "+&d"(lo) : [blo] "d"(1UL), [bhi] "d"(2UL) : "cc");
        report("alcgr", hi, -1, 4, -1);
        asm("slgr %[lo],%[blo]\n\tslbgr %[hi],%[bhi]"
            : [hi] "+&d"(hi), [lo] "+&d"(lo) : [blo] "d"(1UL), [bhi] "d"(0UL) : "cc");
        report("slbgr", hi, -1, 3, -1);
        report("slbgr.lo", lo, -1, 0xffffffffffffffffUL, -1);
    }

    /* immediates */
    {
        u64 x = 0x1234567800000000UL;
        int cc;

        asm("aghi %[x],-1\n\tipm %[cc]\n\tsrl %[cc],28" : [x] "+d"(x), [cc] "=d"(cc) : : "cc");
        report("aghi", x, cc, 0x12345677ffffffffUL, 2);
        asm("iihf %[x],0xcafef00d\n\tiilf %[x],0x12345678" : [x] "+d"(x));
        report("iihf/iilf", x, -1, 0xcafef00d12345678UL, -1);
        asm("nihf %[x],0x0000ffff\n\tipm %[cc]\n\tsrl %[cc],28" : [x] "+d"(x), [cc] "=d"(cc) : : "cc");
        report("nihf", x, cc, 0x0000f00d12345678UL, 1);
        asm("xilf %[x],0x12345678\n\tipm %[cc]\n\tsrl %[cc],28" : [x] "+d"(x), [cc] "=d"(cc) : : "cc");
        report("xilf", x, cc, 0x0000f00d00000000UL, 0);
        asm("llihl %[x],0xbeef" : [x] "=d"(x));
        report("llihl", x, -1, 0x0000beef00000000UL, -1);
        asm("mghi %[x],-3" : [x] "+d"(x));
        report("mghi", x, -1, 0xfffdc33300000000UL, -1);
        asm("cgfi %[x],-1\n\tipm %[cc]\n\tsrl %[cc],28" : [cc] "=d"(cc) : [x] "d"(x) : "cc");
        report("cgfi", x, cc, 0xfffdc33300000000UL, 1);
    }

    /* load on condition (z196) and load halfword immediate on condition (z13) */
    {
        u64 x = 1, y = 2;

        asm("ltgr %[y],%[y]\n\tlocgrh %[x],%[y]" : [x] "+d"(x) : [y] "d"(y) : "cc");
        report("locgrh", x, -1, 2, -1);
        asm("ltgr %[y],%[y]\n\tlocgrl %[x],%[y]" : [x] "+d"(x) : [y] "d"(7UL) : "cc");
        report("locgrl", x, -1, 2, -1);
        asm("cghi %[y],0\n\tlocghie %[x],-7" : [x] "+d"(x) : [y] "d"(0UL) : "cc");
        report("locghie", x, -1, (u64)-7L, -1);
    }
}

static void shifts(void)
{
    printf("-- shift, rotate, insert\n");
    RSI("sllg", "sllg %[x],%[y],4", 0x0123456789abcdefUL, 0x123456789abcdef0UL, -1);
    RSI("srlg", "srlg %[x],%[y],60", 0xf123456789abcdefUL, 0xf, -1);
    RSI("srag", "srag %[x],%[y],4", 0x8000000000000000UL, 0xf800000000000000UL, 1);
    RSI("slag ovf", "slag %[x],%[y],1", 0x4000000000000000UL, 0, 3);
    RSI("slag", "slag %[x],%[y],2", 0xfffffffffffffff0UL, 0xffffffffffffffc0UL, 1);
    RSI("rllg", "rllg %[x],%[y],1", 0x8000000000000001UL, 3, -1);
    RSI("rll", "rll %[x],%[y],8", 0x12345678UL, 0x34567812UL, -1);
    RSI("risbg", "risbg %[x],%[y],32,128+63,8", 0xffUL, 0xff00UL, 2);
    RSI("risbg0", "risbg %[x],%[y],0,128+7,0", 0x00ffffffffffffffUL, 0, 0);
    RSI("rnsbg", "lghi %[x],-1\n\trnsbg %[x],%[y],56,63,0", 0xf0UL,
        0xfffffffffffffff0UL, 1);
    {
        register u64 r2 asm("2") = 0x0000000012345678UL;
        register u64 r3 asm("3") = 0x000000009abcdef0UL;

        u64 hi, lo;

        asm("srdl %%r2,8" : "+d"(r2), "+d"(r3));
        hi = r2;
        lo = r3;
        report("srdl.hi", hi, -1, 0x123456, -1);
        report("srdl.lo", lo, -1, 0x789abcde, -1);
    }
}

static u8 src[300], dst[320];
static const char hello[] = "hello, world";
static u8 table[256];

static void strings(void)
{
    int cc, i;
    u64 sum;

    printf("-- storage-to-storage and string\n");
    for (i = 0; i < (int)sizeof(src); i++)
        src[i] = (u8)(i * 7 + 3);

    /* MVC and CLC */
    asm("mvc 0(16,%[d]),0(%[s])" : : [d] "a"(dst), [s] "a"(src) : "memory");
    report("mvc", *(u64 *)(dst + 8), -1, *(u64 *)(src + 8), -1);
    asm("clc 0(6,%[a]),0(%[b])\n\tipm %[cc]\n\tsrl %[cc],28"
        : [cc] "=d"(cc) : [a] "a"("abcdef"), [b] "a"("abcdeg") : "cc");
    report("clc", 0, cc, 0, 1);

    /* MVCL: 200 bytes into 300 with pad 0x40 (cc 2: first operand longer) */
    {
        register u64 r2 asm("2") = (u64)dst;
        register u64 r3 asm("3") = 300;
        register u64 r4 asm("4") = (u64)src;
        register u64 r5 asm("5") = 0x40000000UL | 200;

        asm volatile("mvcl %%r2,%%r4\n\tipm %[cc]\n\tsrl %[cc],28"
                     : "+d"(r2), "+d"(r3), "+d"(r4), "+d"(r5), [cc] "=d"(cc)
                     : : "cc", "memory");
        u64 left = r3 & 0xffffff;

        for (sum = 0, i = 0; i < 300; i++)
            sum = sum * 31 + dst[i];
        report("mvcl", sum, cc, 0x1e8efeb2d2273f3cUL, 2);
        report("mvcl r3", left, -1, 0, -1);
    }

    /* CLCL: differ at offset 7; the lengths left point at the difference */
    {
        static u8 a[10] = "0123456789", b[10] = "0123456x89";
        register u64 r2 asm("2") = (u64)a;
        register u64 r3 asm("3") = 10;
        register u64 r4 asm("4") = (u64)b;
        register u64 r5 asm("5") = 10;

        asm volatile("clcl %%r2,%%r4\n\tipm %[cc]\n\tsrl %[cc],28"
                     : "+d"(r2), "+d"(r3), "+d"(r4), "+d"(r5), [cc] "=d"(cc)
                     : : "cc", "memory");
        u64 at = r2 - (u64)a, left = r3 & 0xffffff;

        report("clcl", at, cc, 7, 1);
        report("clcl r3", left, -1, 3, -1);
    }

    /* TR to upper case, TRT for the first comma */
    {
        static char buf[16];

        for (i = 0; i < 256; i++)
            table[i] = (u8)(i >= 'a' && i <= 'z' ? i - 32 : i);
        memcpy(buf, hello, sizeof(hello));
        asm("tr 0(12,%[b]),0(%[t])" : : [b] "a"(buf), [t] "a"(table) : "memory");
        report("tr", *(u64 *)buf, -1, 0x48454c4c4f2c2057UL, -1);   /* "HELLO, W" */

        for (i = 0; i < 256; i++)
            table[i] = 0;
        table[','] = 0x11;
        {
            register u64 r1 asm("1") = 0;
            register u64 r2 asm("2") = 0;

            asm volatile("trt 0(12,%[b]),0(%[t])\n\tipm %[cc]\n\tsrl %[cc],28"
                         : "+d"(r1), "+d"(r2), [cc] "=d"(cc)
                         : [b] "a"(hello), [t] "a"(table) : "cc");
            u64 at = r1 - (u64)hello, fn = r2 & 0xff;

            report("trt", at, cc, 5, 1);
            report("trt r2", fn, -1, 0x11, -1);
        }
    }

    /* MVST, CLST, SRST with the terminator/character in r0 */
    {
        static char s1[16];
        register u64 r0 asm("0") = 0;
        register u64 r2 asm("2") = (u64)s1;
        register u64 r3 asm("3") = (u64)hello;

        asm volatile("0: mvst %%r2,%%r3\n\tjo 0b\n\tipm %[cc]\n\tsrl %[cc],28"
                     : "+d"(r2), "+d"(r3), [cc] "=d"(cc) : "d"(r0) : "cc", "memory");
        u64 at = r2 - (u64)s1;

        report("mvst", at, cc, 12, 1);
        report("mvst eq", memcmp(s1, hello, sizeof(hello)), -1, 0, -1);
    }
    {
        register u64 r0 asm("0") = 0;
        register u64 r2 asm("2") = (u64)"abcd";
        register u64 r3 asm("3") = (u64)"abce";

        asm volatile("0: clst %%r2,%%r3\n\tjo 0b\n\tipm %[cc]\n\tsrl %[cc],28"
                     : "+d"(r2), "+d"(r3), [cc] "=d"(cc) : "d"(r0) : "cc", "memory");
        report("clst", *(u8 *)r2, cc, 'd', 1);
    }
    {
        register u64 r0 asm("0") = 'w';
        register u64 r2 asm("2") = (u64)hello + 12;     /* end */
        register u64 r3 asm("3") = (u64)hello;          /* start */

        asm volatile("0: srst %%r2,%%r3\n\tjo 0b\n\tipm %[cc]\n\tsrl %[cc],28"
                     : "+d"(r2), "+d"(r3), [cc] "=d"(cc) : "d"(r0) : "cc", "memory");
        report("srst", r2 - (u64)hello, cc, 7, 1);
    }

    /* CKSM over bytes 1..16 */
    {
        static u8 data[16];
        register u64 r1 asm("1") = 0;
        register u64 r2 asm("2") = (u64)data;
        register u64 r3 asm("3") = sizeof(data);

        for (i = 0; i < 16; i++)
            data[i] = (u8)(i + 1);
        asm volatile("0: cksm %%r1,%%r2\n\tjo 0b\n\tipm %[cc]\n\tsrl %[cc],28"
                     : "+d"(r1), "+d"(r2), "+d"(r3), [cc] "=d"(cc) : : "cc", "memory");
        report("cksm", r1, cc, 0x1c202428UL, 0);
    }

    /* XC, NC, OC, TM, CLI */
    {
        static u8 b[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
        static u8 m[8] = { 0xf0, 0xf0, 0xf0, 0xf0, 0xf0, 0xf0, 0xf0, 0xf1 };

        asm("nc 0(8,%[b]),0(%[m])\n\tipm %[cc]\n\tsrl %[cc],28"
            : [cc] "=d"(cc) : [b] "a"(b), [m] "a"(m) : "cc", "memory");
        report("nc", *(u64 *)b, cc, 0, 0);
        asm("oc 0(8,%[b]),0(%[m])\n\tipm %[cc]\n\tsrl %[cc],28"
            : [cc] "=d"(cc) : [b] "a"(b), [m] "a"(m) : "cc", "memory");
        report("oc", *(u64 *)b, cc, 0xf0f0f0f0f0f0f0f1UL, 1);
        asm("tm 7(%[b]),0x0f\n\tipm %[cc]\n\tsrl %[cc],28"
            : [cc] "=d"(cc) : [b] "a"(b) : "cc");
        report("tm mixed", 0, cc, 0, 1);
        asm("tm 7(%[b]),0x01\n\tipm %[cc]\n\tsrl %[cc],28"
            : [cc] "=d"(cc) : [b] "a"(b) : "cc");
        report("tm ones", 0, cc, 0, 3);
        asm("cli 0(%[b]),0xf1\n\tipm %[cc]\n\tsrl %[cc],28"
            : [cc] "=d"(cc) : [b] "a"(b) : "cc");
        report("cli", 0, cc, 0, 1);
        asm("xc 0(8,%[b]),0(%[b])\n\tipm %[cc]\n\tsrl %[cc],28"
            : [cc] "=d"(cc) : [b] "a"(b) : "cc", "memory");
        report("xc", *(u64 *)b, cc, 0, 0);
    }

    /* ICM and STCM with a mask */
    {
        static u8 m[2] = { 0x80, 0x12 };
        static u8 out[4];
        u64 x = 0;

        asm("icm %[x],10,0(%[m])\n\tipm %[cc]\n\tsrl %[cc],28"
            : [x] "+d"(x), [cc] "=d"(cc) : [m] "a"(m) : "cc");
        report("icm", x, cc, 0x80001200UL, 1);
        asm("stcm %[x],5,0(%[o])" : : [x] "d"(0x11223344UL), [o] "a"(out) : "memory");
        report("stcm", (u64)out[0] << 8 | out[1], -1, 0x2244, -1);
    }

    /* EXECUTE RELATIVE LONG of an MVC whose length comes from r1 (4: 5 bytes) */
    {
        static char d5[8] = "........";

        asm volatile("lghi %%r1,4\n\texrl %%r1,0f\n\tj 1f\n0: mvc 0(1,%[d]),0(%[s])\n1:"
                     : : [d] "a"(d5), [s] "a"(hello) : "r1", "memory");
        report("exrl mvc", *(u64 *)d5, -1, 0x68656c6c6f2e2e2eUL, -1);  /* "hello..." */
    }

    /* COMPARE AND SWAP: success, then failure with the current value loaded */
    {
        static u64 word = 5;
        u64 old = 5;

        asm volatile("csg %[o],%[n],%[w]\n\tipm %[cc]\n\tsrl %[cc],28"
                     : [o] "+d"(old), [w] "+Q"(word), [cc] "=d"(cc) : [n] "d"(9UL) : "cc");
        report("csg ok", word, cc, 9, 0);
        old = 5;
        asm volatile("csg %[o],%[n],%[w]\n\tipm %[cc]\n\tsrl %[cc],28"
                     : [o] "+d"(old), [w] "+Q"(word), [cc] "=d"(cc) : [n] "d"(1UL) : "cc");
        report("csg fail", old, cc, 9, 1);
    }

    /* decimal: CVD and PACK */
    {
        static u64 dec;
        static u8 packed[3];
        static const char zoned[5] = { (char)0xf1, (char)0xf2, (char)0xf3,
                                       (char)0xf4, (char)0xf5 };

        asm("cvd %[x],%[d]" : [d] "=R"(dec) : [x] "d"(-1234L));
        report("cvd", dec, -1, 0x000000000001234dUL, -1);
        asm("pack 0(3,%[p]),0(5,%[z])" : : [p] "a"(packed), [z] "a"(zoned) : "memory");
        report("pack", (u64)packed[0] << 16 | packed[1] << 8 | packed[2], -1, 0x12345f, -1);
    }

    /* load logical and zero rightmost byte (z13) */
    {
        static u32 w = 0x89abcdef;
        u64 x;

        asm("llzrgf %[x],%[w]" : [x] "=d"(x) : [w] "T"(w));
        report("llzrgf", x, -1, 0x89abcd00UL, -1);
    }
}

static void branches(void)
{
    u64 sum, n, r;

    printf("-- branches and loops\n");
    /* BRCTG: sum of 1..100 */
    asm("lghi %[s],0\n\tlghi %[n],100\n0: agr %[s],%[n]\n\tbrctg %[n],0b"
        : [s] "=&d"(sum), [n] "=&d"(n) : : "cc");
    report("brctg", sum, -1, 5050, -1);

    /* BXLE: index 0,3,6,..,99 (increment r2=3, limit r3=99) */
    {
        register u64 r2 asm("2") = 3;
        register u64 r3 asm("3") = 99;
        u64 i = 0;

        asm("lghi %[s],0\n0: agr %[s],%[i]\n\tbxleg %[i],%%r2,0b"
            : [s] "=&d"(sum), [i] "+&d"(i) : "d"(r2), "d"(r3) : "cc");
        report("bxleg", sum, -1, 1683, -1);
    }

    /* compare and branch (z10): count down, cgij to the loop */
    asm("lghi %[n],10\n\tlghi %[s],0\n0: aghi %[s],2\n\taghi %[n],-1\n\tcgijh %[n],0,0b"
        : [s] "=&d"(sum), [n] "=&d"(n) : : "cc");
    report("cgij", sum, -1, 20, -1);

    /* BRASL and BASR return addresses */
    asm("larl %%r1,0f\n\tbrasl %[r],0f\n0: sgr %[r],%%r1" : [r] "=&d"(r) : : "r1", "cc");
    report("brasl", r, -1, 0, -1);
    asm("larl %%r1,0f\n\tbasr %[r],%%r1\n0: larl %%r1,0b\n\tsgr %[r],%%r1"
        : [r] "=&d"(r) : : "r1", "cc");
    report("basr", r, -1, 0, -1);

    /* BRC on each condition code: count the branches taken for cc 0..3 */
    {
        u64 taken = 0;
        int cc;

        for (cc = 0; cc < 4; cc++) {
            u64 t;

            asm("sllg %%r1,%[cc],28\n\tspm %%r1\n\tlghi %[t],0\n"
                "\tjnz 0f\n\taghi %[t],1\n0: jno 1f\n\taghi %[t],16\n"
                "1: jl 2f\n\taghi %[t],256\n2:"
                : [t] "=&d"(t) : [cc] "d"((u64)cc) : "r1", "cc");
            taken = taken << 12 | t;
        }
        report("brc", taken, -1, 0x101000100110UL, -1);
    }
}

/* ---- compiled algorithms ---------------------------------------------------- */

static u32 lcg_state;

static u32 lcg(void)
{
    lcg_state = lcg_state * 1103515245u + 12345u;
    return lcg_state >> 16;
}

static u8 data[4096];
static u8 composite[100000];
static u32 values[512];

static void algorithms(void)
{
    u32 crc = 0xffffffffu;
    u64 fnv = 0xcbf29ce484222325UL, primes = 0, mix, acc, h;
    int i, j, k, gap;

    printf("-- compiled algorithms\n");
    lcg_state = 1;
    for (i = 0; i < (int)sizeof(data); i++)
        data[i] = (u8)lcg();

    for (i = 0; i < (int)sizeof(data); i++) {
        crc ^= data[i];
        for (k = 0; k < 8; k++)
            crc = crc & 1 ? (crc >> 1) ^ 0xedb88320u : crc >> 1;
    }
    report("crc32", crc ^ 0xffffffffu, -1, 0x4641a512UL, -1);

    for (i = 0; i < (int)sizeof(data); i++)
        fnv = (fnv ^ data[i]) * 0x100000001b3UL;
    report("fnv1a64", fnv, -1, 0xef3be429c58e501eUL, -1);

    for (i = 2; i < (int)sizeof(composite); i++) {
        if (composite[i])
            continue;
        primes++;
        for (j = 2 * i; j < (int)sizeof(composite); j += i)
            composite[j] = 1;
    }
    report("primes", primes, -1, 9592, -1);

    lcg_state = 7;
    for (i = 0; i < (int)ARRAY_SIZE(values); i++) {
        u32 hi = lcg();

        values[i] = hi << 16 | lcg();
    }
    for (gap = ARRAY_SIZE(values) / 2; gap > 0; gap /= 2)
        for (i = gap; i < (int)ARRAY_SIZE(values); i++) {
            u32 v = values[i];

            for (j = i; j >= gap && values[j - gap] > v; j -= gap)
                values[j] = values[j - gap];
            values[j] = v;
        }
    for (acc = 0, i = 0; i < (int)ARRAY_SIZE(values); i++)
        acc += (u64)(i + 1) * values[i];
    report("shellsort", acc, -1, 0x000158f0c30cf8a8UL, -1);

    mix = 0;
    acc = 0;
    for (i = 0; i < 1000; i++) {
        mix += 0x9e3779b97f4a7c15UL;
        h = mix;
        h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9UL;
        h = (h ^ (h >> 27)) * 0x94d049bb133111ebUL;
        h ^= h >> 31;
        acc ^= h;
    }
    report("splitmix", acc, -1, 0xdb01309f01d9a335UL, -1);

    for (acc = 0, i = 1; i <= 10000; i++) {
        u64 d = (u64)(i % 17) + 1;
        s64 sx = (s64)i * (i & 1 ? -1 : 1);

        acc += (u64)i / d + (u64)i % d;
        acc += (u64)(sx / (s64)d) ^ (u64)(sx % (s64)d);
    }
    report("divmod", acc, -1, 0x0000000000ff70c2UL, -1);
}

int main(void)
{
    printf("vmd test guest: insn (general instructions)\n");
    arithmetic();
    shifts();
    strings();
    branches();
    algorithms();
    printf("insn: %d checks, %d mismatches\n", tests, failures);
    return 0;
}
