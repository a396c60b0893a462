/* Graph memory. A graph's allocation nodes (cuGraphAddMemAllocNode, or
 * cuMemAllocAsync captured into a graph) are backed by the driver's graph
 * pool of their device: physical memory is reserved when the graph is
 * uploaded or launched (cuGraphUpload, cuGraphLaunch, instantiation with
 * CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD), stays cached after the graph or
 * cuMemFree(Async) frees the allocation, and goes back to the device only
 * at cuDeviceGraphMemTrim. So each device's graph pool has one charge:
 *
 *  - at instantiation the graph's nodes are walked (child graphs too) and
 *    an executable graph with allocation nodes is remembered with, per
 *    device, the sum of their sizes (each rounded up to the driver's 2 MiB)
 *    in whole 32 MiB chunks, the unit in which an H100's pools grow: what
 *    its upload or launch can add to the pool, plus the most the pool ever
 *    grew beyond such an estimate (a driver with larger chunks, learned);
 *  - before such an upload or launch that is charged (refused with
 *    CUDA_ERROR_OUT_OF_MEMORY, without calling the driver, when it does
 *    not fit even after this process's graph pool and stream-ordered pools
 *    were trimmed once);
 *  - after it, after a trim, a watermark reset or an executable graph's
 *    destruction, the charge is set to what the driver says the pool
 *    reserves (CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT) plus what launches
 *    still in the driver have charged;
 *  - any charge that would fail (a plain cuMemAlloc too) trims the graph
 *    pool first (charge.c).
 *
 * Executable graphs without allocation nodes are not remembered: their
 * launch costs one map lookup, none at all while no graph of the process
 * has allocation nodes. A graph whose nodes cannot be read is remembered
 * as blind: nothing is charged before its launches, the pools of every
 * device are settled after them (one log line). State is per process; a
 * fork child starts with none (its graph pool is empty); the charges go
 * with the process's slot at exit. */
#include "hook/graphmem.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "atomic.h"
#include "hook/account.h"
#include "hook/charge.h"
#include "hook/pools.h"
#include "hook/real.h"
#include "hook/u64map.h"
#include "log.h"
#include "vgpu/config.h"

#define EXPORT __attribute__((visibility("default")))
#define GRANULARITY (2ull << 20) /* the driver backs allocations in these */
#define GROWTH_CHUNK (32ull << 20) /* and an H100's pools grow by these */
#define MAX_DEPTH 16             /* child graphs in child graphs */

