/*
 * vmd firmware: the IPL sequence.
 *
 * 1. Console and storage size from the SCLP; the banner.
 * 2. The IPL parameter block (DIAGNOSE 0x308 subcode 6).  The loadparm is
 *    the block's when it has a valid one, else the machine's (Read SCP
 *    Info); blanks boot the default entry, digits pick an entry.
 * 3. The boot device: the subchannel with the block's device number, or,
 *    without a block (no bootindex), every subchannel of every subchannel
 *    set in turn until one boots.  A device must answer SENSE ID as virtio
 *    (control unit 0x3832) with model 2 (virtio-blk) or 8 (virtio-scsi).
 * 4. The boot record: a CD-ROM is read as ISO 9660; any other disk is
 *    tried as a zipl boot map (zipl.c), then as ISO 9660 (iso.c).
 *
 * A device that turns out not to be bootable ends the IPL with a message
 * and a disabled wait (fw.h, WAIT_*) when the IPL parameter block named
 * it; while scanning, the next device is tried.
 */
#include "fw.h"

#define CU_TYPE_VIRTIO      0x3832
#define MAX_ENTRY           30
#define LINUX_EP_MAGIC_ADDR 0x10008

static struct virtio_dev vdev;
static struct disk disk;

static void parse_loadparm(void)
{
    const char *lp = ipl.loadparm;
    unsigned value = 0;
    int i = 0, digits = 0;

    while (i < 8 && lp[i] == ' ')
        i++;
    if (i == 8)
        return;                                 /* blank: the default entry */
    if (!memcmp(lp, "PROMPT  ", 8)) {
        printf("The boot menu (PROMPT) is not supported: booting the default entry\n");
        return;
    }
    for (; i < 8 && lp[i] >= '0' && lp[i] <= '9'; i++, digits++)
        value = value * 10 + (unsigned)(lp[i] - '0');
    while (i < 8 && lp[i] == ' ')
        i++;
    if (!digits || i < 8 || value > MAX_ENTRY)
        panic(WAIT_LOADPARM, "\n! LOADPARM=[%s] selects no boot entry: use a number from 0 to %u, "
              "or blanks for the default entry !\n", ipl.loadparm, MAX_ENTRY);
    ipl.entry = value;
    ipl.entry_given = 1;
}

static void choose_loadparm(void)
{
    if (ipl.have_iplb && iplb_loadparm_valid()) {
        ebcdic_to_ascii(iplb_loadparm(), ipl.loadparm, 8);
        ipl.loadparm[8] = 0;
    } else {
        sclp_loadparm(ipl.loadparm);
    }
    printf("LOADPARM=[%s]\n", ipl.loadparm);
    parse_loadparm();
}

/* Boots the disk, or returns when it carries no boot record. */
static void boot_disk(struct disk *d)
{
    if (d->is_cdrom) {
        if (iso_boot(d, ipl.entry, ipl.entry_given) == NOT_THIS_FORMAT)
            panic(WAIT_BOOT_RECORD, "\n! Cannot IPL this ISO image !\n");
    }
    if (zipl_boot(d, 0, ipl.entry, ipl.entry_given) == NOT_THIS_FORMAT)
        iso_boot(d, ipl.entry, ipl.entry_given);
}

/*
 * Sets up the device on this subchannel and boots it.  Returns when the
 * device cannot boot and must_boot is 0 (scanning); otherwise any failure
 * ends the IPL.
 */
static void try_device(u32 schid, u16 devno, const struct scsi_address *scsi, int must_boot)
{
    struct sense_id id;
    struct scsi_address any = { 0, 0, 0, 0 };
    int rc;

    if (css_enable(schid) || css_sense_id(schid, &id)) {
        if (must_boot)
            panic(WAIT_DEVICE, "\n! Device 0.%u.%04x does not answer SENSE ID !\n",
                  SCHID_SSID(schid), devno);
        return;
    }
    if (id.cu_type != CU_TYPE_VIRTIO ||
        (id.cu_model != VIRTIO_ID_BLOCK && id.cu_model != VIRTIO_ID_SCSI)) {
        if (!must_boot)
            return;
        if (id.cu_type == CU_TYPE_VIRTIO && id.cu_model == VIRTIO_ID_NET)
            panic(WAIT_UNSUPPORTED, "\n! Network boot (virtio-net 0.%u.%04x) is not supported !\n",
                  SCHID_SSID(schid), devno);
        panic(WAIT_UNSUPPORTED, "\n! Device 0.%u.%04x (control unit %04x model %02x) is not a "
              "virtio block or SCSI device !\n", SCHID_SSID(schid), devno, id.cu_type,
              id.cu_model);
    }
    memset(&vdev, 0, sizeof(vdev));
    vdev.schid = schid;
    vdev.devno = devno;
    memset(&disk, 0, sizeof(disk));
    if (id.cu_model == VIRTIO_ID_BLOCK)
        rc = vblk_open(&vdev, &disk);
    else
        rc = vscsi_open(&vdev, scsi ? scsi : &any, &disk);
    if (rc) {
        if (must_boot)
            panic(WAIT_DEVICE, "\n! No readable IPL device !\n");
        return;
    }
    printf("Boot device 0.%u.%04x: %s, ", SCHID_SSID(schid), devno, disk.driver);
    if (disk.is_scsi)
        printf("SCSI %s at target %u LUN %u, ", disk.is_cdrom ? "CD-ROM" : "disk",
               disk.scsi_target, disk.scsi_lun);
    printf("%lu blocks of %u bytes, virtio-ccw revision %u\n", disk.blocks, disk.block_size,
           vdev.revision);
    printf("Using %s.\n", disk.driver);
    ipl.schid = schid;
    ipl.device = &vdev;
    boot_disk(&disk);
    virtio_reset(&vdev);
    ipl.device = NULL;
    if (must_boot)
        panic(WAIT_BOOT_RECORD, "\n! No zIPL boot record and no bootable ISO 9660 image on "
              "0.%u.%04x !\n", SCHID_SSID(schid), devno);
    printf("Device 0.%u.%04x is not bootable: no zIPL boot record, no El Torito boot image\n",
           SCHID_SSID(schid), devno);
}

