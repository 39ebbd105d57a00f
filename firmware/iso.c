/*
 * vmd firmware: El Torito boot images on ISO 9660 media.
 *
 * ISO 9660 (ECMA-119): 2048-byte sectors; volume descriptors from sector 16
 * on ("CD001" at byte 1, version 1 at byte 6), ended by type 255.  The
 * primary descriptor (type 1) holds the root directory record at byte 156.
 * A directory record: length (0), extent (2, little-endian), data length
 * (10, little-endian), flags (25; 2 = directory), name length (32).
 *
 * El Torito: the boot record descriptor (type 0) names "EL TORITO
 * SPECIFICATION" at byte 7 and the boot catalog's sector at 0x47
 * (little-endian).  The catalog is 32-byte entries: the validation entry
 * (header id 1, platform, reserved 0, id string, checksum, 0x55 0xaa), then
 * section entries; a bootable entry (0x88) gives the load segment (2), the
 * count of 512-byte sectors to load (6) and the image's first sector (8).
 *
 * An s390 boot image is either a Linux kernel image as distribution media
 * carry it (the IPL PSW at 0, two IPL CCWs after it; often with the initrd
 * and parameter line merged in), loaded whole at the load segment value
 * used as an address (0, so the image is lowcore-relative), or a disk image
 * with a zIPL boot record (vmctl mkboot), booted through its boot map.  The
 * size of a Linux image is the size of the file whose extent starts at the
 * image's sector (the catalog's count is often only 4 sectors); without
 * such a file the catalog's count is used.
 *
 * The loadparm picks among the usable catalog entries: 0 and 1 pick the
 * first, n the n-th.
 */
#include "fw.h"

#define ISO_SECTOR              2048
#define ISO_FIRST_DESCRIPTOR    16
#define ISO_MAX_DESCRIPTORS     64
#define VD_BOOT_RECORD          0
#define VD_PRIMARY              1
#define VD_TERMINATOR           255
#define CATALOG_VALIDATION      0x01
#define CATALOG_BOOTABLE        0x88
#define MAX_DIRECTORY_DEPTH     8
#define MAX_DIRECTORY_SECTORS   65536
#define LINUX_ENTRY             0x10000
#define LINUX_EP_MAGIC_ADDR     0x10008

enum image_kind { IMAGE_NONE, IMAGE_LINUX, IMAGE_ZIPL };

static const char el_torito_id[] = "EL TORITO SPECIFICATION";
/* bytes 8-31 of an s390 Linux image: two IPL CCWs and eight EBCDIC blanks */
static const u8 linux_ipl_ccws[24] = {
    0x02, 0x00, 0x00, 0x18, 0x60, 0x00, 0x00, 0x50,
    0x02, 0x00, 0x00, 0x68, 0x60, 0x00, 0x00, 0x50,
    0x40, 0x40, 0x40, 0x40, 0x40, 0x40, 0x40, 0x40,
};

static u8 sector[ISO_SECTOR] aligned(PAGE_SIZE);
static u8 catalog[ISO_SECTOR] aligned(PAGE_SIZE);
static u8 directory[ISO_SECTOR] aligned(PAGE_SIZE);

static int read_sector(struct disk *d, u64 lba, u8 *buf)
{
    return disk_read_bytes(d, lba * ISO_SECTOR, ISO_SECTOR, buf);
}

static int descriptor_valid(const u8 *vd)
{
    return !memcmp(vd + 1, "CD001", 5) && vd[6] == 1;
}

/* The boot catalog's sector, or 0; the primary descriptor's root record is kept. */
static u32 find_catalog(struct disk *d, u8 root[34])
{
    u32 catalog_lba = 0;
    int i;

    for (i = 0; i < ISO_MAX_DESCRIPTORS; i++) {
        if (read_sector(d, ISO_FIRST_DESCRIPTOR + i, sector) || !descriptor_valid(sector) ||
            sector[0] == VD_TERMINATOR)
            break;
        if (sector[0] == VD_PRIMARY)
            memcpy(root, sector + 156, 34);
        if (sector[0] == VD_BOOT_RECORD && !memcmp(sector + 7, el_torito_id, sizeof(el_torito_id)))
            catalog_lba = le32(sector + 0x47);
    }
    return catalog_lba;
}

