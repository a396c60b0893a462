/* A process of the modes benchmark, started under libvgpu.so on the
 * simulated GPU:
 *   start_rank startup  start CUDA, allocate 64 MiB, write the seconds since
 *                       VGPU_BENCH_T0 (CLOCK_REALTIME) to fd 3, free, exit;
 *   start_rank race     allocate 64 MiB chunks until refused, write the count
 *                       to fd 3, wait for fd 0 to close, free, exit. */
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (64ull << 20)

static double wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void report(const char *text)
{
    ssize_t n = write(3, text, strlen(text)); /* one small write: atomic */
    (void)n;
}

int main(int argc, char **argv)
{
    CUdevice dev;
    CUcontext ctx;
    CUdeviceptr p[128];
    char line[64];
    if (argc < 2 || cuInit(0) || cuDeviceGet(&dev, 0) ||
        cuDevicePrimaryCtxRetain(&ctx, dev) || cuCtxSetCurrent(ctx))
        return 1;
    if (strcmp(argv[1], "startup") == 0) {
        if (cuMemAlloc(&p[0], CHUNK))
            return 1;
        snprintf(line, sizeof line, "%.6f\n", wall() - atof(getenv("VGPU_BENCH_T0")));
        report(line);
        cuMemFree(p[0]);
        return 0;
    }
    int n = 0;
    while (n < 128 && cuMemAlloc(&p[n], CHUNK) == CUDA_SUCCESS)
        n++;
    snprintf(line, sizeof line, "%d\n", n);
    report(line);
    char c;
    while (read(0, &c, 1) > 0)
        ;
    for (int i = 0; i < n; i++)
        cuMemFree(p[i]);
    return 0;
}
