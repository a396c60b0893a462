/* Stream-ordered allocation and its pools. A pool holds what it reserved
 * from the device, not only what is allocated from it: a freed allocation
 * stays in the pool's cache (all of it with PyTorch's release threshold of
 * UINT64_MAX) until a synchronization releases what exceeds the threshold,
 * a trim, or the pool's destruction. So each pool this process uses has
 * one charge, never below what it holds:
 *
 *  - before the driver is asked, an allocation charges what the pool's
 *    cache does not cover: what the pool uses (CU_MEMPOOL_ATTR_USED_MEM_
 *    CURRENT), plus the allocations in flight, plus this one rounded up to
 *    the driver's 2 MiB granularity, less what is charged; where that is
 *    more than nothing, the pool grows, by whole 32 MiB chunks that hold
 *    this allocation at worst, and by up to the most it ever grew beyond
 *    such an estimate (a driver that reserves larger chunks): that is
 *    charged too; so reserved memory is charged before the driver can
 *    take it;
 *  - after the driver answered, after a synchronization, a trim or a
 *    destruction, the charge is set to what the driver says the pool
 *    reserves (CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT): growth beyond the estimate (the driver reserves in chunks) is
 *    charged, or, over the limit, the allocation is freed and refused;
 *    what the driver released is uncharged (only while no allocation of
 *    the pool is between its charge and its settle);
 *  - a charge that would fail anywhere (a plain cuMemAlloc too) first
 *    trims this process's pools on that device and tries once more;
 *  - a trim (ours or the program's) waits until no allocation of the pool
 *    is between its charge and its settle, and holds new ones back until
 *    it is settled: an allocation charged as held by the cache never finds
 *    a trim took it (the driver would take a whole new chunk for it,
 *    beyond the charge), and none is charged against the cache of a trim
 *    not yet settled. A synchronization that releases cache above the
 *    release threshold on another thread still can (the driver's doing,
 *    not held back here): the allocation's settle then finds the pool
 *    grown past the limit and gives it back, refused.
 *
 * Allocations are charged to the pool's device (cuMemAllocAsync: the
 * stream's device's current pool, read once: the driver is asked for that
 * pool by name), whatever the current context, and from
 * threads that have none. A pool whose reserved size cannot be read is
 * charged what is live in it (one log line). Pools shared from another
 * process (cuMemPoolImportFromShareableHandle) are the exporter's. */
#include "hook/pools.h"

#include <pthread.h>
#include <string.h>

#include "atomic.h"
#include "hook/account.h"
#include "hook/charge.h"
#include "hook/real.h"
#include "log.h"

#define EXPORT __attribute__((visibility("default")))
#define MAX_POOLS 256
#define GRANULARITY (2ull << 20) /* allocations in a pool are rounded to this */
/* A pool that must grow takes whole chunks of this size, whatever the size
 * asked: an H100 with driver 580 reserves 32 MiB for a 4 KiB allocation
 * from a fresh pool, 1024 MiB for 1000 MiB (`facts_probe pool`). A driver
 * with larger chunks is learned (slack). */
#define GROWTH_CHUNK (32ull << 20)
#define HOST_POOL (-2)           /* a pool of host memory: not counted */

