/* One rank of `make demo`: start CUDA, allocate this rank's share under the
 * container's limit, hold it while the others do; rank 0 then asks for one
 * allocation past the limit. Prints one line of key=value fields, which
 * scripts/demo.sh puts in a table: the time from launch (VGPU_DEMO_T0) to
 * the first successful allocation, and rank 0's extra request. Files in
 * VGPU_DEMO_DIR synchronize the ranks with scripts/demo.sh. Rank 0 asks for
 * 2 GiB more once all hold theirs: past the limit whether or not contexts
 * are counted. */
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MiB (1ull << 20)
#define RANKS 8

static double wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int rank_number(void)
{
    const char *names[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "VGPU_DEMO_RANK"};
    for (int i = 0; i < 3; i++)
        if (getenv(names[i]))
            return atoi(getenv(names[i]));
    return 0;
}

static void touch(const char *dir, const char *name, int rank)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.%d", dir, name, rank);
    FILE *f = fopen(path, "w");
    if (f)
        fclose(f);
}

static int count(const char *dir, const char *name)
{
    int n = 0;
    for (int r = 0; r < RANKS; r++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s.%d", dir, name, r);
        n += access(path, F_OK) == 0;
    }
    return n;
}

static void wait_for(const char *dir, const char *name, int n)
{
    for (int i = 0; i < 6000 && count(dir, name) < n; i++)
        usleep(10000);
}

int main(void)
{
    const char *dir = getenv("VGPU_DEMO_DIR");
    const char *t0 = getenv("VGPU_DEMO_T0");
    uint64_t share = strtoull(getenv("VGPU_DEMO_SHARE") ? getenv("VGPU_DEMO_SHARE") : "448", NULL, 10) * MiB;
    int rank = rank_number();
    if (dir == NULL || t0 == NULL)
        return 2;
    CUdevice dev;
    CUcontext ctx;
    CUdeviceptr mine, extra;
    CUresult rc = cuInit(0);
    if (rc == CUDA_SUCCESS)
        rc = cuDeviceGet(&dev, 0);
    if (rc == CUDA_SUCCESS)
        rc = cuDevicePrimaryCtxRetain(&ctx, dev);
    if (rc == CUDA_SUCCESS)
        rc = cuCtxSetCurrent(ctx);
    if (rc == CUDA_SUCCESS)
        rc = cuMemAlloc(&mine, share);
    if (rc != CUDA_SUCCESS) {
        const char *name = "?";
        cuGetErrorName(rc, &name);
        printf("rank=%d pid=%d result=%s\n", rank, (int)getpid(), name);
        return 1;
    }
    printf("rank=%d pid=%d startup=%.3f mib=%llu result=granted\n", rank,
           (int)getpid(), wall() - atof(t0), (unsigned long long)(share / MiB));
    fflush(stdout);
    touch(dir, "ready", rank);
    wait_for(dir, "ready", RANKS);
    if (rank == 0) {
        size_t free_b, total;
        cuMemGetInfo(&free_b, &total);
        rc = cuMemAlloc(&extra, 2048 * MiB);
        const char *name = "?";
        cuGetErrorName(rc, &name);
        printf("extra=2048 free=%llu total=%llu result=%s\n",
               (unsigned long long)(free_b / MiB),
               (unsigned long long)(total / MiB),
               rc == CUDA_SUCCESS ? "granted" : name);
        if (rc == CUDA_SUCCESS)
            cuMemFree(extra);
        fflush(stdout);
        touch(dir, "tried", 0);
    }
    wait_for(dir, "release", 1);
    cuMemFree(mine);
    return 0;
}
