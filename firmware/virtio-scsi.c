/*
 * vmd firmware: virtio-scsi (device id 8), one LUN, reads only.
 *
 * Queue 2 is the first request queue (0 is control, 1 events; neither is
 * needed).  A request is the command header (8-byte LUN address: 1, target,
 * LUN in the flat format; tag; task attribute, priority, CRN; the CDB of
 * the configured cdb_size), the response header (sense length, residual,
 * status qualifier, SCSI status, virtio response; sense of the configured
 * sense_size), and for data-in commands the data buffer.  Configuration:
 * sense_size at 20, cdb_size at 24, max_channel 28, max_target 30, max_lun 32.
 *
 * Without a device named by the IPL parameter block, targets 0..max_target
 * are scanned with REPORT LUNS; a target that does not exist answers with
 * the virtio response BAD_TARGET.  The first LUN whose INQUIRY data reports
 * a connected disk (type 0), CD-ROM (5) or optical memory device (7) is
 * used.  Then TEST UNIT READY (repeated while it reports UNIT ATTENTION,
 * which follows a reset), INQUIRY, READ CAPACITY(10) and, for disks too
 * large for it, READ CAPACITY(16); data is read with READ(10), or READ(16)
 * where the block number or count needs it.
 */
#include "fw.h"

#define REQUEST_QUEUE           2
#define VIRTIO_SCSI_S_OK        0
#define VIRTIO_SCSI_S_BAD_TARGET 3

#define SCSI_GOOD               0x00
#define SCSI_CHECK_CONDITION    0x02
#define SENSE_NOT_READY         0x2
#define SENSE_UNIT_ATTENTION    0x6

#define TYPE_DISK               0x00
#define TYPE_CDROM              0x05
#define TYPE_OPTICAL            0x07

#define OP_TEST_UNIT_READY      0x00
#define OP_INQUIRY              0x12
#define OP_READ_CAPACITY_10     0x25
#define OP_READ_10              0x28
#define OP_READ_16              0x88
#define OP_SERVICE_ACTION_IN_16 0x9e
#define SA_READ_CAPACITY_16     0x10
#define OP_REPORT_LUNS          0xa0

#define MAX_CDB                 32
#define MAX_SENSE               96
#define MAX_REQUEST_BYTES       (128 * 1024)
#define MAX_LUNS_REPORTED       64
#define MAX_TARGETS_SCANNED     256
#define UNIT_ATTENTION_RETRIES  8

struct vscsi_config {
    u32 num_queues;
    u32 seg_max;
    u32 max_sectors;
    u32 cmd_per_lun;
    u32 event_info_size;
    u32 sense_size;
    u32 cdb_size;
    u16 max_channel;
    u16 max_target;
    u32 max_lun;
} packed;

struct vscsi_request {
    u8 lun[8];
    u64 tag;
    u8 task_attr;
    u8 prio;
    u8 crn;
    u8 cdb[MAX_CDB];
} packed;

struct vscsi_response {
    u32 sense_len;
    u32 residual;
    u16 status_qualifier;
    u8 status;
    u8 response;
    u8 sense[MAX_SENSE];
} packed;

/* the header sizes the device works with: fixed part plus configured CDB/sense */
#define REQUEST_FIXED  19
#define RESPONSE_FIXED 12

static struct vscsi_request request aligned(16);
static struct vscsi_response response aligned(16);
static u32 cdb_size = MAX_CDB, sense_size = MAX_SENSE;
static u16 current_target;
static u32 current_lun;
static u8 data[8 + 8 * MAX_LUNS_REPORTED] aligned(8);

static u8 sense_key(void)
{
    u8 format = response.sense[0] & 0x7f;

    if (format == 0x72 || format == 0x73)       /* descriptor format */
        return response.sense[1] & 0x0f;
    return response.sense[2] & 0x0f;
}

static u8 sense_asc(void)
{
    u8 format = response.sense[0] & 0x7f;

    return format == 0x72 || format == 0x73 ? response.sense[2] : response.sense[12];
}

static u8 sense_ascq(void)
{
    u8 format = response.sense[0] & 0x7f;

    return format == 0x72 || format == 0x73 ? response.sense[3] : response.sense[13];
}

