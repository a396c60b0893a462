/* A driver whose pools grow in chunks larger than the allocations (32 MiB
 * here), under a limit that is not a multiple of the chunk (1000 MiB): vgpu
 * learns the pool's growth beyond its estimate at the first allocation and
 * charges it before the driver from then on, so the last chunk, which would
 * cross the limit, is refused before the driver takes it. The driver's
 * ledger is the judge. */
#include "hook_util.h"

int main(void)
{
    hook_fresh(1, "8g", "1000m");
    setenv("FAKEGPU_POOL_CHUNK", "32", 1);
    fakegpu_context(0);
    CUstream s;
    CU_OK(cuStreamCreate(&s, 0));
    CUmemPoolProps props;
    memset(&props, 0, sizeof props);
    props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    props.location.id = 0;
    CUmemoryPool pool;
    CU_OK(cuMemPoolCreate(&pool, &props));
    static CUdeviceptr p[1024];
    int n = 0;
    while (n < 1024 && cuMemAllocFromPoolAsync(&p[n], MiB, pool, s) == CUDA_SUCCESS)
        n++;
    printf("%d allocations, driver peak %llu MiB\n", n,
           (unsigned long long)(fakegpu_device_peak(0) / MiB));
    CHECK(fakegpu_device_peak(0) <= 1000 * MiB, "the driver held %llu MiB > 1000 MiB",
          (unsigned long long)(fakegpu_device_peak(0) / MiB));
    CHECK(n == 31 * 16, "31 chunks of 16 allocations fit: %d", n);
    CHECK(region_used(0) == fakegpu_process_used(0), "region %llu, driver %llu",
          (unsigned long long)region_used(0),
          (unsigned long long)fakegpu_process_used(0));
    for (int i = 0; i < n; i++)
        CU_OK(cuMemFreeAsync(p[i], s));
    CU_OK(cuMemPoolDestroy(pool));
    CU_OK(cuStreamDestroy_v2(s));
    CHECK(region_used(0) == 0 && fakegpu_process_used(0) == 0, "all returned");
    printf("hook_pool_chunks: ok\n");
    return 0;
}