static u32 find_subchannel(u8 ssid, u16 devno)
{
    u32 sch;
    int found;

    if (ssid && css_enable_mss())
        panic(WAIT_DEVICE, "\n! Subchannel set %u is not available (CHSC enable MSS failed) !\n",
              ssid);
    for (sch = 0; sch <= 0xffff; sch++) {
        found = css_devno(SCHID(ssid, sch));
        if (found < 0)
            break;
        if (found == devno)
            return SCHID(ssid, sch);
    }
    panic(WAIT_NO_BOOT_DEVICE, "\n! Boot device 0.%u.%04x not found !\n", ssid, devno);
}

static noreturn void boot_from_iplb(void)
{
    struct scsi_address scsi;
    u32 schid;

    switch (iplb_type()) {
    case IPL_TYPE_CCW:
        schid = find_subchannel(iplb_ssid(), iplb_devno());
        try_device(schid, iplb_devno(), NULL, 1);
        break;
    case IPL_TYPE_QEMU_SCSI:
        iplb_scsi_address(&scsi);
        schid = find_subchannel(iplb_ssid(), iplb_devno());
        try_device(schid, iplb_devno(), &scsi, 1);
        break;
    case IPL_TYPE_FCP:
        panic(WAIT_UNSUPPORTED, "\n! List-directed IPL (FCP) is not supported !\n");
    default:
        panic(WAIT_UNSUPPORTED, "\n! Unknown IPL parameter block type 0x%02x !\n", iplb_type());
    }
    panic(WAIT_START_FAILED, "\n! Failed to load OS from hard disk !\n");
}

static noreturn void scan_for_boot_device(void)
{
    u32 ssid, sch;
    int devno;

    for (ssid = 0; ssid < 4; ssid++) {
        if (ssid == 1 && css_enable_mss())
            break;
        for (sch = 0; sch <= 0xffff; sch++) {
            devno = css_devno(SCHID(ssid, sch));
            if (devno < 0)
                break;
            if (devno <= 0xffff)
                try_device(SCHID(ssid, sch), (u16)devno, NULL, 0);
        }
    }
    panic(WAIT_NO_BOOT_DEVICE, "Could not find a suitable boot device (none specified)\n");
}

noreturn void fw_main(void)
{
    install_new_psws();
    sclp_setup();
    printf("vmd firmware " FW_VERSION "\n");
    /* a marker left by an earlier boot must not decide this one (iso.c) */
    memset((void *)lowcore(LINUX_EP_MAGIC_ADDR), 0, 6);
    ipl.have_iplb = iplb_store();
    choose_loadparm();
    if (ipl.have_iplb)
        boot_from_iplb();
    scan_for_boot_device();
}

/* The program-interruption handler's report (start.S, pgm_entry). */
noreturn void program_check_report(void)
{
    u64 *gprs = (u64 *)lowcore(LC_SAVE_AREA);
    int i;

    printf("\n! Program interruption code 0x%04x (ILC %u) at %016lx %016lx !\n",
           *(volatile u16 *)lowcore(LC_PGM_CODE), *(volatile u16 *)lowcore(LC_PGM_ILC) >> 1,
           lc_read64(LC_PGM_OLD_PSW), lc_read64(LC_PGM_OLD_PSW + 8));
    for (i = 0; i < 16; i += 4)
        printf("  r%-2d %016lx %016lx %016lx %016lx\n", i, gprs[i], gprs[i + 1], gprs[i + 2],
               gprs[i + 3]);
    console_flush();
    disabled_wait(WAIT_PROGRAM_CHECK);
}
