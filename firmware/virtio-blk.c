/*
 * vmd firmware: virtio-blk (device id 2), reads only.
 *
 * Configuration: capacity in 512-byte sectors at 0; the logical block size
 * at 20 when VIRTIO_BLK_F_BLK_SIZE is offered (else 512).  A request is a
 * chain of three buffers: the header (type 0 = read, reserved, sector in
 * 512-byte units whatever the block size), the data the device fills, and
 * one status byte (0 = OK).
 */
#include "fw.h"

#define VIRTIO_BLK_F_BLK_SIZE   6
#define VIRTIO_BLK_T_IN         0
#define VIRTIO_BLK_S_OK         0
#define MAX_REQUEST_BYTES       (128 * 1024)

struct vblk_config {
    u64 capacity;
    u32 size_max;
    u32 seg_max;
    u16 cylinders;
    u8 heads;
    u8 sectors;
    u32 blk_size;
} packed;

struct vblk_request {
    u32 type;
    u32 reserved;
    u64 sector;
} packed;

static struct vblk_request request aligned(16);
static u8 request_status aligned(8);

static int vblk_read(struct disk *d, u64 lba, u32 count, void *buf)
{
    struct virtio_dev *vd = d->vd;
    struct vbuf bufs[3] = {
        { &request, sizeof(request), 0 },
        { buf, count * d->block_size, 1 },
        { &request_status, 1, 1 },
    };

    request.type = vio32(vd, VIRTIO_BLK_T_IN);
    request.reserved = 0;
    request.sector = vio64(vd, lba * (d->block_size / 512));
    request_status = 0xff;
    if (virtio_run(vd, bufs, 3))
        return -1;
    if (request_status != VIRTIO_BLK_S_OK) {
        console_start_line();
        printf("virtio-blk: reading %u blocks at block %lu failed (status %u)\n", count, lba,
               request_status);
        return -1;
    }
    return 0;
}

int vblk_open(struct virtio_dev *vd, struct disk *d)
{
    struct vblk_config config;
    u32 block_size = 512;

    memset(&config, 0, sizeof(config));
    if (virtio_setup(vd, 1UL << VIRTIO_BLK_F_BLK_SIZE, 0, &config, sizeof(config)))
        return -1;
    if (vd->guest_features & (1UL << VIRTIO_BLK_F_BLK_SIZE))
        block_size = vio32(vd, config.blk_size);
    if (block_size < 512 || block_size > 4096 || (block_size & (block_size - 1))) {
        printf("virtio-blk: unsupported block size %u\n", block_size);
        virtio_reset(vd);
        return -1;
    }
    d->driver = "virtio-blk";
    d->vd = vd;
    d->block_size = block_size;
    d->blocks = vio64(vd, config.capacity) / (block_size / 512);
    d->is_cdrom = 0;
    d->max_blocks = MAX_REQUEST_BYTES / block_size;
    d->read = vblk_read;
    return 0;
}
