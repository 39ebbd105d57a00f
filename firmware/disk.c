/*
 * vmd firmware: byte-addressed reads from a block device, and the checks
 * on where loaded data may go.
 *
 * Boot formats address the disk in their own units (zipl block pointers
 * carry a block size, ISO 9660 uses 2048-byte sectors), so the loaders
 * read byte ranges; whole device blocks go straight to the destination and
 * a partial block at either end goes through a bounce buffer.
 */
#include "fw.h"

#define MAX_BLOCK_SIZE 4096

static u8 bounce[MAX_BLOCK_SIZE] aligned(PAGE_SIZE);

static int read_blocks(struct disk *d, u64 lba, u64 count, u8 *dst)
{
    while (count) {
        u32 n = (u32)min_u64(count, d->max_blocks);

        if (lba + n > d->blocks) {
            console_start_line();
            printf("%s: read beyond the end of the disk (block %lu of %lu)\n", d->driver,
                   lba + n - 1, d->blocks);
            return -1;
        }
        if (d->read(d, lba, n, dst))
            return -1;
        lba += n;
        count -= n;
        dst += (u64)n * d->block_size;
    }
    return 0;
}

int disk_read_bytes(struct disk *d, u64 offset, u64 len, void *dst)
{
    u64 bs = d->block_size;
    u8 *out = dst;

    while (len) {
        u64 lba = offset / bs, within = offset % bs;

        if (within || len < bs) {
            u64 n = min_u64(bs - within, len);

            if (read_blocks(d, lba, 1, bounce))
                return -1;
            memcpy(out, bounce + within, n);
            offset += n;
            out += n;
            len -= n;
        } else {
            u64 whole = len / bs;

            if (read_blocks(d, lba, whole, out))
                return -1;
            offset += whole * bs;
            out += whole * bs;
            len -= whole * bs;
        }
    }
    return 0;
}

u64 memory_size(void)
{
    u64 size = sclp_memory_size();
    u64 end = (u64)_end;

    /* the firmware sits in storage, so storage reaches at least its end */
    return size > end ? size : end;
}

int firmware_overlaps(u64 address, u64 len)
{
    return address < (u64)_end && address + len > (u64)_start;
}

static void check_load_range(u64 address, u64 len, const char *what)
{
    if (address + len < address || address + len > memory_size())
        panic(WAIT_LOAD_RANGE, "\n! %s at 0x%lx-0x%lx is outside storage (%lu MiB) !\n", what,
              address, address + len - 1, memory_size() >> 20);
    if (firmware_overlaps(address, len))
        panic(WAIT_LOAD_RANGE, "\n! %s at 0x%lx-0x%lx overlaps the firmware at 0x%lx-0x%lx !\n",
              what, address, address + len - 1, (u64)_start, (u64)_end - 1);
}

void disk_load(struct disk *d, u64 offset, u64 len, u64 address, const char *what)
{
    check_load_range(address, len, what);
    if (disk_read_bytes(d, offset, len, (void *)address))
        panic(WAIT_IO_ERROR, "\n! Failed to read %s from the disk !\n", what);
}
