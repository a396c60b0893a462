/* A pool's very first growth, near the limit: the driver grows a pool by
 * whole chunks (32 MiB on an H100 with driver 580, whatever the size asked:
 * `facts_probe pool`), so a 1 MiB allocation from a fresh pool takes 32 MiB.
 * With 980 MiB already held under a 1000 MiB limit, that growth must be
 * refused before the driver takes it, not noticed afterwards. The driver's
 * ledger is the judge. */
#include "hook_util.h"

static CUmemoryPool new_pool(void)
{
    CUmemPoolProps props;
    memset(&props, 0, sizeof props);
    props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    props.location.id = 0;
    CUmemoryPool pool;
    CU_OK(cuMemPoolCreate(&pool, &props));
    return pool;
}

int main(void)
{
    hook_fresh(1, "8g", "1000m");
    setenv("FAKEGPU_POOL_CHUNK", "32", 1);
    fakegpu_context(0);
    CUstream s;
    CU_OK(cuStreamCreate(&s, 0));
    CUdeviceptr big, small;
    CU_OK(cuMemAlloc_v2(&big, 980 * MiB));
    CUmemoryPool pool = new_pool();
    CUresult rc = cuMemAllocFromPoolAsync(&small, MiB, pool, s);
    printf("1 MiB from a fresh pool: %d, driver peak %llu MiB\n", (int)rc,
           (unsigned long long)(fakegpu_device_peak(0) / MiB));
    CHECK(fakegpu_device_peak(0) <= 1000 * MiB, "the driver held %llu MiB > 1000 MiB",
          (unsigned long long)(fakegpu_device_peak(0) / MiB));
    CHECK(rc == CUDA_ERROR_OUT_OF_MEMORY, "refused: %d", (int)rc);
    /* Room for the chunk: the same allocation is granted. */
    CU_OK(cuMemFree_v2(big));
    CU_OK(cuMemAllocFromPoolAsync(&small, MiB, pool, s));
    CHECK(region_used(0) == fakegpu_process_used(0), "region %llu, driver %llu",
          (unsigned long long)region_used(0),
          (unsigned long long)fakegpu_process_used(0));
    CU_OK(cuMemFreeAsync(small, s));
    CU_OK(cuMemPoolDestroy(pool));
    CU_OK(cuStreamDestroy_v2(s));
    CHECK(region_used(0) == 0 && fakegpu_process_used(0) == 0, "all returned");
    printf("hook_pool_first_growth: ok\n");
    return 0;
}
