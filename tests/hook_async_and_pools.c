/* Stream-ordered allocation: cuMemAllocAsync (legacy and per-thread),
 * cuMemAllocFromPoolAsync on the default and a created pool, and their
 * frees, charged and returned; over the limit refused before the driver. */
#include "hook_util.h"

int main(void)
{
    hook_fresh(1, "8g", "1g");
    fakegpu_context(0);
    CUstream s;
    CU_OK(cuStreamCreate(&s, 0));
    CUdeviceptr a, b, c, d;
    CU_OK(cuMemAllocAsync(&a, 256 * MiB, s));
    CU_OK(cuMemAllocAsync_ptsz(&b, 256 * MiB, CU_STREAM_PER_THREAD));
    CUmemoryPool def, made;
    CU_OK(cuDeviceGetDefaultMemPool(&def, 0));
    CUmemPoolProps props;
    memset(&props, 0, sizeof props);
    props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    props.location.id = 0;
    CU_OK(cuMemPoolCreate(&made, &props));
    CU_OK(cuMemAllocFromPoolAsync(&c, 256 * MiB, def, s));
    CU_OK(cuMemAllocFromPoolAsync_ptsz(&d, 200 * MiB, made, s));
    /* pools reserve whole 32 MiB chunks: 768 MiB in the default pool, 224
     * for 200 in the made one */
    CHECK(region_used(0) == 992 * MiB, "all four charged: %llu",
          (unsigned long long)region_used(0));
    CUdeviceptr e;
    CHECK(cuMemAllocAsync(&e, 100 * MiB, s) == CUDA_ERROR_OUT_OF_MEMORY, "async over");
    CHECK(cuMemAllocFromPoolAsync(&e, 100 * MiB, made, s) == CUDA_ERROR_OUT_OF_MEMORY,
          "pool over");
    /* a refusal first trims: the made pool gives back its 24 MiB of cache */
    CHECK(fakegpu_process_used(0) == 968 * MiB, "the driver saw none of the refused: %llu MiB",
          (unsigned long long)(fakegpu_process_used(0) / MiB));
    CU_OK(cuMemFreeAsync(a, s));
    CU_OK(cuMemFreeAsync_ptsz(b, CU_STREAM_PER_THREAD));
    CU_OK(cuMemFreeAsync(c, s));
    CU_OK(cuMemFreeAsync(d, s));
    CU_OK(cuStreamSynchronize(s));
    CHECK(region_used(0) == 0, "all returned");
    CU_OK(cuMemPoolDestroy(made));
    CU_OK(cuStreamDestroy_v2(s));
    printf("hook_async_and_pools: ok\n");
    return 0;
}
