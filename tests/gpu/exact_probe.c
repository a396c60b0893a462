/* Probes of the memory the driver takes for a process (issue 9), for
 * scripts/gpu-exact.sh and its NVML sampler. Each prints "key value" lines
 * and holds what it obtained for a second at the end, so that a sampler
 * running every 20 ms sees the peak.
 *   exact_probe race MIB DIR     chunks of MIB until refused; hold until
 *                                DIR/release exists (at most 30 s)
 *   exact_probe ctx N            N contexts with cuCtxCreate
 *   exact_probe module CUBIN MIB load CUBIN (static __device__ data), then
 *                                cuMemAlloc MIB
 *   exact_probe graph GMIB MIB [free]
 *                                launch a graph with one allocation node of
 *                                GMIB and no free node (its memory comes
 *                                from the graph pool); with "free", free it
 *                                (it stays in the pool's cache); then
 *                                cuMemAlloc MIB (0: none)
 */
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MiB (1ull << 20)

static int primary_context(void)
{
    CUdevice dev;
    CUcontext ctx;
    CUresult rc;
    if ((rc = cuInit(0)) || (rc = cuDeviceGet(&dev, 0)) ||
        (rc = cuDevicePrimaryCtxRetain(&ctx, dev)) || (rc = cuCtxSetCurrent(ctx))) {
        printf("context_error %d\n", (int)rc);
        return 1;
    }
    return 0;
}

static void hold(void)
{
    fflush(stdout);
    sleep(1);
}

static int race(unsigned long long mib, const char *dir)
{
    if (primary_context())
        return 0; /* refused at its context: a valid outcome of the race */
    static CUdeviceptr p[4096];
    int n = 0;
    while (n < 4096 && cuMemAlloc(&p[n], mib * MiB) == CUDA_SUCCESS)
        n++;
    printf("race_chunks %d\n", n);
    fflush(stdout);
    char flag[512];
    snprintf(flag, sizeof flag, "%s/release", dir);
    for (int i = 0; i < 3000 && access(flag, F_OK) != 0; i++)
        usleep(10000);
    return 0;
}

static int contexts(int n)
{
    CUdevice dev;
    if (cuInit(0) || cuDeviceGet(&dev, 0))
        return 1;
    int made = 0;
    CUresult last = CUDA_SUCCESS;
    for (int i = 0; i < n; i++) {
        CUcontext ctx;
        last = cuCtxCreate(&ctx, NULL, 0, dev);
        if (last != CUDA_SUCCESS)
            break;
        made++;
    }
    printf("ctx_created %d\nctx_last_error %d\n", made, (int)last);
    hold();
    return 0;
}

static int module_then_alloc(const char *cubin, unsigned long long mib)
{
    if (primary_context())
        return 1;
    CUmodule mod;
    CUresult rm = cuModuleLoad(&mod, cubin);
    CUdeviceptr p;
    CUresult ra = cuMemAlloc(&p, mib * MiB);
    printf("module_load_error %d\nmodule_alloc_error %d\n", (int)rm, (int)ra);
    hold();
    return 0;
}

static int graph_then_alloc(unsigned long long gmib, unsigned long long mib,
                            int free_it)
{
    if (primary_context())
        return 1;
    CUgraph g;
    CUgraphNode node;
    CUgraphExec exec;
    CUDA_MEM_ALLOC_NODE_PARAMS params;
    memset(&params, 0, sizeof params);
    params.poolProps.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    params.poolProps.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    params.poolProps.location.id = 0;
    params.bytesize = gmib * MiB;
    CUresult rc;
    if ((rc = cuGraphCreate(&g, 0)) ||
        (rc = cuGraphAddMemAllocNode(&node, g, NULL, 0, &params)) ||
        (rc = cuGraphInstantiate(&exec, g, 0))) {
        printf("graph_build_error %d\n", (int)rc);
        return 1;
    }
    CUresult rl = cuGraphLaunch(exec, NULL);
    CUresult rs = cuCtxSynchronize();
    CUresult rf = CUDA_SUCCESS;
    if (rl == CUDA_SUCCESS && free_it) {
        rf = cuMemFreeAsync(params.dptr, NULL);
        cuCtxSynchronize();
    }
    cuuint64_t reserved = 0;
    cuDeviceGetGraphMemAttribute(0, CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT, &reserved);
    CUdeviceptr p;
    CUresult ra = mib ? cuMemAlloc(&p, mib * MiB) : CUDA_SUCCESS;
    printf("graph_launch_error %d\ngraph_sync_error %d\ngraph_free_error %d\n"
           "graph_reserved_mib %llu\ngraph_alloc_error %d\n", (int)rl, (int)rs,
           (int)rf, (unsigned long long)(reserved / MiB), (int)ra);
    hold();
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "race") == 0)
        return race(strtoull(argv[2], NULL, 10), argv[3]);
    if (argc == 3 && strcmp(argv[1], "ctx") == 0)
        return contexts(atoi(argv[2]));
    if (argc == 4 && strcmp(argv[1], "module") == 0)
        return module_then_alloc(argv[2], strtoull(argv[3], NULL, 10));
    if ((argc == 4 || argc == 5) && strcmp(argv[1], "graph") == 0)
        return graph_then_alloc(strtoull(argv[2], NULL, 10), strtoull(argv[3], NULL, 10),
                                argc == 5 && strcmp(argv[4], "free") == 0);
    fprintf(stderr, "usage: exact_probe race MIB DIR | ctx N | module CUBIN MIB | "
                    "graph GMIB MIB [free]\n");
    return 2;
}
