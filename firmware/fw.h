/*
 * vmd firmware: shared declarations.
 *
 * The firmware runs with DAT off, in 64-bit addressing mode, supervisor
 * state, key 0, with every interruption class masked except while it waits
 * for one on purpose.  Addresses are real addresses; the IPL CPU's prefix is
 * 0, so the lowcore is at absolute 0.  Offsets and bit numbers follow the
 * z/Architecture Principles of Operation (SA22-7832).
 */
#ifndef FW_H
#define FW_H

/* Everything is in this one image: direct, PC-relative references, no GOT. */
#pragma GCC visibility push(hidden)

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;
typedef signed long s64;

#define NULL ((void *)0)
#define PAGE_SIZE 4096
#define noreturn __attribute__((noreturn))
#define aligned(n) __attribute__((aligned(n)))
#define packed __attribute__((packed))

#define FW_VERSION "1.0"

static inline u64 min_u64(u64 a, u64 b) { return a < b ? a : b; }
static inline u64 align_up(u64 v, u64 a) { return (v + a - 1) & ~(a - 1); }

/* ---- disabled-wait codes ---------------------------------------------------
 * The firmware ends every failure in a disabled wait whose PSW address is
 * 0x766d6466 ("vmdf" in ASCII) in the high word and the reason in bits 48-55,
 * so a GUEST_PANICKED event's psw-addr names the reason. */
#define WAIT_CODE(n)            (0x766d646600000000UL | ((u64)(n) << 8))
#define WAIT_NO_BOOT_DEVICE     WAIT_CODE(1)    /* nothing bootable found */
#define WAIT_DEVICE             WAIT_CODE(2)    /* the boot device is unusable */
#define WAIT_IO_ERROR           WAIT_CODE(3)    /* a read failed */
#define WAIT_BOOT_RECORD        WAIT_CODE(4)    /* boot map or ISO is invalid */
#define WAIT_LOADPARM           WAIT_CODE(5)    /* loadparm selects no entry */
#define WAIT_LOAD_RANGE         WAIT_CODE(6)    /* a component does not fit */
#define WAIT_PROGRAM_CHECK      WAIT_CODE(7)    /* unexpected program interruption */
#define WAIT_START_FAILED       WAIT_CODE(8)    /* the loaded program could not be started */
#define WAIT_RELOCATION         WAIT_CODE(9)    /* start.S met an unknown relocation */
#define WAIT_UNSUPPORTED        WAIT_CODE(10)   /* IPL type or device not supported */

/* ---- PSW and control registers ----------------------------------------------- */
#define PSW_MASK_64     0x0000000180000000UL    /* EA and BA */
#define PSW_SHORT_BIT12 0x0008000000000000UL    /* the ESA/390-format marker */
#define PSW_SHORT_ADDR  0x000000007fffffffUL

#define CR0_SERVICE_SIGNAL (1UL << 9)   /* bit 54: service-signal subclass */

/* ---- lowcore (absolute addresses; prefix 0) -------------------------------------- */
#define LC_IPL_PSW          0x000   /* 8-byte ESA/390-format PSW that load-normal uses */
#define LC_IPLB_ADDR        0x014   /* 31-bit address of the IPL parameter block */
#define LC_EXT_PARAMS       0x080
#define LC_EXT_CODE         0x086
#define LC_PGM_ILC          0x08c
#define LC_PGM_CODE         0x08e
#define LC_SUBCHANNEL_ID    0x0b8   /* subsystem identification after IPL */
#define LC_IO_INT_PARM      0x0bc
#define LC_PGM_OLD_PSW      0x150
/* the new PSWs at 0x1a0-0x1ff are written by start.S */
#define LC_SAVE_AREA        0x200   /* 16 GPRs at a program interruption (start.S) */

/* The lowcore is data at address 0; the compiler must not see a null pointer. */
static inline volatile void *lowcore(u64 offset)
{
    volatile void *p;

    asm("" : "=r"(p) : "0"(offset));
    return p;
}

static inline u64 lc_read64(u64 off) { return *(volatile u64 *)lowcore(off); }
static inline u32 lc_read32(u64 off) { return *(volatile u32 *)lowcore(off); }
static inline void lc_write64(u64 off, u64 v) { *(volatile u64 *)lowcore(off) = v; }
static inline void lc_write32(u64 off, u32 v) { *(volatile u32 *)lowcore(off) = v; }

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

