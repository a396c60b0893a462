/* The simulated libcuda.so.1: devices, contexts, streams and every memory
 * call vgpu accounts, over the shared pool of state.c. Exported under the
 * driver's real symbol names, versioned variants included (cuda.h's internal
 * mode declares them all). */
#include <cuda.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "allocs.h"
#include "driver.h"
#include "fakegpu.h"

#define EXPORT __attribute__((visibility("default")))
#define FAIL_POINT(name)                                                       \
    do {                                                                       \
        if (fg_should_fail(name))                                              \
            return CUDA_ERROR_UNKNOWN;                                         \
    } while (0)

static int initialized;

/* ---- Contexts ---- */

struct fg_ctx {
    int ordinal;
    int physical;
    int refs;
    int primary;
    int green;
    int live;          /* started, not reset since */
    uint64_t overhead; /* device bytes the context itself takes */
    unsigned sms;      /* a green context's SMs (0: all the device's) */
    struct fg_ctx *next_dead; /* a destroyed green context: the next */
};

static struct fg_ctx primaries[FG_MAX_DEVICES];
static __thread struct fg_ctx *ctx_stack[16];
static __thread int ctx_depth;

static struct fg_ctx *current(void)
{
    return ctx_depth > 0 ? ctx_stack[ctx_depth - 1] : NULL;
}

int fg_current_ordinal(void)
{
    struct fg_ctx *c = current();
    return c ? c->ordinal : -1;
}

static uint64_t env_u64(const char *name)
{
    const char *v = getenv(name);
    return v ? strtoull(v, NULL, 10) : 0;
}

void fg_delay_us(const char *name)
{
    uint64_t us = env_u64(name);
    if (us)
        usleep((useconds_t)us);
}

/* SMs per device: FAKEGPU_SM_COUNT, or an H100's 132; partitions of them
 * (green contexts) come in groups of 8, as on compute capability 9.0. */
#define FG_SM_GROUP 8u

static unsigned sms_per_device;
static pthread_once_t sms_once = PTHREAD_ONCE_INIT;

static void read_sm_count(void)
{
    uint64_t n = env_u64("FAKEGPU_SM_COUNT");
    sms_per_device = n >= FG_SM_GROUP && n < 65536 ? (unsigned)n : 132;
}

static unsigned sm_count(void) /* read once: every launch asks */
{
    pthread_once(&sms_once, read_sm_count);
    return sms_per_device;
}

void fg_ctx_sms(CUcontext ctx, unsigned *sms, unsigned *total)
{
    struct fg_ctx *c = ctx != NULL ? (struct fg_ctx *)ctx : current();
    *total = sm_count();
    *sms = c && c->sms ? c->sms : *total;
}

static CUresult ctx_start(struct fg_ctx *c, int ordinal)
{
    c->ordinal = ordinal;
    c->physical = fg_physical(ordinal);
    uint64_t delay_ms = env_u64("FAKEGPU_CTX_DELAY_MS");
    if (delay_ms)
        usleep((useconds_t)(delay_ms * 1000));
    c->overhead = env_u64("FAKEGPU_CTX_BYTES");
    if (c->overhead && !fg_reserve(c->physical, c->overhead))
        return CUDA_ERROR_OUT_OF_MEMORY;
    c->live = 1;
    return CUDA_SUCCESS;
}

static void ctx_stop(struct fg_ctx *c)
{
    uint64_t delay_ms = env_u64("FAKEGPU_CTX_DELAY_MS"); /* teardown takes time too */
    if (delay_ms)
        usleep((useconds_t)(delay_ms * 1000));
    if (c->overhead)
        fg_release(c->physical, c->overhead);
    c->overhead = 0;
    c->live = 0;
}

/* Acquire: pairs with cuInit's release (threads may call cuInit again). */
static bool is_initialized(void)
{
    return __atomic_load_n(&initialized, __ATOMIC_ACQUIRE);
}

static CUresult need_device(CUdevice dev)
{
    if (!is_initialized())
        return CUDA_ERROR_NOT_INITIALIZED;
    return fg_physical(dev) < 0 ? CUDA_ERROR_INVALID_DEVICE : CUDA_SUCCESS;
}

