/* What a graph's memory nodes take counts (1 GiB limit, the driver's own
 * ledger as the judge). The driver backs graph allocations from a graph
 * pool per device, reserved at upload or launch and kept cached until
 * cuDeviceGraphMemTrim:
 *  - a graph allocating more than the limit is refused at its launch and
 *    its upload, through every way of reaching them, and never runs;
 *  - the pool's cache after the graph freed its memory stays charged; a
 *    plain allocation that fits only without it succeeds after vgpu trims
 *    the pool; a relaunch that fits only without a live plain allocation
 *    is refused;
 *  - an allocation that outlives its graph is charged until freed, then its
 *    cache until trimmed;
 *  - a captured cuMemAllocAsync is a memory node: charged at the launch;
 *  - threads launching graphs together never take the driver past it;
 *  - a graph whose nodes cannot be read is charged after its launches;
 *  - a pool that grows by larger chunks than estimated is learned, and
 *    two launches in the driver at once are not taken for such a pool;
 *  - trim and destruction bring the charge back to zero. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>

#include "hook_util.h"

typedef CUresult (*launch_fn)(CUgraphExec, CUstream);

static void check_peak(const char *when)
{
    CHECK(fakegpu_device_peak(0) <= GiB, "%s: the driver held %llu MiB > 1 GiB",
          when, (unsigned long long)(fakegpu_device_peak(0) / MiB));
}

static void check_charged(const char *when)
{
    CHECK(region_used(0) == fakegpu_process_used(0),
          "%s: region %llu MiB, driver %llu MiB", when,
          (unsigned long long)(region_used(0) / MiB),
          (unsigned long long)(fakegpu_process_used(0) / MiB));
}

/* A graph with one allocation node of bytes on device 0, freed in the
 * graph or not (its address in *dptr). */
static CUgraphExec alloc_graph(uint64_t bytes, bool free_it, CUdeviceptr *dptr)
{
    CUgraph g;
    CU_OK(cuGraphCreate(&g, 0));
    CUDA_MEM_ALLOC_NODE_PARAMS p;
    memset(&p, 0, sizeof p);
    p.poolProps.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    p.poolProps.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    p.poolProps.location.id = 0;
    p.bytesize = bytes;
    CUgraphNode alloc, release;
    CU_OK(cuGraphAddMemAllocNode(&alloc, g, NULL, 0, &p));
    if (free_it)
        CU_OK(cuGraphAddMemFreeNode(&release, g, &alloc, 1, p.dptr));
    CUgraphExec exec;
    CU_OK(cuGraphInstantiateWithFlags(&exec, g, 0));
    CU_OK(cuGraphDestroy(g));
    if (dptr)
        *dptr = p.dptr;
    return exec;
}

