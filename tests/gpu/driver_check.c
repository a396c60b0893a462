/* Driver-API checks for a real GPU (and the simulated one):
 *   driver_check limit       total shows the limit, 6 GiB refused, 3 GiB ok
 *   driver_check race DIR    allocate 256 MiB chunks until refused, report the
 *                            count, hold them until DIR/release exists
 *   driver_check loop N      ns per 2 MiB cuMemAlloc + cuMemFree
 * Prints one "key value" line per result for scripts/gpu-check.sh. */
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define GiB (1ull << 30)
#define MiB (1ull << 20)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int context(void)
{
    CUdevice dev;
    CUcontext ctx;
    if (cuInit(0) || cuDeviceGet(&dev, 0) || cuDevicePrimaryCtxRetain(&ctx, dev) ||
        cuCtxSetCurrent(ctx)) {
        printf("driver_error 1\n");
        return 1;
    }
    return 0;
}

static int limit_check(void)
{
    size_t free_b, total;
    cuMemGetInfo(&free_b, &total);
    printf("driver_total_mib %llu\n", (unsigned long long)(total / MiB));
    CUdeviceptr big, ok;
    CUresult r6 = cuMemAlloc(&big, 6 * GiB);
    CUresult r3 = cuMemAlloc(&ok, 3 * GiB);
    printf("driver_6g_refused %d\n", r6 == CUDA_ERROR_OUT_OF_MEMORY);
    printf("driver_3g_ok %d\n", r3 == CUDA_SUCCESS);
    if (r6 == CUDA_SUCCESS)
        cuMemFree(big);
    if (r3 == CUDA_SUCCESS)
        cuMemFree(ok);
    return 0;
}

static int race(const char *dir)
{
    CUdeviceptr p[256];
    int n = 0;
    while (n < 256 && cuMemAlloc(&p[n], 256 * MiB) == CUDA_SUCCESS)
        n++;
    printf("race_chunks %d\n", n);
    fflush(stdout);
    char flag[512];
    snprintf(flag, sizeof flag, "%s/release", dir);
    for (int i = 0; i < 3000 && access(flag, F_OK) != 0; i++)
        usleep(10000);
    for (int i = 0; i < n; i++)
        cuMemFree(p[i]);
    return 0;
}

static int loop(int n)
{
    CUdeviceptr p;
    cuMemAlloc(&p, 2 * MiB); /* warm */
    cuMemFree(p);
    double t0 = now();
    for (int i = 0; i < n; i++) {
        cuMemAlloc(&p, 2 * MiB);
        cuMemFree(p);
    }
    printf("driver_alloc_free_ns %.0f\n", (now() - t0) / n * 1e9);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || context())
        return 1;
    if (strcmp(argv[1], "limit") == 0)
        return limit_check();
    if (strcmp(argv[1], "race") == 0 && argc > 2)
        return race(argv[2]);
    if (strcmp(argv[1], "loop") == 0 && argc > 2)
        return loop(atoi(argv[2]));
    return 1;
}
