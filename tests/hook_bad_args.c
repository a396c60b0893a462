/* Bad API arguments through the hooks: the driver's own error comes back,
 * nothing crashes, and no byte stays charged. */
#include "hook_util.h"
#include "nvml_decl.h"

nvmlReturn_t nvmlInit_v2(void);
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int, nvmlDevice_t *);
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t, nvmlMemory_t *);

int main(void)
{
    hook_fresh(1, "8g", "1g");
    fakegpu_context(0);
    CUdeviceptr p;
    CHECK(cuMemAlloc_v2(NULL, MiB) == CUDA_ERROR_INVALID_VALUE, "NULL dptr");
    CHECK(cuMemAlloc_v2(&p, 0) == CUDA_ERROR_INVALID_VALUE, "zero bytes");
    CHECK(cuMemAllocPitch_v2(&p, NULL, 100, 100, 4) == CUDA_ERROR_INVALID_VALUE,
          "NULL pitch");
    CHECK(cuMemAllocAsync(NULL, MiB, NULL) == CUDA_ERROR_INVALID_VALUE, "async NULL");
    CHECK(cuMemCreate(NULL, 2 * MiB, NULL, 0) == CUDA_ERROR_INVALID_VALUE,
          "cuMemCreate NULL prop");
    CHECK(cuArrayCreate_v2(NULL, NULL) == CUDA_ERROR_INVALID_VALUE, "array NULL");
    CHECK(cuMipmappedArrayCreate(NULL, NULL, 0) == CUDA_ERROR_INVALID_VALUE,
          "mipmapped NULL");
    CHECK(cuMemGetInfo_v2(NULL, NULL) == CUDA_ERROR_INVALID_VALUE, "meminfo NULL");
    CHECK(cuMemFree_v2(12345) == CUDA_ERROR_INVALID_VALUE, "unknown pointer");
    CHECK(cuMemRelease(0) == CUDA_ERROR_INVALID_VALUE, "unknown handle");
    CHECK(cuArrayDestroy((CUarray)(uintptr_t)0x1234) != CUDA_SUCCESS, "unknown array");
    CHECK(cuMemAlloc_v2(&p, UINT64_MAX) == CUDA_ERROR_OUT_OF_MEMORY,
          "a size that would wrap the counter is refused");
    nvmlDevice_t dev;
    CHECK(nvmlInit_v2() == NVML_SUCCESS &&
          nvmlDeviceGetHandleByIndex_v2(0, &dev) == NVML_SUCCESS, "nvml");
    CHECK(nvmlDeviceGetMemoryInfo(dev, NULL) == NVML_ERROR_INVALID_ARGUMENT,
          "nvml NULL");
    CHECK(region_used(0) == 0, "nothing stays charged: %llu",
          (unsigned long long)region_used(0));
    CU_OK(cuMemAlloc_v2(&p, GiB));
    CU_OK(cuMemFree_v2(p));
    CHECK(region_used(0) == 0, "and the limit still works to the byte");
    printf("hook_bad_args: ok\n");
    return 0;
}
