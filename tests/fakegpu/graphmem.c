/* The simulated driver's graph memory: what memory nodes of graphs
 * (cuGraphAddMemAllocNode, or cuMemAllocAsync captured into a graph) take,
 * from one graph pool per device and process, as the driver does:
 *  - physical memory is reserved when a graph is uploaded or launched: the
 *    sum of its allocation nodes (2 MiB each at least), less what the pool
 *    caches unused (no aliasing inside a graph: the driver may take less),
 *    in whole chunks of FAKEGPU_GRAPH_CHUNK MiB (default 32, as the
 *    stream-ordered pools of an H100);
 *  - an allocation freed in its graph goes back to the pool's cache; one
 *    not freed there lives on after the launch, until cuMemFree(Async) or a
 *    free node of another graph, and its graph cannot be launched again
 *    until then;
 *  - the pool keeps what it reserved until cuDeviceGraphMemTrim (or the
 *    primary context's reset);
 *  - cuDeviceGetGraphMemAttribute reports used and reserved bytes and their
 *    high watermarks; the ledger (state.c) counts what is reserved.
 * FAKEGPU_GRAPH_DELAY_US=n: a launch or upload returns n us after it
 * reserved (to widen a race for a test). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#include "fakegpu.h"

#define EXPORT __attribute__((visibility("default")))

struct graph_pool {
    uint64_t reserved, used;
    uint64_t reserved_high, used_high;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct graph_pool pools[FG_MAX_DEVICES];
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* A fork child holds none of its parent's graph memory. */
static void forget_in_child(void)
{
    pthread_mutex_init(&lock, NULL);
    memset(pools, 0, sizeof pools);
}

static void init(void)
{
    pthread_atfork(NULL, NULL, forget_in_child);
}

static uint64_t chunked(uint64_t bytes)
{
    return (bytes + FG_GRANULARITY - 1) / FG_GRANULARITY * FG_GRANULARITY;
}

/* How much the pool grows by at least. */
static uint64_t growth_unit(void)
{
    const char *v = getenv("FAKEGPU_GRAPH_CHUNK");
    uint64_t mib = v ? strtoull(v, NULL, 10) : 0;
    return mib ? mib << 20 : FG_POOL_CHUNK;
}

static void high(uint64_t *mark, uint64_t now)
{
    if (now > *mark)
        *mark = now;
}

/* Make p cache at least need unused bytes (caller holds the lock). */
static bool cover(struct graph_pool *p, int physical, uint64_t need, uint64_t *grown)
{
    uint64_t cached = p->reserved - p->used;
    *grown = 0;
    if (need <= cached)
        return true;
    uint64_t unit = growth_unit();
    uint64_t grow = (need - cached + unit - 1) / unit * unit;
    if (!fg_reserve(physical, grow))
        return false;
    *grown = grow;
    p->reserved += *grown;
    high(&p->reserved_high, p->reserved);
    return true;
}

CUresult fg_graph_mem_run(const struct fg_mem_node *nodes, int n, bool launch)
{
    pthread_once(&once, init);
    uint64_t need[FG_MAX_DEVICES] = {0}, grown[FG_MAX_DEVICES] = {0};
    for (int i = 0; i < n; i++)
        if (nodes[i].kind != FG_MEM_FREE)
            need[nodes[i].physical] += chunked(nodes[i].bytes);
    pthread_mutex_lock(&lock);
    for (int i = 0; launch && i < n; i++) {
        struct fg_alloc a;
        if (nodes[i].kind == FG_MEM_KEPT && allocs_take(nodes[i].dptr, &a)) {
            allocs_put(a); /* its last launch's allocation is not freed yet */
            pthread_mutex_unlock(&lock);
            return CUDA_ERROR_INVALID_VALUE;
        }
    }
    for (int d = 0; d < FG_MAX_DEVICES; d++)
        if (need[d] > 0 && !cover(&pools[d], d, need[d], &grown[d])) {
            for (int e = 0; e < d; e++) { /* all or nothing */
                pools[e].reserved -= grown[e];
                fg_release(e, grown[e]);
            }
            pthread_mutex_unlock(&lock);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
    for (int i = 0; launch && i < n; i++) {
        const struct fg_mem_node *m = &nodes[i];
        if (m->kind != FG_MEM_KEPT)
            continue;
        struct graph_pool *p = &pools[m->physical];
        p->used += chunked(m->bytes);
        high(&p->used_high, p->used);
        allocs_put((struct fg_alloc){m->dptr, m->bytes, m->physical, FG_GRAPH, NULL, NULL});
    }
    pthread_mutex_unlock(&lock);
    fg_delay_us("FAKEGPU_GRAPH_DELAY_US");
    for (int i = 0; launch && i < n; i++)
        if (nodes[i].kind == FG_MEM_FREE)
            fg_free(nodes[i].dptr, KIND(FG_GRAPH));
    return CUDA_SUCCESS;
}

void fg_graph_mem_free(const struct fg_alloc *a)
{
    pthread_mutex_lock(&lock);
    pools[a->dev].used -= chunked(a->size);
    pthread_mutex_unlock(&lock);
}

void fg_graph_mem_reset(int physical)
{
    pthread_mutex_lock(&lock);
    struct graph_pool *p = &pools[physical];
    fg_release(physical, p->reserved);
    p->reserved = p->used = 0;
    pthread_mutex_unlock(&lock);
}

EXPORT CUresult cuDeviceGraphMemTrim(CUdevice dev)
{
    CUresult rc = fg_need_device(dev);
    if (rc != CUDA_SUCCESS)
        return rc;
    int physical = fg_physical(dev);
    pthread_mutex_lock(&lock);
    struct graph_pool *p = &pools[physical];
    fg_release(physical, p->reserved - p->used);
    p->reserved = p->used;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetGraphMemAttribute(CUdevice dev, CUgraphMem_attribute attr,
                                             void *value)
{
    CUresult rc = fg_need_device(dev);
    if (rc != CUDA_SUCCESS)
        return rc;
    if (value == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    struct graph_pool *p = &pools[fg_physical(dev)];
    uint64_t v = 0;
    switch (attr) {
    case CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT: v = p->used; break;
    case CU_GRAPH_MEM_ATTR_USED_MEM_HIGH: v = p->used_high; break;
    case CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT: v = p->reserved; break;
    case CU_GRAPH_MEM_ATTR_RESERVED_MEM_HIGH: v = p->reserved_high; break;
    default: rc = CUDA_ERROR_INVALID_VALUE; break;
    }
    pthread_mutex_unlock(&lock);
    if (rc == CUDA_SUCCESS)
        *(cuuint64_t *)value = v;
    return rc;
}

/* Only the high watermarks can be set, and only to 0 (reset to current). */
EXPORT CUresult cuDeviceSetGraphMemAttribute(CUdevice dev, CUgraphMem_attribute attr,
                                             void *value)
{
    CUresult rc = fg_need_device(dev);
    if (rc != CUDA_SUCCESS)
        return rc;
    if (value == NULL || *(cuuint64_t *)value != 0)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    struct graph_pool *p = &pools[fg_physical(dev)];
    if (attr == CU_GRAPH_MEM_ATTR_USED_MEM_HIGH)
        p->used_high = p->used;
    else if (attr == CU_GRAPH_MEM_ATTR_RESERVED_MEM_HIGH)
        p->reserved_high = p->reserved;
    else
        rc = CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_unlock(&lock);
    return rc;
}