/* What an executable graph's upload or launch can add, per device. */
struct need {
    uint64_t bytes[VGPU_MAX_DEVICES];
    bool blind; /* its nodes could not be read */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct u64map execs;  /* CUgraphExec -> struct need * */
static int remembered;       /* entries of execs; read unlocked as a hint */
/* Per device: charged for the graph pool (written under the lock, read
 * unlocked as a hint), what uploads and launches in the driver have
 * reserved of it, and the most it grew beyond that. */
static uint64_t charged[VGPU_MAX_DEVICES];
static uint64_t pending[VGPU_MAX_DEVICES];
static uint64_t slack[VGPU_MAX_DEVICES];
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* A fork child holds none of its parent's graph memory (nor its charges). */
static void forget_in_child(void)
{
    pthread_mutex_init(&lock, NULL);
    for (size_t i = 0; i < execs.capacity; i++)
        if (u64map_full(&execs, i))
            free(execs.slots[i].value);
    u64map_clear(&execs);
    remembered = 0;
    memset(charged, 0, sizeof charged);
    memset(pending, 0, sizeof pending);
    memset(slack, 0, sizeof slack);
}

static void init(void)
{
    pthread_atfork(NULL, NULL, forget_in_child);
}

static void lock_graphs(void)
{
    pthread_once(&once, init);
    pthread_mutex_lock(&lock);
}

static uint64_t round_up(uint64_t bytes, uint64_t unit)
{
    return (bytes + unit - 1) / unit * unit;
}

/* ---- What a graph allocates ---- */

static bool add_alloc(CUgraphNode node, struct need *n)
{
    CUDA_MEM_ALLOC_NODE_PARAMS p;
    memset(&p, 0, sizeof p);
    if (REAL(cuGraphMemAllocNodeGetParams) == NULL ||
        REAL(cuGraphMemAllocNodeGetParams)(node, &p) != CUDA_SUCCESS)
        return false;
    if (p.poolProps.location.type != CU_MEM_LOCATION_TYPE_DEVICE)
        return true; /* host memory */
    int dev = p.poolProps.location.id;
    if (dev < 0 || dev >= VGPU_MAX_DEVICES)
        return false;
    n->bytes[dev] += round_up(p.bytesize, GRANULARITY);
    return true;
}

/* Add g's allocation nodes to n. False: some node could not be read. */
static bool walk(CUgraph g, struct need *n, int depth)
{
    size_t count = 0;
    if (depth > MAX_DEPTH || REAL(cuGraphGetNodes) == NULL ||
        REAL(cuGraphNodeGetType) == NULL ||
        REAL(cuGraphGetNodes)(g, NULL, &count) != CUDA_SUCCESS)
        return false;
    if (count == 0)
        return true;
    size_t room = count;
    CUgraphNode *nodes = malloc(room * sizeof *nodes);
    bool ok = nodes != NULL &&
              REAL(cuGraphGetNodes)(g, nodes, &count) == CUDA_SUCCESS;
    for (size_t i = 0; ok && i < count && i < room; i++) {
        CUgraphNodeType type;
        CUgraph child;
        ok = REAL(cuGraphNodeGetType)(nodes[i], &type) == CUDA_SUCCESS;
        if (ok && type == CU_GRAPH_NODE_TYPE_MEM_ALLOC)
            ok = add_alloc(nodes[i], n);
        else if (ok && type == CU_GRAPH_NODE_TYPE_GRAPH)
            ok = REAL(cuGraphChildGraphNodeGetGraph) != NULL &&
                 REAL(cuGraphChildGraphNodeGetGraph)(nodes[i], &child) == CUDA_SUCCESS &&
                 walk(child, n, depth + 1);
    }
    free(nodes);
    return ok;
}

/* What an instantiation of g will need; NULL when nothing (no allocation
 * nodes, or a call made by the driver itself). */
static struct need *need_of(CUgraph g)
{
    if (charge_nested() || g == NULL)
        return NULL;
    struct need *n = calloc(1, sizeof *n);
    if (n == NULL)
        return NULL;
    if (!walk(g, n, 0)) {
        static int warned;
        if (!atomic_xchg(&warned, 1, RELAXED)) /* relaxed: only picks who logs */
            log_warn("a graph's nodes cannot be read: its memory is counted "
                     "only after its launches");
        memset(n, 0, sizeof *n);
        n->blind = true;
        return n;
    }
    bool any = false;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        n->bytes[d] = round_up(n->bytes[d], GROWTH_CHUNK);
        any |= n->bytes[d] > 0;
    }
    if (any)
        return n;
    free(n);
    return NULL;
}

/* ---- The graph pool's charge ---- */

static void set_charged(int dev, uint64_t bytes)
{
    /* Relaxed: graphmem_give_back only reads it as a hint. */
    atomic_store_n(&charged[dev], bytes, RELAXED);
}

/* Set dev's charge to what its pool reserves plus what launches in the
 * driver have reserved (caller holds the lock). A pool whose size cannot be
 * read keeps its charge. learn: a launch that reserved on dev just
 * returned, so growth past the charge is its estimate's shortfall. */
