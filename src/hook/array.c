/* CUDA arrays and mipmapped arrays, charged by their element bytes (the
 * driver may pad; the estimate is what the descriptor asks for). */
#include "hook/account.h"
#include "hook/charge.h"
#include "hook/real.h"

#define EXPORT __attribute__((visibility("default")))

static uint64_t element_bytes(CUarray_format f, unsigned int channels)
{
    uint64_t size;
    switch (f) {
    case CU_AD_FORMAT_UNSIGNED_INT16: case CU_AD_FORMAT_SIGNED_INT16:
    case CU_AD_FORMAT_HALF: size = 2; break;
    case CU_AD_FORMAT_UNSIGNED_INT32: case CU_AD_FORMAT_SIGNED_INT32:
    case CU_AD_FORMAT_FLOAT: size = 4; break;
    default: size = 1; break;
    }
    return size * (channels ? channels : 1);
}

static uint64_t at_least_one(size_t v) { return v ? v : 1; }

static uint64_t array3d_bytes(const CUDA_ARRAY3D_DESCRIPTOR *d)
{
    return (uint64_t)d->Width * at_least_one(d->Height) * at_least_one(d->Depth) *
           element_bytes(d->Format, d->NumChannels);
}

/* Create an array of `bytes` with `call`, inside one charge. */
#define CHARGED_ARRAY(bytes, call)                                             \
    CHARGED_CALL(VGPU_CHARGE_DATA, bytes, call, SPACE_ARRAY, (uintptr_t)*arr)

EXPORT CUresult cuArrayCreate_v2(CUarray *arr, const CUDA_ARRAY_DESCRIPTOR *d)
{
    NEED(cuArrayCreate_v2);
    if (d == NULL || arr == NULL)
        return REAL(cuArrayCreate_v2)(arr, d);
    uint64_t bytes = (uint64_t)d->Width * at_least_one(d->Height) *
                     element_bytes(d->Format, d->NumChannels);
    CHARGED_ARRAY(bytes, REAL(cuArrayCreate_v2)(arr, d));
}

EXPORT CUresult cuArray3DCreate_v2(CUarray *arr, const CUDA_ARRAY3D_DESCRIPTOR *d)
{
    NEED(cuArray3DCreate_v2);
    if (d == NULL || arr == NULL)
        return REAL(cuArray3DCreate_v2)(arr, d);
    CHARGED_ARRAY(array3d_bytes(d), REAL(cuArray3DCreate_v2)(arr, d));
}

EXPORT CUresult cuMipmappedArrayCreate(CUmipmappedArray *arr,
                                       const CUDA_ARRAY3D_DESCRIPTOR *d,
                                       unsigned int levels)
{
    NEED(cuMipmappedArrayCreate);
    if (d == NULL || arr == NULL)
        return REAL(cuMipmappedArrayCreate)(arr, d, levels);
    /* Each level a quarter of the one above (2D) or an eighth (3D): the
     * geometric sum is at most 4/3 of level 0; charge that bound. */
    uint64_t bytes = levels <= 1 ? array3d_bytes(d) : array3d_bytes(d) / 3 * 4 + 1;
    CHARGED_ARRAY(bytes, REAL(cuMipmappedArrayCreate)(arr, d, levels));
}

static CUresult real_array_destroy(uint64_t key, void *unused)
{
    (void)unused;
    return REAL(cuArrayDestroy)((CUarray)(uintptr_t)key);
}

static CUresult real_mipmapped_destroy(uint64_t key, void *unused)
{
    (void)unused;
    return REAL(cuMipmappedArrayDestroy)((CUmipmappedArray)(uintptr_t)key);
}

EXPORT CUresult cuArrayDestroy(CUarray arr)
{
    NEED(cuArrayDestroy);
    return charge_free(SPACE_ARRAY, (uint64_t)(uintptr_t)arr,
                        real_array_destroy, NULL);
}

EXPORT CUresult cuMipmappedArrayDestroy(CUmipmappedArray arr)
{
    NEED(cuMipmappedArrayDestroy);
    return charge_free(SPACE_ARRAY, (uint64_t)(uintptr_t)arr,
                        real_mipmapped_destroy, NULL);
}
