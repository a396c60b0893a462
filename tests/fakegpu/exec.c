/* The simulated GPU's execution model: kernels and graphs take device time.
 *
 * Each physical device has one timeline in the shared state, for all
 * processes: a launch starts when its stream's earlier work is done and the
 * device has finished what reached it before (first come, first run: the
 * contexts of different processes take turns at launch granularity, a
 * coarse stand-in for the driver's time slices), and occupies it for its
 * duration, in CLOCK_MONOTONIC time. Nothing computes; "done" means the
 * clock has passed the work's end.
 *
 * A launch's duration: kernelParams[0], when given, points to a uint32_t of
 * microseconds (the simulated kernel's one argument); otherwise
 * FAKEGPU_KERNEL_NS, or FAKEGPU_KERNEL_US (default 100), read once. A graph
 * takes the sum of its kernel nodes; its memory nodes take memory from the
 * graph pool (graphmem.c). Events take the time at which their
 * stream reaches them. An event that the launching thread records right
 * after a launch on the stream, with no other call of this file between,
 * takes that launch's end (the simulated host submits the two together,
 * however late this machine's host gets to the second; only calls that
 * touch streams count as between: a query, a synchronization, a record,
 * cuStreamIsCapturing). Any other event belongs with the next work on the
 * stream and takes its start (contexts take turns between launches: a turn
 * ends with the first event after a kernel), or its recording time if it
 * is observed before more work comes.
 * Synchronization sleeps until the work is done; a launch waits while its
 * stream holds more than QUEUE_NS of work.
 *
 * Green contexts: a duration is that of a kernel that fills the GPU. On a
 * green context of k of the device's N SMs (cuda_fake.c) the same kernel
 * runs N/k times longer, and the model keeps the whole device for it all
 * that time (one item at a time, as for any launch: the other SMs are not
 * lent to other contexts meanwhile, which the hardware would do). What a
 * process "launched" (fakegpu_launched_ns) stays the full-GPU duration, the
 * work done, so that its share of the device's time is its work over wall
 * time: k/N for a process that keeps its green context busy.
 *
 * The event calls a process makes are counted (fakegpu_event_calls), so
 * that tests can see how many driver calls a launch costs. */
#define _GNU_SOURCE
#include <cuda.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "driver.h"
#include "fakegpu.h"
#include "hook/graph_decl.h"

#define EXPORT __attribute__((visibility("default")))
#define MAX_QUEUES 64
#define MAX_WAITING 4
/* A launch waits while its stream has more than this much work queued, as
 * the driver's command queue fills up. */
#define QUEUE_NS 20000000ull

struct fg_event {
    uint64_t ts;
    int state;          /* 0 never recorded, 1 waits for its stream, 2 fixed */
    uint64_t recorded;  /* when it was recorded (state 1) */
    int queue;          /* its queue while waiting */
};

struct queue {
    uintptr_t key;      /* 0: free */
    uint64_t tail;      /* when this stream's last work ends */
    struct fg_event *waiting[MAX_WAITING];
    int nwaiting;
    int events_since_work;
    struct fg_graph *capture; /* capturing into this graph: nothing runs */
};

struct fg_node;
struct fg_graph {
    uint64_t ns;
    int nnodes, cap;
    struct fg_node **nodes;
};

struct queue;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct queue queues[MAX_QUEUES];
static uint64_t launched_ns[FG_MAX_DEVICES]; /* this process's work, ns */
/* Event calls of this process: records, and all of them (relaxed: counts). */
static uint64_t event_records, event_calls;
/* cuStreamIsCapturing calls of this process (relaxed: a count). */
static uint64_t capture_queries;
/* The queue this thread launched on by its last call of this file, if that
 * call was a launch (see the header: the event right after a launch). */
static __thread struct queue *just_launched;

static void event_call(bool record)
{
    __atomic_add_fetch(&event_calls, 1, __ATOMIC_RELAXED);
    if (record)
        __atomic_add_fetch(&event_records, 1, __ATOMIC_RELAXED);
}

