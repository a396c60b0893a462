/* What the program sees: the limit as the device's total memory, and the
 * limit minus the region's usage as free (never more than is physically
 * free). Devices without a limit show what the driver says. */
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

#include "hook/account.h"
#include "hook/real.h"

#define EXPORT __attribute__((visibility("default")))

struct view {
    uint64_t total;
    uint64_t free;
};

/* Clamp the physical view of device dev to its limit in region r. */
static struct view limited(struct vgpu_region *r, int dev, uint64_t phys_free,
                           uint64_t phys_total)
{
    struct view v = {phys_total, phys_free};
    uint64_t limit = account_limit(r, dev);
    if (dev < 0 || limit == 0)
        return v;
    uint64_t used = vgpu_region_used(r, dev);
    v.total = limit < phys_total ? limit : phys_total;
    v.free = used >= v.total ? 0 : v.total - used;
    if (v.free > phys_free)
        v.free = phys_free;
    return v;
}

EXPORT CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total)
{
    NEED(cuMemGetInfo_v2);
    CUresult rc = REAL(cuMemGetInfo_v2)(free_bytes, total);
    if (rc != CUDA_SUCCESS || free_bytes == NULL || total == NULL)
        return rc;
    struct view v = limited(account_region(), account_current_device(),
                            *free_bytes, *total);
    *free_bytes = v.free;
    *total = v.total;
    return rc;
}

static unsigned int clamp32(uint64_t v)
{
    return v > 0xffffffffu ? 0xffffffffu : (unsigned int)v;
}

EXPORT CUresult cuMemGetInfo(unsigned int *free_bytes, unsigned int *total)
{
    size_t f, t;
    CUresult rc = cuMemGetInfo_v2(&f, &t);
    if (rc == CUDA_SUCCESS && free_bytes && total) {
        *free_bytes = clamp32(f);
        *total = clamp32(t);
    }
    return rc;
}

EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)
{
    NEED(cuDeviceTotalMem_v2);
    CUresult rc = REAL(cuDeviceTotalMem_v2)(bytes, dev);
    if (rc == CUDA_SUCCESS && bytes)
        *bytes = limited(account_region(), dev, *bytes, *bytes).total;
    return rc;
}

EXPORT CUresult cuDeviceTotalMem(unsigned int *bytes, CUdevice dev)
{
    size_t total;
    CUresult rc = cuDeviceTotalMem_v2(&total, dev);
    if (rc == CUDA_SUCCESS && bytes)
        *bytes = clamp32(total);
    return rc;
}

/* ---- NVML: its devices are the machine's, in its own order ---- */

static bool visible_devices_unset(void)
{
    return !vgpu_env_is_set(VGPU_ENV_VISIBLE_DEVICES);
}

/* The CUDA ordinal of an NVML device: by UUID, from the UUIDs the CUDA
 * processes of this region recorded; without them, the NVML index when
 * nothing renumbers the devices. -1: not one of ours. */
static int cuda_ordinal(struct vgpu_region *r, nvmlDevice_t device)
{
    char uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE];
    if (REAL(nvmlDeviceGetUUID) &&
        REAL(nvmlDeviceGetUUID)(device, uuid, sizeof uuid) == NVML_SUCCESS) {
        for (int d = 0; d < VGPU_MAX_DEVICES; d++)
            if (vgpu_region_has_uuid(r, d, uuid))
                return d;
    }
    unsigned int index;
    if (visible_devices_unset() && REAL(nvmlDeviceGetIndex) &&
        REAL(nvmlDeviceGetIndex)(device, &index) == NVML_SUCCESS &&
        index < VGPU_MAX_DEVICES)
        return (int)index;
    return -1;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *m)
{
    if (REAL(nvmlDeviceGetMemoryInfo) == NULL)
        return NVML_ERROR_FUNCTION_NOT_FOUND;
    nvmlReturn_t rc = REAL(nvmlDeviceGetMemoryInfo)(device, m);
    if (rc != NVML_SUCCESS || m == NULL)
        return rc;
    struct vgpu_region *r = account_region_view();
    struct view v = limited(r, cuda_ordinal(r, device), m->free, m->total);
    m->total = v.total;
    m->free = v.free;
    m->used = v.total - v.free;
    return rc;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device,
                                               nvmlMemory_v2_t *m)
{
    if (REAL(nvmlDeviceGetMemoryInfo_v2) == NULL)
        return NVML_ERROR_FUNCTION_NOT_FOUND;
    nvmlReturn_t rc = REAL(nvmlDeviceGetMemoryInfo_v2)(device, m);
    if (rc != NVML_SUCCESS || m == NULL)
        return rc;
    struct vgpu_region *r = account_region_view();
    int dev = cuda_ordinal(r, device);
    struct view v = limited(r, dev, m->free, m->total);
    if (v.total != m->total) {
        /* Limited: what the container uses is what it sees used; the
         * driver's own reserve is not part of its limit. */
        m->total = v.total;
        m->free = v.free;
        m->reserved = 0;
        m->used = v.total - v.free;
    }
    return rc;
}
