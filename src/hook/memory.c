/* Device memory: plain, pitched, managed and stream-ordered allocations.
 * Each is reserved in the region before the driver is asked, and settled
 * (kept or rolled back) by what the driver answered. */
#include "hook/account.h"
#include "hook/real.h"

#define EXPORT __attribute__((visibility("default")))
#define NEED(name)                                                             \
    do {                                                                       \
        if (REAL(name) == NULL)                                                \
            return CUDA_ERROR_NOT_INITIALIZED;                                 \
    } while (0)

static CUresult settled(int dev, uint64_t bytes, CUresult rc, uint64_t key)
{
    account_settle(dev, bytes, rc == CUDA_SUCCESS, SPACE_POINTER, key);
    return rc;
}

/* The body of every hook that allocates `bytes` into *dptr with `call`:
 * reserve on the current device, call the driver, settle. */
#define CHARGED_ALLOC(bytes, call)                                             \
    do {                                                                       \
        int dev_ = account_current_device();                                   \
        if (!account_reserve(dev_, (bytes)))                                   \
            return CUDA_ERROR_OUT_OF_MEMORY;                                   \
        CUresult rc_ = (call);                                                 \
        return settled(dev_, (bytes), rc_, rc_ == CUDA_SUCCESS ? *dptr : 0);   \
    } while (0)

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

EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pitch,
                                   size_t width, size_t height,
                                   unsigned int elem)
{
    NEED(cuMemAllocPitch_v2);
    /* The pitch is the driver's choice: reserve a 512-byte-aligned row
     * estimate, then correct to pitch x height once it is known. */
    int dev = account_current_device();
    uint64_t guess = (width + 511) / 512 * 512 * (uint64_t)height;
    if (!account_reserve(dev, guess))
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult rc = REAL(cuMemAllocPitch_v2)(dptr, pitch, width, height, elem);
    if (rc != CUDA_SUCCESS)
        return settled(dev, guess, rc, 0);
    uint64_t actual = (uint64_t)*pitch * height;
    if (!account_adjust(dev, guess, actual)) {
        REAL(cuMemFree_v2)(*dptr);
        return settled(dev, guess, CUDA_ERROR_OUT_OF_MEMORY, 0);
    }
    return settled(dev, actual, rc, *dptr);
}

/* Managed memory counts against the device of the current context: it can
 * all migrate there, and the limit is what the container may take. */
EXPORT CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytes,
                                  unsigned int flags)
{
    NEED(cuMemAllocManaged);
    CHARGED_ALLOC(bytes, REAL(cuMemAllocManaged)(dptr, bytes, flags));
}

static CUresult real_free_v2(uint64_t p, void *a) { (void)a; return REAL(cuMemFree_v2)(p); }
static CUresult real_free_v1(uint64_t p, void *a) { (void)a; return REAL(cuMemFree)((CUdeviceptr_v1)p); }
static CUresult real_free_async(uint64_t p, void *s) { return REAL(cuMemFreeAsync)(p, s); }
static CUresult real_free_async_ptsz(uint64_t p, void *s) { return REAL(cuMemFreeAsync_ptsz)(p, s); }

EXPORT CUresult cuMemFree_v2(CUdeviceptr ptr)
{
    NEED(cuMemFree_v2);
    return account_free(SPACE_POINTER, ptr, real_free_v2, NULL);
}

EXPORT CUresult cuMemFree(CUdeviceptr_v1 ptr)
{
    NEED(cuMemFree);
    return account_free(SPACE_POINTER, ptr, real_free_v1, NULL);
}

/* Stream-ordered: charged at the call, returned at the free call. Memory a
 * pool keeps cached after a free is not counted (see README). */
EXPORT CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytes, CUstream s)
{
    NEED(cuMemAllocAsync);
    CHARGED_ALLOC(bytes, REAL(cuMemAllocAsync)(dptr, bytes, s));
}

EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytes, CUstream s)
{
    NEED(cuMemAllocAsync_ptsz);
    CHARGED_ALLOC(bytes, REAL(cuMemAllocAsync_ptsz)(dptr, bytes, s));
}

EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytes,
                                        CUmemoryPool pool, CUstream s)
{
    NEED(cuMemAllocFromPoolAsync);
    CHARGED_ALLOC(bytes, REAL(cuMemAllocFromPoolAsync)(dptr, bytes, pool, s));
}

EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytes,
                                             CUmemoryPool pool, CUstream s)
{
    NEED(cuMemAllocFromPoolAsync_ptsz);
    CHARGED_ALLOC(bytes, REAL(cuMemAllocFromPoolAsync_ptsz)(dptr, bytes, pool, s));
}

EXPORT CUresult cuMemFreeAsync(CUdeviceptr ptr, CUstream s)
{
    NEED(cuMemFreeAsync);
    return account_free(SPACE_POINTER, ptr, real_free_async, s);
}

EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr ptr, CUstream s)
{
    NEED(cuMemFreeAsync_ptsz);
    return account_free(SPACE_POINTER, ptr, real_free_async_ptsz, s);
}