struct pool {
    CUmemoryPool handle; /* NULL: a free record */
    int dev;             /* CUDA ordinal of its memory, or HOST_POOL */
    bool destroyed;      /* by cuMemPoolDestroy; kept while allocations live */
    bool blind;          /* its reserved size cannot be read: live only */
    int inflight;        /* allocations between their charge and settle */
    int trimming;        /* trims waiting for inflight to fall to 0 */
    uint64_t pending;    /* their bytes, rounded up to the granularity */
    uint64_t slack;      /* most the pool ever grew beyond its estimate */
    uint64_t charged;    /* bytes charged to the region for this pool */
    uint64_t live;       /* bytes allocated from it and not freed, rounded */
    uint64_t threshold;  /* its release threshold */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
/* Signalled when a pool's inflight falls to 0 or its trim is done. */
static pthread_cond_t idle = PTHREAD_COND_INITIALIZER;
static struct pool pools[MAX_POOLS];
static int used_records; /* records in use; read without the lock as a hint */
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* A fork child holds none of its parent's pool memory (nor its charges). */
static void forget_in_child(void)
{
    pthread_mutex_init(&lock, NULL);
    pthread_cond_init(&idle, NULL);
    memset(pools, 0, sizeof pools);
    used_records = 0;
}

static void init(void)
{
    pthread_atfork(NULL, NULL, forget_in_child);
}

static void lock_pools(void)
{
    pthread_once(&once, init);
    pthread_mutex_lock(&lock);
}

static struct pool *find(CUmemoryPool handle)
{
    for (int i = 0; i < MAX_POOLS; i++)
        if (pools[i].handle == handle && !pools[i].destroyed)
            return &pools[i];
    return NULL;
}

static struct pool *record(CUmemoryPool handle, int dev)
{
    struct pool *p = find(handle);
    if (p != NULL || (dev < 0 && dev != HOST_POOL))
        return p;
    for (int i = 0; i < MAX_POOLS; i++)
        if (pools[i].handle == NULL) {
            pools[i] = (struct pool){.handle = handle, .dev = dev};
            cuuint64_t t = 0;
            if (REAL(cuMemPoolGetAttribute) &&
                REAL(cuMemPoolGetAttribute)(handle, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                                            &t) == CUDA_SUCCESS)
                pools[i].threshold = t;
            atomic_add(&used_records, 1, RELAXED); /* a hint for sync hooks */
            return &pools[i];
        }
    static int warned;
    if (!atomic_xchg(&warned, 1, RELAXED)) /* relaxed: only picks who logs */
        log_warn("more than %d memory pools: the cache of the others is not "
                 "counted", MAX_POOLS);
    return NULL;
}

/* A destroyed pool whose allocations are all freed: its record is free. */
static void recycle(struct pool *p)
{
    if (p->destroyed && p->live == 0 && p->inflight == 0 && p->trimming == 0 &&
        p->charged == 0) {
        memset(p, 0, sizeof *p);
        atomic_sub(&used_records, 1, RELAXED); /* a hint */
    }
}

static int pool_index(const struct pool *p)
{
    return (int)(p - pools);
}

static uint64_t round_up(uint64_t bytes, uint64_t unit)
{
    return (bytes + unit - 1) / unit * unit;
}

static uint64_t rounded(uint64_t bytes)
{
    return round_up(bytes, GRANULARITY);
}

/* One of p's sizes as the driver reports it. False (and p is blind from
 * now on, counted by what is live in it) when it cannot. */
static bool query(struct pool *p, CUmemPool_attribute attr, uint64_t *value)
{
    cuuint64_t v = 0;
    if (p->destroyed || p->blind)
        return false;
    if (REAL(cuMemPoolGetAttribute) == NULL ||
        REAL(cuMemPoolGetAttribute)(p->handle, attr, &v) != CUDA_SUCCESS) {
        p->blind = true;
        log_warn("a memory pool's sizes cannot be read: only what is "
                 "allocated from it is counted");
        return false;
    }
    *value = v;
    return true;
}

/* Set p's charge to what it holds: what the driver says it reserves, else
 * what is live in it. False: it grew past the limit (the growth is not
 * charged). Caller holds the lock. */
static bool settle(struct pool *p)
{
    if (p->dev == HOST_POOL)
        return true;
    uint64_t target = p->live, reserved;
    if (query(p, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, &reserved))
        target = reserved;
    struct vgpu_region *r = account_region();
    if (target > p->charged) {
        if (!vgpu_region_try_charge(r, p->dev, target - p->charged, VGPU_CHARGE_DATA))
            return false;
        p->charged = target;
    } else if (target < p->charged && p->inflight == 0) {
        vgpu_region_uncharge(r, p->dev, p->charged - target, VGPU_CHARGE_DATA);
        p->charged = target;
    }
    return true;
}

/* Charge what p's cache does not cover of bytes (caller holds the lock). */
static bool reserve_locked(struct pool *p, uint64_t bytes)
{
    uint64_t used = p->live, reserved = p->charged;
    query(p, CU_MEMPOOL_ATTR_USED_MEM_CURRENT, &used);
    query(p, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, &reserved);
    uint64_t want = used + p->pending + rounded(bytes);
    if (want > p->charged || want > reserved) { /* the pool will grow */
        /* at worst by whole new chunks holding all of this allocation, and
         * from what the driver reserves: that is below the charge after a
         * synchronization released some of it and before its settle */
        uint64_t grown = 0;
        if (want > reserved)
            grown = reserved + round_up(want - reserved, GROWTH_CHUNK);
        if (want > p->charged && grown < p->charged + round_up(bytes, GROWTH_CHUNK))
            grown = p->charged + round_up(bytes, GROWTH_CHUNK);
        want = (want > grown ? want : grown) + p->slack;
    }
    uint64_t need = want > p->charged ? want - p->charged : 0;
    if (need > 0 &&
        !vgpu_region_try_charge(account_region(), p->dev, need, VGPU_CHARGE_DATA))
        return false;
    p->charged += need;
    p->pending += rounded(bytes);
    p->inflight++;
    return true;
}

/* pthread_cond_wait on `idle` (caller holds the lock), not a cancellation
 * point here: a thread cancelled in it would leave with the lock held and
 * its count raised, and every pool hook after it would wait for ever. */
static void wait_idle(void)
{
    int state;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &state);
    pthread_cond_wait(&idle, &lock);
    pthread_setcancelstate(state, NULL);
}

