/*
 * vmd firmware: the zipl boot map of SCSI-type disks ("SCSI scheme"), as
 * IBM's zipl and `vmctl mkboot` (docs/BOOTMAP.md) write it.
 *
 * Block 0 holds the master boot record: "zIPL" (ASCII), version 1, 8
 * reserved bytes, and a block pointer to the program table.  A block
 * pointer is 16 bytes: block number (8), block size (2), count of further
 * blocks (2), 4 reserved.  The program table is "zIPL" and 12 reserved
 * bytes followed by up to 31 block pointers, entry n for loadparm n (0 is
 * the default); each points at a component table: "zIPL", type 0 (IPL),
 * 27 reserved, then 32-byte component entries (block pointer, 7 pad bytes,
 * type, 8-byte load address or PSW): load (2) entries point at segment
 * tables, signature (3) entries are skipped, the execute (1) entry ends the
 * list and holds the 8-byte ESA/390-format PSW to start with.
 *
 * A segment table is one block of block pointers to the data, loaded one
 * after the other from the load address on; the last slot of a table
 * points at the next table (0 in the last one), and an entry with block
 * number 0 ends the list early.  Each pointer's own size field gives the
 * unit of its block number, so a map keeps working on a disk whose logical
 * block size differs from the one it was written for.
 */
#include "fw.h"

#define ZIPL_MAGIC              "zIPL"
#define PROGRAM_TABLE_BYTES     512
#define PROGRAM_TABLE_ENTRIES   31
#define COMPONENT_HEADER_BYTES  32
#define COMPONENT_ENTRY_BYTES   32
#define COMPONENT_EXECUTE       1
#define COMPONENT_LOAD          2
#define COMPONENT_SIGNATURE     3
#define COMPONENT_TABLE_IPL     0
#define MAX_SEGMENT_TABLES      (1 << 20)

struct block_pointer {
    u64 blockno;
    u32 size;
    u32 count;          /* blocks, the stored count plus one */
};

static u8 table[4096] aligned(PAGE_SIZE);

static struct block_pointer parse_pointer(const u8 *p)
{
    struct block_pointer bp;

    bp.blockno = be64(p);
    bp.size = (u32)p[8] << 8 | p[9];
    bp.count = ((u32)p[10] << 8 | p[11]) + 1;
    return bp;
}

static u64 pointer_offset(u64 base, const struct block_pointer *bp, const char *what)
{
    if (bp->size < 512 || bp->size > 4096 || (bp->size & (bp->size - 1)))
        panic(WAIT_BOOT_RECORD, "\n! Bad block size %u in the %s pointer !\n", bp->size, what);
    if (bp->blockno > (~0UL - base) / bp->size)
        panic(WAIT_BOOT_RECORD, "\n! Bad block number 0x%lx in the %s pointer !\n", bp->blockno,
              what);
    return base + bp->blockno * bp->size;
}

static void read_table(struct disk *d, u64 offset, u64 len, const char *what)
{
    if (disk_read_bytes(d, offset, len, table))
        panic(WAIT_IO_ERROR, "\n! Cannot read the %s !\n", what);
}

/* Loads the data of one load component, run after run, from address on. */
static void load_segments(struct disk *d, u64 base, struct block_pointer first, u64 address)
{
    struct block_pointer tbl = first;
    int tables = 0;

    while (tbl.blockno) {
        u64 offset = pointer_offset(base, &tbl, "segment table");
        unsigned slots = tbl.size / 16, i;

        if (++tables > MAX_SEGMENT_TABLES)
            panic(WAIT_BOOT_RECORD, "\n! The segment tables form a loop !\n");
        read_table(d, offset, tbl.size, "segment table");
        for (i = 0;; i++) {
            struct block_pointer bp = parse_pointer(table + 16 * i);
            u64 len;

            if (i == slots - 1 || bp.blockno == 0) {
                tbl = i == slots - 1 ? bp : (struct block_pointer){ 0, 0, 0 };
                break;
            }
            len = (u64)bp.count * bp.size;
            offset = pointer_offset(base, &bp, "data");
            disk_load(d, offset, len, address, "a component");
            printf(".");
            console_flush();
            address += len;
        }
    }
}

