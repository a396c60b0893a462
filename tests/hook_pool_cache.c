/* What a stream-ordered pool holds counts, not only what is allocated from
 * it (1 GiB limit, the driver's own ledger as the judge):
 *  - PyTorch's cudaMallocAsync backend: the default pool with release
 *    threshold UINT64_MAX keeps 768 MiB after the free; another library's
 *    plain 768 MiB then fits only because vgpu trims the pool first;
 *  - a pool allocation that is live cannot be trimmed: the plain one is
 *    refused;
 *  - a pool takes memory in 32 MiB chunks, 2 MiB per allocation: 1-byte
 *    allocations are charged what the pool reserved, and refused at the
 *    limit;
 *  - a synchronization gives back what exceeds the threshold (0 by
 *    default), and the region follows;
 *  - a pool's cache is charged even when the pool is destroyed later. */
#include "hook_util.h"

static void check_peak(const char *when)
{
    CHECK(fakegpu_device_peak(0) <= GiB, "%s: the driver held %llu MiB > 1 GiB",
          when, (unsigned long long)(fakegpu_device_peak(0) / MiB));
}

static void cache_then_plain(CUstream s)
{
    CUmemoryPool def;
    CU_OK(cuDeviceGetDefaultMemPool(&def, 0));
    cuuint64_t keep_all = UINT64_MAX;
    CU_OK(cuMemPoolSetAttribute(def, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &keep_all));
    CUdeviceptr a, b, p;
    CU_OK(cuMemAllocAsync(&a, 768 * MiB, s));
    CU_OK(cuMemFreeAsync(a, s));
    CU_OK(cuStreamSynchronize(s));
    CHECK(fakegpu_process_used(0) == 768 * MiB, "the pool keeps its cache");
    CHECK(region_used(0) == 768 * MiB, "the cache is charged: %llu MiB",
          (unsigned long long)(region_used(0) / MiB));
    /* Another library: fits once vgpu has trimmed the pool. */
    CU_OK(cuMemAlloc_v2(&p, 768 * MiB));
    check_peak("cache then plain");
    CHECK(region_used(0) == 768 * MiB, "trimmed and charged once: %llu MiB",
          (unsigned long long)(region_used(0) / MiB));
    /* A live pool allocation cannot be given back. */
    CHECK(cuMemAllocAsync(&b, 512 * MiB, s) == CUDA_ERROR_OUT_OF_MEMORY,
          "pool over the limit");
    CU_OK(cuMemFree_v2(p));
    CU_OK(cuMemAllocAsync(&b, 768 * MiB, s));
    CHECK(cuMemAlloc_v2(&p, 768 * MiB) == CUDA_ERROR_OUT_OF_MEMORY,
          "a live pool allocation plus a plain one is over the limit");
    check_peak("live pool then plain");
    CU_OK(cuMemFreeAsync(b, s));
    CU_OK(cuMemPoolTrimTo(def, 0));
    CHECK(region_used(0) == 0 && fakegpu_process_used(0) == 0,
          "trimmed: %llu MiB charged", (unsigned long long)(region_used(0) / MiB));
    cuuint64_t none = 0;
    CU_OK(cuMemPoolSetAttribute(def, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &none));
}

static void chunks(CUstream s)
{
    CUmemPoolProps props;
    memset(&props, 0, sizeof props);
    props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    props.location.id = 0;
    CUmemoryPool pool;
    CU_OK(cuMemPoolCreate(&pool, &props));
    static CUdeviceptr p[1024];
    int n = 0;
    while (n < 1024 && cuMemAllocFromPoolAsync(&p[n], 1, pool, s) == CUDA_SUCCESS)
        n++;
    check_peak("1-byte pool allocations");
    CHECK(n == 512, "%d allocations of 2 MiB each fit in 1 GiB", n);
    CHECK(region_used(0) == fakegpu_process_used(0), "region %llu, driver %llu",
          (unsigned long long)region_used(0),
          (unsigned long long)fakegpu_process_used(0));
    for (int i = 0; i < n; i++)
        CU_OK(cuMemFreeAsync(p[i], s));
    CHECK(region_used(0) == GiB, "freed into the pool's cache: still held");
    CU_OK(cuStreamSynchronize(s)); /* threshold 0: the cache goes back */
    CHECK(region_used(0) == 0 && fakegpu_process_used(0) == 0,
          "released at the synchronization: %llu MiB charged",
          (unsigned long long)(region_used(0) / MiB));
    /* A destroyed pool's cache goes back with it. */
    cuuint64_t keep_all = UINT64_MAX;
    CU_OK(cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &keep_all));
    CU_OK(cuMemAllocFromPoolAsync(&p[0], 256 * MiB, pool, s));
    CU_OK(cuMemAllocFromPoolAsync(&p[1], 256 * MiB, pool, s));
    CU_OK(cuMemFreeAsync(p[0], s));
    CU_OK(cuMemPoolDestroy(pool));
    CHECK(region_used(0) == 256 * MiB, "destroyed: only the live allocation");
    CU_OK(cuMemFreeAsync(p[1], s));
    CHECK(region_used(0) == 0 && fakegpu_process_used(0) == 0, "all returned");
}

int main(void)
{
    hook_fresh(1, "8g", "1g");
    fakegpu_context(0);
    CUstream s;
    CU_OK(cuStreamCreate(&s, 0));
    cache_then_plain(s);
    chunks(s);
    CU_OK(cuStreamDestroy_v2(s));
    printf("hook_pool_cache: ok\n");
    return 0;
}
