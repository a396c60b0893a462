/* Memory belongs to the context it was made in. A primary context's reset
 * frees the primary's allocations, not those of a context made with
 * cuCtxCreate, and cuCtxDestroy frees that context's (FAKEGPU_CTX_OWNS_ALLOCS
 * makes the simulated driver do both, as the real one does). vgpu used to
 * drop every allocation on the device at a reset, so a created context's
 * live memory was uncharged: 700 MiB at a time under a 1 GiB limit, eight
 * times (5600 MiB held, 0 counted); and a destroyed context's allocations
 * stayed charged for good. Contexts take nothing here (VGPU_CONTEXT_BYTES
 * is 0). */
#include "hook_util.h"

static void report(const char *when)
{
    printf("%s: driver holds %llu MiB, region counts %llu MiB\n", when,
           (unsigned long long)(fakegpu_process_used(0) / MiB),
           (unsigned long long)(region_used(0) / MiB));
}

/* A reset of the primary context leaves a created context's memory
 * charged, so the limit still holds against it. */
static void reset_keeps_created(void)
{
    CUcontext primary, created;
    CU_OK(cuDevicePrimaryCtxRetain(&primary, 0));
    CU_OK(cuCtxCreate_v2(&created, 0, 0)); /* current now */
    CUdeviceptr mine, more;
    CU_OK(cuMemAlloc_v2(&mine, 700 * MiB));
    CU_OK(cuDevicePrimaryCtxReset_v2(0)); /* frees nothing of created's */
    report("after the primary's reset");
    CHECK(region_used(0) == 700 * MiB && fakegpu_process_used(0) == 700 * MiB,
          "the created context's 700 MiB still charged");
    CHECK(cuMemAlloc_v2(&more, 700 * MiB) == CUDA_ERROR_OUT_OF_MEMORY,
          "700 + 700 MiB over a 1 GiB limit");
    CHECK(fakegpu_device_peak(0) <= GiB, "the driver held %llu MiB > 1 GiB",
          (unsigned long long)(fakegpu_device_peak(0) / MiB));
    CU_OK(cuMemFree_v2(mine));
    CU_OK(cuCtxDestroy_v2(created));
    CU_OK(cuDevicePrimaryCtxRelease_v2(0));
}

/* cuCtxDestroy frees what was made in the context: it is uncharged. */
static void destroy_returns_its_memory(void)
{
    CUcontext created;
    CU_OK(cuCtxCreate_v2(&created, 0, 0));
    CUdeviceptr p;
    CU_OK(cuMemAlloc_v2(&p, 600 * MiB));
    CU_OK(cuCtxDestroy_v2(created)); /* the driver frees p with it */
    report("after cuCtxDestroy");
    CHECK(fakegpu_process_used(0) == 0, "the driver freed it");
    CHECK(region_used(0) == 0, "and it is uncharged: %llu MiB",
          (unsigned long long)(region_used(0) / MiB));
}

int main(void)
{
    hook_fresh(1, "16g", "1g");
    setenv("FAKEGPU_CTX_OWNS_ALLOCS", "1", 1);
    CU_OK(cuInit(0));
    reset_keeps_created();
    destroy_returns_its_memory();
    printf("hook_context_owned: ok\n");
    return 0;
}
