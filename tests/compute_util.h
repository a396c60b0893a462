/* Helpers for the compute-limit tests: containers of processes launching on
 * the simulated GPU (tests/fakegpu/exec.c), each container a region of its
 * own, and their shares of the device measured in simulated GPU time. */
#ifndef COMPUTE_UTIL_H
#define COMPUTE_UTIL_H

#include <sys/mman.h>

#include "hook/launch_decl.h"
#include "hami_offsets.h"
#include "hook_util.h"
#include "vgpu/sm_budget.h"

#define MAX_TENANTS 8
#define OFF_LAST_KERNEL_TIME 2008912 /* HAMi v1 layout, as the monitor writes */

/* WORK_CHANGE: asynchronous, the kernels twice as long from the middle of
 * the window on (the same function, its argument changed). */
enum work { WORK_ASYNC, WORK_SYNC_EACH, WORK_GRAPH, WORK_CHANGE };

struct tenant {
    int container;       /* region index: processes with one index share it */
    int cap;             /* CUDA_DEVICE_SM_LIMIT; 0: unset */
    const char *policy;  /* GPU_CORE_UTILIZATION_POLICY or NULL */
    enum work work;
    uint32_t kernel_us;
    uint64_t gpu_ns;     /* out: simulated GPU time its launches took */
    double began;        /* out: when it made its first launch */
    double ended;        /* out: when its last work ended on the device */
    uint64_t launches;   /* out: launches it made */
    uint64_t records;    /* out: event records the driver saw */
    uint64_t event_calls; /* out: event calls of any kind */
};

/* A tenant to run (its outputs zero). */
#define TENANT(c, pct, pol, w, us)                                             \
    ((struct tenant){.container = (c), .cap = (pct), .policy = (pol),          \
                     .work = (w), .kernel_us = (us)})

struct run {
    double start;        /* all tenants launch from here */
    double window;       /* for this many seconds */
    int ready;
    struct tenant t[MAX_TENANTS];
};