static void too_big(CUstream s)
{
    CUgraphExec exec = alloc_graph(GiB + 512 * MiB, true, NULL);
    CHECK(cuGraphLaunch(exec, s) == CUDA_ERROR_OUT_OF_MEMORY, "launch refused");
    CHECK(cuGraphUpload(exec, s) == CUDA_ERROR_OUT_OF_MEMORY, "upload refused");
    /* Through cuGetProcAddress (per-thread variants too) and dlsym. */
    launch_fn fn;
    CUdriverProcAddressQueryResult q;
    CU_OK(cuGetProcAddress_v2("cuGraphLaunch", (void **)&fn, 12000,
                              CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, &q));
    CHECK(fn(exec, s) == CUDA_ERROR_OUT_OF_MEMORY, "cuGetProcAddress: launch_ptsz");
    CU_OK(cuGetProcAddress_v2("cuGraphUpload", (void **)&fn, 12000, 0, &q));
    CHECK(fn(exec, s) == CUDA_ERROR_OUT_OF_MEMORY, "cuGetProcAddress: upload");
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    fn = (launch_fn)dlsym(cuda, "cuGraphUpload_ptsz");
    CHECK(fn && fn(exec, s) == CUDA_ERROR_OUT_OF_MEMORY, "dlsym: upload_ptsz");
    dlclose(cuda);
    check_peak("too big");
    CHECK(fakegpu_process_used(0) == 0 && region_used(0) == 0, "nothing taken");
    CU_OK(cuGraphExecDestroy(exec));

    /* Instantiated with the CUDA 10 and 11 ABIs, through cuGetProcAddress. */
    typedef CUresult (*old_fn)(CUgraphExec *, CUgraph, CUgraphNode *, char *, size_t);
    for (int version = 10000; version <= 11000; version += 1000) {
        old_fn old;
        CU_OK(cuGetProcAddress_v2("cuGraphInstantiate", (void **)&old, version, 0, &q));
        CUgraph graph;
        CU_OK(cuGraphCreate(&graph, 0));
        CUDA_MEM_ALLOC_NODE_PARAMS a;
        memset(&a, 0, sizeof a);
        a.poolProps.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
        a.poolProps.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        a.bytesize = 2 * GiB;
        CUgraphNode n;
        CU_OK(cuGraphAddMemAllocNode(&n, graph, NULL, 0, &a));
        CU_OK(old(&exec, graph, NULL, NULL, 0));
        CU_OK(cuGraphDestroy(graph));
        CHECK(cuGraphLaunch(exec, s) == CUDA_ERROR_OUT_OF_MEMORY,
              "instantiated at version %d: launch refused", version);
        CU_OK(cuGraphExecDestroy(exec));
    }

    /* Instantiated through cuGetProcAddress, uploaded at instantiation. */
    typedef CUresult (*inst_fn)(CUgraphExec *, CUgraph, CUDA_GRAPH_INSTANTIATE_PARAMS *);
    inst_fn inst;
    CU_OK(cuGetProcAddress_v2("cuGraphInstantiateWithParams", (void **)&inst,
                              12000, 0, &q));
    CUgraph g;
    CU_OK(cuGraphCreate(&g, 0));
    CUDA_MEM_ALLOC_NODE_PARAMS p;
    memset(&p, 0, sizeof p);
    p.poolProps.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    p.poolProps.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    p.bytesize = 2 * GiB;
    CUgraphNode node;
    CU_OK(cuGraphAddMemAllocNode(&node, g, NULL, 0, &p));
    CUDA_GRAPH_INSTANTIATE_PARAMS ip = {.flags = CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD,
                                        .hUploadStream = s};
    CHECK(inst(&exec, g, &ip) == CUDA_ERROR_OUT_OF_MEMORY, "instantiate+upload refused");
    CU_OK(cuGraphDestroy(g));
    check_peak("instantiated with upload");
    CHECK(fakegpu_process_used(0) == 0 && region_used(0) == 0, "nothing taken");
}

static void cached(CUstream s)
{
    CUgraphExec exec = alloc_graph(768 * MiB, true, NULL);
    CU_OK(cuGraphLaunch(exec, s));
    CU_OK(cuStreamSynchronize(s));
    CHECK(fakegpu_process_used(0) == 768 * MiB, "the graph pool keeps its cache");
    check_charged("cache after the launch");
    /* Another library: fits once vgpu has trimmed the graph pool. */
    CUdeviceptr p;
    CU_OK(cuMemAlloc_v2(&p, 512 * MiB));
    check_peak("cache then plain");
    check_charged("trimmed, then plain");
    /* The graph's memory does not fit beside the live plain allocation. */
    CHECK(cuGraphLaunch(exec, s) == CUDA_ERROR_OUT_OF_MEMORY, "relaunch refused");
    check_peak("plain then graph");
    CU_OK(cuMemFree_v2(p));
    CU_OK(cuGraphLaunch(exec, s));
    CU_OK(cuGraphLaunch(exec, s)); /* from its own cache */
    check_charged("relaunched");
    CHECK(region_used(0) == 768 * MiB, "charged once: %llu MiB",
          (unsigned long long)(region_used(0) / MiB));
    CU_OK(cuGraphExecDestroy(exec));
    check_charged("destroyed, still cached");
    CU_OK(cuDeviceGraphMemTrim(0));
    CHECK(region_used(0) == 0 && fakegpu_process_used(0) == 0,
          "trimmed: %llu MiB charged", (unsigned long long)(region_used(0) / MiB));
}

static void outlives(CUstream s)
{
    CUdeviceptr kept, p;
    CUgraphExec exec = alloc_graph(512 * MiB, false, &kept);
    CU_OK(cuGraphLaunch(exec, s));
    check_charged("allocation outlives the graph");
    CHECK(cuMemAlloc_v2(&p, 768 * MiB) == CUDA_ERROR_OUT_OF_MEMORY,
          "a live graph allocation cannot be trimmed");
    check_peak("graph allocation then plain");
    CU_OK(cuMemFreeAsync(kept, s));
    check_charged("freed into the graph pool's cache");
    CU_OK(cuMemAlloc_v2(&p, 768 * MiB));
    check_peak("freed graph allocation then plain");
    check_charged("trimmed");
    CU_OK(cuMemFree_v2(p));
    CU_OK(cuGraphExecDestroy(exec));
    CHECK(region_used(0) == 0, "nothing left: %llu MiB",
          (unsigned long long)(region_used(0) / MiB));
}

