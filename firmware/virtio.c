/*
 * vmd firmware: the virtio-ccw transport and one split virtqueue.
 *
 * The device is driven with channel commands on its subchannel (virtio
 * specification 1.x, "Virtio over channel I/O"): SET_VIRTIO_REV 0x83
 * (revision 1, first; a device that rejects it is driven as a legacy
 * device), VDEV_RESET 0x33, WRITE_STATUS 0x31, READ_FEAT 0x12 / WRITE_FEAT 0x11 (32
 * feature bits per index, little-endian), READ_CONF 0x22, READ_VQ_CONF 0x32,
 * SET_VQ 0x13.  Buffers are announced with diagnose 0x500 function 3
 * (r2: subchannel id, r3: queue index, r4: cookie); completion is seen by
 * polling the used ring, because without SET_IND the device raises no
 * interruption.
 *
 * Revision 1 rings and configuration fields are little-endian; a legacy
 * device uses the CPU's byte order (big-endian).  Both use the same ring
 * layout here: descriptors, available ring, and the used ring on the next
 * 4 KiB boundary (the legacy SET_VQ fixes the alignment at 4096).
 *
 * One request is in flight at a time: the chain always starts at
 * descriptor 0.
 */
#include "fw.h"

#define CCW_CMD_WRITE_FEAT      0x11
#define CCW_CMD_READ_FEAT       0x12
#define CCW_CMD_SET_VQ          0x13
#define CCW_CMD_READ_CONF       0x22
#define CCW_CMD_WRITE_STATUS    0x31
#define CCW_CMD_READ_VQ_CONF    0x32
#define CCW_CMD_VDEV_RESET      0x33
#define CCW_CMD_SET_VIRTIO_REV  0x83

#define STATUS_ACKNOWLEDGE      0x01
#define STATUS_DRIVER           0x02
#define STATUS_DRIVER_OK        0x04
#define STATUS_FEATURES_OK      0x08
#define STATUS_FAILED           0x80

#define VRING_DESC_F_NEXT       1
#define VRING_DESC_F_WRITE      2
#define VRING_AVAIL_F_NO_INTERRUPT 1

#define DIAG500_NOTIFY          3
#define RING_ALIGN              4096
#define MODERN_QUEUE_SIZE       128
#define REQUEST_TIMEOUT         (30 * TOD_SECOND)

struct vring_desc {
    u64 addr;
    u32 len;
    u16 flags;
    u16 next;
} packed;

struct vring_avail {
    u16 flags;
    u16 idx;
    u16 ring[];
} packed;

struct vring_used_elem {
    u32 id;
    u32 len;
} packed;

struct vring_used {
    u16 flags;
    u16 idx;
    struct vring_used_elem ring[];
} packed;

struct feature_desc {
    u32 bits;               /* little-endian */
    u8 index;
} packed;

struct vq_config {
    u16 index;
    u16 max_num;
} packed;

struct vq_info_legacy {
    u64 queue;
    u32 align;
    u16 index;
    u16 num;
} packed;

struct vq_info {
    u64 desc;
    u32 reserved;
    u16 index;
    u16 num;
    u64 avail;
    u64 used;
} packed;

struct revision_info {
    u16 revision;
    u16 length;
} packed;

static u8 ring_area[32768] aligned(PAGE_SIZE);
/* channel-program data: below 2 GiB and doubleword aligned (in .bss) */
static union {
    struct feature_desc feat;
    struct vq_config vq_config;
    struct vq_info_legacy vq_legacy;
    struct vq_info vq;
    struct revision_info rev;
    u8 status;
} ccw_data aligned(8);

u16 vio16(const struct virtio_dev *vd, u16 v) { return vd->revision ? bswap16(v) : v; }
u32 vio32(const struct virtio_dev *vd, u32 v) { return vd->revision ? bswap32(v) : v; }
u64 vio64(const struct virtio_dev *vd, u64 v) { return vd->revision ? bswap64(v) : v; }

