/* Host time per kernel launch on the simulated GPU, for the launch hooks'
 * cost (scripts/launch-bench.sh runs it with no preload, under libvgpu.so
 * with no limit, and with a compute cap):
 *   launch_bench N   N launches of a kernel that takes FAKEGPU_KERNEL_NS
 *                    on the device, repeated ROUNDS times; prints the best
 *                    round's ns per launch and the event calls per launch
 *                    the simulated driver saw. */
#include <cuda.h>
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define ROUNDS 11

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 200000;
    CUdevice dev;
    CUcontext ctx;
    if (n <= 0 || cuInit(0) || cuDeviceGet(&dev, 0) ||
        cuDevicePrimaryCtxRetain(&ctx, dev) || cuCtxSetCurrent(ctx))
        return 1;
    uint64_t (*events)(bool) =
        (uint64_t (*)(bool))dlsym(RTLD_DEFAULT, "fakegpu_event_calls");
    CUfunction f = (CUfunction)1; /* any handle: the simulated GPU runs it */
    double best = 1e300;
    uint64_t calls0 = events ? events(false) : 0;
    for (int round = 0; round < ROUNDS; round++) {
        double t0 = now_ns();
        for (long i = 0; i < n; i++)
            if (cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL))
                return 1;
        double per = (now_ns() - t0) / (double)n;
        best = per < best ? per : best;
        if (cuCtxSynchronize())
            return 1;
    }
    uint64_t calls = events ? events(false) - calls0 : 0;
    printf("%6.0f ns per launch, %llu event calls in %ld launches\n", best,
           (unsigned long long)calls, ROUNDS * n);
    return 0;
}
