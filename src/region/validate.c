/* The region file validator: everything read from the file that could steer
 * a loop or an index is checked here, before any other code trusts it.
 * Fuzzed by tests/fuzz_validate.c. */
#include <string.h>

#include "atomic.h"
#include "region_internal.h"

static const char *check_header(const struct hami_region *h)
{
    if (h->initialized_flag != HAMI_MAGIC)
        return "wrong magic (not a region file, or never initialized)";
    if (h->major_version != HAMI_MAJOR || h->minor_version != HAMI_MINOR)
        return "unsupported HAMi layout version";
    if (h->device_num > VGPU_MAX_DEVICES)
        return "device count out of range";
    /* Relaxed: attached processes change it while a watcher validates. */
    int32_t procnum = atomic_load_n(&h->procnum, RELAXED);
    if (procnum < 0 || procnum > VGPU_MAX_SLOTS)
        return "procnum out of range";
    return NULL;
}

static const char *check_ext(const struct vgpu_ext *e)
{
    if (memcmp(e->magic, VGPU_EXT_MAGIC, sizeof e->magic) != 0)
        return "no vgpu extension (a HAMi-core file, or garbage)";
    if (e->layout_version != VGPU_LAYOUT_VERSION)
        return "unsupported vgpu layout version";
    if (e->file_size != VGPU_FILE_SIZE)
        return "recorded size disagrees with the layout";
    if (mode_ops(e->mode) == NULL)
        return "unknown synchronization mode";
    if (e->device_count > VGPU_MAX_DEVICES)
        return "device count out of range";
    for (int i = 0; i < VGPU_MAX_SLOTS; i++) /* relaxed: as procnum */
        if (SLOT_STATE(atomic_load_n(&e->slots[i].word, RELAXED)) > SLOT_RECLAIMING)
            return "slot in an unknown state";
    return NULL;
}

enum validate_result region_validate(const void *data, size_t size,
                                     const char **why)
{
    if (size == 0)
        return FILE_EMPTY;
    if (size < VGPU_FILE_SIZE) {
        *why = "file too short (truncated)";
        return FILE_INVALID;
    }
    if (size > VGPU_FILE_SIZE) {
        *why = "file longer than the layout";
        return FILE_INVALID;
    }
    *why = check_header(data);
    if (*why == NULL)
        *why = check_ext(region_ext((void *)data));
    return *why == NULL ? FILE_VALID : FILE_INVALID;
}