static void captured(CUstream s)
{
    /* Capturing allocates nothing, so it succeeds beside a live plain
     * allocation; the launch is what does not fit. */
    CUdeviceptr p, plain;
    CU_OK(cuMemAlloc_v2(&plain, 512 * MiB));
    CU_OK(cuStreamBeginCapture_v2(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
    CU_OK(cuMemAllocAsync(&p, 768 * MiB, s));
    CU_OK(cuMemFreeAsync(p, s));
    CUgraph g;
    CU_OK(cuStreamEndCapture(s, &g));
    CHECK(fakegpu_process_used(0) == 512 * MiB && region_used(0) == 512 * MiB,
          "capturing allocates nothing: %llu MiB charged",
          (unsigned long long)(region_used(0) / MiB));
    CUgraphExec exec;
    CU_OK(cuGraphInstantiateWithFlags(&exec, g, 0));
    CU_OK(cuGraphDestroy(g));
    CHECK(cuGraphLaunch(exec, s) == CUDA_ERROR_OUT_OF_MEMORY, "captured graph refused");
    CU_OK(cuMemFree_v2(plain));
    CU_OK(cuGraphLaunch(exec, s));
    check_charged("captured graph launched");
    CHECK(region_used(0) == 768 * MiB, "its pool charged");
    /* Watermarks reset: nothing changes but the charge settles. */
    cuuint64_t zero = 0;
    CU_OK(cuDeviceSetGraphMemAttribute(0, CU_GRAPH_MEM_ATTR_RESERVED_MEM_HIGH, &zero));
    check_charged("watermark reset");
    CU_OK(cuGraphExecDestroy(exec));
    CU_OK(cuDeviceGraphMemTrim(0));
    check_peak("captured");
    CHECK(region_used(0) == 0 && fakegpu_process_used(0) == 0, "all returned");
}

/* Threads launching graphs of their own together: the driver never holds
 * more than the limit. */
#define THREADS 4
#define LAUNCHES 100

static void *launcher(void *arg)
{
    (void)arg;
    fakegpu_context(0);
    CUstream s;
    CU_OK(cuStreamCreate(&s, 0));
    CUgraphExec exec = alloc_graph(300 * MiB, true, NULL);
    int ok = 0;
    for (int i = 0; i < LAUNCHES; i++) {
        CUresult rc = cuGraphLaunch(exec, s);
        CHECK(rc == CUDA_SUCCESS || rc == CUDA_ERROR_OUT_OF_MEMORY, "launch: %d", (int)rc);
        ok += rc == CUDA_SUCCESS;
    }
    CU_OK(cuGraphExecDestroy(exec));
    CU_OK(cuStreamDestroy_v2(s));
    return (void *)(intptr_t)ok;
}

static void threads(void)
{
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&t[i], NULL, launcher, NULL) == 0, "thread");
    int ok = 0;
    for (int i = 0; i < THREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        ok += (int)(intptr_t)r;
    }
    check_peak("threads");
    CHECK(ok > 0, "some launches fit");
    CU_OK(cuDeviceGraphMemTrim(0));
    CHECK(region_used(0) == 0 && fakegpu_process_used(0) == 0,
          "threads: all returned, %llu MiB charged",
          (unsigned long long)(region_used(0) / MiB));
}

static CUcontext shared_ctx;
static int first_returned; /* the first launch is out of the driver */
static int overlapped;     /* the second began before that */

static void launch_kept_graph(CUdeviceptr *kept)
{
    CU_OK(cuCtxSetCurrent(shared_ctx));
    CUstream s;
    CU_OK(cuStreamCreate(&s, 0));
    CUgraphExec exec = alloc_graph(32 * MiB, false, kept);
    CU_OK(cuGraphLaunch(exec, s));
    CU_OK(cuStreamSynchronize(s));
    CU_OK(cuGraphExecDestroy(exec));
    CU_OK(cuStreamDestroy_v2(s));
}

