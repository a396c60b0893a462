/* Host time per cuGraphLaunch of a graph without allocation nodes, on the
 * simulated GPU, for the graph-memory hook's cost on the launch path:
 *   graph_launch_bench N [alloc]   N launches of a one-kernel graph,
 *                                  repeated ROUNDS times; prints the best
 *                                  round's ns per launch. With "alloc", a
 *                                  graph with an allocation node is
 *                                  instantiated first, so that every launch
 *                                  looks its graph up (src/hook/graphmem.c).
 * Run with no preload and under libvgpu.so; compare the rows. */
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROUNDS 5

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static CUgraphExec instantiate(CUgraph g)
{
    CUgraphExec exec = NULL;
    if (cuGraphInstantiateWithFlags(&exec, g, 0) != CUDA_SUCCESS)
        exit(1);
    return exec;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 100000;
    CUdevice dev;
    CUcontext ctx;
    CUstream s;
    CUgraph g;
    CUgraphNode node;
    if (n <= 0 || cuInit(0) || cuDeviceGet(&dev, 0) ||
        cuDevicePrimaryCtxRetain(&ctx, dev) || cuCtxSetCurrent(ctx) ||
        cuStreamCreate(&s, 0) || cuGraphCreate(&g, 0)) {
        fprintf(stderr, "usage: graph_launch_bench N [alloc] (on a GPU)\n");
        return 2;
    }
    CUDA_KERNEL_NODE_PARAMS k;
    memset(&k, 0, sizeof k);
    k.func = (CUfunction)1; /* the simulated driver runs any function */
    if (cuGraphAddKernelNode(&node, g, NULL, 0, &k))
        return 1;
    CUgraphExec exec = instantiate(g);
    if (argc > 2 && strcmp(argv[2], "alloc") == 0) {
        CUgraph a;
        CUDA_MEM_ALLOC_NODE_PARAMS p;
        memset(&p, 0, sizeof p);
        p.poolProps.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
        p.poolProps.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        p.bytesize = 1 << 20;
        if (cuGraphCreate(&a, 0) || cuGraphAddMemAllocNode(&node, a, NULL, 0, &p))
            return 1;
        instantiate(a);
    }
    double best = 1e18;
    for (int r = 0; r < ROUNDS; r++) {
        double t = now_ns();
        for (long i = 0; i < n; i++)
            if (cuGraphLaunch(exec, s) != CUDA_SUCCESS)
                return 1;
        t = (now_ns() - t) / (double)n;
        best = t < best ? t : best;
    }
    printf("%.0f\n", best);
    return 0;
}