static void settle(int dev, bool learn)
{
    cuuint64_t reserved = 0;
    if (REAL(cuDeviceGetGraphMemAttribute) == NULL ||
        REAL(cuDeviceGetGraphMemAttribute)(dev, CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT,
                                           &reserved) != CUDA_SUCCESS) {
        if (charged[dev] == 0)
            return; /* a device this process's graphs never used */
        static int warned;
        if (!atomic_xchg(&warned, 1, RELAXED)) /* relaxed: only picks who logs */
            log_warn("the graph memory pool's size cannot be read: it stays "
                     "charged what its launches reserved");
        return;
    }
    uint64_t target = reserved + pending[dev];
    struct vgpu_region *r = account_region();
    if (target > charged[dev]) {
        /* Past what its launches reserved: the driver took more than the
         * estimate; count it (the next charge will find the limit full),
         * and reserve that much more from now on. What is learned leaves
         * out the launches still in the driver (their charges are in
         * `charged`, their growth maybe in `reserved` already): counted in
         * both, another launch's chunk would be learned as this one's
         * shortfall, and reserved again at every launch after. */
        if (learn && reserved > charged[dev] && reserved - charged[dev] > slack[dev])
            slack[dev] = reserved - charged[dev];
        if (!vgpu_region_try_charge(r, dev, target - charged[dev], VGPU_CHARGE_DATA)) {
            static int warned;
            if (!atomic_xchg(&warned, 1, RELAXED)) /* relaxed: only picks who logs */
                log_warn("the graph memory pool grew past its estimate and the "
                         "limit");
            return;
        }
        set_charged(dev, target);
    } else if (target < charged[dev]) {
        vgpu_region_uncharge(r, dev, charged[dev] - target, VGPU_CHARGE_DATA);
        set_charged(dev, target);
    }
}

/* Settle the devices n touches (every device for a blind graph); launched:
 * n's reservation is no longer in the driver. */
static void settle_devices(const struct need *n, bool launched)
{
    int count = 0;
    if (n->blind && (REAL(cuDeviceGetCount) == NULL ||
                     REAL(cuDeviceGetCount)(&count) != CUDA_SUCCESS))
        count = 0;
    lock_graphs();
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        if (launched)
            pending[d] -= n->bytes[d];
        if (n->bytes[d] > 0 || d < count)
            settle(d, launched && n->bytes[d] > 0);
    }
    pthread_mutex_unlock(&lock);
}

/* Charge n and what the pools grew beyond such estimates, as held (all
 * devices or none). -1: done; else the device that is full. */
static int try_reserve(const struct need *n, struct need *held)
{
    struct vgpu_region *r = account_region();
    memset(held, 0, sizeof *held);
    held->blind = n->blind;
    lock_graphs();
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        if (n->bytes[d] == 0)
            continue;
        uint64_t bytes = n->bytes[d] + slack[d];
        if (!vgpu_region_try_charge(r, d, bytes, VGPU_CHARGE_DATA)) {
            for (int e = 0; e < d; e++)
                if (held->bytes[e] > 0) {
                    vgpu_region_uncharge(r, e, held->bytes[e], VGPU_CHARGE_DATA);
                    set_charged(e, charged[e] - held->bytes[e]);
                    pending[e] -= held->bytes[e];
                }
            pthread_mutex_unlock(&lock);
            return d;
        }
        held->bytes[d] = bytes;
        set_charged(d, charged[d] + bytes);
        pending[d] += bytes;
    }
    pthread_mutex_unlock(&lock);
    return -1;
}

/* Reserve n before an upload or launch (what was charged: held); on a full
 * device, trim this process's pools there and try once more. */
static bool reserve(const struct need *n, struct need *held)
{
    int full = try_reserve(n, held);
    if (full < 0)
        return true;
    if (graphmem_give_back(full) + pools_give_back(full) == 0)
        return false;
    return try_reserve(n, held) < 0;
}

