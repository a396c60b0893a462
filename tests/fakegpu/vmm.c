/* The simulated driver's virtual memory management. As the driver's,
 * physical memory (cuMemCreate) lives until its last reference goes: every
 * handle (cuMemCreate, cuMemImportFromShareableHandle,
 * cuMemRetainAllocationHandle: each a distinct handle, each released by
 * cuMemRelease) and every mapping (cuMemMap, until cuMemUnmap). Sharing is
 * within one process: the shareable handle names the memory itself. A
 * released handle's value is the next one handed out, from any thread (a
 * driver may reuse values). FAKEGPU_VMM_RELEASE_DELAY_US=n: cuMemRelease
 * returns n us after it released the handle (to widen a race for a test). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#include "fakegpu.h"

#define EXPORT __attribute__((visibility("default")))
#define FAIL_POINT(name)                                                       \
    do {                                                                       \
        if (fg_should_fail(name))                                              \
            return CUDA_ERROR_UNKNOWN;                                         \
    } while (0)

struct fg_physical_alloc {
    int physical;
    int refs;   /* handles and mappings */
    uint64_t size;
};

struct fg_handle { struct fg_physical_alloc *mem; };
#define MAX_HANDLES 4096
static struct fg_handle handles[MAX_HANDLES]; /* mem NULL: free */

struct fg_mapping { uint64_t va; uint64_t size; struct fg_physical_alloc *mem; };
#define MAX_MAPPINGS 4096
static struct fg_mapping mappings[MAX_MAPPINGS];

static void physical_put(struct fg_physical_alloc *m)
{
    if (__atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        fg_release(m->physical, m->size);
        free(m);
    }
}

/* The lowest free handle. Lock-free, as the mappings: a fork child
 * inherits no lock. */