static int command(struct virtio_dev *vd, u8 cmd, u8 flags, u16 count, const char *what)
{
    int rc = css_run(vd->schid, cmd, flags, &ccw_data, count, NULL);

    if (rc != CCW_OK && what) {
        console_start_line();
        printf("virtio 0.%u.%04x: %s failed (%s)\n", SCHID_SSID(vd->schid), vd->devno, what,
               rc == CCW_UNIT_CHECK ? "command rejected" :
               rc == CCW_TIMEOUT ? "no response" : "channel error");
    }
    return rc;
}

static int write_status(struct virtio_dev *vd, u8 status)
{
    ccw_data.status = status;
    return command(vd, CCW_CMD_WRITE_STATUS, 0, 1, "WRITE_STATUS");
}

void virtio_reset(struct virtio_dev *vd)
{
    command(vd, CCW_CMD_VDEV_RESET, 0, 0, NULL);
}

static int negotiate_features(struct virtio_dev *vd, u64 wanted)
{
    int index, words = vd->revision ? 2 : 1;

    vd->host_features = 0;
    for (index = 0; index < words; index++) {
        memset(&ccw_data, 0, sizeof(ccw_data));
        ccw_data.feat.index = (u8)index;
        if (command(vd, CCW_CMD_READ_FEAT, 0, sizeof(struct feature_desc), "READ_FEAT"))
            return -1;
        vd->host_features |= (u64)bswap32(ccw_data.feat.bits) << (32 * index);
    }
    vd->guest_features = vd->host_features & wanted;
    if (vd->revision && !(vd->guest_features & (1UL << VIRTIO_F_VERSION_1))) {
        printf("virtio 0.%u.%04x: revision 1 without VIRTIO_F_VERSION_1\n",
               SCHID_SSID(vd->schid), vd->devno);
        return -1;
    }
    for (index = 0; index < words; index++) {
        memset(&ccw_data, 0, sizeof(ccw_data));
        ccw_data.feat.index = (u8)index;
        ccw_data.feat.bits = bswap32((u32)(vd->guest_features >> (32 * index)));
        if (command(vd, CCW_CMD_WRITE_FEAT, 0, sizeof(struct feature_desc), "WRITE_FEAT"))
            return -1;
    }
    return 0;
}

static int setup_queue(struct virtio_dev *vd, u16 index)
{
    struct virtqueue *q = &vd->vq;
    u64 used_offset;
    u16 num;

    memset(&ccw_data, 0, sizeof(ccw_data));
    ccw_data.vq_config.index = index;
    if (command(vd, CCW_CMD_READ_VQ_CONF, 0, sizeof(struct vq_config), "READ_VQ_CONF"))
        return -1;
    num = ccw_data.vq_config.max_num;
    if (num == 0) {
        printf("virtio 0.%u.%04x: queue %u does not exist\n", SCHID_SSID(vd->schid),
               vd->devno, index);
        return -1;
    }
    /* a revision-1 driver may choose a smaller ring; a legacy one may not */
    if (vd->revision && num > MODERN_QUEUE_SIZE)
        num = MODERN_QUEUE_SIZE;
    used_offset = align_up(16UL * num + 6 + 2UL * num, RING_ALIGN);
    if (used_offset + 6 + 8UL * num > sizeof(ring_area)) {
        printf("virtio 0.%u.%04x: queue size %u is too large\n", SCHID_SSID(vd->schid),
               vd->devno, num);
        return -1;
    }
    memset(ring_area, 0, sizeof(ring_area));
    q->index = index;
    q->num = num;
    q->avail_idx = 0;
    q->desc = (struct vring_desc *)ring_area;
    q->avail = (struct vring_avail *)(ring_area + 16UL * num);
    q->used = (struct vring_used *)(ring_area + used_offset);
    q->avail->flags = vio16(vd, VRING_AVAIL_F_NO_INTERRUPT);

    memset(&ccw_data, 0, sizeof(ccw_data));
    if (vd->revision) {
        ccw_data.vq.desc = (u64)q->desc;
        ccw_data.vq.index = index;
        ccw_data.vq.num = num;
        ccw_data.vq.avail = (u64)q->avail;
        ccw_data.vq.used = (u64)q->used;
        return command(vd, CCW_CMD_SET_VQ, 0, sizeof(struct vq_info), "SET_VQ");
    }
    ccw_data.vq_legacy.queue = (u64)ring_area;
    ccw_data.vq_legacy.align = RING_ALIGN;
    ccw_data.vq_legacy.index = index;
    ccw_data.vq_legacy.num = num;
    return command(vd, CCW_CMD_SET_VQ, 0, sizeof(struct vq_info_legacy), "SET_VQ");
}