uint64_t graphmem_give_back(int dev)
{
    if (dev < 0 || dev >= VGPU_MAX_DEVICES || REAL(cuDeviceGraphMemTrim) == NULL ||
        atomic_load_n(&charged[dev], RELAXED) == 0) /* a hint: nothing charged */
        return 0;
    release_begin(); /* the graph pool's cache goes (see charge.h) */
    REAL(cuDeviceGraphMemTrim)(dev);
    lock_graphs();
    uint64_t before = charged[dev];
    settle(dev, false);
    uint64_t after = charged[dev];
    pthread_mutex_unlock(&lock);
    release_end();
    return before > after ? before - after : 0;
}

/* call(exec, s) with n reserved around it. */
static CUresult charged_call(const struct need *n, CUgraphExec exec, CUstream s,
                             graphmem_call_fn call)
{
    struct need held;
    if (!reserve(n, &held))
        return CUDA_ERROR_OUT_OF_MEMORY;
    struct charge c;
    charge_begin(&c, -1, 0, VGPU_CHARGE_DATA); /* only enters the driver */
    CUresult rc = call(exec, s);
    charge_end(&c, false, SPACE_NONE, 0);
    settle_devices(&held, true);
    return rc;
}

CUresult graphmem_launch(CUgraphExec exec, CUstream s, graphmem_call_fn call)
{
    /* Relaxed: the hint counts graphs remembered before their instantiation
     * returned; the application's own synchronization that handed exec to
     * this thread orders that before this launch. */
    if (atomic_load_n(&remembered, RELAXED) == 0 || charge_nested())
        return call(exec, s);
    struct need n;
    lock_graphs();
    struct need *known = u64map_get(&execs, (uint64_t)(uintptr_t)exec);
    if (known != NULL)
        n = *known;
    pthread_mutex_unlock(&lock);
    if (known == NULL)
        return call(exec, s);
    return charged_call(&n, exec, s, call);
}

/* ---- Instantiation and destruction ---- */

/* After an instantiation: remember exec with n (taken). A graph that cannot
 * be remembered is destroyed and refused: its launches would go uncounted. */
static CUresult remember(CUresult rc, CUgraphExec *exec, struct need *n)
{
    if (n == NULL || rc != CUDA_SUCCESS) {
        free(n);
        return rc;
    }
    lock_graphs();
    bool ok = u64map_put(&execs, (uint64_t)(uintptr_t)*exec, n);
    if (ok)
        atomic_add(&remembered, 1, RELAXED); /* a hint: see graphmem_launch */
    pthread_mutex_unlock(&lock);
    if (ok)
        return rc;
    free(n);
    log_warn("out of memory remembering a graph: its instantiation is refused");
    REAL(cuGraphExecDestroy)(*exec);
    return CUDA_ERROR_OUT_OF_MEMORY;
}

EXPORT CUresult cuGraphInstantiateWithFlags(CUgraphExec *exec, CUgraph g,
                                            unsigned long long flags)
{
    NEED(cuGraphInstantiateWithFlags);
    struct need *n = need_of(g);
    CUresult rc = REAL(cuGraphInstantiateWithFlags)(exec, g, flags);
    return remember(rc, exec, n);
}

EXPORT CUresult cuGraphInstantiate(CUgraphExec *exec, CUgraph g,
                                   CUgraphNode *error_node, char *log,
                                   size_t log_size)
{
    NEED(cuGraphInstantiate);
    struct need *n = need_of(g);
    CUresult rc = REAL(cuGraphInstantiate)(exec, g, error_node, log, log_size);
    return remember(rc, exec, n);
}

EXPORT CUresult cuGraphInstantiate_v2(CUgraphExec *exec, CUgraph g,
                                      CUgraphNode *error_node, char *log,
                                      size_t log_size)
{
    NEED(cuGraphInstantiate_v2);
    struct need *n = need_of(g);
    CUresult rc = REAL(cuGraphInstantiate_v2)(exec, g, error_node, log, log_size);
    return remember(rc, exec, n);
}

typedef CUresult (*with_params_fn)(CUgraphExec *, CUgraph,
                                   CUDA_GRAPH_INSTANTIATE_PARAMS *);

