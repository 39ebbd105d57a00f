/*
 * vmd test guests: the freestanding library's interface.
 *
 * The guests run with DAT off, in 64-bit addressing mode, supervisor state,
 * key 0.  Every address here is a real address; the lowcore is the 8 KiB at
 * the CPU's prefix (0 for the IPL CPU), so lowcore pointers below are
 * per-CPU.  Offsets and bit numbers follow the z/Architecture Principles of
 * Operation (SA22-7832), chapters 4 ("Control"), 6 ("Interruptions") and
 * 13-17 (I/O).
 */
#ifndef GUEST_H
#define GUEST_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;
typedef signed long s64;

#define NULL ((void *)0)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- PSW mask bits (bit n of the 64-bit mask is 1 << (63 - n)) ---------- */
#define PSW_PER     (1UL << 62)     /* bit 1 */
#define PSW_DAT     (1UL << 58)     /* bit 5 */
#define PSW_IO      (1UL << 57)     /* bit 6: I/O mask */
#define PSW_EXT     (1UL << 56)     /* bit 7: external mask */
#define PSW_MCHK    (1UL << 50)     /* bit 13: machine-check mask */
#define PSW_WAIT    (1UL << 49)     /* bit 14 */
#define PSW_PSTATE  (1UL << 48)     /* bit 15: problem state */
#define PSW_FIXOVF  (1UL << 43)     /* bit 20: fixed-point-overflow mask */
#define PSW_EA      (1UL << 32)     /* bit 31: extended addressing */
#define PSW_BA      (1UL << 31)     /* bit 32: basic addressing */
#define PSW_64      (PSW_EA | PSW_BA)

/* ---- control register 0 bits ---------------------------------------------- */
#define CR0_LAP      (1UL << 28)    /* bit 35: low-address protection */
#define CR0_VX       (1UL << 17)    /* bit 46: vector enablement */
#define CR0_AFP      (1UL << 18)    /* bit 45: AFP-register control */
#define CR0_EMERG    (1UL << 14)    /* bit 49: emergency-signal subclass */
#define CR0_EXTCALL  (1UL << 13)    /* bit 50: external-call subclass */
#define CR0_CKC      (1UL << 11)    /* bit 52: clock-comparator subclass */
#define CR0_CPUTIMER (1UL << 10)    /* bit 53: CPU-timer subclass */
#define CR0_SERVICE  (1UL << 9)     /* bit 54: service-signal subclass */

/* ---- external-interruption codes ------------------------------------------ */
#define EXT_CKC       0x1004
#define EXT_CPU_TIMER 0x1005
#define EXT_EMERGENCY 0x1201
#define EXT_EXTCALL   0x1202
#define EXT_SERVICE   0x2401

struct psw {
    u64 mask;
    u64 addr;
} __attribute__((aligned(8)));

/* The architected part of the lowcore that the guests use. */
struct lowcore {
    u8  pad_0x0000[0x0080];
    u32 ext_params;             /* 0x080 */
    u16 ext_cpu_addr;           /* 0x084 */
    u16 ext_int_code;           /* 0x086 */
    u16 svc_ilc;                /* 0x088 */
    u16 svc_code;               /* 0x08a */
    u16 pgm_ilc;                /* 0x08c */
    u16 pgm_code;               /* 0x08e */
    u32 data_exc_code;          /* 0x090 (DXC in byte 0x093) */
    u8  pad_0x0094[0x00a8 - 0x0094];
    u64 trans_exc_code;         /* 0x0a8 */
    u8  pad_0x00b0[0x00b8 - 0x00b0];
    u32 subchannel_id;          /* 0x0b8 */
    u32 io_int_parm;            /* 0x0bc */
    u32 io_int_word;            /* 0x0c0 */
    u8  pad_0x00c4[0x00c8 - 0x00c4];
    u32 stfl_fac_list;          /* 0x0c8 */
    u8  pad_0x00cc[0x0120 - 0x00cc];
    struct psw restart_old;     /* 0x120 */
    struct psw external_old;    /* 0x130 */
    struct psw svc_old;         /* 0x140 */
    struct psw program_old;     /* 0x150 */
    struct psw mcck_old;        /* 0x160 */
    struct psw io_old;          /* 0x170 */
    u8  pad_0x0180[0x01a0 - 0x0180];
    struct psw restart_new;     /* 0x1a0 */
    struct psw external_new;    /* 0x1b0 */
    struct psw svc_new;         /* 0x1c0 */
    struct psw program_new;     /* 0x1d0 */
    struct psw mcck_new;        /* 0x1e0 */
    struct psw io_new;          /* 0x1f0 */
    /* 0x200-0x41f: software area used by crt0.S (register save areas,
     * the interrupt-stack pointers); 0x420-0x11af is free. */
} __attribute__((aligned(8)));

