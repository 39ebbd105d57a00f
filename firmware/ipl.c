/*
 * vmd firmware: the IPL parameter block and the start of the loaded program.
 *
 * DIAGNOSE 0x308 (R1 even: R1 holds an address, R1+1 receives the return
 * code; R3 holds the subcode): subcode 6 stores the IPL parameter block
 * (IPLB) that the machine built for the boot device into the page at R1
 * (return code 0x0001; 0x0102 when there is none, for example without a
 * bootindex); subcode 5 replaces it; subcode 1 is load-normal: subsystem
 * reset, initial reset of this CPU (the general registers and storage stay
 * as they are), then the CPU loads the 8-byte ESA/390-format PSW at address 0.
 *
 * IPLB layout: length (0), version (7), block-0 length (8), parameter block
 * type (12: 2 ccw, 0 fcp, 0xff QEMU's virtio-scsi form), flags (13; 0x80:
 * the loadparm at 16 is valid, EBCDIC); ccw: subchannel set (109, low 2
 * bits) and device number (110); QEMU virtio-scsi: LUN (24), target (28),
 * channel (30), and the adapter's subchannel set and device number at 109
 * and 110 as for ccw.
 *
 * Like QEMU's firmware, the program sees the IPL the machine would do: the
 * subsystem-identification word of the IPL subchannel at 0xb8 (zero at
 * 0xbc), the IPLB's address at 0x14, and a virtio-scsi IPLB turned into a
 * ccw one, since the program knows no QEMU-specific type.
 */
#include "fw.h"

#define DIAG308_LOAD_NORMAL     1
#define DIAG308_SET_IPLB        5
#define DIAG308_STORE_IPLB      6
#define DIAG308_RC_OK           0x0001

#define IPLB_FLAG_LOADPARM      0x80

struct ipl_state ipl;
static u8 iplb_page[PAGE_SIZE] aligned(PAGE_SIZE);
static struct jmp_state probe;

static long diag308_raw(u64 subcode, u64 address)
{
    register u64 addr asm("2") = address;
    register u64 rc asm("3") = 0;
    register u64 code asm("4") = subcode;

    asm volatile("diag %%r2,%%r4,0x308"
                 : "+d"(addr), "+d"(rc) : "d"(code) : "memory", "cc");
    return (long)rc;
}

/* DIAGNOSE 0x308; the return code, or -1 when it raised a program interruption */
static long diag308(u64 subcode, u64 address)
{
    volatile long result = -1;

    if (fw_setjmp(&probe) == 0) {
        probe_state = &probe;
        result = diag308_raw(subcode, address);
        probe_state = NULL;
    }
    return result;
}

int iplb_store(void)
{
    memset(iplb_page, 0, sizeof(iplb_page));
    return diag308(DIAG308_STORE_IPLB, (u64)iplb_page) == DIAG308_RC_OK;
}

u8 iplb_type(void) { return iplb_page[12]; }
int iplb_loadparm_valid(void) { return (iplb_page[13] & IPLB_FLAG_LOADPARM) != 0; }
const u8 *iplb_loadparm(void) { return iplb_page + 16; }
u8 iplb_ssid(void) { return iplb_page[109] & 3; }
u16 iplb_devno(void) { return (u16)(iplb_page[110] << 8 | iplb_page[111]); }

void iplb_scsi_address(struct scsi_address *a)
{
    a->lun = be32(iplb_page + 24);
    a->target = (u16)(iplb_page[28] << 8 | iplb_page[29]);
    a->channel = (u16)(iplb_page[30] << 8 | iplb_page[31]);
    a->given = 1;
}

static void ipl_report_scsi_as_ccw(void)
{
    if (ipl.have_iplb && iplb_type() == IPL_TYPE_QEMU_SCSI) {
        iplb_page[12] = IPL_TYPE_CCW;
        diag308(DIAG308_SET_IPLB, (u64)iplb_page);
    }
}

noreturn void ipl_start(u64 entry)
{
    u64 psw;

    lc_write32(LC_SUBCHANNEL_ID, ipl.schid);
    lc_write32(LC_IO_INT_PARM, 0);
    if (ipl.have_iplb)
        lc_write32(LC_IPLB_ADDR, (u32)(u64)iplb_page);
    ipl_report_scsi_as_ccw();
    if (entry) {
        /* load-normal needs a PSW at 0: one that leads to the trampoline,
         * which puts the program's own bytes back and branches to entry */
        ipl_saved_word = lc_read64(LC_IPL_PSW);
        ipl_continue = entry;
        lc_write64(LC_IPL_PSW, PSW_SHORT_BIT12 | PSW_MASK_64 | (u64)ipl_trampoline);
    }
    psw = lc_read64(LC_IPL_PSW);
    console_flush();
    diag308(DIAG308_LOAD_NORMAL, 0);

    /* Without load-normal: reset the boot device and load the PSW ourselves. */
    printf("DIAGNOSE 0x308 load-normal is not available: starting without a reset\n");
    console_flush();
    if (ipl.device)
        virtio_reset(ipl.device);
    {
        static struct { u64 mask, addr; } start_psw aligned(8);

        start_psw.mask = psw & 0xffffffff80000000UL & ~PSW_SHORT_BIT12;
        start_psw.addr = psw & PSW_SHORT_ADDR;
        asm volatile("lpswe %0" : : "Q"(start_psw) : "memory");
    }
    panic(WAIT_START_FAILED, "\n! The program could not be started !\n");
}