CUresult fg_need_device(int dev)
{
    return need_device(dev);
}

static CUresult need_context(struct fg_ctx **out)
{
    if (!is_initialized())
        return CUDA_ERROR_NOT_INITIALIZED;
    *out = current();
    return *out ? CUDA_SUCCESS : CUDA_ERROR_INVALID_CONTEXT;
}

EXPORT CUresult cuInit(unsigned int flags)
{
    (void)flags;
    FAIL_POINT("cuInit");
    fg_self();
    __atomic_store_n(&initialized, 1, __ATOMIC_RELEASE);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDriverGetVersion(int *version)
{
    if (!version)
        return CUDA_ERROR_INVALID_VALUE;
    *version = 13000;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetCount(int *count)
{
    if (!is_initialized())
        return CUDA_ERROR_NOT_INITIALIZED;
    *count = fg_visible_count();
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGet(CUdevice *dev, int ordinal)
{
    CUresult rc = need_device(ordinal);
    if (rc == CUDA_SUCCESS)
        *dev = ordinal;
    return rc;
}

EXPORT CUresult cuDeviceGetName(char *name, int len, CUdevice dev)
{
    CUresult rc = need_device(dev);
    if (rc == CUDA_SUCCESS)
        snprintf(name, (size_t)len, "%s", fg_state()->dev[fg_physical(dev)].name);
    return rc;
}

static void uuid_bytes(const char *text, unsigned char out[16])
{
    /* "GPU-" then 32 hex digits with dashes. */
    int n = 0;
    for (const char *p = text + 4; *p && n < 32; p++) {
        if (*p == '-')
            continue;
        int v = (*p <= '9') ? *p - '0' : (*p | 0x20) - 'a' + 10;
        if (n % 2 == 0)
            out[n / 2] = (unsigned char)(v << 4);
        else
            out[n / 2] |= (unsigned char)v;
        n++;
    }
}

EXPORT CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice dev)
{
    CUresult rc = need_device(dev);
    if (rc == CUDA_SUCCESS)
        uuid_bytes(fg_state()->dev[fg_physical(dev)].uuid,
                   (unsigned char *)uuid->bytes);
    return rc;
}

EXPORT CUresult cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice dev)
{
    return cuDeviceGetUuid(uuid, dev);
}

EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)
{
    CUresult rc = need_device(dev);
    if (rc == CUDA_SUCCESS)
        *bytes = fg_state()->dev[fg_physical(dev)].total;
    return rc;
}

EXPORT CUresult cuDeviceTotalMem(unsigned int *bytes, CUdevice dev)
{
    size_t total;
    CUresult rc = cuDeviceTotalMem_v2(&total, dev);
    if (rc == CUDA_SUCCESS)
        *bytes = total > 0xffffffffu ? 0xffffffffu : (unsigned int)total;
    return rc;
}