/* An instantiation that may upload: reserved around the call. */
static CUresult with_params(CUgraphExec *exec, CUgraph g,
                            CUDA_GRAPH_INSTANTIATE_PARAMS *p, with_params_fn call)
{
    struct need *n = need_of(g);
    bool upload = n != NULL && p != NULL &&
                  (p->flags & CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD);
    struct need held;
    if (upload && !reserve(n, &held)) {
        free(n);
        p->result_out = CUDA_GRAPH_INSTANTIATE_ERROR;
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    struct charge c;
    charge_begin(&c, -1, 0, VGPU_CHARGE_DATA); /* only enters the driver */
    CUresult rc = call(exec, g, p);
    charge_end(&c, false, SPACE_NONE, 0);
    if (upload)
        settle_devices(&held, true);
    return remember(rc, exec, n);
}

EXPORT CUresult cuGraphInstantiateWithParams(CUgraphExec *exec, CUgraph g,
                                             CUDA_GRAPH_INSTANTIATE_PARAMS *p)
{
    NEED(cuGraphInstantiateWithParams);
    return with_params(exec, g, p, REAL(cuGraphInstantiateWithParams));
}

EXPORT CUresult cuGraphInstantiateWithParams_ptsz(CUgraphExec *exec, CUgraph g,
                                                  CUDA_GRAPH_INSTANTIATE_PARAMS *p)
{
    NEED(cuGraphInstantiateWithParams_ptsz);
    return with_params(exec, g, p, REAL(cuGraphInstantiateWithParams_ptsz));
}

EXPORT CUresult cuGraphUpload(CUgraphExec exec, CUstream s)
{
    NEED(cuGraphUpload);
    return graphmem_launch(exec, s, REAL(cuGraphUpload));
}

EXPORT CUresult cuGraphUpload_ptsz(CUgraphExec exec, CUstream s)
{
    NEED(cuGraphUpload_ptsz);
    return graphmem_launch(exec, s, REAL(cuGraphUpload_ptsz));
}

EXPORT CUresult cuGraphExecDestroy(CUgraphExec exec)
{
    NEED(cuGraphExecDestroy);
    struct need *n = NULL;
    if (atomic_load_n(&remembered, RELAXED) > 0) { /* a hint, as at launch */
        lock_graphs();
        n = u64map_take(&execs, (uint64_t)(uintptr_t)exec);
        if (n != NULL)
            atomic_sub(&remembered, 1, RELAXED); /* a hint */
        pthread_mutex_unlock(&lock);
    }
    if (n == NULL)
        return REAL(cuGraphExecDestroy)(exec);
    release_begin(); /* the driver may release its memory (see charge.h) */
    CUresult rc = REAL(cuGraphExecDestroy)(exec);
    settle_devices(n, false);
    free(n);
    release_end();
    return rc;
}

/* ---- Trim and watermarks: the pool may have shrunk ---- */

static void settle_device(CUresult rc, CUdevice dev)
{
    if (rc != CUDA_SUCCESS || dev < 0 || dev >= VGPU_MAX_DEVICES)
        return;
    lock_graphs();
    settle(dev, false);
    pthread_mutex_unlock(&lock);
}

EXPORT CUresult cuDeviceGraphMemTrim(CUdevice dev)
{
    NEED(cuDeviceGraphMemTrim);
    release_begin(); /* the graph pool's cache goes (see charge.h) */
    CUresult rc = REAL(cuDeviceGraphMemTrim)(dev);
    settle_device(rc, dev);
    release_end();
    return rc;
}

EXPORT CUresult cuDeviceSetGraphMemAttribute(CUdevice dev, CUgraphMem_attribute attr,
                                             void *value)
{
    NEED(cuDeviceSetGraphMemAttribute);
    CUresult rc = REAL(cuDeviceSetGraphMemAttribute)(dev, attr, value);
    settle_device(rc, dev);
    return rc;
}