/* TOD clock; bit 51 is one microsecond */
static inline u64 tod_now(void)
{
    u64 v;

    asm volatile("stck %0" : "=Q"(v) : : "cc");
    return v;
}
#define TOD_SECOND (1000000UL << 12)

/* serialization: stores before it are seen by the devices before later ones */
static inline void serialize(void) { asm volatile("bcr 15,0" : : : "memory"); }

static inline u16 bswap16(u16 v) { return (u16)(v << 8 | v >> 8); }
static inline u32 bswap32(u32 v) { return __builtin_bswap32(v); }
static inline u64 bswap64(u64 v) { return __builtin_bswap64(v); }
static inline u16 le16(const u8 *p) { return (u16)(p[0] | p[1] << 8); }
static inline u32 le32(const u8 *p) { return (u32)p[0] | (u32)p[1] << 8 | (u32)p[2] << 16 | (u32)p[3] << 24; }
static inline u32 be32(const u8 *p) { return (u32)p[0] << 24 | (u32)p[1] << 16 | (u32)p[2] << 8 | p[3]; }
static inline u64 be64(const u8 *p) { return (u64)be32(p) << 32 | be32(p + 4); }

/* ---- start.S --------------------------------------------------------------------- */
noreturn void disabled_wait(u64 code);
void wait_for_external(void);           /* one external interruption (new PSW set here) */
void install_new_psws(void);            /* program check -> report; others -> disabled wait */
extern char _start[], _end[];
extern char ipl_trampoline[];
extern u64 ipl_saved_word, ipl_continue;

/* A program interruption while a probe is armed resumes at fw_setjmp with 1. */
struct jmp_state {
    u64 gprs[10];                       /* r6-r15 */
};
int fw_setjmp(struct jmp_state *state) __attribute__((returns_twice));
noreturn void fw_longjmp(struct jmp_state *state, int value);
extern struct jmp_state *volatile probe_state;