_Static_assert(__builtin_offsetof(struct lowcore, ext_params) == 0x80, "lowcore");
_Static_assert(__builtin_offsetof(struct lowcore, pgm_code) == 0x8e, "lowcore");
_Static_assert(__builtin_offsetof(struct lowcore, trans_exc_code) == 0xa8, "lowcore");
_Static_assert(__builtin_offsetof(struct lowcore, subchannel_id) == 0xb8, "lowcore");
_Static_assert(__builtin_offsetof(struct lowcore, stfl_fac_list) == 0xc8, "lowcore");
_Static_assert(__builtin_offsetof(struct lowcore, restart_old) == 0x120, "lowcore");
_Static_assert(__builtin_offsetof(struct lowcore, io_old) == 0x170, "lowcore");
_Static_assert(__builtin_offsetof(struct lowcore, restart_new) == 0x1a0, "lowcore");
_Static_assert(__builtin_offsetof(struct lowcore, io_new) == 0x1f0, "lowcore");

#define LOWCORE ((volatile struct lowcore *)0)

/* software slots in the lowcore, shared with crt0.S */
#define LC_SAVE_PGM      0x200  /* 16 GPRs */
#define LC_SAVE_EXT      0x280
#define LC_SAVE_IO       0x300
#define LC_SAVE_SVC      0x380
#define LC_STACK_SVC     0x400  /* tops of this CPU's interrupt stacks */
#define LC_STACK_IO      0x408
#define LC_STACK_PGM     0x410
#define LC_STACK_EXT     0x418

/* ---- small instruction wrappers ------------------------------------------- */
static inline u64 stctg0(void)
{
    u64 v;
    asm volatile("stctg %%c0,%%c0,%0" : "=Q"(v));
    return v;
}

static inline void lctlg0(u64 v)
{
    asm volatile("lctlg %%c0,%%c0,%0" : : "Q"(v) : "memory");
}

static inline void cr0_set(u64 bits) { lctlg0(stctg0() | bits); }
static inline void cr0_clear(u64 bits) { lctlg0(stctg0() & ~bits); }

static inline u16 stap(void)
{
    u16 a;
    asm volatile("stap %0" : "=Q"(a));
    return a;
}

/* STORE CLOCK; returns the condition code. */
static inline int stck(u64 *v)
{
    int cc;
    asm volatile("stck %1\n\tipm %0\n\tsrl %0,28" : "=d"(cc), "=Q"(*v) : : "cc");
    return cc;
}

static inline void barrier(void) { asm volatile("" : : : "memory"); }

/* ---- crt0.S ---------------------------------------------------------------- */
extern void poweroff(void) __attribute__((noreturn));
extern void panic_wait(u64 code) __attribute__((noreturn));
extern void load_psw(const struct psw *psw) __attribute__((noreturn));
extern char secondary_entry[];          /* restart-PSW target for other CPUs */
extern u64 secondary_stack_top;         /* set before restarting another CPU */
extern void lowcore_init(void *lowcore_base, u64 irq_stack_top);

/* ---- interrupts (irq.c) ------------------------------------------------------ */
/* An expected program interruption: the handler records it and resumes at
 * `resume` (supervisor state, same masks) with the registers it had. */
struct pgm_event {
    u16 code;
    u16 ilc;
    u32 dxc;
    struct psw old;
};
extern volatile int pgm_count;
extern volatile u64 pgm_resume;        /* 0: a program interruption is fatal */
extern volatile struct pgm_event pgm_last;

struct svc_event {
    u16 code;
    u16 ilc;
    struct psw old;
};
extern volatile int svc_count;
extern volatile struct svc_event svc_last;

typedef void (*ext_handler_t)(u16 code, u16 cpu_addr, u32 param);
extern ext_handler_t ext_handler;       /* called for codes other than 0x2401 */
typedef void (*io_handler_t)(u32 schid, u32 intparm, u32 iiw);
extern io_handler_t io_handler;

/* Load an enabled-wait PSW with these extra mask bits (PSW_EXT/PSW_IO) and
 * return after the first interruption; the masks are off again on return. */
void enabled_wait(u64 masks);

/* ---- SCLP (sclp.c) ------------------------------------------------------------ */
int sclp_call(u32 command, void *sccb);    /* returns the SCCB response code */
void sclp_setup(void);
void sclp_write(const char *s, int len);
struct sclp_info {
    u64 memory_mib;
    u16 cpus;
    u16 response;
};
int sclp_read_info(struct sclp_info *info);
extern u32 sclp_sclp_receive_mask, sclp_sclp_send_mask;

/* ---- console (printf.c) ----------------------------------------------------------- */
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void puts_raw(const char *s);
void flush(void);
void *memset(void *s, int c, unsigned long n);
void *memcpy(void *d, const void *s, unsigned long n);
int memcmp(const void *a, const void *b, unsigned long n);
unsigned long strlen(const char *s);

/* Ends the run: prints the last line and powers off (all CPUs stopped). */
void finish(void) __attribute__((noreturn));
/* Reports a broken expectation, then ends with a non-quiesce disabled wait
 * (QEMU: GUEST_PANICKED). */
void fail(const char *what) __attribute__((noreturn));

int main(void);

#endif