static inline const char *container_path(int c)
{
    static char path[MAX_TENANTS][512], base[480];
    if (base[0] == '\0') /* the test's own, before tenants change it */
        snprintf(base, sizeof base, "%s", getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE"));
    snprintf(path[c], sizeof path[c], "%s.c%d", base, c);
    return path[c];
}

static inline void launch_one(struct tenant *t, CUgraphExec graph)
{
    void *params[] = {&t->kernel_us};
    if (t->work == WORK_GRAPH)
        CU_OK(cuGraphLaunch(graph, NULL));
    else
        CU_OK(cuLaunchKernel((CUfunction)1, 1, 1, 1, 1, 1, 1, 0, NULL, params,
                             NULL));
    if (t->work == WORK_SYNC_EACH)
        CU_OK(cuCtxSynchronize());
}

/* A graph of `nodes` kernels of us microseconds each. */
static inline CUgraphExec graph_of(int nodes, uint32_t us)
{
    CUgraph g;
    CUgraphExec exec;
    CU_OK(cuGraphCreate(&g, 0));
    for (int i = 0; i < nodes; i++) {
        void *params[] = {&us};
        CUDA_KERNEL_NODE_PARAMS_v2 p = {.func = (CUfunction)1, .kernelParams = params};
        CUgraphNode node;
        CU_OK(cuGraphAddKernelNode_v2(&node, g, NULL, 0, &p));
    }
    CU_OK(cuGraphInstantiateWithFlags(&exec, g, 0));
    CU_OK(cuGraphDestroy(g));
    return exec;
}

static inline void tenant_main(struct run *run, int i)
{
    struct tenant *t = &run->t[i];
    setenv("CUDA_DEVICE_MEMORY_SHARED_CACHE", container_path(t->container), 1);
    if (t->cap > 0) {
        char pct[16];
        snprintf(pct, sizeof pct, "%d", t->cap);
        setenv("CUDA_DEVICE_SM_LIMIT", pct, 1);
    }
    if (t->policy)
        setenv("GPU_CORE_UTILIZATION_POLICY", t->policy, 1);
    fakegpu_context(0);
    CUgraphExec graph = t->work == WORK_GRAPH ? graph_of(10, t->kernel_us) : NULL;
    __atomic_add_fetch(&run->ready, 1, __ATOMIC_SEQ_CST);
    while (now_seconds() < run->start)
        usleep(100);
    t->began = now_seconds(); /* the budget starts with the first launch */
    double half = run->start + run->window / 2;
    for (double now = t->began; now < run->start + run->window; now = now_seconds()) {
        if (t->work == WORK_CHANGE && now >= half) {
            t->kernel_us *= 2;
            t->work = WORK_ASYNC;
        }
        launch_one(t, graph);
        t->launches++;
    }
    CU_OK(cuCtxSynchronize());
    t->ended = (double)fakegpu_work_end_ns() / 1e9; /* simulated, not host */
    t->gpu_ns = fakegpu_launched_ns(0);
    t->records = fakegpu_event_calls(true);
    t->event_calls = fakegpu_event_calls(false);
    _exit(0);
}

/* Run n tenants for window seconds; fills each tenant's gpu_ns. */
static inline struct run *run_tenants(const struct tenant *tenants, int n,
                                      double window)
{
    struct run *run = mmap(NULL, sizeof *run, PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(run != MAP_FAILED, "mmap");
    memcpy(run->t, tenants, (size_t)n * sizeof *tenants);
    run->window = window;
    run->start = now_seconds() + 3600; /* set for real once all are ready */
    for (int c = 0; c < MAX_TENANTS; c++)
        unlink(container_path(c));
    for (int i = 0; i < n; i++)
        if (fork() == 0)
            tenant_main(run, i);
    while (__atomic_load_n(&run->ready, __ATOMIC_SEQ_CST) < n)
        usleep(1000);
    run->start = now_seconds() + 0.05;
    CHECK(wait_children(n) == 0, "a tenant failed");
    return run;
}

/* A container's share of the device in percent: its processes' GPU time
 * over its wall time, from its first launch (a process of a loaded test
 * machine may start late) to the end of its last work on the device. */
static inline double share(const struct run *run, int n, int container)
{
    double begin = 1e300, end = 0;
    uint64_t ns = 0;
    for (int i = 0; i < n; i++) {
        const struct tenant *t = &run->t[i];
        if (t->container != container)
            continue;
        begin = t->began < begin ? t->began : begin;
        end = t->ended > end ? t->ended : end;
        ns += t->gpu_ns;
    }
    return 100.0 * (double)ns / 1e9 / (end - begin);
}

static inline void budget_stats(int container, uint64_t *charged, uint64_t *waited);

static inline void expect_share(const struct run *run, int n, int container,
                                double cap)
{
    double s = share(run, n, container);
    uint64_t charged, waited, ns = 0;
    budget_stats(container, &charged, &waited);
    for (int i = 0; i < n; i++)
        ns += run->t[i].container == container ? run->t[i].gpu_ns : 0;
    printf("container %d: share %.1f %% (cap %.0f %%); GPU time %.1f ms, "
           "charged %.1f ms, held %.1f ms\n", container, s, cap, (double)ns / 1e6,
           (double)charged / 1e6, (double)waited / 1e6);
    CHECK(s <= cap + 3, "container %d's share %.1f is at most 3 points over "
          "its cap %.0f", container, s, cap);
    /* Under its cap only if it asked for more: held a quarter of the time
     * at least. A sanitizer build on a loaded machine may not launch fast
     * enough to reach the cap; then only the cap itself is checked. */
    if ((double)waited < 0.25e9 * run->window) {
        printf("container %d: held %.0f ms only (host-bound): share not "
               "checked from below\n", container, (double)waited / 1e6);
        return;
    }
    CHECK(s >= cap - 3, "container %d's share %.1f is at most 3 points under "
          "its cap %.0f", container, s, cap);
}

/* The region's budget statistics of a container on device 0. */
static inline void budget_stats(int container, uint64_t *charged, uint64_t *waited)
{
    struct vgpu_region *r = vgpu_region_open_existing(container_path(container));
    CHECK(r != NULL, "container %d's region readable", container);
    struct vgpu_sm_budget *b = vgpu_region_sm_budget(r, 0);
    *charged = __atomic_load_n(&b->charged_ns, __ATOMIC_RELAXED);
    *waited = __atomic_load_n(&b->waited_ns, __ATOMIC_RELAXED);
    vgpu_region_detach(r);
}

#endif