/* ---- libc.c ------------------------------------------------------------------------ */
void *memset(void *s, int c, unsigned long n);
void *memcpy(void *d, const void *s, unsigned long n);
int memcmp(const void *a, const void *b, unsigned long n);
unsigned long strlen(const char *s);
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void console_flush(void);
void console_start_line(void);
/* prints the message, then ends in a disabled wait with this code */
noreturn void panic(u64 code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- sclp.c ------------------------------------------------------------------------ */
void sclp_setup(void);
void sclp_write(const char *text, int len);
u64 sclp_memory_size(void);             /* bytes; 0 when Read SCP Info failed */
void sclp_loadparm(char ascii[9]);      /* the machine's loadparm, blank-padded */
void ebcdic_to_ascii(const u8 *in, char *out, int len);

/* ---- css.c ------------------------------------------------------------------------- */
#define SCHID(ssid, sch)    (0x00010000u | (u32)(ssid) << 17 | (u32)(sch))
#define SCHID_SSID(id)      (((id) >> 17) & 3)

#define CCW_FLAG_SLI        0x20

enum ccw_result {
    CCW_OK = 0,
    CCW_UNIT_CHECK = -1,    /* the device rejected the command */
    CCW_ERROR = -2,         /* channel error, unexpected status, or no subchannel */
    CCW_TIMEOUT = -3,
};

struct sense_id {
    u8 reserved;            /* 0xff */
    u16 cu_type;
    u8 cu_model;
    u16 dev_type;
    u8 dev_model;
} packed;

/* STORE SUBCHANNEL: -1 when there is no such subchannel, else the device
 * number of a valid device or 0x10000 for a subchannel without one. */
int css_devno(u32 schid);
int css_enable(u32 schid);
int css_run(u32 schid, u8 cmd, u8 flags, void *data, u16 count, u16 *residual);
int css_sense_id(u32 schid, struct sense_id *id);
int css_enable_mss(void);               /* 0 when subchannel sets 1-3 are usable */

/* ---- virtio.c ---------------------------------------------------------------------- */
#define VIRTIO_ID_NET       1
#define VIRTIO_ID_BLOCK     2
#define VIRTIO_ID_SCSI      8

struct vring_desc;
struct vring_avail;
struct vring_used;

struct virtqueue {
    u16 index;
    u16 num;
    u16 avail_idx;                      /* next free avail slot (free-running) */
    struct vring_desc *desc;
    struct vring_avail *avail;
    struct vring_used *used;
};

struct virtio_dev {
    u32 schid;
    u16 devno;
    u8 revision;                        /* 1: virtio 1.0 layout (little-endian); 0: legacy */
    u64 host_features;
    u64 guest_features;
    struct virtqueue vq;
};

struct vbuf {
    void *addr;
    u32 len;
    int device_writes;                  /* the device fills this buffer */
};

#define VIRTIO_F_VERSION_1  32

int virtio_setup(struct virtio_dev *vd, u64 wanted_features, u16 queue_index,
                 void *config, u32 config_len);
int virtio_run(struct virtio_dev *vd, const struct vbuf *bufs, int count);
void virtio_reset(struct virtio_dev *vd);
/* device-endian accessors for the virtio 1.0 (LE) and legacy (BE) layouts */
u16 vio16(const struct virtio_dev *vd, u16 v);
u32 vio32(const struct virtio_dev *vd, u32 v);
u64 vio64(const struct virtio_dev *vd, u64 v);

/* ---- disk.c: a block device the boot loaders read ------------------------------------- */
struct disk {
    const char *driver;                 /* "virtio-blk" or "virtio-scsi" */
    struct virtio_dev *vd;
    u32 block_size;
    u64 blocks;
    int is_cdrom;
    int is_scsi;
    u16 scsi_target;
    u32 scsi_lun;
    u32 max_blocks;                     /* per request */
    int (*read)(struct disk *d, u64 lba, u32 count, void *buf);
};

/* Reads len bytes at byte offset; any alignment.  0 or -1 (message printed). */
int disk_read_bytes(struct disk *d, u64 offset, u64 len, void *dst);
/* The same, for destinations in the loaded program's memory: refuses ranges
 * outside storage or overlapping the firmware, and panics on errors. */
void disk_load(struct disk *d, u64 offset, u64 len, u64 address, const char *what);
u64 memory_size(void);                  /* storage size in bytes */
int firmware_overlaps(u64 address, u64 len);

int vblk_open(struct virtio_dev *vd, struct disk *d);

struct scsi_address {
    u16 channel;
    u16 target;
    u32 lun;
    int given;                          /* from the IPL parameter block */
};
int vscsi_open(struct virtio_dev *vd, const struct scsi_address *want, struct disk *d);

/* ---- boot loaders ------------------------------------------------------------------ */
#define NOT_THIS_FORMAT 1
/* Return NOT_THIS_FORMAT when the disk does not carry their format; boot
 * (no return) or panic otherwise. */
int zipl_boot(struct disk *d, u64 base, unsigned entry, int entry_given);
int iso_boot(struct disk *d, unsigned entry, int entry_given);

/* ---- ipl.c ------------------------------------------------------------------------- */
struct ipl_state {
    int have_iplb;
    char loadparm[9];                   /* ASCII, blank-padded */
    unsigned entry;                     /* boot entry the loadparm selects */
    int entry_given;                    /* the loadparm was not blank */
    u32 schid;                          /* the IPL subchannel */
    struct virtio_dev *device;          /* the boot device, once set up */
};
extern struct ipl_state ipl;

int iplb_store(void);                   /* DIAGNOSE 0x308 subcode 6: 1 when there is one */
u8 iplb_type(void);
int iplb_loadparm_valid(void);
const u8 *iplb_loadparm(void);
u8 iplb_ssid(void);
u16 iplb_devno(void);
void iplb_scsi_address(struct scsi_address *a);
#define IPL_TYPE_FCP        0x00
#define IPL_TYPE_CCW        0x02
#define IPL_TYPE_QEMU_SCSI  0xff
/* Starts the loaded program through load-normal: with the 8-byte PSW now at
 * address 0 (entry 0), or at entry with address 0's content restored. */
noreturn void ipl_start(u64 entry);

#pragma GCC visibility pop

#endif