/* Trim p's pool (handle) in the driver down to keep, and settle its charge
 * (caller holds the lock). First waits until none of its allocations is
 * between its charge and its settle, and holds new ones back until the
 * settle (reserve): such an allocation may have been charged as held by
 * the cache that the trim releases, and none may be charged against the
 * cache of a trim not yet settled. The driver's trim runs without the lock
 * (it may take long, and must not meet our lock if it calls our hooks):
 * `trimming` keeps p's reserves out meanwhile and its record alive. A pool
 * destroyed while this waited is not trimmed (CUDA_ERROR_INVALID_VALUE:
 * its handle may be another pool's by now). Returns the bytes uncharged. */
static uint64_t trim_locked(struct pool *p, CUmemoryPool handle, size_t keep,
                            CUresult *rc)
{
    p->trimming++;
    while (p->inflight > 0)
        wait_idle();
    CUresult r = CUDA_ERROR_INVALID_VALUE;
    bool live = !p->destroyed && p->handle == handle;
    if (live) {
        release_begin(); /* the cache may go (see charge.h) */
        pthread_mutex_unlock(&lock);
        r = REAL(cuMemPoolTrimTo) ? REAL(cuMemPoolTrimTo)(handle, keep)
                                  : CUDA_ERROR_NOT_SUPPORTED;
        pthread_mutex_lock(&lock);
    }
    uint64_t before = p->charged;
    if (live && !p->destroyed)
        settle(p);
    if (live)
        release_end();
    uint64_t after = p->charged;
    p->trimming--;
    pthread_cond_broadcast(&idle); /* the reserves it held back */
    recycle(p);
    if (rc != NULL)
        *rc = r;
    return before > after ? before - after : 0;
}

uint64_t pools_give_back(int dev)
{
    if (atomic_load_n(&used_records, RELAXED) == 0) /* a hint: no pool known */
        return 0;
    uint64_t given = 0;
    lock_pools();
    for (int i = 0; i < MAX_POOLS; i++)
        if (pools[i].handle && !pools[i].destroyed && pools[i].dev == dev &&
            pools[i].charged > pools[i].live)
            given += trim_locked(&pools[i], pools[i].handle, 0, NULL);
    pthread_mutex_unlock(&lock);
    return given;
}

void pools_freed(const struct ledger_entry *e)
{
    lock_pools();
    struct pool *p = &pools[e->pool - 1];
    uint64_t bytes = rounded(e->bytes);
    p->live -= bytes < p->live ? bytes : p->live;
    /* A live pool keeps the bytes cached; a destroyed one or a blind one
     * charges only what is live. */
    if (p->destroyed || p->blind)
        settle(p);
    recycle(p);
    pthread_mutex_unlock(&lock);
}