static noreturn void run_program(struct disk *d, u64 base, struct block_pointer ptr)
{
    static u8 components[4096] aligned(PAGE_SIZE);
    u64 offset = pointer_offset(base, &ptr, "component table"), psw;
    unsigned pos;

    if (disk_read_bytes(d, offset, ptr.size, components))
        panic(WAIT_IO_ERROR, "\n! Cannot read the component table !\n");
    if (memcmp(components, ZIPL_MAGIC, 4))
        panic(WAIT_BOOT_RECORD, "\n! No zIPL magic in the component table !\n");
    if (components[4] != COMPONENT_TABLE_IPL)
        panic(WAIT_BOOT_RECORD, "\n! Component table of type %u is not an IPL program !\n",
              components[4]);
    for (pos = COMPONENT_HEADER_BYTES; pos + COMPONENT_ENTRY_BYTES <= ptr.size;
         pos += COMPONENT_ENTRY_BYTES) {
        const u8 *entry = components + pos;
        u8 type = entry[23];

        switch (type) {
        case COMPONENT_LOAD:
            load_segments(d, base, parse_pointer(entry), be64(entry + 24));
            continue;
        case COMPONENT_SIGNATURE:
            continue;
        case COMPONENT_EXECUTE:
            psw = be64(entry + 24);
            printf("\n");
            /* ESA/390 format: bit 12 one, bits 24-30 zero, EA only with BA */
            if (!(psw & PSW_SHORT_BIT12) || (psw & 0x000000fe00000000UL) ||
                (psw & PSW_MASK_64) == 0x0000000100000000UL ||
                (psw & PSW_SHORT_ADDR) >= memory_size() ||
                firmware_overlaps(psw & PSW_SHORT_ADDR, 2))
                panic(WAIT_BOOT_RECORD, "! Invalid program PSW %016lx in the boot map !\n", psw);
            lc_write64(LC_IPL_PSW, psw);
            ipl_start(0);
        default:
            panic(WAIT_BOOT_RECORD, "\n! Unknown component type %u in the boot map !\n", type);
        }
    }
    panic(WAIT_BOOT_RECORD, "\n! No execute entry in the component table !\n");
}

int zipl_boot(struct disk *d, u64 base, unsigned entry, int entry_given)
{
    struct block_pointer program_table, programs[PROGRAM_TABLE_ENTRIES];
    u32 version;
    int i, defined = 0;

    if (disk_read_bytes(d, base, 32, table))
        panic(WAIT_IO_ERROR, "\n! Cannot read block 0 !\n");
    if (memcmp(table, ZIPL_MAGIC, 4))
        return NOT_THIS_FORMAT;
    printf("Using SCSI scheme.\n");
    version = be32(table + 4);
    if (version != 1)
        printf("Unknown boot record version %u: reading it as version 1\n", version);
    program_table = parse_pointer(table + 16);
    if (!program_table.blockno)
        panic(WAIT_BOOT_RECORD, "\n! No program table in the boot record !\n");
    read_table(d, pointer_offset(base, &program_table, "program table"), PROGRAM_TABLE_BYTES,
               "program table");
    if (memcmp(table, ZIPL_MAGIC, 4))
        panic(WAIT_BOOT_RECORD, "\n! No zIPL magic in the program table !\n");
    for (i = 0; i < PROGRAM_TABLE_ENTRIES; i++) {
        programs[i] = parse_pointer(table + 16 + 16 * i);
        defined += programs[i].blockno != 0;
    }
    if (!defined)
        panic(WAIT_BOOT_RECORD, "\n! Empty program table !\n");
    if (entry >= PROGRAM_TABLE_ENTRIES || !programs[entry].blockno) {
        printf("\n! Boot entry %u does not exist. This disk has entries", entry);
        for (i = 0; i < PROGRAM_TABLE_ENTRIES; i++)
            if (programs[i].blockno)
                printf(" %d", i);
        panic(WAIT_LOADPARM, " !\n");
    }
    if (entry_given)
        printf("Booting entry #%u\n", entry);
    run_program(d, base, programs[entry]);
}
