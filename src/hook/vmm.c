/* Virtual memory management: physical memory is allocated by cuMemCreate
 * (charged to its location's device) and returned by cuMemRelease. Address
 * reservations and mappings take no memory. Imported handles name memory
 * that the exporting process has already charged: not charged again. */
#include "hook/charge.h"
#include "hook/real.h"

#define EXPORT __attribute__((visibility("default")))

EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
                            const CUmemAllocationProp *prop,
                            unsigned long long flags)
{
    if (REAL(cuMemCreate) == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    /* Host or NUMA locations are not device memory: not accounted. */
    int dev = (prop && prop->location.type == CU_MEM_LOCATION_TYPE_DEVICE)
                  ? prop->location.id : -1;
    struct charge c;
    if (!charge_begin(&c, dev, size, VGPU_CHARGE_DATA))
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult rc = REAL(cuMemCreate)(handle, size, prop, flags);
    charge_end(&c, rc == CUDA_SUCCESS, SPACE_VMM, rc == CUDA_SUCCESS ? *handle : 0);
    return rc;
}

static CUresult real_release(uint64_t handle, void *unused)
{
    (void)unused;
    return REAL(cuMemRelease)(handle);
}

EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle handle)
{
    if (REAL(cuMemRelease) == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    return charge_free(SPACE_VMM, handle, real_release, NULL);
}