void pools_drop_device(int dev)
{
    lock_pools();
    for (int i = 0; i < MAX_POOLS; i++) {
        struct pool *p = &pools[i];
        if (p->handle == NULL || p->dev != dev)
            continue;
        vgpu_region_uncharge(account_region(), dev, p->charged, VGPU_CHARGE_DATA);
        p->charged = p->live = 0; /* in-flight ones keep their pending */
        recycle(p);
    }
    pthread_mutex_unlock(&lock);
}

/* ---- Which device ---- */

static bool default_stream(CUstream s)
{
    return s == NULL || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD;
}

/* The device a stream runs on; the default streams are the current
 * context's. -1: unknown. */
static int stream_device(CUstream s, bool *exact)
{
    CUdevice dev;
    *exact = true; /* a default stream is the current context's */
    if (default_stream(s))
        return account_current_device();
    if (REAL(cuStreamGetDevice) && REAL(cuStreamGetDevice)(s, &dev) == CUDA_SUCCESS)
        return dev;
    *exact = false; /* a driver before CUDA 12.8: the current context's, a guess */
    return account_current_device();
}

/* The device whose memory a pool holds, for a pool we did not see made:
 * the device that always has access to it, its own. */
static int pool_device(CUmemoryPool handle, CUstream s)
{
    int count = 0;
    if (REAL(cuMemPoolGetAccess) && REAL(cuDeviceGetCount) &&
        REAL(cuDeviceGetCount)(&count) == CUDA_SUCCESS)
        for (int d = 0; d < count; d++) {
            CUmemLocation loc = {.type = CU_MEM_LOCATION_TYPE_DEVICE, .id = d};
            CUmemAccess_flags flags;
            if (REAL(cuMemPoolGetAccess)(&flags, handle, &loc) == CUDA_SUCCESS &&
                flags == CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
                return d;
        }
    bool exact;
    return stream_device(s, &exact);
}

static struct pool *known(CUmemoryPool handle, int dev)
{
    lock_pools();
    struct pool *p = record(handle, dev);
    pthread_mutex_unlock(&lock);
    return p;
}

/* ---- Allocation ---- */

typedef CUresult (*alloc_fn)(CUdeviceptr *, size_t, CUmemoryPool, CUstream);
typedef CUresult (*free_fn)(CUdeviceptr, CUstream);

/* Until no trim of p waits for its allocations in flight (trim_locked). */
static void wait_trims(struct pool *p)
{
    while (p->trimming > 0)
        wait_idle();
}

static bool reserve(struct pool *p, uint64_t bytes)
{
    lock_pools();
    wait_trims(p);
    bool ok = reserve_locked(p, bytes);
    int dev = p->dev;
    pthread_mutex_unlock(&lock);
    if (ok || pools_give_back(dev) == 0)
        return ok;
    lock_pools();
    wait_trims(p);
    ok = reserve_locked(p, bytes);
    pthread_mutex_unlock(&lock);
    return ok;
}

/* After the driver answered: record, then settle the pool's charge; a pool
 * that grew past the limit gives the allocation back. */
static CUresult settle_alloc(struct pool *p, uint64_t bytes, CUresult rc,
                             CUdeviceptr ptr, CUstream s, free_fn release)
{
    lock_pools();
    CUmemoryPool handle = p->handle;
    uint64_t estimated = p->charged;
    if (--p->inflight == 0)
        pthread_cond_broadcast(&idle); /* trims waiting for it */
    p->pending -= rounded(bytes);
    if (rc == CUDA_SUCCESS) {
        p->live += rounded(bytes);
        /* The pool's, not a context's: its charge is the pool's. */
        ledger_put(SPACE_POINTER, ptr, (struct ledger_entry){
            p->dev, VGPU_CHARGE_DATA, bytes, pool_index(p) + 1, 0});
    }
    uint64_t reserved;
    if (rc == CUDA_SUCCESS && query(p, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, &reserved) &&
        reserved > estimated && reserved - estimated > p->slack)
        p->slack = reserved - estimated; /* learn: pre-charge it next time */
    bool fits = settle(p);
    pthread_mutex_unlock(&lock);
    if (rc != CUDA_SUCCESS || fits)
        return rc;
    struct ledger_entry e;
    if (ledger_take(SPACE_POINTER, ptr, &e) && release(ptr, s) == CUDA_SUCCESS)
        pools_freed(&e);
    lock_pools();
    struct pool *q = find(handle); /* none: destroyed, its cache went with it */
    if (q != NULL)
        trim_locked(q, handle, 0, NULL);
    pthread_mutex_unlock(&lock);
    return CUDA_ERROR_OUT_OF_MEMORY;
}

/* A stream being captured into a graph allocates nothing now: the
 * allocation becomes a memory node of the graph, charged when the graph is
 * uploaded or launched (graphmem.c). */
static bool capturing(CUstream s)
{
    CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
    return REAL(cuStreamIsCapturing) != NULL &&
           REAL(cuStreamIsCapturing)(s, &status) == CUDA_SUCCESS &&
           status == CU_STREAM_CAPTURE_STATUS_ACTIVE;
}

/* `call` allocates from `handle`; `as_asked` is the program's own call,
 * made instead while the stream is captured (the graph's memory node is
 * what the program asked for). */
static CUresult pool_alloc(CUdeviceptr *dptr, size_t bytes, CUmemoryPool handle,
                           int dev, CUstream s, alloc_fn call, alloc_fn as_asked,
                           free_fn release)
{
    struct charge c;
    struct pool *p = NULL;
    if (!charge_nested() && capturing(s)) {
        charge_begin(&c, -1, 0, VGPU_CHARGE_DATA); /* only enters the driver */
        CUresult rc = as_asked(dptr, bytes, handle, s);
        charge_end(&c, false, SPACE_NONE, 0);
        return rc;
    }
    if (!charge_nested() && dptr != NULL && bytes > 0 && handle != NULL)
        p = known(handle, dev);
    if (p == NULL) {
        /* Not ours to count as a pool (nested, bad arguments, no device,
         * too many pools): charged as a plain allocation. */
        if (!charge_begin(&c, dev, bytes, VGPU_CHARGE_DATA))
            return CUDA_ERROR_OUT_OF_MEMORY;
        CUresult rc = call(dptr, bytes, handle, s);
        charge_end(&c, rc == CUDA_SUCCESS, SPACE_POINTER,
                   rc == CUDA_SUCCESS ? *dptr : 0);
        return rc;
    }
    bool host = p->dev == HOST_POOL; /* set once, at creation */
    if (!host && !reserve(p, bytes))
        return CUDA_ERROR_OUT_OF_MEMORY;
    charge_begin(&c, -1, 0, VGPU_CHARGE_DATA); /* only enters the driver */
    CUresult rc = call(dptr, bytes, handle, s);
    charge_end(&c, false, SPACE_POINTER, 0);
    if (host)
        return rc;
    return settle_alloc(p, bytes, rc, rc == CUDA_SUCCESS ? *dptr : 0, s, release);
}

/* The current pool of the stream's device (cuMemAllocAsync's). */
static CUmemoryPool current_pool(int dev)
{
    CUmemoryPool pool = NULL;
    if (dev < 0 || REAL(cuDeviceGetMemPool) == NULL ||
        REAL(cuDeviceGetMemPool)(&pool, dev) != CUDA_SUCCESS)
        return NULL;
    return pool;
}

/* cuMemAllocAsync from the pool vgpu read as current and charges: the
 * driver would read the current pool again, and another thread may have
 * made another pool current meanwhile (cuDeviceSetMemPool), which would
 * grow uncharged. No pool read: the driver's own cuMemAllocAsync. */
static CUresult real_async_named(CUdeviceptr *d, size_t b, CUmemoryPool p, CUstream s)
{
    if (p != NULL && REAL(cuMemAllocFromPoolAsync) != NULL)
        return REAL(cuMemAllocFromPoolAsync)(d, b, p, s);
    return REAL(cuMemAllocAsync)(d, b, s);
}

static CUresult real_async_named_ptsz(CUdeviceptr *d, size_t b, CUmemoryPool p,
                                      CUstream s)
{
    if (p != NULL && REAL(cuMemAllocFromPoolAsync_ptsz) != NULL)
        return REAL(cuMemAllocFromPoolAsync_ptsz)(d, b, p, s);
    return REAL(cuMemAllocAsync_ptsz)(d, b, s);
}

/* The stream's device is a guess (a driver without cuStreamGetDevice):
 * the driver chooses the pool, as the program asked; naming the guessed
 * device's pool could put the memory on another GPU than the stream's. */
static CUresult real_async(CUdeviceptr *d, size_t b, CUmemoryPool p, CUstream s)
{
    (void)p;
    return REAL(cuMemAllocAsync)(d, b, s);
}

static CUresult real_async_ptsz(CUdeviceptr *d, size_t b, CUmemoryPool p, CUstream s)
{
    (void)p;
    return REAL(cuMemAllocAsync_ptsz)(d, b, s);
}

static CUresult real_from_pool(CUdeviceptr *d, size_t b, CUmemoryPool p, CUstream s)
{
    return REAL(cuMemAllocFromPoolAsync)(d, b, p, s);
}

static CUresult real_from_pool_ptsz(CUdeviceptr *d, size_t b, CUmemoryPool p, CUstream s)
{
    return REAL(cuMemAllocFromPoolAsync_ptsz)(d, b, p, s);
}

static CUresult real_free_async(CUdeviceptr p, CUstream s)
{
    return REAL(cuMemFreeAsync)(p, s);
}

static CUresult real_free_async_ptsz(CUdeviceptr p, CUstream s)
{
    return REAL(cuMemFreeAsync_ptsz)(p, s);
}

EXPORT CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytes, CUstream s)
{
    NEED(cuMemAllocAsync);
    bool exact = false;
    int dev = charge_nested() ? -1 : stream_device(s, &exact);
    return pool_alloc(dptr, bytes, current_pool(dev), dev, s,
                      exact ? real_async_named : real_async, real_async,
                      real_free_async);
}

EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytes, CUstream s)
{
    NEED(cuMemAllocAsync_ptsz);
    bool exact = false;
    int dev = charge_nested() ? -1 : stream_device(s, &exact);
    return pool_alloc(dptr, bytes, current_pool(dev), dev, s,
                      exact ? real_async_named_ptsz : real_async_ptsz,
                      real_async_ptsz, real_free_async_ptsz);
}

EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytes,
                                        CUmemoryPool pool, CUstream s)
{
    NEED(cuMemAllocFromPoolAsync);
    int dev = charge_nested() || pool == NULL ? -1 : pool_device(pool, s);
    return pool_alloc(dptr, bytes, pool, dev, s, real_from_pool, real_from_pool,
                      real_free_async);
}

EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytes,
                                             CUmemoryPool pool, CUstream s)
{
    NEED(cuMemAllocFromPoolAsync_ptsz);
    int dev = charge_nested() || pool == NULL ? -1 : pool_device(pool, s);
    return pool_alloc(dptr, bytes, pool, dev, s, real_from_pool_ptsz,
                      real_from_pool_ptsz, real_free_async_ptsz);
}

static CUresult free_async(uint64_t p, void *s)
{
    return REAL(cuMemFreeAsync)(p, s);
}

static CUresult free_async_ptsz(uint64_t p, void *s)
{
    return REAL(cuMemFreeAsync_ptsz)(p, s);
}