/* Walks the directory tree for the file whose extent is image_lba; its size or 0. */
static u64 image_file_size(struct disk *d, const u8 root[34], u32 image_lba)
{
    struct {
        u32 lba;            /* current sector */
        u32 remaining;      /* bytes of the directory from that sector on */
        u32 offset;         /* within the sector */
    } stack[MAX_DIRECTORY_DEPTH];
    int depth = 0, sectors_read = 0, loaded = 0;

    stack[0].lba = le32(root + 2);
    stack[0].remaining = le32(root + 10);
    stack[0].offset = 0;
    while (depth >= 0) {
        u8 *rec;
        u32 len;

        if (stack[depth].remaining == 0 || stack[depth].offset >= ISO_SECTOR) {
            if (stack[depth].remaining <= ISO_SECTOR) {
                depth--;
                loaded = 0;
                continue;
            }
            stack[depth].remaining -= ISO_SECTOR;
            stack[depth].lba++;
            stack[depth].offset = 0;
            loaded = 0;
        }
        if (!loaded) {
            if (++sectors_read > MAX_DIRECTORY_SECTORS ||
                read_sector(d, stack[depth].lba, directory))
                return 0;
            loaded = 1;
        }
        rec = directory + stack[depth].offset;
        len = rec[0];
        if (len == 0 || stack[depth].offset + len > ISO_SECTOR || len < 34) {
            stack[depth].offset = ISO_SECTOR;       /* padding up to the next sector */
            continue;
        }
        stack[depth].offset += len;
        if (rec[32] == 1 && (rec[33] == 0 || rec[33] == 1))
            continue;                               /* "." and ".." */
        if (!(rec[25] & 2)) {
            if (le32(rec + 2) == image_lba)
                return le32(rec + 10);
            continue;
        }
        if (depth + 1 < MAX_DIRECTORY_DEPTH) {
            depth++;
            stack[depth].lba = le32(rec + 2);
            stack[depth].remaining = le32(rec + 10);
            stack[depth].offset = 0;
            loaded = 0;
        }
    }
    return 0;
}

static enum image_kind image_kind(struct disk *d, u32 lba)
{
    if (read_sector(d, lba, sector))
        return IMAGE_NONE;
    if (!memcmp(sector + 8, linux_ipl_ccws, sizeof(linux_ipl_ccws)))
        return IMAGE_LINUX;
    if (!memcmp(sector, "zIPL", 4))
        return IMAGE_ZIPL;
    return IMAGE_NONE;
}

static noreturn void start_linux_image(void)
{
    /* as Linux's head: the "S390EP" marker means the entry is 0x10000 */
    if (!memcmp((const void *)lowcore(LINUX_EP_MAGIC_ADDR), "S390EP", 6))
        ipl_start(LINUX_ENTRY);
    if (lc_read64(LC_IPL_PSW) & (PSW_SHORT_BIT12 | PSW_MASK_64))
        ipl_start(0);
    ipl_start(LINUX_ENTRY);
}

int iso_boot(struct disk *d, unsigned entry, int entry_given)
{
    u8 root[34];
    u32 catalog_lba, lba, count;
    u64 size, address;
    unsigned wanted = entry <= 1 ? 0 : entry - 1, usable = 0, i;
    enum image_kind kind = IMAGE_NONE;
    const u8 *e = NULL;

    if ((ISO_FIRST_DESCRIPTOR + 1) * ISO_SECTOR > d->blocks * d->block_size ||
        read_sector(d, ISO_FIRST_DESCRIPTOR, sector) || !descriptor_valid(sector))
        return NOT_THIS_FORMAT;
    memset(root, 0, sizeof(root));
    catalog_lba = find_catalog(d, root);
    if (!catalog_lba) {
        printf("ISO 9660 image without an El Torito boot catalog\n");
        return NOT_THIS_FORMAT;
    }
    if (read_sector(d, catalog_lba, catalog))
        panic(WAIT_IO_ERROR, "\n! Failed to read the El Torito boot catalog !\n");
    if (catalog[0] != CATALOG_VALIDATION || catalog[1] > 2 || catalog[2] || catalog[3] ||
        catalog[30] != 0x55 || catalog[31] != 0xaa)
        panic(WAIT_BOOT_RECORD, "\n! No valid El Torito boot catalog found !\n");
    for (i = 1; i < ISO_SECTOR / 32; i++) {
        const u8 *c = catalog + 32 * i;

        if (c[0] != CATALOG_BOOTABLE || c[5] || !le16(c + 6))
            continue;
        kind = image_kind(d, le32(c + 8));
        if (kind == IMAGE_NONE)
            continue;
        if (usable++ == wanted) {
            e = c;
            break;
        }
    }
    if (!e) {
        if (entry_given && usable)
            panic(WAIT_LOADPARM, "\n! Boot entry %u does not exist: the boot catalog has %u s390 "
                  "boot image%s !\n", entry, usable, usable == 1 ? "" : "s");
        panic(WAIT_BOOT_RECORD, "\n! No suitable boot entry found on ISO-9660 media !\n");
    }
    lba = le32(e + 8);
    count = le16(e + 6);
    if (kind == IMAGE_ZIPL) {
        printf("El Torito boot image at sector %u holds a zIPL boot record\n", lba);
        if (zipl_boot(d, (u64)lba * ISO_SECTOR, 0, 0) == NOT_THIS_FORMAT)
            panic(WAIT_BOOT_RECORD, "\n! The boot image lost its zIPL boot record !\n");
    }
    size = image_file_size(d, root, lba);
    if (size) {
        printf("ISO boot image size verified\n");
    } else {
        printf("ISO boot image size could not be verified\n");
        size = (u64)count * 512;
    }
    address = le16(e + 2);
    printf("Loading the El Torito boot image at sector %u (%lu bytes) to 0x%lx\n", lba, size,
           address);
    disk_load(d, (u64)lba * ISO_SECTOR, align_up(size, ISO_SECTOR), address, "the boot image");
    printf("\n");
    start_linux_image();
}
