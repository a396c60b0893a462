/* Driver-API launches on a real GPU, for the compute limit's hooks: an
 * empty kernel from a module (cuModuleLoadData + cuModuleGetFunction: a
 * CUfunction) and from a library (cuLibraryLoadData + cuLibraryGetKernel:
 * a CUkernel cast to CUfunction, as the CUDA runtime launches), each
 * launched N times, then a stream capture replayed as a graph. Prints one
 * line per path: launches that succeeded, host ns per launch. Exit 1 on
 * any failed call. Run under libvgpu.so with CUDA_DEVICE_SM_LIMIT to check
 * that the first-launch load (cuFuncLoad / cuKernelGetFunction) and the
 * capture count take both kinds of handle.
 * Build: gcc -O2 -I$CUDA/include launch_probe.c -L$CUDA/lib64/stubs -lcuda */
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static const char ptx[] =
    ".version 7.8\n.target sm_80\n.address_size 64\n"
    ".visible .entry empty()\n{\n\tret;\n}\n";

#define OK(call)                                                               \
    do {                                                                       \
        CUresult rc_ = (call);                                                 \
        if (rc_ != CUDA_SUCCESS) {                                             \
            printf("FAIL %s: %d\n", #call, (int)rc_);                          \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void launches(const char *what, CUfunction f, CUstream s, int n)
{
    double t0 = now_ns();
    for (int i = 0; i < n; i++) {
        OK(cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, s, NULL, NULL));
        if (i % 100 == 99)
            OK(cuStreamSynchronize(s));
    }
    OK(cuStreamSynchronize(s));
    printf("%s: %d launches ok, %.0f ns per launch\n", what, n,
           (now_ns() - t0) / n);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 2000;
    CUdevice dev;
    CUcontext ctx;
    OK(cuInit(0));
    OK(cuDeviceGet(&dev, 0));
    OK(cuDevicePrimaryCtxRetain(&ctx, dev));
    OK(cuCtxSetCurrent(ctx));
    CUstream s;
    OK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));

    CUmodule mod;
    CUfunction f;
    OK(cuModuleLoadData(&mod, ptx));
    OK(cuModuleGetFunction(&f, mod, "empty"));
    launches("module function", f, s, n);

    CUlibrary lib;
    CUkernel k;
    OK(cuLibraryLoadData(&lib, ptx, NULL, NULL, 0, NULL, NULL, 0));
    OK(cuLibraryGetKernel(&k, lib, "empty"));
    launches("library kernel", (CUfunction)k, s, n);

    CUgraph g;
    CUgraphExec exec;
    OK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
    for (int i = 0; i < 10; i++)
        OK(cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, s, NULL, NULL));
    OK(cuStreamEndCapture(s, &g));
    OK(cuGraphInstantiate(&exec, g, 0));
    for (int i = 0; i < n / 10; i++)
        OK(cuGraphLaunch(exec, s));
    OK(cuStreamSynchronize(s));
    printf("captured graph: %d launches ok\n", n / 10);
    OK(cuGraphExecDestroy(exec));
    OK(cuGraphDestroy(g));
    OK(cuLibraryUnload(lib));
    OK(cuModuleUnload(mod));
    return 0;
}