int virtio_setup(struct virtio_dev *vd, u64 wanted_features, u16 queue_index,
                 void *config, u32 config_len)
{
    static u8 config_buffer[256] aligned(8);
    u8 status = STATUS_ACKNOWLEDGE;

    /* the revision must be the first command after the subsystem reset:
     * any other command fixes the device at revision 0 */
    memset(&ccw_data, 0, sizeof(ccw_data));
    ccw_data.rev.revision = 1;
    ccw_data.rev.length = 0;
    vd->revision = command(vd, CCW_CMD_SET_VIRTIO_REV, 0, sizeof(struct revision_info), NULL) == CCW_OK;
    virtio_reset(vd);
    if (!vd->revision)
        wanted_features &= 0xffffffffUL;
    else
        wanted_features |= 1UL << VIRTIO_F_VERSION_1;

    if (write_status(vd, status))
        goto failed;
    status |= STATUS_DRIVER;
    if (write_status(vd, status) || negotiate_features(vd, wanted_features))
        goto failed;
    if (vd->revision) {
        status |= STATUS_FEATURES_OK;
        if (write_status(vd, status))
            goto failed;
    }
    if (config_len > sizeof(config_buffer))
        config_len = sizeof(config_buffer);
    memset(config_buffer, 0, sizeof(config_buffer));
    if (css_run(vd->schid, CCW_CMD_READ_CONF, CCW_FLAG_SLI, config_buffer, config_len, NULL)) {
        printf("virtio 0.%u.%04x: READ_CONF failed\n", SCHID_SSID(vd->schid), vd->devno);
        goto failed;
    }
    memcpy(config, config_buffer, config_len);
    if (setup_queue(vd, queue_index))
        goto failed;
    status |= STATUS_DRIVER_OK;
    if (write_status(vd, status))
        goto failed;
    return 0;

failed:
    write_status(vd, STATUS_FAILED);
    virtio_reset(vd);
    return -1;
}

static long notify(const struct virtio_dev *vd)
{
    register u64 function asm("1") = DIAG500_NOTIFY;
    register u64 schid asm("2") = vd->schid;
    register u64 queue asm("3") = vd->vq.index;
    register u64 cookie asm("4") = 0;

    asm volatile("diag %%r2,%%r4,0x500"
                 : "+d"(schid)
                 : "d"(function), "d"(queue), "d"(cookie)
                 : "memory", "cc");
    return (long)schid;
}

int virtio_run(struct virtio_dev *vd, const struct vbuf *bufs, int count)
{
    struct virtqueue *q = &vd->vq;
    u64 deadline;
    int i;

    if (count <= 0 || count > q->num)
        return -1;
    for (i = 0; i < count; i++) {
        u16 flags = (i + 1 < count ? VRING_DESC_F_NEXT : 0) |
                    (bufs[i].device_writes ? VRING_DESC_F_WRITE : 0);

        q->desc[i].addr = vio64(vd, (u64)bufs[i].addr);
        q->desc[i].len = vio32(vd, bufs[i].len);
        q->desc[i].flags = vio16(vd, flags);
        q->desc[i].next = vio16(vd, (u16)(i + 1 < count ? i + 1 : 0));
    }
    q->avail->ring[q->avail_idx % q->num] = vio16(vd, 0);
    serialize();
    q->avail_idx++;
    q->avail->idx = vio16(vd, q->avail_idx);
    serialize();
    if (notify(vd) < 0) {
        console_start_line();
        printf("virtio 0.%u.%04x: notification refused\n", SCHID_SSID(vd->schid), vd->devno);
        return -1;
    }
    deadline = tod_now() + REQUEST_TIMEOUT;
    while (vio16(vd, *(volatile u16 *)&q->used->idx) != q->avail_idx) {
        if (tod_now() > deadline) {
            console_start_line();
            printf("virtio 0.%u.%04x: request timed out\n", SCHID_SSID(vd->schid), vd->devno);
            return -1;
        }
    }
    serialize();
    return 0;
}
