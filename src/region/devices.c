/* Which GPU a device number names. The region counts per physical GPU, in
 * the container's numbering (HAMi's uuids[] and the limits'
 * CUDA_DEVICE_MEMORY_LIMIT_<i>); a process whose CUDA_VISIBLE_DEVICES
 * renumbers its GPUs binds each of its numbers to the region's index of
 * that GPU's UUID once, at attach, and every call of the public API that
 * takes a device takes the process's own number. */
#include <string.h>

#include "atomic.h"
#include "log.h"
#include "region_internal.h"

int region_index(const struct vgpu_region *r, int dev)
{
    if (r == NULL || dev < 0 || dev >= VGPU_MAX_DEVICES || r->device_index[dev] == 0)
        return dev;
    return r->device_index[dev] - 1;
}

static const char *uuid_at(const struct vgpu_region *r, int i)
{
    const char *u = r->hami->uuids[i];
    /* Acquire: pairs with the release of the first byte in set_device. */
    return atomic_load_n(&u[0], ACQUIRE) != 0 ? u : NULL;
}

int vgpu_region_uuid_index(const struct vgpu_region *r, const char *uuid)
{
    if (r == NULL || r->base == NULL || uuid == NULL)
        return -1;
    for (int i = 0; i < VGPU_MAX_DEVICES; i++) {
        const char *u = uuid_at(r, i);
        if (u != NULL && strncmp(u, uuid, HAMI_UUID_LEN) == 0)
            return i;
    }
    return -1;
}

/* Without the container's index: the process's own number if that index
 * is free (or this GPU's), else the first free one. */
static int fallback_index(const struct vgpu_region *r, int local)
{
    if (uuid_at(r, local) == NULL)
        return local;
    for (int i = 0; i < VGPU_MAX_DEVICES; i++)
        if (uuid_at(r, i) == NULL)
            return i;
    return local;
}

int vgpu_region_bind_device(struct vgpu_region *r, int local, const char *uuid,
                            int index)
{
    if (r == NULL || r->base == NULL || uuid == NULL || local < 0 ||
        local >= VGPU_MAX_DEVICES || index >= VGPU_MAX_DEVICES)
        return local;
    int known = vgpu_region_uuid_index(r, uuid);
    if (known >= 0)
        index = known;
    else if (index < 0)
        index = fallback_index(r, local);
    vgpu_region_set_device(r, index, uuid);
    if (vgpu_region_uuid_index(r, uuid) != index)
        log_warn("device %d (%s): the region's device %d is another GPU; "
                 "counted there", local, uuid, index);
    /* Plain store: binding happens at attach, before the region is
     * published to other threads of this process. */
    r->device_index[local] = (int8_t)(index + 1);
    return index;
}