EXPORT CUresult cuMemFreeAsync(CUdeviceptr ptr, CUstream s)
{
    NEED(cuMemFreeAsync);
    return charge_free(SPACE_POINTER, ptr, free_async, s);
}

EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr ptr, CUstream s)
{
    NEED(cuMemFreeAsync_ptsz);
    return charge_free(SPACE_POINTER, ptr, free_async_ptsz, s);
}

/* ---- Pools: made, found, tuned, trimmed, destroyed ---- */

EXPORT CUresult cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *props)
{
    NEED(cuMemPoolCreate);
    CUresult rc = REAL(cuMemPoolCreate)(pool, props);
    /* Host and NUMA pools are not device memory: known, not counted. */
    if (rc == CUDA_SUCCESS)
        known(*pool, props->location.type == CU_MEM_LOCATION_TYPE_DEVICE
                         ? props->location.id : HOST_POOL);
    return rc;
}

EXPORT CUresult cuDeviceGetDefaultMemPool(CUmemoryPool *pool, CUdevice dev)
{
    NEED(cuDeviceGetDefaultMemPool);
    CUresult rc = REAL(cuDeviceGetDefaultMemPool)(pool, dev);
    if (rc == CUDA_SUCCESS)
        known(*pool, dev);
    return rc;
}

