/* A program linked with -lcuda calling the driver directly: allocations are
 * charged before the driver is called, refused over the limit (the driver
 * never sees them), rolled back when the driver fails, returned at free;
 * unknown pointers pass through. */
#include "hook_util.h"

static void test_plain(void)
{
    CUdeviceptr a, b;
    CU_OK(cuMemAlloc_v2(&a, 900 * MiB));
    CHECK(region_used(0) == 900 * MiB, "charged %llu", (unsigned long long)region_used(0));
    CHECK(cuMemAlloc_v2(&b, 200 * MiB) == CUDA_ERROR_OUT_OF_MEMORY, "over the limit");
    CHECK(fakegpu_process_used(0) == 900 * MiB, "the driver never saw the refused one");
    CU_OK(cuMemAlloc_v2(&b, 124 * MiB));
    CHECK(region_used(0) == GiB, "exactly at the limit");
    CU_OK(cuMemFree_v2(a));
    CU_OK(cuMemFree_v2(b));
    CHECK(region_used(0) == 0, "returned at free");

    CUdeviceptr_v1 small;
    CU_OK(cuMemAlloc(&small, 64 * 1024 * 1024));
    CHECK(region_used(0) == 64 * MiB, "v1 cuMemAlloc charged");
    CU_OK(cuMemFree(small));
    CHECK(region_used(0) == 0, "v1 cuMemFree returned");
}

static void test_pitch_managed_arrays(void)
{
    CUdeviceptr p;
    size_t pitch;
    CU_OK(cuMemAllocPitch_v2(&p, &pitch, 1000, 1000, 4));
    CHECK(region_used(0) == (uint64_t)pitch * 1000, "pitch x height charged");
    CU_OK(cuMemFree_v2(p));
    CU_OK(cuMemAllocManaged(&p, 300 * MiB, CU_MEM_ATTACH_GLOBAL));
    CHECK(region_used(0) == 300 * MiB, "managed counts against the device");
    CHECK(cuMemAllocManaged(&p + 0, 800 * MiB, CU_MEM_ATTACH_GLOBAL) ==
              CUDA_ERROR_OUT_OF_MEMORY, "managed over the limit");
    CU_OK(cuMemFree_v2(p));
    CUDA_ARRAY_DESCRIPTOR d = {.Width = 4096, .Height = 4096,
                               .Format = CU_AD_FORMAT_FLOAT, .NumChannels = 4};
    CUarray arr;
    CU_OK(cuArrayCreate_v2(&arr, &d));
    CHECK(region_used(0) == 256 * MiB, "array charged");
    CUDA_ARRAY3D_DESCRIPTOR big = {.Width = 1024, .Height = 1024, .Depth = 1024,
                                   .Format = CU_AD_FORMAT_UNSIGNED_INT8,
                                   .NumChannels = 1};
    CUarray arr3;
    CHECK(cuArray3DCreate_v2(&arr3, &big) == CUDA_ERROR_OUT_OF_MEMORY,
          "3D array over the limit");
    CU_OK(cuArrayDestroy(arr));
    CHECK(region_used(0) == 0, "array returned");
    CUmipmappedArray mip;
    CUDA_ARRAY3D_DESCRIPTOR m = {.Width = 1024, .Height = 1024,
                                 .Format = CU_AD_FORMAT_FLOAT, .NumChannels = 1};
    CU_OK(cuMipmappedArrayCreate(&mip, &m, 4));
    CHECK(region_used(0) > 4 * MiB, "mipmapped charged");
    CU_OK(cuMipmappedArrayDestroy(mip));
    CHECK(region_used(0) == 0, "mipmapped returned");
}

static void test_failures(void)
{
    CUdeviceptr p;
    setenv("FAKEGPU_OOM_AT", "100m", 1);
    CHECK(cuMemAlloc_v2(&p, 200 * MiB) == CUDA_ERROR_OUT_OF_MEMORY, "driver OOM");
    unsetenv("FAKEGPU_OOM_AT");
    CHECK(region_used(0) == 0, "driver failure rolled back");
    setenv("FAKEGPU_FAIL", "cuMemFree", 1);
    CU_OK(cuMemAlloc_v2(&p, 10 * MiB));
    CHECK(cuMemFree_v2(p) == CUDA_ERROR_UNKNOWN, "injected free failure");
    unsetenv("FAKEGPU_FAIL");
    CHECK(region_used(0) == 10 * MiB, "a failed free keeps the charge");
    CU_OK(cuMemFree_v2(p));
    CHECK(region_used(0) == 0, "then freed");
    CHECK(cuMemFree_v2(0xdead0000) == CUDA_ERROR_INVALID_VALUE,
          "unknown pointer passes through to the driver");
    CHECK(region_used(0) == 0, "and changes nothing");
}

int main(void)
{
    hook_fresh(2, "8g", "1g");
    fakegpu_context(0);
    test_plain();
    test_pitch_managed_arrays();
    test_failures();
    printf("hook_direct_calls: ok\n");
    return 0;
}