static void *first_launch(void *kept)
{
    launch_kept_graph(kept);
    __atomic_store_n(&first_returned, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* Once the first launch has reserved its chunk (and sleeps in the driver). */
static void *second_launch(void *kept)
{
    for (int i = 0; i < 10000 && fakegpu_process_used(0) < 32 * MiB; i++)
        usleep(1000);
    __atomic_store_n(&overlapped, !__atomic_load_n(&first_returned, __ATOMIC_ACQUIRE),
                     __ATOMIC_RELEASE);
    launch_kept_graph(kept);
    return NULL;
}

/* Two launches in the driver together each grow the pool by a chunk: the
 * first to return finds the pool grown by both, which is not its
 * estimate's shortfall (the second's is still reserved). Learned as one,
 * every later launch would reserve a chunk more: a launch that fits beside
 * 992 MiB would be refused. */
static void two_in_the_driver(CUcontext ctx)
{
    shared_ctx = ctx;
    setenv("FAKEGPU_GRAPH_DELAY_US", "1000000", 1); /* before the threads */
    pthread_t a, b;
    CUdeviceptr kept[2];
    CHECK(pthread_create(&a, NULL, first_launch, &kept[0]) == 0, "thread");
    CHECK(pthread_create(&b, NULL, second_launch, &kept[1]) == 0, "thread");
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    unsetenv("FAKEGPU_GRAPH_DELAY_US");
    CHECK(__atomic_load_n(&overlapped, __ATOMIC_ACQUIRE),
          "the second launch began while the first was in the driver");
    CHECK(fakegpu_process_used(0) == 64 * MiB, "both grew the pool: %llu MiB",
          (unsigned long long)(fakegpu_process_used(0) / MiB));
    check_charged("two launches returned");
    CU_OK(cuMemFree_v2(kept[0]));
    CU_OK(cuMemFree_v2(kept[1]));
    CU_OK(cuDeviceGraphMemTrim(0));
    CUdeviceptr p;
    CU_OK(cuMemAlloc_v2(&p, 992 * MiB));
    CUstream s;
    CU_OK(cuStreamCreate(&s, 0));
    CUgraphExec exec = alloc_graph(32 * MiB, true, NULL);
    CU_OK(cuGraphLaunch(exec, s)); /* one chunk fits beside 992 MiB */
    check_peak("after two in the driver");
    CU_OK(cuGraphExecDestroy(exec));
    CU_OK(cuStreamDestroy_v2(s));
    CU_OK(cuMemFree_v2(p));
    CU_OK(cuDeviceGraphMemTrim(0));
    CHECK(region_used(0) == 0 && fakegpu_process_used(0) == 0, "all returned");
}

/* A graph whose nodes cannot be read: charged what the pool took after
 * each launch. */
static void blind(CUstream s)
{
    setenv("FAKEGPU_FAIL", "cuGraphGetNodes", 1);
    CUgraphExec exec = alloc_graph(256 * MiB, true, NULL);
    unsetenv("FAKEGPU_FAIL");
    CU_OK(cuGraphLaunch(exec, s));
    check_charged("a blind graph launched");
    CHECK(region_used(0) == 256 * MiB, "its pool charged after the launch");
    CU_OK(cuGraphExecDestroy(exec));
    CU_OK(cuDeviceGraphMemTrim(0));
    CHECK(region_used(0) == 0 && fakegpu_process_used(0) == 0, "all returned");
}

/* A driver whose graph pool grows by larger chunks than estimated (256 MiB
 * here): its first growth is charged after the launch; from then on the
 * launch reserves that much before the driver can take it. */
static void chunks(CUstream s)
{
    setenv("FAKEGPU_GRAPH_CHUNK", "256", 1);
    CUgraphExec exec = alloc_graph(2 * MiB, true, NULL);
    CU_OK(cuGraphLaunch(exec, s));
    CHECK(fakegpu_process_used(0) == 256 * MiB, "the pool took a whole chunk");
    check_charged("first growth beyond the estimate");
    CU_OK(cuDeviceGraphMemTrim(0));
    CUdeviceptr p;
    CU_OK(cuMemAlloc_v2(&p, 896 * MiB));
    CHECK(cuGraphLaunch(exec, s) == CUDA_ERROR_OUT_OF_MEMORY,
          "a chunk beside 896 MiB is over the limit");
    check_peak("learned chunk");
    CU_OK(cuMemFree_v2(p));
    CU_OK(cuGraphExecDestroy(exec));
    CU_OK(cuDeviceGraphMemTrim(0));
    CHECK(region_used(0) == 0 && fakegpu_process_used(0) == 0, "all returned");
    unsetenv("FAKEGPU_GRAPH_CHUNK");
}

int main(void)
{
    hook_fresh(1, "8g", "1g");
    CUcontext ctx = fakegpu_context(0);
    two_in_the_driver(ctx); /* first: no slack learned before it */
    CUstream s;
    CU_OK(cuStreamCreate(&s, 0));
    too_big(s);
    cached(s);
    outlives(s);
    captured(s);
    threads();
    blind(s);
    chunks(s);
    CU_OK(cuStreamDestroy_v2(s));
    printf("hook_graph_mem: ok\n");
    return 0;
}