EXPORT CUresult cuMemPoolDestroy(CUmemoryPool pool)
{
    NEED(cuMemPoolDestroy);
    release_begin(); /* its cache goes (see charge.h) */
    CUresult rc = REAL(cuMemPoolDestroy)(pool);
    if (rc == CUDA_SUCCESS) {
        lock_pools();
        struct pool *p = find(pool);
        if (p != NULL) {
            p->destroyed = true; /* its cache went with it */
            settle(p);
            recycle(p);
        }
        pthread_mutex_unlock(&lock);
    }
    release_end();
    return rc;
}

EXPORT CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t keep)
{
    NEED(cuMemPoolTrimTo);
    if (charge_nested()) /* the driver's own call, within one of ours in flight */
        return REAL(cuMemPoolTrimTo)(pool, keep);
    lock_pools();
    struct pool *p = find(pool);
    if (p == NULL) { /* not one we charge for */
        pthread_mutex_unlock(&lock);
        return REAL(cuMemPoolTrimTo)(pool, keep);
    }
    CUresult rc;
    trim_locked(p, pool, keep, &rc);
    pthread_mutex_unlock(&lock);
    return rc;
}

EXPORT CUresult cuMemPoolSetAttribute(CUmemoryPool pool, CUmemPool_attribute attr,
                                      void *value)
{
    NEED(cuMemPoolSetAttribute);
    CUresult rc = REAL(cuMemPoolSetAttribute)(pool, attr, value);
    if (rc != CUDA_SUCCESS || attr != CU_MEMPOOL_ATTR_RELEASE_THRESHOLD)
        return rc;
    lock_pools();
    struct pool *p = find(pool);
    if (p != NULL)
        p->threshold = *(cuuint64_t *)value;
    pthread_mutex_unlock(&lock);
    return rc;
}

/* ---- Synchronizations: the driver releases what exceeds thresholds ---- */

static void after_sync(CUresult rc)
{
    if (rc != CUDA_SUCCESS || atomic_load_n(&used_records, RELAXED) == 0) /* a hint */
        return;
    lock_pools();
    for (int i = 0; i < MAX_POOLS; i++) {
        struct pool *p = &pools[i];
        if (p->handle && !p->destroyed && !p->blind && p->charged > p->live &&
            p->charged > p->threshold)
            settle(p);
    }
    pthread_mutex_unlock(&lock);
}

EXPORT CUresult cuStreamSynchronize(CUstream s)
{
    NEED(cuStreamSynchronize);
    CUresult rc = REAL(cuStreamSynchronize)(s);
    after_sync(rc);
    return rc;
}

EXPORT CUresult cuStreamSynchronize_ptsz(CUstream s)
{
    NEED(cuStreamSynchronize_ptsz);
    CUresult rc = REAL(cuStreamSynchronize_ptsz)(s);
    after_sync(rc);
    return rc;
}

EXPORT CUresult cuCtxSynchronize(void)
{
    NEED(cuCtxSynchronize);
    CUresult rc = REAL(cuCtxSynchronize)();
    after_sync(rc);
    return rc;
}

EXPORT CUresult cuCtxSynchronize_v2(CUcontext ctx)
{
    NEED(cuCtxSynchronize_v2);
    CUresult rc = REAL(cuCtxSynchronize_v2)(ctx);
    after_sync(rc);
    return rc;
}

EXPORT CUresult cuEventSynchronize(CUevent event)
{
    NEED(cuEventSynchronize);
    CUresult rc = REAL(cuEventSynchronize)(event);
    after_sync(rc);
    return rc;
}
