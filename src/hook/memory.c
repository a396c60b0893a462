/* Device memory: plain, pitched and managed allocations (stream-ordered
 * ones are pools.c's).
 * Each is reserved in the region before the driver is asked, and settled
 * (kept or rolled back) by what the driver answered. */
#include "hook/account.h"
#include "hook/charge.h"
#include "hook/real.h"

#define EXPORT __attribute__((visibility("default")))

/* The body of every hook that allocates `bytes` into *dptr with `call`:
 * reserve on the current device, call the driver, settle. */
#define CHARGED_ALLOC(bytes, call)                                             \
    CHARGED_CALL(VGPU_CHARGE_DATA, bytes, call, SPACE_POINTER, *dptr)

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytes)
{
    NEED(cuMemAlloc_v2);
    CHARGED_ALLOC(bytes, REAL(cuMemAlloc_v2)(dptr, bytes));
}

EXPORT CUresult cuMemAlloc(CUdeviceptr_v1 *dptr, unsigned int bytes)
{
    NEED(cuMemAlloc);
    CHARGED_ALLOC(bytes, REAL(cuMemAlloc)(dptr, bytes));
}

/* Pitched allocations: the pitch is the driver's choice, so a 512-byte-
 * aligned row estimate is reserved, then corrected to pitch x height. */
static uint64_t pitch_guess(uint64_t width, uint64_t height)
{
    return (width + 511) / 512 * 512 * height;
}

static CUresult pitch_settle(struct charge *c, CUresult rc, uint64_t ptr,
                             uint64_t pitch, uint64_t height,
                             driver_free_fn free_fn)
{
    if (rc == CUDA_SUCCESS && !charge_resize(c, pitch * height)) {
        free_fn(ptr, NULL);
        rc = CUDA_ERROR_OUT_OF_MEMORY;
    }
    charge_end(c, rc == CUDA_SUCCESS, SPACE_POINTER, rc == CUDA_SUCCESS ? ptr : 0);
    return rc;
}

static CUresult real_free_v2(uint64_t p, void *a) { (void)a; return REAL(cuMemFree_v2)(p); }
static CUresult real_free_v1(uint64_t p, void *a) { (void)a; return REAL(cuMemFree)((CUdeviceptr_v1)p); }

EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pitch,
                                   size_t width, size_t height,
                                   unsigned int elem)
{
    NEED(cuMemAllocPitch_v2);
    struct charge c;
    if (!charge_begin(&c, account_current_device(), pitch_guess(width, height),
                      VGPU_CHARGE_DATA))
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult rc = REAL(cuMemAllocPitch_v2)(dptr, pitch, width, height, elem);
    return pitch_settle(&c, rc, rc == CUDA_SUCCESS ? *dptr : 0,
                        rc == CUDA_SUCCESS ? *pitch : 0, height, real_free_v2);
}

/* The pre-3.2 ABI, still exported by the driver (and handed out by
 * cuGetProcAddress for versions before 3020). */
EXPORT CUresult cuMemAllocPitch(CUdeviceptr_v1 *dptr, unsigned int *pitch,
                                unsigned int width, unsigned int height,
                                unsigned int elem)
{
    NEED(cuMemAllocPitch);
    struct charge c;
    if (!charge_begin(&c, account_current_device(), pitch_guess(width, height),
                      VGPU_CHARGE_DATA))
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult rc = REAL(cuMemAllocPitch)(dptr, pitch, width, height, elem);
    return pitch_settle(&c, rc, rc == CUDA_SUCCESS ? *dptr : 0,
                        rc == CUDA_SUCCESS ? *pitch : 0, height, real_free_v1);
}

/* Managed memory counts against the device of the current context: it can
 * all migrate there, and the limit is what the container may take. */
EXPORT CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytes,
                                  unsigned int flags)
{
    NEED(cuMemAllocManaged);
    CHARGED_ALLOC(bytes, REAL(cuMemAllocManaged)(dptr, bytes, flags));
}

EXPORT CUresult cuMemFree_v2(CUdeviceptr ptr)
{
    NEED(cuMemFree_v2);
    return charge_free(SPACE_POINTER, ptr, real_free_v2, NULL);
}

EXPORT CUresult cuMemFree(CUdeviceptr_v1 ptr)
{
    NEED(cuMemFree);
    return charge_free(SPACE_POINTER, ptr, real_free_v1, NULL);
}
