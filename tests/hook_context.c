/* Primary contexts count: the first retain charges the context's memory
 * (measured through NVML; here the simulated driver's 256 MiB per context),
 * the last release returns it; a context that does not fit under the limit
 * is refused with CUDA_ERROR_OUT_OF_MEMORY; a reset returns the context and
 * every allocation made in it. */
#include "hook_util.h"

static struct vgpu_region *view(void)
{
    return vgpu_region_open_existing(getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE"));
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "small") == 0) {
        /* A fresh region whose limit is smaller than one context. */
        CU_OK(cuInit(0));
        CUcontext ctx;
        CHECK(cuDevicePrimaryCtxRetain(&ctx, 0) == CUDA_ERROR_OUT_OF_MEMORY,
              "a context past the limit is refused");
        CHECK(fakegpu_device_used(0) == 0, "and released in the driver");
        printf("hook_context (too small a limit): ok\n");
        return 0;
    }
    hook_fresh(1, "8g", "1g");
    setenv("FAKEGPU_CTX_BYTES", "268435456", 1);
    CU_OK(cuInit(0));
    CUcontext ctx, again;
    CU_OK(cuDevicePrimaryCtxRetain(&ctx, 0));
    CU_OK(cuCtxSetCurrent(ctx));
    CHECK(region_used(0) == 256 * MiB, "the context is charged: %llu",
          (unsigned long long)region_used(0));
    CUdeviceptr p;
    CHECK(cuMemAlloc_v2(&p, 800 * MiB) == CUDA_ERROR_OUT_OF_MEMORY,
          "context + 800 MiB is past 1 GiB");
    CU_OK(cuMemAlloc_v2(&p, 700 * MiB));
    CU_OK(cuDevicePrimaryCtxRetain(&again, 0));
    CHECK(region_used(0) == 956 * MiB, "a second retain charges nothing more");
    CU_OK(cuDevicePrimaryCtxRelease_v2(0));
    CHECK(region_used(0) == 956 * MiB, "still retained once");
    struct vgpu_region *r = view();
    struct vgpu_snapshot *snap = malloc(sizeof *snap);
    vgpu_region_snapshot(r, snap);
    CHECK(snap->proc_count == 1, "one process");
    vgpu_region_detach(r);
    free(snap);
    CU_OK(cuDevicePrimaryCtxReset_v2(0));
    CHECK(region_used(0) == 0, "a reset returns the context and its memory: %llu",
          (unsigned long long)region_used(0));

    CU_OK(cuDevicePrimaryCtxRetain(&ctx, 0));
    CHECK(region_used(0) == 256 * MiB, "retained again: charged again");
    CU_OK(cuDevicePrimaryCtxRelease_v2(0));
    CU_OK(cuDevicePrimaryCtxRelease_v2(0));
    CHECK(region_used(0) == 0, "the last release returns it");

    unlink(getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE"));
    setenv("CUDA_DEVICE_MEMORY_LIMIT", "200m", 1);
    fflush(stdout);
    execl("/proc/self/exe", argv[0], "small", (char *)NULL);
    return 1;
}