/* Runs one command on the current target/LUN: 0 when GOOD, -1 otherwise. */
static int scsi_command(struct virtio_dev *vd, const u8 *cdb, int cdb_len, void *buf, u32 len)
{
    struct vbuf bufs[3] = {
        { &request, REQUEST_FIXED + cdb_size, 0 },
        { &response, RESPONSE_FIXED + sense_size, 1 },
        { buf, len, 1 },
    };

    memset(&request, 0, sizeof(request));
    request.lun[0] = 1;
    request.lun[1] = (u8)current_target;
    request.lun[2] = (u8)(0x40 | ((current_lun >> 8) & 0x3f));
    request.lun[3] = (u8)current_lun;
    memcpy(request.cdb, cdb, cdb_len);
    memset(&response, 0, sizeof(response));
    response.response = 0xff;
    response.status = 0xff;
    if (virtio_run(vd, bufs, len ? 3 : 2))
        return -2;
    return response.response == VIRTIO_SCSI_S_OK && response.status == SCSI_GOOD ? 0 : -1;
}

static void report_failure(const char *what)
{
    console_start_line();
    if (response.response != VIRTIO_SCSI_S_OK)
        printf("virtio-scsi: %s failed: virtio response %u\n", what, response.response);
    else if (response.status == SCSI_CHECK_CONDITION)
        printf("virtio-scsi: %s failed: CHECK CONDITION, sense key 0x%x ASC 0x%02x ASCQ 0x%02x\n",
               what, sense_key(), sense_asc(), sense_ascq());
    else
        printf("virtio-scsi: %s failed: SCSI status 0x%02x\n", what, response.status);
}

static int inquiry(struct virtio_dev *vd, u8 *buf, u8 len)
{
    u8 cdb[6] = { OP_INQUIRY, 0, 0, 0, len, 0 };

    memset(buf, 0, len);
    return scsi_command(vd, cdb, sizeof(cdb), buf, len);
}

/* 1 when the current target/LUN is a connected disk, CD-ROM or optical device */
static int usable_lun(struct virtio_dev *vd, int *is_cdrom)
{
    u8 type;

    if (inquiry(vd, data, 36))
        return 0;
    if (data[0] >> 5)                   /* peripheral qualifier: not connected */
        return 0;
    type = data[0] & 0x1f;
    *is_cdrom = type == TYPE_CDROM;
    return type == TYPE_DISK || type == TYPE_CDROM || type == TYPE_OPTICAL;
}

static int scan(struct virtio_dev *vd, u32 max_target, int *is_cdrom)
{
    u8 cdb[12] = { OP_REPORT_LUNS, 0, 0, 0, 0, 0 };
    u32 target, count, i;

    cdb[6] = (u8)(sizeof(data) >> 24);
    cdb[7] = (u8)(sizeof(data) >> 16);
    cdb[8] = (u8)(sizeof(data) >> 8);
    cdb[9] = (u8)sizeof(data);
    if (max_target >= MAX_TARGETS_SCANNED)
        max_target = MAX_TARGETS_SCANNED - 1;
    for (target = 0; target <= max_target; target++) {
        current_target = (u16)target;
        current_lun = 0;
        memset(data, 0, sizeof(data));
        if (scsi_command(vd, cdb, sizeof(cdb), data, sizeof(data))) {
            if (response.response == VIRTIO_SCSI_S_OK && usable_lun(vd, is_cdrom))
                return 0;               /* no REPORT LUNS, but LUN 0 answers */
            continue;
        }
        count = be32(data) / 8;
        if (count > MAX_LUNS_REPORTED)
            count = MAX_LUNS_REPORTED;
        for (i = 0; i < count; i++) {
            const u8 *entry = data + 8 + 8 * i;

            /* peripheral (00b) and flat (01b) addressing: LUN in 14 bits */
            if ((entry[0] >> 6) > 1)
                continue;
            current_lun = (u32)(entry[0] & 0x3f) << 8 | entry[1];
            if (usable_lun(vd, is_cdrom))
                return 0;
            /* usable_lun overwrote the list: read it again */
            current_lun = 0;
            if (scsi_command(vd, cdb, sizeof(cdb), data, sizeof(data)))
                break;
        }
    }
    return -1;
}

static int wait_until_ready(struct virtio_dev *vd)
{
    u8 cdb[6] = { OP_TEST_UNIT_READY };
    int tries;

    for (tries = 0; tries < UNIT_ATTENTION_RETRIES; tries++) {
        int rc = scsi_command(vd, cdb, sizeof(cdb), NULL, 0);

        if (rc == 0)
            return 0;
        if (rc == -2)
            return -1;
        if (response.response != VIRTIO_SCSI_S_OK || response.status != SCSI_CHECK_CONDITION ||
            sense_key() != SENSE_UNIT_ATTENTION)
            break;
    }
    if (response.status == SCSI_CHECK_CONDITION && sense_key() == SENSE_NOT_READY)
        printf("virtio-scsi: target %u LUN %u is not ready (no medium?)\n", current_target,
               current_lun);
    else
        report_failure("TEST UNIT READY");
    return -1;
}