EXPORT CUresult cuDeviceGetAttribute(int *value, CUdevice_attribute attr,
                                     CUdevice dev)
{
    CUresult rc = need_device(dev);
    if (rc != CUDA_SUCCESS)
        return rc;
    switch (attr) {
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *value = 9; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *value = 0; break;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *value = (int)sm_count(); break;
    case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID:
        *value = fg_state()->dev[fg_physical(dev)].pci_bus; break;
    case CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED:
    case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED:
    case CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY:
    case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: *value = 1; break;
    default: *value = 0; break;
    }
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetPCIBusId(char *bus, int len, CUdevice dev)
{
    CUresult rc = need_device(dev);
    if (rc == CUDA_SUCCESS)
        snprintf(bus, (size_t)len, "00000000:%02X:00.0",
                 fg_state()->dev[fg_physical(dev)].pci_bus);
    return rc;
}

static CUresult primary_retain(CUcontext *pctx, CUdevice dev)
{
    CUresult rc = need_device(dev);
    if (rc != CUDA_SUCCESS)
        return rc;
    struct fg_ctx *c = &primaries[dev];
    if (__atomic_fetch_add(&c->refs, 1, __ATOMIC_ACQ_REL) == 0 || !c->live) {
        c->primary = 1;
        rc = ctx_start(c, dev);
        if (rc != CUDA_SUCCESS) {
            __atomic_fetch_sub(&c->refs, 1, __ATOMIC_ACQ_REL);
            return rc;
        }
    }
    *pctx = (CUcontext)c;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
    FAIL_POINT("cuDevicePrimaryCtxRetain");
    return primary_retain(pctx, dev);
}

EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev)
{
    CUresult rc = need_device(dev);
    if (rc != CUDA_SUCCESS)
        return rc;
    struct fg_ctx *c = &primaries[dev];
    if (__atomic_load_n(&c->refs, __ATOMIC_ACQUIRE) <= 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0)
        ctx_stop(c);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRelease(CUdevice dev)
{
    return cuDevicePrimaryCtxRelease_v2(dev);
}

EXPORT CUresult cuDevicePrimaryCtxReset_v2(CUdevice dev)
{
    /* As the driver: the context and every allocation made in it go; the
     * context comes back at the next retain. */
    CUresult rc = need_device(dev);
    if (rc != CUDA_SUCCESS)
        return rc;
    struct fg_ctx *c = &primaries[dev];
    if (c->live)
        ctx_stop(c);
    c->physical = fg_physical(dev);
    /* FAKEGPU_CTX_OWNS_ALLOCS: only the primary context's allocations go,
     * as with the real driver; else every one on the device. */
    uint64_t bytes = getenv("FAKEGPU_CTX_OWNS_ALLOCS")
                         ? allocs_take_owned(c->physical, c)
                         : allocs_take_device(c->physical);
    if (bytes)
        fg_release(c->physical, bytes);
    fg_pools_reset(c->physical);
    fg_graph_mem_reset(c->physical);
    modules_drop_device(c->physical);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxGetState(CUdevice dev, unsigned int *flags,
                                           int *active)
{
    CUresult rc = need_device(dev);
    if (rc == CUDA_SUCCESS) {
        *flags = 0;
        *active = __atomic_load_n(&primaries[dev].refs, __ATOMIC_ACQUIRE) > 0;
    }
    return rc;
}

EXPORT CUresult cuDevicePrimaryCtxSetFlags_v2(CUdevice dev, unsigned int flags)
{
    (void)flags;
    return need_device(dev);
}

static CUresult create_context(CUcontext *pctx, CUdevice dev)
{
    FAIL_POINT("cuCtxCreate");
    CUresult rc = need_device(dev);
    if (rc != CUDA_SUCCESS)
        return rc;
    struct fg_ctx *c = calloc(1, sizeof *c);
    c->refs = 1;
    rc = ctx_start(c, dev);
    if (rc != CUDA_SUCCESS) {
        free(c);
        return rc;
    }
    if (ctx_depth < 16)
        ctx_stack[ctx_depth++] = c;
    *pctx = (CUcontext)c;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    (void)flags;
    return create_context(pctx, dev);
}

EXPORT CUresult cuCtxCreate_v3(CUcontext *pctx, CUexecAffinityParam *params,
                               int n, unsigned int flags, CUdevice dev)
{
    (void)params, (void)n, (void)flags;
    return create_context(pctx, dev);
}

EXPORT CUresult cuCtxCreate_v4(CUcontext *pctx, CUctxCreateParams *params,
                               unsigned int flags, CUdevice dev)
{
    (void)params, (void)flags;
    return create_context(pctx, dev);
}

/* The driver's first ABI of cuCtxCreate (before CUDA 3.2). */
EXPORT CUresult cuCtxCreate(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    (void)flags;
    return create_context(pctx, dev);
}

static void unstack(struct fg_ctx *c)
{
    for (int i = 0; i < ctx_depth; i++)
        if (ctx_stack[i] == c) {
            memmove(&ctx_stack[i], &ctx_stack[i + 1],
                    (size_t)(ctx_depth - i - 1) * sizeof c);
            ctx_depth--;
            break;
        }
}

EXPORT CUresult cuCtxDestroy_v2(CUcontext ctx)
{
    struct fg_ctx *c = (struct fg_ctx *)ctx;
    if (c == NULL || c->primary || c->green)
        return CUDA_ERROR_INVALID_CONTEXT;
    unstack(c);
    ctx_stop(c);
    if (getenv("FAKEGPU_CTX_OWNS_ALLOCS")) { /* its allocations go with it */
        uint64_t b = allocs_take_owned(c->physical, c);
        if (b)
            fg_release(c->physical, b);
    }
    free(c);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxDestroy(CUcontext ctx)
{
    return cuCtxDestroy_v2(ctx);
}

/* ---- SM resources and green contexts ---- */

/* Destroyed green contexts are kept, dead, so that a test sees a use of one
 * as an error (CUDA_ERROR_CONTEXT_IS_DESTROYED), not as a use after free;
 * linked here, they are no leak. */
static struct fg_ctx *dead_greens;
static pthread_mutex_t dead_lock = PTHREAD_MUTEX_INITIALIZER;

static bool dead(const struct fg_ctx *c)
{
    return c->green && !__atomic_load_n(&c->live, __ATOMIC_RELAXED);
}

static CUdevResource sm_resource(unsigned sms)
{
    CUdevResource r;
    memset(&r, 0, sizeof r);
    r.type = CU_DEV_RESOURCE_TYPE_SM;
    r.sm.smCount = sms;
    r.sm.minSmPartitionSize = FG_SM_GROUP;
    r.sm.smCoscheduledAlignment = FG_SM_GROUP;
    return r;
}

EXPORT CUresult cuDeviceGetDevResource(CUdevice dev, CUdevResource *res,
                                       CUdevResourceType type)
{
    FAIL_POINT("cuDeviceGetDevResource");
    CUresult rc = need_device(dev);
    if (rc != CUDA_SUCCESS)
        return rc;
    if (res == NULL || type != CU_DEV_RESOURCE_TYPE_SM)
        return CUDA_ERROR_INVALID_VALUE;
    *res = sm_resource(sm_count());
    return CUDA_SUCCESS;
}

/* A context's SMs: a green one's share, or the device's. */
EXPORT CUresult cuCtxGetDevResource(CUcontext ctx, CUdevResource *res,
                                    CUdevResourceType type)
{
    struct fg_ctx *c = (struct fg_ctx *)ctx;
    if (c == NULL)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (dead(c))
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    if (res == NULL || type != CU_DEV_RESOURCE_TYPE_SM)
        return CUDA_ERROR_INVALID_VALUE;
    *res = sm_resource(c->sms ? c->sms : sm_count());
    return CUDA_SUCCESS;
}

/* As the driver: minCount rounded up to whole groups of 8 SMs, as many
 * such groups as fit (at most *nbGroups), the rest in `remaining`. */
EXPORT CUresult cuDevSmResourceSplitByCount(CUdevResource *result,
                                            unsigned int *nbGroups,
                                            const CUdevResource *input,
                                            CUdevResource *remaining,
                                            unsigned int flags,
                                            unsigned int minCount)
{
    (void)flags;
    FAIL_POINT("cuDevSmResourceSplitByCount");
    if (nbGroups == NULL || input == NULL ||
        input->type != CU_DEV_RESOURCE_TYPE_SM || minCount > input->sm.smCount)
        return CUDA_ERROR_INVALID_VALUE;
    unsigned size = minCount < FG_SM_GROUP ? FG_SM_GROUP : minCount;
    size = (size + FG_SM_GROUP - 1) / FG_SM_GROUP * FG_SM_GROUP;
    unsigned fit = input->sm.smCount / size;
    if (result == NULL) {
        *nbGroups = fit;
        return CUDA_SUCCESS;
    }
    unsigned n = *nbGroups < fit ? *nbGroups : fit;
    for (unsigned i = 0; i < n; i++)
        result[i] = sm_resource(size);
    if (remaining)
        *remaining = sm_resource(input->sm.smCount - n * size);
    *nbGroups = n;
    return n ? CUDA_SUCCESS : CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION;
}

/* The descriptor carries its SM count in the handle itself (odd, so never
 * NULL): nothing to allocate, nothing to free, as the driver's API has no
 * destroy for it. */
EXPORT CUresult cuDevResourceGenerateDesc(CUdevResourceDesc *desc,
                                          CUdevResource *resources,
                                          unsigned int n)
{
    FAIL_POINT("cuDevResourceGenerateDesc");
    if (desc == NULL || resources == NULL || n == 0)
        return CUDA_ERROR_INVALID_VALUE;
    uintptr_t sms = 0;
    for (unsigned i = 0; i < n; i++) {
        if (resources[i].type != CU_DEV_RESOURCE_TYPE_SM)
            return CUDA_ERROR_INVALID_RESOURCE_TYPE;
        sms += resources[i].sm.smCount;
    }
    *desc = (CUdevResourceDesc)(sms << 1 | 1);
    return CUDA_SUCCESS;
}

static unsigned desc_sms(CUdevResourceDesc desc)
{
    return desc ? (unsigned)((uintptr_t)desc >> 1) : 0; /* NULL: all */
}

/* Green contexts: on a share of the SMs (the descriptor's); as the driver,
 * each retains the device's primary context and shares its memory, taking
 * none of its own. cuCtxFromGreenCtx names it as a CUcontext, allocating
 * nothing. */
EXPORT CUresult cuGreenCtxCreate(CUgreenCtx *pctx, CUdevResourceDesc desc,
                                 CUdevice dev, unsigned int flags)
{
    FAIL_POINT("cuGreenCtxCreate");
    if (pctx == NULL || !(flags & CU_GREEN_CTX_DEFAULT_STREAM))
        return CUDA_ERROR_INVALID_VALUE;
    CUcontext primary;
    CUresult rc = primary_retain(&primary, dev);
    if (rc != CUDA_SUCCESS)
        return rc;
    struct fg_ctx *c = calloc(1, sizeof *c);
    c->refs = 1;
    c->green = 1;
    c->ordinal = dev;
    c->physical = fg_physical(dev);
    c->live = 1;
    c->sms = desc_sms(desc);
    *pctx = (CUgreenCtx)c;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGreenCtxDestroy(CUgreenCtx ctx)
{
    struct fg_ctx *c = (struct fg_ctx *)ctx;
    if (c == NULL || !c->green || dead(c))
        return CUDA_ERROR_INVALID_CONTEXT;
    unstack(c);
    __atomic_store_n(&c->live, 0, __ATOMIC_RELAXED); /* a test's flag */
    pthread_mutex_lock(&dead_lock);
    c->next_dead = dead_greens;
    dead_greens = c;
    pthread_mutex_unlock(&dead_lock);
    return cuDevicePrimaryCtxRelease_v2(c->ordinal); /* its retain of the primary */
}

EXPORT CUresult cuCtxFromGreenCtx(CUcontext *pctx, CUgreenCtx ctx)
{
    if (pctx == NULL || ctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *pctx = (CUcontext)ctx;
    return CUDA_SUCCESS;
}

static CUresult set_current(CUcontext ctx)
{
    if (ctx == NULL) {
        if (ctx_depth > 0)
            ctx_depth--;
        return CUDA_SUCCESS;
    }
    if (dead((struct fg_ctx *)ctx))
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    if (ctx_depth == 0)
        ctx_depth = 1;
    ctx_stack[ctx_depth - 1] = (struct fg_ctx *)ctx;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxSetCurrent(CUcontext ctx)
{
    return set_current(ctx);
}

/* The runtime's own way of making its primary context current (through
 * the driver's private entry points), which no hook sees: for tests of
 * what vgpu does when it is done behind its back. Not a CUDA API. */
EXPORT CUresult fakegpu_primary_current_unhooked(CUdevice dev)
{
    CUresult rc = need_device(dev);
    return rc != CUDA_SUCCESS ? rc : set_current((CUcontext)&primaries[dev]);
}

EXPORT CUresult cuCtxGetCurrent(CUcontext *pctx)
{
    *pctx = (CUcontext)current();
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxPushCurrent_v2(CUcontext ctx)
{
    if (ctx_depth >= 16)
        return CUDA_ERROR_INVALID_VALUE;
    ctx_stack[ctx_depth++] = (struct fg_ctx *)ctx;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxPopCurrent_v2(CUcontext *pctx)
{
    if (ctx_depth == 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    struct fg_ctx *c = ctx_stack[--ctx_depth];
    if (pctx)
        *pctx = (CUcontext)c;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxGetDevice(CUdevice *dev)
{
    struct fg_ctx *c;
    CUresult rc = need_context(&c);
    if (rc == CUDA_SUCCESS)
        *dev = c->ordinal;
    return rc;
}

EXPORT CUresult cuCtxSynchronize(void)
{
    fg_exec_sync_all(); /* exec.c: until this process's work has run */
    fg_pools_sync(); /* as the driver: pools shrink to their threshold */
    return CUDA_SUCCESS;
}

/* ---- Plain device memory ---- */

CUresult fg_allocate(uint64_t *dptr, uint64_t bytes, int physical, int kind)
{
    if (dptr == NULL || bytes == 0)
        return CUDA_ERROR_INVALID_VALUE;
    fg_delay_us("FAKEGPU_ALLOC_DELAY_US"); /* a real cuMemAlloc: tens of µs */
    if (kind != FG_MANAGED && kind != FG_RESERVE && !fg_reserve(physical, bytes))
        return CUDA_ERROR_OUT_OF_MEMORY;
    uint64_t addr = fg_new_address(bytes);
    allocs_put((struct fg_alloc){addr, bytes, physical, kind, NULL, current()});
    *dptr = addr;
    return CUDA_SUCCESS;
}

CUresult fg_free(uint64_t key, int kinds)
{
    if (key == 0)
        return CUDA_SUCCESS; /* freeing NULL is allowed */
    struct fg_alloc a;
    if (!allocs_take(key, &a))
        return CUDA_ERROR_INVALID_VALUE;
    if (!(KIND(a.kind) & kinds)) {
        allocs_put(a);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (a.kind == FG_POOL)
        fg_pool_free(&a); /* back to its pool's cache */
    else if (a.kind == FG_GRAPH)
        fg_graph_mem_free(&a); /* back to the graph pool's cache */
    else if (a.kind != FG_MANAGED && a.kind != FG_RESERVE)
        fg_release(a.dev, a.size);
    /* Gone from the ledger (and NVML) before the call returns. */
    fg_delay_us("FAKEGPU_FREE_DELAY_US");
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytes)
{
    FAIL_POINT("cuMemAlloc");
    struct fg_ctx *c;
    CUresult rc = need_context(&c);
    return rc ? rc : fg_allocate((uint64_t *)dptr, bytes, c->physical, FG_PLAIN);
}

EXPORT CUresult cuMemAlloc(CUdeviceptr_v1 *dptr, unsigned int bytes)
{
    CUdeviceptr p = 0;
    CUresult rc = cuMemAlloc_v2(&p, bytes);
    struct fg_alloc a;
    if (rc == CUDA_SUCCESS && allocs_take(p, &a)) {
        /* The 32-bit API sees 32-bit addresses: key it by what it sees. */
        a.key = (CUdeviceptr_v1)p;
        allocs_put(a);
    }
    *dptr = (CUdeviceptr_v1)p;
    return rc;
}

EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pitch,
                                   size_t width, size_t height,
                                   unsigned int elem)
{
    (void)elem;
    if (pitch == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *pitch = (width + 511) / 512 * 512;
    return cuMemAlloc_v2(dptr, *pitch * height);
}

/* The pre-3.2 ABI (32-bit sizes and pointers), still exported. */
EXPORT CUresult cuMemAllocPitch(CUdeviceptr_v1 *dptr, unsigned int *pitch,
                                unsigned int width, unsigned int height,
                                unsigned int elem)
{
    CUdeviceptr p = 0;
    size_t wide = 0;
    CUresult rc = cuMemAllocPitch_v2(&p, &wide, width, height, elem);
    struct fg_alloc a;
    if (rc == CUDA_SUCCESS && allocs_take(p, &a)) { /* known by its v1 value */
        a.key = (CUdeviceptr_v1)p;
        allocs_put(a);
    }
    if (rc == CUDA_SUCCESS) {
        *dptr = (CUdeviceptr_v1)p;
        *pitch = (unsigned int)wide;
    }
    return rc;
}

EXPORT CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytes,
                                  unsigned int flags)
{
    (void)flags;
    struct fg_ctx *c;
    CUresult rc = need_context(&c);
    return rc ? rc : fg_allocate((uint64_t *)dptr, bytes, c->physical, FG_MANAGED);
}

EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr)
{
    FAIL_POINT("cuMemFree");
    return fg_free(dptr, KIND(FG_PLAIN) | KIND(FG_MANAGED) | KIND(FG_POOL) |
                             KIND(FG_GRAPH));
}

EXPORT CUresult cuMemFree(CUdeviceptr_v1 dptr)
{
    return cuMemFree_v2(dptr);
}

EXPORT CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total)
{
    if (free_bytes == NULL || total == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    struct fg_ctx *c;
    CUresult rc = need_context(&c);
    if (rc != CUDA_SUCCESS)
        return rc;
    fg_reap();
    struct fg_device *d = &fg_state()->dev[c->physical];
    uint64_t used = __atomic_load_n(&d->used, __ATOMIC_RELAXED);
    *total = d->total;
    *free_bytes = used > d->total ? 0 : d->total - used;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemGetInfo(unsigned int *free_bytes, unsigned int *total)
{
    size_t f, t;
    CUresult rc = cuMemGetInfo_v2(&f, &t);
    if (rc == CUDA_SUCCESS) {
        *free_bytes = f > 0xffffffffu ? 0xffffffffu : (unsigned int)f;
        *total = t > 0xffffffffu ? 0xffffffffu : (unsigned int)t;
    }
    return rc;
}

EXPORT CUresult cuMemGetAddressRange_v2(CUdeviceptr *base, size_t *size,
                                        CUdeviceptr dptr)
{
    struct fg_alloc a;
    if (!allocs_find_range(dptr, &a))
        return CUDA_ERROR_NOT_FOUND;
    if (base)
        *base = a.key;
    if (size)
        *size = a.size;
    return CUDA_SUCCESS;
}

/* ---- Arrays ---- */

static uint64_t format_bytes(CUarray_format f)
{
    switch (f) {
    case CU_AD_FORMAT_UNSIGNED_INT16: case CU_AD_FORMAT_SIGNED_INT16:
    case CU_AD_FORMAT_HALF:
    case CU_AD_FORMAT_UNORM_INT16X1: case CU_AD_FORMAT_UNORM_INT16X2:
    case CU_AD_FORMAT_UNORM_INT16X4: case CU_AD_FORMAT_SNORM_INT16X1:
    case CU_AD_FORMAT_SNORM_INT16X2: case CU_AD_FORMAT_SNORM_INT16X4: return 2;
    case CU_AD_FORMAT_UNSIGNED_INT32: case CU_AD_FORMAT_SIGNED_INT32:
    case CU_AD_FORMAT_FLOAT: return 4;
    default: return 1;
    }
}

static CUresult create_array(uint64_t *handle, uint64_t bytes)
{
    FAIL_POINT("cuArrayCreate");
    struct fg_ctx *c;
    CUresult rc = need_context(&c);
    return rc ? rc : fg_allocate(handle, bytes, c->physical, FG_ARRAY);
}

static uint64_t extent(size_t v) { return v ? v : 1; }

EXPORT CUresult cuArrayCreate_v2(CUarray *arr, const CUDA_ARRAY_DESCRIPTOR *d)
{
    if (d == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    return create_array((uint64_t *)arr, d->Width * extent(d->Height) *
                        d->NumChannels * format_bytes(d->Format));
}

EXPORT CUresult cuArray3DCreate_v2(CUarray *arr, const CUDA_ARRAY3D_DESCRIPTOR *d)
{
    if (d == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    return create_array((uint64_t *)arr, d->Width * extent(d->Height) *
                        extent(d->Depth) * d->NumChannels *
                        format_bytes(d->Format));
}

EXPORT CUresult cuArrayCreate(CUarray *arr, const CUDA_ARRAY_DESCRIPTOR_v1 *d)
{
    if (d == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    return create_array((uint64_t *)arr, (uint64_t)d->Width * extent(d->Height) *
                        d->NumChannels * format_bytes(d->Format));
}

EXPORT CUresult cuArray3DCreate(CUarray *arr, const CUDA_ARRAY3D_DESCRIPTOR_v1 *d)
{
    if (d == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    return create_array((uint64_t *)arr, (uint64_t)d->Width * extent(d->Height) *
                        extent(d->Depth) * d->NumChannels * format_bytes(d->Format));
}

EXPORT CUresult cuArrayDestroy(CUarray arr)
{
    return fg_free((uint64_t)(uintptr_t)arr, KIND(FG_ARRAY));
}

EXPORT CUresult cuMipmappedArrayCreate(CUmipmappedArray *arr,
                                       const CUDA_ARRAY3D_DESCRIPTOR *d,
                                       unsigned int levels)
{
    if (d == NULL || levels == 0)
        return CUDA_ERROR_INVALID_VALUE;
    /* Each level halves every extent of the one above (a 1D one's only
     * its width; layers and cube faces stay). */
    uint64_t w = d->Width, h = d->Height, z = d->Depth, total = 0;
    bool layers = d->Flags & (CUDA_ARRAY3D_LAYERED | CUDA_ARRAY3D_CUBEMAP);
    for (unsigned int l = 0; l < levels; l++) {
        total += extent(w) * extent(h) * extent(z) * d->NumChannels *
                 format_bytes(d->Format);
        w = w > 1 ? w / 2 : w;
        h = h > 1 ? h / 2 : h;
        z = !layers && z > 1 ? z / 2 : z;
    }
    return create_array((uint64_t *)arr, total ? total : 1);
}

EXPORT CUresult cuMipmappedArrayDestroy(CUmipmappedArray arr)
{
    return fg_free((uint64_t)(uintptr_t)arr, KIND(FG_ARRAY));
}

/* ---- Errors ---- */

EXPORT CUresult cuGetErrorString(CUresult e, const char **s)
{
    switch (e) {
    case CUDA_SUCCESS: *s = "no error"; break;
    case CUDA_ERROR_OUT_OF_MEMORY: *s = "out of memory"; break;
    case CUDA_ERROR_INVALID_VALUE: *s = "invalid argument"; break;
    case CUDA_ERROR_NOT_INITIALIZED: *s = "initialization error"; break;
    case CUDA_ERROR_INVALID_CONTEXT: *s = "invalid device context"; break;
    default: *s = "unknown error"; break;
    }
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGetErrorName(CUresult e, const char **s)
{
    switch (e) {
    case CUDA_SUCCESS: *s = "CUDA_SUCCESS"; break;
    case CUDA_ERROR_OUT_OF_MEMORY: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break;
    case CUDA_ERROR_INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; break;
    default: *s = "CUDA_ERROR_UNKNOWN"; break;
    }
    return CUDA_SUCCESS;
}

/* ---- The ledger, for tests (not a CUDA API) ---- */

EXPORT uint64_t fakegpu_device_used(int physical)
{
    fg_reap();
    return __atomic_load_n(&fg_state()->dev[physical].used, __ATOMIC_RELAXED);
}

EXPORT uint64_t fakegpu_device_peak(int physical)
{
    return __atomic_load_n(&fg_state()->dev[physical].peak, __ATOMIC_RELAXED);
}

EXPORT uint64_t fakegpu_nvml_process_lists(void)
{
    return __atomic_load_n(&fg_state()->nvml_process_lists, __ATOMIC_RELAXED);
}

EXPORT uint64_t fakegpu_process_used(int physical)
{
    return __atomic_load_n(&fg_self()->used[physical], __ATOMIC_RELAXED);
}