static uint64_t fg_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_until(uint64_t t)
{
    if (t == 0)
        return; /* nothing to wait for: no system call */
    struct timespec ts = {(time_t)(t / 1000000000ull), (long)(t % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0)
        ;
}

/* ---- Streams (caller holds lock) ---- */

static uintptr_t stream_key(CUstream s)
{
    CUcontext ctx = NULL;
    cuCtxGetCurrent(&ctx);
    if (s == NULL || s == CU_STREAM_LEGACY)
        return (uintptr_t)ctx | 1;
    if (s == CU_STREAM_PER_THREAD)
        return (uintptr_t)ctx | 2;
    return (uintptr_t)s;
}

static struct queue *find_queue(CUstream s, bool create)
{
    uintptr_t key = stream_key(s);
    struct queue *empty = NULL;
    for (int i = 0; i < MAX_QUEUES; i++) {
        if (queues[i].key == key)
            return &queues[i];
        if (empty == NULL && queues[i].key == 0)
            empty = &queues[i];
    }
    if (!create || empty == NULL)
        return NULL;
    memset(empty, 0, sizeof *empty);
    empty->key = key;
    return empty;
}

static void fix(struct fg_event *e, uint64_t ts)
{
    e->ts = ts;
    e->state = 2;
}

static void unwait(struct fg_event *e)
{
    struct queue *q = &queues[e->queue];
    for (int i = 0; i < q->nwaiting; i++)
        if (q->waiting[i] == e) {
            q->waiting[i] = q->waiting[--q->nwaiting];
            break;
        }
    fix(e, e->recorded);
}

/* ---- The shared timeline ---- */

static void note_busy(struct fg_timeline *t, uint64_t start, uint64_t ns)
{
    /* Utilization buckets of 100 ms; a racing reset may lose a little. */
    while (ns > 0) {
        uint64_t tag = start / FG_UTIL_BUCKET_NS;
        uint64_t in = (tag + 1) * FG_UTIL_BUCKET_NS - start;
        if (in > ns)
            in = ns;
        int b = (int)(tag % FG_UTIL_BUCKETS);
        uint64_t old = __atomic_load_n(&t->bucket_tag[b], __ATOMIC_RELAXED);
        if (old != tag &&
            __atomic_compare_exchange_n(&t->bucket_tag[b], &old, tag, false,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            __atomic_store_n(&t->bucket_ns[b], 0, __ATOMIC_RELAXED);
        __atomic_add_fetch(&t->bucket_ns[b], in, __ATOMIC_RELAXED);
        start += in;
        ns -= in;
    }
}

/* Queue ns of work on stream s of the current context. */
static CUresult run(CUstream s, uint64_t ns)
{
    CUdevice ordinal;
    /* On an explicit stream, in the stream's context (its device), as the
     * driver runs a context-less CUkernel, whatever is current, if any. */
    if (fg_stream_ctx(s) != NULL) {
        if (cuStreamGetDevice(s, &ordinal) != CUDA_SUCCESS)
            return CUDA_ERROR_INVALID_CONTEXT;
    } else if (cuCtxGetDevice(&ordinal) != CUDA_SUCCESS)
        return CUDA_ERROR_INVALID_CONTEXT;
    int dev = fg_physical(ordinal);
    struct fg_timeline *t = &fg_state()->timeline[dev];
    unsigned sms, total;
    fg_ctx_sms(fg_stream_ctx(s), &sms, &total); /* the stream's context's */
    uint64_t held = ns * total / sms; /* on k of N SMs: N/k times longer */
    pthread_mutex_lock(&lock);
    struct queue *q = find_queue(s, true);
    if (q == NULL) {
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    if (q->capture != NULL) { /* recorded into the graph, run at its launch */
        q->capture->ns += ns;
        just_launched = NULL;
        pthread_mutex_unlock(&lock);
        return CUDA_SUCCESS;
    }
    uint64_t now = fg_now_ns(), earliest = q->tail > now ? q->tail : now;
    uint64_t start, free_at = __atomic_load_n(&t->free_at, __ATOMIC_RELAXED);
    do {
        start = free_at > earliest ? free_at : earliest;
    } while (!__atomic_compare_exchange_n(&t->free_at, &free_at, start + held,
                                          true, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    for (int i = 0; i < q->nwaiting; i++)
        fix(q->waiting[i], start);
    q->nwaiting = 0;
    q->events_since_work = 0;
    q->tail = start + held;
    just_launched = q;
    uint64_t full = q->tail > now + QUEUE_NS ? q->tail - QUEUE_NS : 0;
    launched_ns[dev] += ns;
    pthread_mutex_unlock(&lock);
    __atomic_add_fetch(&t->busy_ns, held, __ATOMIC_RELAXED);
    note_busy(t, start, held);
    sleep_until(full);
    return CUDA_SUCCESS;
}

static uint64_t default_ns;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

static void read_default(void)
{
    const char *ns = getenv("FAKEGPU_KERNEL_NS");
    const char *us = getenv("FAKEGPU_KERNEL_US");
    default_ns = ns ? strtoull(ns, NULL, 10)
                    : (us ? strtoull(us, NULL, 10) : 100) * 1000;
}

static uint64_t kernel_ns(void **params)
{
    if (params != NULL && params[0] != NULL)
        return (uint64_t)*(const uint32_t *)params[0] * 1000;
    pthread_once(&default_once, read_default);
    return default_ns;
}

/* ---- Lazy loading ---- */

/* With FAKEGPU_LOAD_US set, a function's first launch in the process, or
 * cuFuncLoad of it, first takes that long on the host, as CUDA's lazy
 * module loading does (read once; up to MAX_LOADED functions remembered,
 * later ones load at each launch). While the launch loads, the device
 * reaches what was queued before: the stream's waiting events take their
 * recording time. */
#define MAX_LOADED 64
static uint64_t load_ns;
static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static CUfunction loaded[MAX_LOADED];
static int nloaded;

static void read_load(void)
{
    const char *us = getenv("FAKEGPU_LOAD_US");
    load_ns = us ? strtoull(us, NULL, 10) * 1000 : 0;
}

/* Loads f if it is not: true when that took time. Caller holds no lock. */
static bool load_function(CUfunction f)
{
    pthread_once(&load_once, read_load);
    if (load_ns == 0)
        return false;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < nloaded; i++)
        if (loaded[i] == f) {
            pthread_mutex_unlock(&lock);
            return false;
        }
    if (nloaded < MAX_LOADED)
        loaded[nloaded++] = f;
    pthread_mutex_unlock(&lock);
    sleep_until(fg_now_ns() + load_ns);
    return true;
}

EXPORT CUresult cuFuncLoad(CUfunction f)
{
    if (f == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    load_function(f);
    return CUDA_SUCCESS;
}

/* ---- Launches ---- */

static CUresult launch(CUfunction f, CUstream s, void **params)
{
    if (f == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    if (load_function(f)) {
        pthread_mutex_lock(&lock);
        struct queue *q = find_queue(s, false);
        for (int i = 0; q != NULL && i < q->nwaiting; i++)
            fix(q->waiting[i], q->waiting[i]->recorded);
        if (q != NULL)
            q->nwaiting = 0;
        pthread_mutex_unlock(&lock);
    }
    return run(s, kernel_ns(params));
}

static CUstream per_thread(CUstream s) { return s ? s : CU_STREAM_PER_THREAD; }

EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy,
                               unsigned int gz, unsigned int bx,
                               unsigned int by, unsigned int bz,
                               unsigned int shmem, CUstream s, void **params,
                               void **extra)
{
    (void)gx, (void)gy, (void)gz, (void)bx, (void)by, (void)bz, (void)shmem,
        (void)extra;
    if (fg_should_fail("cuLaunchKernel"))
        return CUDA_ERROR_LAUNCH_FAILED;
    return launch(f, s, params);
}

EXPORT CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned int gx,
                                    unsigned int gy, unsigned int gz,
                                    unsigned int bx, unsigned int by,
                                    unsigned int bz, unsigned int shmem,
                                    CUstream s, void **params, void **extra)
{
    return cuLaunchKernel(f, gx, gy, gz, bx, by, bz, shmem, per_thread(s),
                          params, extra);
}

EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f,
                                 void **params, void **extra)
{
    (void)extra;
    if (c == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    return launch(f, c->hStream, params);
}

EXPORT CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *c, CUfunction f,
                                      void **params, void **extra)
{
    (void)extra;
    if (c == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    return launch(f, per_thread(c->hStream), params);
}

EXPORT CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned int gx,
                                          unsigned int gy, unsigned int gz,
                                          unsigned int bx, unsigned int by,
                                          unsigned int bz, unsigned int shmem,
                                          CUstream s, void **params)
{
    return cuLaunchKernel(f, gx, gy, gz, bx, by, bz, shmem, s, params, NULL);
}

EXPORT CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned int gx,
                                               unsigned int gy, unsigned int gz,
                                               unsigned int bx, unsigned int by,
                                               unsigned int bz,
                                               unsigned int shmem, CUstream s,
                                               void **params)
{
    return cuLaunchKernel(f, gx, gy, gz, bx, by, bz, shmem, per_thread(s),
                          params, NULL);
}

/* The deprecated launch entry points the driver still exports: the grid
 * launches take the default duration (their parameters come from
 * cuParamSet*); the multi-device cooperative launch runs each kernel on
 * its stream. */
EXPORT CUresult cuLaunchGridAsync(CUfunction f, int w, int h, CUstream s)
{
    (void)w, (void)h;
    return launch(f, s, NULL);
}

EXPORT CUresult cuLaunchGrid(CUfunction f, int w, int h)
{
    (void)w, (void)h;
    CUresult rc = launch(f, NULL, NULL);
    fg_exec_sync_stream(NULL);
    return rc;
}

EXPORT CUresult cuLaunch(CUfunction f)
{
    return cuLaunchGrid(f, 1, 1);
}

EXPORT CUresult cuLaunchCooperativeKernelMultiDevice(CUDA_LAUNCH_PARAMS *list,
                                                     unsigned int n,
                                                     unsigned int flags)
{
    (void)flags;
    for (unsigned i = 0; list != NULL && i < n; i++) {
        CUresult rc = launch(list[i].function, list[i].hStream,
                             list[i].kernelParams);
        if (rc != CUDA_SUCCESS)
            return rc;
    }
    return CUDA_SUCCESS;
}

/* ---- Graphs: a sum of kernel durations, and memory nodes ---- */

enum { NODE_KERNEL, NODE_ALLOC, NODE_FREE };

struct fg_node {
    int type;
    struct fg_mem_node mem; /* alloc and free nodes */
    CUDA_MEM_ALLOC_NODE_PARAMS params; /* alloc nodes, as given */
};

/* Add a node to g; NULL when out of memory. */
static struct fg_node *add_node(struct fg_graph *g, int type)
{
    if (g->nnodes == g->cap) {
        int cap = g->cap ? g->cap * 2 : 8;
        struct fg_node **nodes = realloc(g->nodes, (size_t)cap * sizeof *nodes);
        if (nodes == NULL)
            return NULL;
        g->nodes = nodes;
        g->cap = cap;
    }
    struct fg_node *n = calloc(1, sizeof *n);
    if (n != NULL) {
        n->type = type;
        g->nodes[g->nnodes++] = n;
    }
    return n;
}

static void free_graph(struct fg_graph *g)
{
    if (g == NULL)
        return;
    for (int i = 0; i < g->nnodes; i++)
        free(g->nodes[i]);
    free(g->nodes);
    free(g);
}

/* A free of dptr in g: of g's own allocation, or of another graph's. */
static struct fg_node *add_free(struct fg_graph *g, uint64_t dptr)
{
    struct fg_node *n = add_node(g, NODE_FREE);
    if (n == NULL)
        return NULL;
    n->mem = (struct fg_mem_node){.dptr = dptr, .kind = FG_MEM_FREE};
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i]->type == NODE_ALLOC && g->nodes[i]->mem.dptr == dptr) {
            g->nodes[i]->mem.kind = FG_MEM_FREED;
            n->mem.kind = FG_MEM_FREED; /* nothing to do at launch */
        }
    return n;
}

static struct fg_node *add_alloc(struct fg_graph *g, uint64_t bytes, int physical)
{
    struct fg_node *n = add_node(g, NODE_ALLOC);
    if (n != NULL)
        n->mem = (struct fg_mem_node){fg_new_address(bytes), bytes, physical,
                                      FG_MEM_KEPT};
    return n;
}

EXPORT CUresult cuGraphCreate(CUgraph *g, unsigned int flags)
{
    (void)flags;
    if (g == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *g = (CUgraph)calloc(1, sizeof(struct fg_graph));
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphAddKernelNode_v2(CUgraphNode *node, CUgraph g,
                                        const CUgraphNode *deps, size_t ndeps,
                                        const CUDA_KERNEL_NODE_PARAMS *p)
{
    (void)deps, (void)ndeps;
    if (g == NULL || p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    struct fg_node *n = add_node((struct fg_graph *)g, NODE_KERNEL);
    if (n == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    ((struct fg_graph *)g)->ns += kernel_ns(p->kernelParams);
    if (node)
        *node = (CUgraphNode)n;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphAddMemAllocNode(CUgraphNode *node, CUgraph g,
                                       const CUgraphNode *deps, size_t ndeps,
                                       CUDA_MEM_ALLOC_NODE_PARAMS *p)
{
    (void)deps, (void)ndeps;
    if (node == NULL || g == NULL || p == NULL || p->bytesize == 0 ||
        p->poolProps.location.type != CU_MEM_LOCATION_TYPE_DEVICE ||
        fg_physical(p->poolProps.location.id) < 0)
        return CUDA_ERROR_INVALID_VALUE;
    struct fg_node *n = add_alloc((struct fg_graph *)g, p->bytesize,
                                  fg_physical(p->poolProps.location.id));
    if (n == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    p->dptr = n->mem.dptr;
    n->params = *p;
    n->params.accessDescs = NULL;
    n->params.accessDescCount = 0;
    *node = (CUgraphNode)n;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphAddMemFreeNode(CUgraphNode *node, CUgraph g,
                                      const CUgraphNode *deps, size_t ndeps,
                                      CUdeviceptr dptr)
{
    (void)deps, (void)ndeps;
    if (node == NULL || g == NULL || dptr == 0)
        return CUDA_ERROR_INVALID_VALUE;
    struct fg_node *n = add_free((struct fg_graph *)g, dptr);
    if (n == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    *node = (CUgraphNode)n;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphMemAllocNodeGetParams(CUgraphNode node,
                                             CUDA_MEM_ALLOC_NODE_PARAMS *out)
{
    struct fg_node *n = (struct fg_node *)node;
    if (n == NULL || out == NULL || n->type != NODE_ALLOC)
        return CUDA_ERROR_INVALID_VALUE;
    *out = n->params;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphGetNodes(CUgraph graph, CUgraphNode *nodes, size_t *count)
{
    struct fg_graph *g = (struct fg_graph *)graph;
    if (g == NULL || count == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (fg_should_fail("cuGraphGetNodes"))
        return CUDA_ERROR_UNKNOWN;
    if (nodes != NULL)
        for (size_t i = 0; i < *count && i < (size_t)g->nnodes; i++)
            nodes[i] = (CUgraphNode)g->nodes[i];
    *count = (size_t)g->nnodes;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphNodeGetType(CUgraphNode node, CUgraphNodeType *type)
{
    static const CUgraphNodeType types[] = {
        [NODE_KERNEL] = CU_GRAPH_NODE_TYPE_KERNEL,
        [NODE_ALLOC] = CU_GRAPH_NODE_TYPE_MEM_ALLOC,
        [NODE_FREE] = CU_GRAPH_NODE_TYPE_MEM_FREE,
    };
    struct fg_node *n = (struct fg_node *)node;
    if (n == NULL || type == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *type = types[n->type];
    return CUDA_SUCCESS;
}

/* An executable graph: its duration and its memory nodes. */
struct fg_exec {
    uint64_t ns;
    int nmem;
    struct fg_mem_node mem[];
};

static CUresult instantiate(CUgraphExec *exec, CUgraph graph)
{
    struct fg_graph *g = (struct fg_graph *)graph;
    if (exec == NULL || g == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    struct fg_exec *e = calloc(1, sizeof *e + (size_t)g->nnodes * sizeof e->mem[0]);
    if (e == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    e->ns = g->ns;
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i]->type != NODE_KERNEL)
            e->mem[e->nmem++] = g->nodes[i]->mem;
    *exec = (CUgraphExec)e;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphInstantiateWithFlags(CUgraphExec *exec, CUgraph g,
                                            unsigned long long flags)
{
    (void)flags;
    return instantiate(exec, g);
}

/* The CUDA 10 and 11 entry points (cuda.h no longer declares them). */
EXPORT CUresult cuGraphInstantiate_v2(CUgraphExec *exec, CUgraph g,
                                      CUgraphNode *error_node, char *log,
                                      size_t log_size)
{
    if (error_node)
        *error_node = NULL;
    if (log && log_size)
        log[0] = '\0';
    return instantiate(exec, g);
}

EXPORT CUresult cuGraphInstantiate(CUgraphExec *exec, CUgraph g,
                                   CUgraphNode *error_node, char *log,
                                   size_t log_size)
{
    return cuGraphInstantiate_v2(exec, g, error_node, log, log_size);
}

static CUresult upload(CUgraphExec exec)
{
    if (exec == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    struct fg_exec *e = (struct fg_exec *)exec;
    return fg_graph_mem_run(e->mem, e->nmem, false);
}

EXPORT CUresult cuGraphInstantiateWithParams(CUgraphExec *exec, CUgraph g,
                                             CUDA_GRAPH_INSTANTIATE_PARAMS *p)
{
    if (p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult rc = instantiate(exec, g);
    if (rc == CUDA_SUCCESS && (p->flags & CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD)) {
        rc = upload(*exec);
        if (rc != CUDA_SUCCESS)
            free(*exec);
    }
    p->result_out = rc == CUDA_SUCCESS ? CUDA_GRAPH_INSTANTIATE_SUCCESS
                                       : CUDA_GRAPH_INSTANTIATE_ERROR;
    return rc;
}

EXPORT CUresult cuGraphInstantiateWithParams_ptsz(CUgraphExec *exec, CUgraph g,
                                                  CUDA_GRAPH_INSTANTIATE_PARAMS *p)
{
    return cuGraphInstantiateWithParams(exec, g, p);
}

EXPORT CUresult cuGraphUpload(CUgraphExec exec, CUstream s)
{
    (void)s;
    return upload(exec);
}

EXPORT CUresult cuGraphUpload_ptsz(CUgraphExec exec, CUstream s)
{
    return cuGraphUpload(exec, per_thread(s));
}

EXPORT CUresult cuGraphLaunch(CUgraphExec exec, CUstream s)
{
    if (exec == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    struct fg_exec *e = (struct fg_exec *)exec;
    CUresult rc = fg_graph_mem_run(e->mem, e->nmem, true);
    return rc != CUDA_SUCCESS ? rc : run(s, e->ns);
}

EXPORT CUresult cuGraphLaunch_ptsz(CUgraphExec exec, CUstream s)
{
    return cuGraphLaunch(exec, per_thread(s));
}

EXPORT CUresult cuGraphExecDestroy(CUgraphExec exec) { free(exec); return CUDA_SUCCESS; }

EXPORT CUresult cuGraphDestroy(CUgraph g)
{
    free_graph((struct fg_graph *)g);
    return CUDA_SUCCESS;
}

/* Stream capture: launches on a capturing stream add to its graph. */
static CUresult begin_capture(CUstream s)
{
    if (s == NULL || s == CU_STREAM_LEGACY)
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    pthread_mutex_lock(&lock);
    struct queue *q = find_queue(s, true);
    if (q != NULL && q->capture == NULL)
        q->capture = calloc(1, sizeof *q->capture);
    pthread_mutex_unlock(&lock);
    return q ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

EXPORT CUresult cuStreamBeginCapture_v2(CUstream s, CUstreamCaptureMode mode)
{
    (void)mode;
    return begin_capture(s);
}

EXPORT CUresult cuStreamBeginCapture_v2_ptsz(CUstream s, CUstreamCaptureMode mode)
{
    (void)mode;
    return begin_capture(per_thread(s));
}

/* For tests: a capture begun by a way no hook sees (as a private entry
 * point of a runtime would). */
EXPORT CUresult fakegpu_begin_capture_unseen(CUstream s)
{
    return begin_capture(s);
}

EXPORT CUresult cuStreamEndCapture(CUstream s, CUgraph *g)
{
    pthread_mutex_lock(&lock);
    struct queue *q = find_queue(s, false);
    struct fg_graph *graph = q ? q->capture : NULL;
    if (q != NULL)
        q->capture = NULL;
    pthread_mutex_unlock(&lock);
    if (graph == NULL || g == NULL) {
        free_graph(graph);
        return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
    }
    *g = (CUgraph)graph;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamEndCapture_ptsz(CUstream s, CUgraph *g)
{
    return cuStreamEndCapture(per_thread(s), g);
}

bool fg_exec_capture_alloc(void *s, uint64_t bytes, int ordinal, uint64_t *dptr)
{
    pthread_mutex_lock(&lock);
    struct queue *q = find_queue((CUstream)s, false);
    struct fg_node *n = q && q->capture
                            ? add_alloc(q->capture, bytes, fg_physical(ordinal))
                            : NULL;
    if (n != NULL) {
        n->params.bytesize = bytes;
        n->params.poolProps.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
        n->params.poolProps.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        n->params.poolProps.location.id = ordinal;
        n->params.dptr = *dptr = n->mem.dptr;
    }
    pthread_mutex_unlock(&lock);
    return n != NULL;
}

bool fg_exec_capture_free(void *s, uint64_t dptr)
{
    pthread_mutex_lock(&lock);
    struct queue *q = find_queue((CUstream)s, false);
    bool captured = q && q->capture && add_free(q->capture, dptr) != NULL;
    pthread_mutex_unlock(&lock);
    return captured;
}

EXPORT CUresult cuStreamIsCapturing(CUstream s, CUstreamCaptureStatus *status)
{
    just_launched = NULL;
    __atomic_add_fetch(&capture_queries, 1, __ATOMIC_RELAXED);
    if (status == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    struct queue *q = find_queue(s, false);
    *status = q && q->capture ? CU_STREAM_CAPTURE_STATUS_ACTIVE
                              : CU_STREAM_CAPTURE_STATUS_NONE;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamIsCapturing_ptsz(CUstream s, CUstreamCaptureStatus *st)
{
    return cuStreamIsCapturing(s, st);
}

EXPORT CUresult cuThreadExchangeStreamCaptureMode(CUstreamCaptureMode *mode)
{
    static __thread CUstreamCaptureMode current = CU_STREAM_CAPTURE_MODE_GLOBAL;
    if (mode == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    CUstreamCaptureMode old = current;
    current = *mode;
    *mode = old;
    return CUDA_SUCCESS;
}

/* ---- Events ---- */

EXPORT CUresult cuEventCreate(CUevent *e, unsigned int flags)
{
    (void)flags;
    event_call(false);
    if (e == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *e = (CUevent)calloc(1, sizeof(struct fg_event));
    return CUDA_SUCCESS;
}

EXPORT CUresult cuEventRecord(CUevent ev, CUstream s)
{
    struct fg_event *e = (struct fg_event *)ev;
    struct queue *launched = just_launched;
    just_launched = NULL;
    event_call(true);
    if (e == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    pthread_mutex_lock(&lock);
    if (e->state == 1)
        unwait(e);
    struct queue *q = find_queue(s, true);
    uint64_t now = fg_now_ns();
    /* Right behind this thread's launch: that work's end, however late the
     * host records it, so that shares do not depend on this machine's
     * load. */
    bool behind = q == NULL ||
                  (q->tail != 0 && q->events_since_work == 0 && q == launched);
    if (q != NULL)
        q->events_since_work++;
    if (behind) {
        fix(e, q ? q->tail : now);
    } else {
        if (q->nwaiting == MAX_WAITING)
            unwait(q->waiting[0]);
        e->state = 1;
        e->recorded = q->tail > now ? q->tail : now;
        e->queue = (int)(q - queues);
        q->waiting[q->nwaiting++] = e;
    }
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuEventRecord_ptsz(CUevent e, CUstream s)
{
    return cuEventRecord(e, per_thread(s));
}

EXPORT CUresult cuEventRecordWithFlags(CUevent e, CUstream s, unsigned int f)
{
    (void)f;
    return cuEventRecord(e, s);
}

/* The event's time once fixed; 0 if never recorded. */
static uint64_t event_time(struct fg_event *e)
{
    just_launched = NULL;
    event_call(false);
    pthread_mutex_lock(&lock);
    if (e->state == 1)
        unwait(e);
    uint64_t ts = e->state == 2 ? e->ts : 0;
    pthread_mutex_unlock(&lock);
    return ts;
}

EXPORT CUresult cuEventQuery(CUevent ev)
{
    if (ev == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    return event_time((struct fg_event *)ev) <= fg_now_ns() ? CUDA_SUCCESS
                                                            : CUDA_ERROR_NOT_READY;
}

EXPORT CUresult cuEventSynchronize(CUevent ev)
{
    if (ev == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    sleep_until(event_time((struct fg_event *)ev));
    fg_pools_sync(); /* a synchronization: pools shrink (streams.c) */
    return CUDA_SUCCESS;
}

EXPORT CUresult cuEventElapsedTime_v2(float *ms, CUevent a, CUevent b)
{
    if (ms == NULL || a == NULL || b == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    uint64_t ta = event_time((struct fg_event *)a);
    uint64_t tb = event_time((struct fg_event *)b);
    if (ta == 0 || tb == 0)
        return CUDA_ERROR_INVALID_HANDLE;
    uint64_t now = fg_now_ns();
    if (ta > now || tb > now)
        return CUDA_ERROR_NOT_READY;
    *ms = (float)(((double)tb - (double)ta) / 1e6);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuEventElapsedTime(float *ms, CUevent a, CUevent b)
{
    return cuEventElapsedTime_v2(ms, a, b);
}

EXPORT CUresult cuEventDestroy_v2(CUevent ev)
{
    struct fg_event *e = (struct fg_event *)ev;
    event_call(false);
    if (e == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    pthread_mutex_lock(&lock);
    if (e->state == 1)
        unwait(e);
    pthread_mutex_unlock(&lock);
    free(e);
    return CUDA_SUCCESS;
}

/* ---- Synchronization (cuda_fake.c calls these) ---- */

void fg_exec_sync_stream(void *stream)
{
    just_launched = NULL;
    pthread_mutex_lock(&lock);
    struct queue *q = find_queue((CUstream)stream, false);
    uint64_t tail = q ? q->tail : 0;
    pthread_mutex_unlock(&lock);
    sleep_until(tail);
}

void fg_exec_sync_all(void)
{
    uint64_t last = 0;
    just_launched = NULL;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAX_QUEUES; i++)
        if (queues[i].key != 0 && queues[i].tail > last)
            last = queues[i].tail;
    pthread_mutex_unlock(&lock);
    sleep_until(last);
}

void fg_exec_forget_stream(void *stream)
{
    pthread_mutex_lock(&lock);
    struct queue *q = find_queue((CUstream)stream, false);
    if (q != NULL) {
        while (q->nwaiting > 0)
            unwait(q->waiting[0]);
        free_graph(q->capture);
        q->capture = NULL;
        q->key = 0;
    }
    pthread_mutex_unlock(&lock);
}

/* For tests: when this process's queued work ends (CLOCK_MONOTONIC ns),
 * ns of work it has queued on physical device dev (as long as it takes on
 * all the SMs: see the header), and the device's busy time. */
EXPORT uint64_t fakegpu_work_end_ns(void)
{
    uint64_t last = 0;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAX_QUEUES; i++)
        if (queues[i].key != 0 && queues[i].tail > last)
            last = queues[i].tail;
    pthread_mutex_unlock(&lock);
    return last;
}

EXPORT uint64_t fakegpu_launched_ns(int physical)
{
    pthread_mutex_lock(&lock);
    uint64_t ns = launched_ns[physical];
    pthread_mutex_unlock(&lock);
    return ns;
}

EXPORT uint64_t fakegpu_device_busy_ns(int physical)
{
    return __atomic_load_n(&fg_state()->timeline[physical].busy_ns,
                           __ATOMIC_RELAXED);
}

/* For tests: this process's cuStreamIsCapturing calls so far. */
EXPORT uint64_t fakegpu_capture_queries(void)
{
    return __atomic_load_n(&capture_queries, __ATOMIC_RELAXED);
}

/* For tests: this process's event calls so far: records only, or all
 * (create, record, query, synchronize, elapsed time, destroy). */
EXPORT uint64_t fakegpu_event_calls(bool records_only)
{
    return __atomic_load_n(records_only ? &event_records : &event_calls,
                           __ATOMIC_RELAXED);
}