static CUmemGenericAllocationHandle new_handle(struct fg_physical_alloc *m)
{
    for (int i = 0; i < MAX_HANDLES; i++) {
        struct fg_physical_alloc *none = NULL;
        if (__atomic_compare_exchange_n(&handles[i].mem, &none, m, false,
                                        __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            return (CUmemGenericAllocationHandle)(uintptr_t)&handles[i];
    }
    fprintf(stderr, "fakegpu: more than %d VMM handles at once\n", MAX_HANDLES);
    abort();
}

static struct fg_handle *handle_at(CUmemGenericAllocationHandle h)
{
    struct fg_handle *e = (struct fg_handle *)(uintptr_t)h;
    return e >= handles && e < handles + MAX_HANDLES ? e : NULL;
}

static struct fg_physical_alloc *memory_of(CUmemGenericAllocationHandle h)
{
    struct fg_handle *e = handle_at(h);
    return e ? __atomic_load_n(&e->mem, __ATOMIC_ACQUIRE) : NULL;
}

/* Free h; its memory (NULL: not a live handle). One of two releases of
 * one handle at once gets it. */
static struct fg_physical_alloc *free_handle(CUmemGenericAllocationHandle h)
{
    struct fg_handle *e = handle_at(h);
    return e ? __atomic_exchange_n(&e->mem, NULL, __ATOMIC_ACQ_REL) : NULL;
}

EXPORT CUresult cuMemGetAllocationGranularity(size_t *g,
                                              const CUmemAllocationProp *prop,
                                              CUmemAllocationGranularity_flags f)
{
    (void)prop, (void)f;
    *g = FG_GRANULARITY;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
                            const CUmemAllocationProp *prop,
                            unsigned long long flags)
{
    (void)flags;
    FAIL_POINT("cuMemCreate");
    if (handle == NULL || prop == NULL || size == 0 || size % FG_GRANULARITY)
        return CUDA_ERROR_INVALID_VALUE;
    int physical = fg_physical(prop->location.id);
    if (physical < 0)
        return CUDA_ERROR_INVALID_DEVICE;
    if (!fg_reserve(physical, size))
        return CUDA_ERROR_OUT_OF_MEMORY;
    struct fg_physical_alloc *m = malloc(sizeof *m);
    *m = (struct fg_physical_alloc){physical, 1, size};
    *handle = new_handle(m);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle handle)
{
    FAIL_POINT("cuMemRelease");
    struct fg_physical_alloc *m = free_handle(handle);
    if (m == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    physical_put(m);
    fg_delay_us("FAKEGPU_VMM_RELEASE_DELAY_US");
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t align,
                                    CUdeviceptr addr, unsigned long long flags)
{
    (void)align, (void)addr, (void)flags;
    return fg_allocate((uint64_t *)ptr, size, 0, FG_RESERVE);
}

EXPORT CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size)
{
    (void)size;
    return fg_free(ptr, KIND(FG_RESERVE));
}

EXPORT CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset,
                         CUmemGenericAllocationHandle handle,
                         unsigned long long flags)
{
    (void)offset, (void)flags;
    struct fg_physical_alloc *m = memory_of(handle);
    if (m == NULL || size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    for (int i = 0; i < MAX_MAPPINGS; i++) {
        struct fg_physical_alloc *expected = NULL;
        if (__atomic_load_n(&mappings[i].mem, __ATOMIC_RELAXED) == NULL &&
            __atomic_compare_exchange_n(&mappings[i].mem, &expected, m, false,
                                        __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            mappings[i].va = ptr;
            mappings[i].size = size;
            __atomic_add_fetch(&m->refs, 1, __ATOMIC_ACQ_REL);
            return CUDA_SUCCESS;
        }
    }
    return CUDA_ERROR_OUT_OF_MEMORY;
}

/* As the driver: the range may cover several mappings, each whole. */
EXPORT CUresult cuMemUnmap(CUdeviceptr ptr, size_t size)
{
    int unmapped = 0;
    for (int i = 0; i < MAX_MAPPINGS; i++) {
        struct fg_physical_alloc *m = __atomic_load_n(&mappings[i].mem, __ATOMIC_ACQUIRE);
        if (m != NULL && mappings[i].va >= ptr && mappings[i].va < ptr + size &&
            __atomic_compare_exchange_n(&mappings[i].mem, &m, NULL, false,
                                        __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            physical_put(m);
            unmapped++;
        }
    }
    return unmapped ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

EXPORT CUresult cuMemRetainAllocationHandle(CUmemGenericAllocationHandle *handle,
                                            void *addr)
{
    uint64_t va = (uint64_t)(uintptr_t)addr;
    if (handle == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    for (int i = 0; i < MAX_MAPPINGS; i++) {
        struct fg_physical_alloc *m = __atomic_load_n(&mappings[i].mem, __ATOMIC_ACQUIRE);
        if (m != NULL && va >= mappings[i].va && va < mappings[i].va + mappings[i].size) {
            __atomic_add_fetch(&m->refs, 1, __ATOMIC_ACQ_REL);
            *handle = new_handle(m);
            return CUDA_SUCCESS;
        }
    }
    return CUDA_ERROR_INVALID_VALUE;
}

EXPORT CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size,
                               const CUmemAccessDesc *desc, size_t count)
{
    (void)ptr, (void)size, (void)desc, (void)count;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemExportToShareableHandle(void *out,
                                             CUmemGenericAllocationHandle h,
                                             CUmemAllocationHandleType type,
                                             unsigned long long flags)
{
    (void)type, (void)flags;
    struct fg_physical_alloc *m = memory_of(h);
    if (m == NULL || out == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    /* Same-process sharing only: the "handle" names the memory itself. */
    *(uint64_t *)out = (uint64_t)(uintptr_t)m;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemImportFromShareableHandle(CUmemGenericAllocationHandle *h,
                                               void *os_handle,
                                               CUmemAllocationHandleType type)
{
    (void)type;
    struct fg_physical_alloc *m = (struct fg_physical_alloc *)os_handle;
    if (m == NULL || h == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    __atomic_add_fetch(&m->refs, 1, __ATOMIC_ACQ_REL);
    *h = new_handle(m);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemGetAllocationPropertiesFromHandle(CUmemAllocationProp *prop,
                                                       CUmemGenericAllocationHandle h)
{
    struct fg_physical_alloc *m = memory_of(h);
    if (m == NULL || prop == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    memset(prop, 0, sizeof *prop);
    prop->type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop->location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    for (int i = 0; i < fg_visible_count(); i++)
        if (fg_physical(i) == m->physical)
            prop->location.id = i;
    return CUDA_SUCCESS;
}
