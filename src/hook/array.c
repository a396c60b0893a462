/* CUDA arrays and mipmapped arrays, charged by their element bytes (the
 * driver may pad; the estimate is what the descriptor asks for). A format
 * not known here is charged 4 bytes a channel, the most any takes. */
#include "hook/account.h"
#include "hook/charge.h"
#include "hook/real.h"

#define EXPORT __attribute__((visibility("default")))

static uint64_t element_bytes(CUarray_format f, unsigned int channels)
{
    uint64_t size;
    switch (f) {
    case CU_AD_FORMAT_UNSIGNED_INT8: case CU_AD_FORMAT_SIGNED_INT8:
    case CU_AD_FORMAT_UNORM_INT8X1: case CU_AD_FORMAT_UNORM_INT8X2:
    case CU_AD_FORMAT_UNORM_INT8X4: case CU_AD_FORMAT_SNORM_INT8X1:
    case CU_AD_FORMAT_SNORM_INT8X2: case CU_AD_FORMAT_SNORM_INT8X4:
    case CU_AD_FORMAT_UNORM_INT_101010_2: /* 4 channels in 4 bytes */
    case CU_AD_FORMAT_BC1_UNORM: case CU_AD_FORMAT_BC1_UNORM_SRGB:
    case CU_AD_FORMAT_BC2_UNORM: case CU_AD_FORMAT_BC2_UNORM_SRGB:
    case CU_AD_FORMAT_BC3_UNORM: case CU_AD_FORMAT_BC3_UNORM_SRGB:
    case CU_AD_FORMAT_BC4_UNORM: case CU_AD_FORMAT_BC4_SNORM:
    case CU_AD_FORMAT_BC5_UNORM: case CU_AD_FORMAT_BC5_SNORM:
    case CU_AD_FORMAT_BC6H_UF16: case CU_AD_FORMAT_BC6H_SF16:
    case CU_AD_FORMAT_BC7_UNORM: case CU_AD_FORMAT_BC7_UNORM_SRGB:
        size = 1; break; /* block-compressed: a byte a texel at most */
    case CU_AD_FORMAT_UNSIGNED_INT16: case CU_AD_FORMAT_SIGNED_INT16:
    case CU_AD_FORMAT_HALF:
    case CU_AD_FORMAT_UNORM_INT16X1: case CU_AD_FORMAT_UNORM_INT16X2:
    case CU_AD_FORMAT_UNORM_INT16X4: case CU_AD_FORMAT_SNORM_INT16X1:
    case CU_AD_FORMAT_SNORM_INT16X2: case CU_AD_FORMAT_SNORM_INT16X4:
        size = 2; break;
    default: /* 32-bit formats; YUV formats (planes and chroma included) */
        size = 4; break;
    }
    return size * (channels ? channels : 1);
}

/* a * b, or UINT64_MAX (never fits a limit) where it overflows. */
static uint64_t times(uint64_t a, uint64_t b)
{
    uint64_t p;
    return __builtin_mul_overflow(a, b, &p) ? UINT64_MAX : p;
}

static uint64_t at_least_one(size_t v) { return v ? v : 1; }

/* Any array's bytes: width x height x depth elements (0 counts as 1). */
static uint64_t array_bytes(size_t width, size_t height, size_t depth,
                            CUarray_format f, unsigned int channels)
{
    return times(times(times(width, at_least_one(height)), at_least_one(depth)),
                 element_bytes(f, channels));
}

static uint64_t array3d_bytes(const CUDA_ARRAY3D_DESCRIPTOR *d)
{
    return array_bytes(d->Width, d->Height, d->Depth, d->Format, d->NumChannels);
}

/* Every level of a mipmapped array: each halves every extent of the one
 * above, down to 1 (a 1D array's only its width, so levels add up to
 * twice the first; layers and cube faces are not levels' extents). */
static uint64_t mipmapped_bytes(const CUDA_ARRAY3D_DESCRIPTOR *d, unsigned int levels)
{
    CUDA_ARRAY3D_DESCRIPTOR l = *d;
    bool layers = d->Flags & (CUDA_ARRAY3D_LAYERED | CUDA_ARRAY3D_CUBEMAP);
    uint64_t total = 0;
    for (unsigned int i = 0; i < levels && i < 64; i++) {
        uint64_t b = array3d_bytes(&l);
        total = total > UINT64_MAX - b ? UINT64_MAX : total + b;
        l.Width = l.Width > 1 ? l.Width / 2 : l.Width;
        l.Height = l.Height > 1 ? l.Height / 2 : l.Height;
        l.Depth = !layers && l.Depth > 1 ? l.Depth / 2 : l.Depth;
    }
    return total;
}

/* Create an array of `bytes` with `call`, inside one charge. */
#define CHARGED_ARRAY(bytes, call)                                             \
    CHARGED_CALL(VGPU_CHARGE_DATA, bytes, call, SPACE_ARRAY, (uintptr_t)*arr)

EXPORT CUresult cuArrayCreate_v2(CUarray *arr, const CUDA_ARRAY_DESCRIPTOR *d)
{
    NEED(cuArrayCreate_v2);
    if (d == NULL || arr == NULL)
        return REAL(cuArrayCreate_v2)(arr, d);
    CHARGED_ARRAY(array_bytes(d->Width, d->Height, 1, d->Format, d->NumChannels),
                  REAL(cuArrayCreate_v2)(arr, d));
}

/* The pre-3.2 ABI (32-bit sizes), still exported by the driver. */
EXPORT CUresult cuArrayCreate(CUarray *arr, const CUDA_ARRAY_DESCRIPTOR_v1 *d)
{
    NEED(cuArrayCreate);
    if (d == NULL || arr == NULL)
        return REAL(cuArrayCreate)(arr, d);
    CHARGED_ARRAY(array_bytes(d->Width, d->Height, 1, d->Format, d->NumChannels),
                  REAL(cuArrayCreate)(arr, d));
}

EXPORT CUresult cuArray3DCreate(CUarray *arr, const CUDA_ARRAY3D_DESCRIPTOR_v1 *d)
{
    NEED(cuArray3DCreate);
    if (d == NULL || arr == NULL)
        return REAL(cuArray3DCreate)(arr, d);
    CHARGED_ARRAY(array_bytes(d->Width, d->Height, d->Depth, d->Format, d->NumChannels),
                  REAL(cuArray3DCreate)(arr, d));
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
    CHARGED_ARRAY(mipmapped_bytes(d, levels ? levels : 1),
                  REAL(cuMipmappedArrayCreate)(arr, d, levels));
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