static int read_capacity(struct virtio_dev *vd, u64 *blocks, u32 *block_size)
{
    u8 cdb10[10] = { OP_READ_CAPACITY_10 };
    u8 cdb16[16] = { OP_SERVICE_ACTION_IN_16, SA_READ_CAPACITY_16 };

    memset(data, 0, 8);
    if (scsi_command(vd, cdb10, sizeof(cdb10), data, 8)) {
        report_failure("READ CAPACITY(10)");
        return -1;
    }
    if (be32(data) != 0xffffffffu) {
        *blocks = (u64)be32(data) + 1;
        *block_size = be32(data + 4);
        return 0;
    }
    cdb16[13] = 32;                     /* allocation length */
    memset(data, 0, 32);
    if (scsi_command(vd, cdb16, sizeof(cdb16), data, 32)) {
        report_failure("READ CAPACITY(16)");
        return -1;
    }
    *blocks = be64(data) + 1;
    *block_size = be32(data + 8);
    return 0;
}

static int vscsi_read(struct disk *d, u64 lba, u32 count, void *buf)
{
    u8 cdb[16];
    int i, len;

    memset(cdb, 0, sizeof(cdb));
    if (lba + count > 0x100000000UL || count > 0xffff) {
        cdb[0] = OP_READ_16;
        for (i = 0; i < 8; i++)
            cdb[2 + i] = (u8)(lba >> (56 - 8 * i));
        for (i = 0; i < 4; i++)
            cdb[10 + i] = (u8)(count >> (24 - 8 * i));
        len = 16;
    } else {
        cdb[0] = OP_READ_10;
        for (i = 0; i < 4; i++)
            cdb[2 + i] = (u8)(lba >> (24 - 8 * i));
        cdb[7] = (u8)(count >> 8);
        cdb[8] = (u8)count;
        len = 10;
    }
    if (scsi_command(d->vd, cdb, len, buf, count * d->block_size)) {
        report_failure(len == 10 ? "READ(10)" : "READ(16)");
        return -1;
    }
    return 0;
}

int vscsi_open(struct virtio_dev *vd, const struct scsi_address *want, struct disk *d)
{
    struct vscsi_config config;
    u32 block_size;
    u64 blocks;
    int is_cdrom = 0;

    memset(&config, 0, sizeof(config));
    if (virtio_setup(vd, 0, REQUEST_QUEUE, &config, sizeof(config)))
        return -1;
    cdb_size = vio32(vd, config.cdb_size);
    sense_size = vio32(vd, config.sense_size);
    if (cdb_size < 16 || cdb_size > MAX_CDB || sense_size > MAX_SENSE) {
        printf("virtio-scsi: unsupported CDB size %u or sense size %u\n", cdb_size, sense_size);
        goto failed;
    }
    if (want->given) {
        if (want->channel != 0 || want->target > vio16(vd, config.max_target) ||
            want->lun > vio32(vd, config.max_lun)) {
            printf("virtio-scsi: no device at %u:%u:%u on this adapter\n", want->channel,
                   want->target, want->lun);
            goto failed;
        }
        current_target = want->target;
        current_lun = want->lun;
        if (!usable_lun(vd, &is_cdrom)) {
            printf("virtio-scsi: target %u LUN %u is not a disk or CD-ROM\n", want->target,
                   want->lun);
            goto failed;
        }
    } else if (scan(vd, vio16(vd, config.max_target), &is_cdrom)) {
        printf("virtio-scsi: no disk or CD-ROM found on the adapter\n");
        goto failed;
    }
    if (wait_until_ready(vd) || read_capacity(vd, &blocks, &block_size))
        goto failed;
    if (block_size < 512 || block_size > 4096 || (block_size & (block_size - 1))) {
        printf("virtio-scsi: unsupported block size %u\n", block_size);
        goto failed;
    }
    if (is_cdrom)
        printf("SCSI CD-ROM detected.\n");
    d->is_scsi = 1;
    d->scsi_target = current_target;
    d->scsi_lun = current_lun;
    d->driver = "virtio-scsi";
    d->vd = vd;
    d->block_size = block_size;
    d->blocks = blocks;
    d->is_cdrom = is_cdrom;
    d->max_blocks = MAX_REQUEST_BYTES / block_size;
    d->read = vscsi_read;
    return 0;

failed:
    virtio_reset(vd);
    return -1;
}
