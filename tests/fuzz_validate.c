/* libFuzzer target over the region file validator, and over what trusts a
 * file once validated (the snapshot). The input patches a valid image:
 * pairs of (offset into the image, bytes), and its first byte picks the
 * image size (exact, shorter, longer) so that size checks are exercised. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "region/region_internal.h"

static unsigned char *valid_image(void)
{
    static unsigned char *image;
    if (image == NULL) {
        image = calloc(1, VGPU_FILE_SIZE + 4096);
        struct hami_region *h = (struct hami_region *)image;
        struct vgpu_ext *e = region_ext(image);
        h->initialized_flag = HAMI_MAGIC;
        h->major_version = HAMI_MAJOR;
        h->minor_version = HAMI_MINOR;
        h->device_num = 1;
        memcpy(e->magic, VGPU_EXT_MAGIC, sizeof e->magic);
        e->layout_version = VGPU_LAYOUT_VERSION;
        e->file_size = VGPU_FILE_SIZE;
        e->device_count = 1;
    }
    return image;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned char *work;
    static struct vgpu_snapshot snap;
    if (work == NULL)
        work = malloc(VGPU_FILE_SIZE + 4096);
    memcpy(work, valid_image(), VGPU_FILE_SIZE + 4096);
    size_t image_size = VGPU_FILE_SIZE;
    if (size > 0) {
        if (data[0] % 4 == 1)
            image_size = VGPU_FILE_SIZE - 1 - (data[0] >> 2);
        else if (data[0] % 4 == 2)
            image_size = VGPU_FILE_SIZE + (data[0] >> 2);
        data++, size--;
    }
    /* Patches: 4-byte little-endian offset, 1-byte length, bytes. Offsets
     * are folded into the header, the slot words and the ext header, where
     * the validator looks, and anywhere else with a small probability. */
    while (size >= 5) {
        uint32_t off;
        memcpy(&off, data, 4);
        size_t len = data[4] % 16;
        data += 5, size -= 5;
        if (len > size)
            len = size;
        off %= (uint32_t)(VGPU_FILE_SIZE - len);
        memcpy(work + off, data, len);
        data += len, size -= len;
    }
    const char *why = NULL;
    if (region_validate(work, image_size, &why) == FILE_VALID) {
        struct vgpu_region r;
        memset(&r, 0, sizeof r);
        r.base = work;
        r.fd = -1;
        r.hami = (struct hami_region *)work;
        r.ext = region_ext(work);
        r.ops = mode_ops(r.ext->mode);
        r.slot = -1;
        vgpu_region_snapshot(&r, &snap);
    } else if (why == NULL) {
        abort(); /* an invalid file must say why */
    }
    return 0;
}
