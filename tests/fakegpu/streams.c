/* The simulated driver's streams, events and stream-ordered pools.
 *
 * A pool holds what it reserved from the device (in chunks of
 * FAKEGPU_POOL_CHUNK, default 32 MiB; allocations are rounded to 2 MiB), not only
 * what is allocated from it, as the driver's pools do: a freed allocation
 * goes back to the pool's cache; a synchronization (stream, event or
 * context) gives back what exceeds the pool's release threshold (default
 * 0; PyTorch sets UINT64_MAX); cuMemPoolTrimTo gives back down to its
 * argument; destroying a pool gives back its cache. The ledger (state.c)
 * counts reserved bytes, as NVML does. A stream-ordered free takes effect
 * at the call. FAKEGPU_POOL_DELAY_US=n: a pool allocation waits n us before
 * it takes its memory, and cuMemPoolTrimTo n us after it gave memory back
 * (to widen a race for a test); FAKEGPU_GET_POOL_DELAY_US=n: cuDeviceGetMemPool
 * waits n us after it read the current pool. Work on streams and events:
 * exec.c. */
#include <pthread.h>
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

/* ---- Streams and events ---- */

struct fg_stream {
    int ordinal;
    CUcontext ctx; /* current at its creation: its work runs there */
};

EXPORT CUresult cuStreamCreate(CUstream *stream, unsigned int flags)
{
    (void)flags;
    int ordinal = fg_current_ordinal();
    if (stream == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (ordinal < 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    struct fg_stream *s = malloc(sizeof *s);
    s->ordinal = ordinal;
    cuCtxGetCurrent(&s->ctx);
    *stream = (CUstream)s;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamDestroy_v2(CUstream stream)
{
    fg_exec_forget_stream(stream);
    free(stream);
    return CUDA_SUCCESS;
}

static bool is_default_stream(CUstream s)
{
    return s == NULL || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD;
}

/* The stream's device; the default streams are the current context's. */
static int stream_ordinal(CUstream stream)
{
    return is_default_stream(stream) ? fg_current_ordinal()
                                     : ((struct fg_stream *)stream)->ordinal;
}

EXPORT CUresult cuStreamGetDevice(CUstream stream, CUdevice *dev)
{
    FAIL_POINT("cuStreamGetDevice"); /* as a driver before CUDA 12.8 lacks it */
    int ordinal = stream_ordinal(stream);
    if (dev == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (ordinal < 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    *dev = ordinal;
    return CUDA_SUCCESS;
}

CUcontext fg_stream_ctx(CUstream stream)
{
    return is_default_stream(stream) ? NULL : ((struct fg_stream *)stream)->ctx;
}

EXPORT CUresult cuStreamGetCtx(CUstream stream, CUcontext *pctx)
{
    if (pctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    CUcontext c = fg_stream_ctx(stream);
    return c != NULL ? (*pctx = c, CUDA_SUCCESS) : cuCtxGetCurrent(pctx);
}

EXPORT CUresult cuStreamGetDevice_ptsz(CUstream stream, CUdevice *dev)
{
    return cuStreamGetDevice(stream, dev);
}

EXPORT CUresult cuStreamSynchronize(CUstream stream)
{
    fg_exec_sync_stream(stream); /* exec.c: until its work has run */
    fg_pools_sync();
    return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamSynchronize_ptsz(CUstream stream)
{
    return cuStreamSynchronize(stream);
}

EXPORT CUresult cuCtxSynchronize_v2(CUcontext ctx)
{
    (void)ctx;
    fg_exec_sync_all();
    fg_pools_sync();
    return CUDA_SUCCESS;
}

/* Events are the execution model's (exec.c). */

/* ---- Pools ---- */

struct fg_pool {
    int ordinal;
    int physical;
    int is_default;
    int destroyed;     /* by cuMemPoolDestroy; lives on for its allocations */
    uint64_t reserved; /* taken from the device */
    uint64_t used;     /* handed out, in chunks */
    uint64_t threshold;
    struct fg_pool *next;
};

/* Every pool of this process, under one lock (the simulated driver: simple
 * beats fast). */
static pthread_mutex_t pools_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fg_pool *pools;
static struct fg_pool default_pools[FG_MAX_DEVICES];
static struct fg_pool *current_pools[FG_MAX_DEVICES];
static pthread_once_t pools_once = PTHREAD_ONCE_INIT;

static uint64_t round_up(uint64_t bytes, uint64_t unit)
{
    return (bytes + unit - 1) / unit * unit;
}

static uint64_t chunked(uint64_t bytes)
{
    return round_up(bytes, FG_GRANULARITY);
}

/* How much a pool grows by at least (some drivers reserve more than asked). */
static uint64_t growth_unit(void)
{
    const char *v = getenv("FAKEGPU_POOL_CHUNK");
    uint64_t mib = v ? strtoull(v, NULL, 10) : 0;
    return mib ? mib << 20 : FG_POOL_CHUNK;
}

/* As the driver: a fork child owns none of its parent's pool memory. */
static void forget_pools_in_child(void)
{
    pthread_mutex_init(&pools_lock, NULL);
    for (struct fg_pool *p = pools; p != NULL; p = p->next)
        p->reserved = p->used = 0;
}

static void pools_init(void)
{
    pthread_atfork(NULL, NULL, forget_pools_in_child);
}

/* Give back what p holds beyond max(used, keep) (caller holds the lock). */
static void shrink(struct fg_pool *p, uint64_t keep)
{
    uint64_t target = p->used > keep ? p->used : keep;
    if (p->reserved > target) {
        fg_release(p->physical, p->reserved - target);
        p->reserved = target;
    }
}

static struct fg_pool *default_pool(int ordinal)
{
    pthread_once(&pools_once, pools_init);
    struct fg_pool *p = &default_pools[ordinal];
    pthread_mutex_lock(&pools_lock);
    if (!p->is_default) {
        p->ordinal = ordinal;
        p->physical = fg_physical(ordinal);
        p->is_default = 1;
        p->next = pools;
        pools = p;
    }
    pthread_mutex_unlock(&pools_lock);
    return p;
}

static struct fg_pool *current_pool(int ordinal)
{
    struct fg_pool *p = __atomic_load_n(&current_pools[ordinal], __ATOMIC_ACQUIRE);
    return p ? p : default_pool(ordinal);
}

void fg_pools_sync(void)
{
    pthread_mutex_lock(&pools_lock);
    for (struct fg_pool *p = pools; p != NULL; p = p->next)
        if (p->reserved > p->threshold)
            shrink(p, p->threshold);
    pthread_mutex_unlock(&pools_lock);
}

void fg_pools_reset(int physical)
{
    pthread_mutex_lock(&pools_lock);
    for (struct fg_pool *p = pools; p != NULL; p = p->next)
        if (p->physical == physical) {
            p->used = 0;
            shrink(p, 0);
        }
    pthread_mutex_unlock(&pools_lock);
}

void fg_pool_free(const struct fg_alloc *a)
{
    struct fg_pool *p = a->pool;
    pthread_mutex_lock(&pools_lock);
    p->used -= chunked(a->size);
    if (p->destroyed)
        shrink(p, 0);
    pthread_mutex_unlock(&pools_lock);
}

static CUresult pool_allocate(uint64_t *dptr, uint64_t bytes, struct fg_pool *p)
{
    if (dptr == NULL || bytes == 0)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t need = chunked(bytes);
    fg_delay_us("FAKEGPU_POOL_DELAY_US");
    pthread_mutex_lock(&pools_lock);
    if (p->reserved - p->used < need) {
        uint64_t grow = round_up(p->used + need - p->reserved, growth_unit());
        if (!fg_reserve(p->physical, grow)) {
            pthread_mutex_unlock(&pools_lock);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        p->reserved += grow;
    }
    p->used += need;
    pthread_mutex_unlock(&pools_lock);
    uint64_t addr = fg_new_address(bytes);
    allocs_put((struct fg_alloc){addr, bytes, p->physical, FG_POOL, p, NULL}); /* the pool's */
    *dptr = addr;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytes, CUstream s)
{
    FAIL_POINT("cuMemAllocAsync");
    int ordinal = stream_ordinal(s);
    if (ordinal < 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (dptr != NULL && bytes > 0 &&
        fg_exec_capture_alloc(s, bytes, ordinal, (uint64_t *)dptr))
        return CUDA_SUCCESS; /* a memory node of the graph being captured */
    return pool_allocate((uint64_t *)dptr, bytes, current_pool(ordinal));
}

EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytes, CUstream s)
{
    return cuMemAllocAsync(dptr, bytes, s);
}

EXPORT CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream s)
{
    if (fg_exec_capture_free(s, dptr))
        return CUDA_SUCCESS;
    return fg_free(dptr, KIND(FG_POOL) | KIND(FG_PLAIN) | KIND(FG_GRAPH));
}

EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream s)
{
    return cuMemFreeAsync(dptr, s);
}

EXPORT CUresult cuDeviceGetDefaultMemPool(CUmemoryPool *pool, CUdevice dev)
{
    CUresult rc = fg_need_device(dev);
    if (rc == CUDA_SUCCESS)
        *pool = (CUmemoryPool)default_pool(dev);
    return rc;
}

EXPORT CUresult cuDeviceGetMemPool(CUmemoryPool *pool, CUdevice dev)
{
    CUresult rc = fg_need_device(dev);
    if (rc == CUDA_SUCCESS)
        *pool = (CUmemoryPool)current_pool(dev);
    fg_delay_us("FAKEGPU_GET_POOL_DELAY_US");
    return rc;
}

EXPORT CUresult cuDeviceSetMemPool(CUdevice dev, CUmemoryPool pool)
{
    CUresult rc = fg_need_device(dev);
    if (rc != CUDA_SUCCESS)
        return rc;
    struct fg_pool *p = (struct fg_pool *)pool;
    if (p == NULL || p->ordinal != dev)
        return CUDA_ERROR_INVALID_VALUE;
    __atomic_store_n(&current_pools[dev], p, __ATOMIC_RELEASE); /* publishes *p */
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *props)
{
    if (pool == NULL || props == NULL ||
        props->location.type != CU_MEM_LOCATION_TYPE_DEVICE ||
        fg_need_device(props->location.id) != CUDA_SUCCESS)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_once(&pools_once, pools_init);
    struct fg_pool *p = calloc(1, sizeof *p);
    p->ordinal = props->location.id;
    p->physical = fg_physical(p->ordinal);
    pthread_mutex_lock(&pools_lock);
    p->next = pools;
    pools = p;
    pthread_mutex_unlock(&pools_lock);
    *pool = (CUmemoryPool)p;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemPoolDestroy(CUmemoryPool pool)
{
    struct fg_pool *p = (struct fg_pool *)pool;
    if (p == NULL || p->is_default || p->destroyed)
        return CUDA_ERROR_INVALID_VALUE;
    /* Its allocations stay valid until freed; its cache goes now. The
     * record stays on the list (allocations point at it). */
    pthread_mutex_lock(&pools_lock);
    p->destroyed = 1;
    shrink(p, 0);
    pthread_mutex_unlock(&pools_lock);
    __atomic_compare_exchange_n(&current_pools[p->ordinal], &p, NULL, false,
                                __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t keep)
{
    struct fg_pool *p = (struct fg_pool *)pool;
    if (p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&pools_lock);
    shrink(p, keep);
    pthread_mutex_unlock(&pools_lock);
    fg_delay_us("FAKEGPU_POOL_DELAY_US");
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemPoolSetAttribute(CUmemoryPool pool, CUmemPool_attribute a,
                                      void *value)
{
    struct fg_pool *p = (struct fg_pool *)pool;
    if (p == NULL || value == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (a == CU_MEMPOOL_ATTR_RELEASE_THRESHOLD) {
        pthread_mutex_lock(&pools_lock);
        p->threshold = *(cuuint64_t *)value;
        pthread_mutex_unlock(&pools_lock);
    }
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemPoolGetAttribute(CUmemoryPool pool, CUmemPool_attribute a,
                                      void *value)
{
    struct fg_pool *p = (struct fg_pool *)pool;
    if (p == NULL || value == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&pools_lock);
    switch (a) {
    case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD: *(cuuint64_t *)value = p->threshold; break;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT: *(cuuint64_t *)value = p->reserved; break;
    case CU_MEMPOOL_ATTR_USED_MEM_CURRENT: *(cuuint64_t *)value = p->used; break;
    default: memset(value, 0, sizeof(int)); break;
    }
    pthread_mutex_unlock(&pools_lock);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemPoolGetAccess(CUmemAccess_flags *flags, CUmemoryPool pool,
                                   CUmemLocation *location)
{
    struct fg_pool *p = (struct fg_pool *)pool;
    if (p == NULL || flags == NULL || location == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *flags = location->type == CU_MEM_LOCATION_TYPE_DEVICE &&
                     location->id == p->ordinal
                 ? CU_MEM_ACCESS_FLAGS_PROT_READWRITE
                 : CU_MEM_ACCESS_FLAGS_PROT_NONE;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytes,
                                        CUmemoryPool pool, CUstream s)
{
    (void)s;
    FAIL_POINT("cuMemAllocFromPoolAsync");
    struct fg_pool *p = (struct fg_pool *)pool;
    if (p == NULL || p->destroyed)
        return CUDA_ERROR_INVALID_VALUE;
    return pool_allocate((uint64_t *)dptr, bytes, p);
}

EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytes,
                                             CUmemoryPool pool, CUstream s)
{
    return cuMemAllocFromPoolAsync(dptr, bytes, pool, s);
}
