/* CUDA_VISIBLE_DEVICES renumbers CUDA's devices; NVML keeps the machine's
 * (the container's) numbering, and so do the limits: CUDA_DEVICE_MEMORY_
 * LIMIT_0 names the container's GPU 0, which is CUDA device 1 here, and
 * shows on NVML device 0 and on CUDA device 1, not on CUDA device 0. */
#include "hook_util.h"
#include "nvml_decl.h"

nvmlReturn_t nvmlInit_v2(void);
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int, nvmlDevice_t *);
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t, nvmlMemory_t *);

static uint64_t nvml_total(unsigned int index)
{
    nvmlDevice_t dev;
    nvmlMemory_t m;
    CHECK(nvmlDeviceGetHandleByIndex_v2(index, &dev) == NVML_SUCCESS &&
          nvmlDeviceGetMemoryInfo(dev, &m) == NVML_SUCCESS, "nvml %u", index);
    return m.total;
}

int main(void)
{
    hook_fresh(3, "80g", NULL);
    setenv("CUDA_VISIBLE_DEVICES", "2,0", 1);
    setenv("CUDA_DEVICE_MEMORY_LIMIT_0", "4g", 1);
    fakegpu_context(0);
    CUdeviceptr p;
    CU_OK(cuMemAlloc_v2(&p, GiB)); /* attaches; records the devices' UUIDs */
    CHECK(nvmlInit_v2() == NVML_SUCCESS, "nvml");
    CHECK(nvml_total(0) == 4 * GiB, "NVML 0 is GPU 0: limited, got %llu",
          (unsigned long long)nvml_total(0));
    CHECK(nvml_total(2) == 80 * GiB, "NVML 2 is CUDA 0: no limit");
    CHECK(nvml_total(1) == 80 * GiB, "NVML 1 is not visible: physical");
    size_t total;
    CU_OK(cuDeviceTotalMem_v2(&total, 1));
    CHECK(total == 4 * GiB, "CUDA 1 is GPU 0: limited, got %zu", total);
    CU_OK(cuDeviceTotalMem_v2(&total, 0));
    CHECK(total == 80 * GiB, "CUDA 0 is GPU 2: no limit, got %zu", total);
    CU_OK(cuMemFree_v2(p));
    printf("hook_nvml_visible: ok\n");
    return 0;
}
