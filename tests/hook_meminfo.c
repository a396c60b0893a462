/* What the program sees: cuMemGetInfo, cuDeviceTotalMem and NVML report the
 * limit as total and the limit minus the region's usage as free; a device
 * without a limit shows the driver's figures; a limit above the physical
 * memory shows the physical memory. */
#include "hook_util.h"
#include "nvml_decl.h"

nvmlReturn_t nvmlInit_v2(void);
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int, nvmlDevice_t *);
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t, nvmlMemory_t *);
nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t, nvmlMemory_v2_t *);

#include <signal.h>

/* Another, unlimited process of the machine taking memory: this program
 * re-executed without the preload. */
static pid_t start_hog(const char *bytes)
{
    pid_t pid = fork();
    if (pid == 0) {
        unsetenv("LD_PRELOAD");
        execl("/proc/self/exe", "hook_meminfo", "hog", bytes, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static int hog(const char *bytes)
{
    fakegpu_context(0);
    CUdeviceptr q;
    CU_OK(cuMemAlloc_v2(&q, strtoull(bytes, NULL, 10)));
    pause();
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "hog") == 0)
        return hog(argv[2]);
    hook_fresh(3, "80g", NULL);
    setenv("CUDA_DEVICE_MEMORY_LIMIT_0", "4g", 1);
    setenv("CUDA_DEVICE_MEMORY_LIMIT_2", "100g", 1);
    fakegpu_context(0);
    size_t free_b, total;
    CU_OK(cuMemGetInfo_v2(&free_b, &total));
    CHECK(total == 4 * GiB && free_b == 4 * GiB, "device 0: %zu/%zu", free_b, total);
    CUdeviceptr p;
    CU_OK(cuMemAlloc_v2(&p, GiB));
    CU_OK(cuMemGetInfo_v2(&free_b, &total));
    CHECK(total == 4 * GiB && free_b == 3 * GiB, "after 1 GiB: %zu/%zu", free_b, total);
    unsigned int f32, t32;
    CU_OK(cuMemGetInfo(&f32, &t32));
    CHECK(t32 == 0xffffffffu && f32 == 3 * GiB, "v1: 4 GiB clamps to 32 bits: %u %u",
          f32, t32);
    size_t dev_total;
    CU_OK(cuDeviceTotalMem_v2(&dev_total, 0));
    CHECK(dev_total == 4 * GiB, "cuDeviceTotalMem");
    CU_OK(cuDeviceTotalMem_v2(&dev_total, 1));
    CHECK(dev_total == 80 * GiB, "no limit on device 1: physical");
    CU_OK(cuDeviceTotalMem_v2(&dev_total, 2));
    CHECK(dev_total == 80 * GiB, "limit above physical: physical");

    /* Physically free memory bounds free: another process takes 78 GiB. */
    char hog_bytes[32];
    snprintf(hog_bytes, sizeof hog_bytes, "%llu", 78 * GiB);
    pid_t helper = start_hog(hog_bytes);
    double deadline = now_seconds() + 10;
    while (fakegpu_device_used(0) < 79 * GiB)
        CHECK(now_seconds() < deadline, "helper did not allocate");
    CU_OK(cuMemGetInfo_v2(&free_b, &total));
    CHECK(free_b == GiB && total == 4 * GiB, "free never above physical free: %zu", free_b);

    nvmlDevice_t dev;
    nvmlMemory_t m;
    CHECK(nvmlInit_v2() == NVML_SUCCESS, "nvml");
    CHECK(nvmlDeviceGetHandleByIndex_v2(0, &dev) == NVML_SUCCESS, "handle");
    CHECK(nvmlDeviceGetMemoryInfo(dev, &m) == NVML_SUCCESS, "meminfo");
    CHECK(m.total == 4 * GiB && m.used == 3 * GiB && m.free == GiB,
          "NVML: total %llu used %llu free %llu", m.total, m.used, m.free);
    nvmlMemory_v2_t m2 = {.version = nvmlMemory_v2};
    CHECK(nvmlDeviceGetMemoryInfo_v2(dev, &m2) == NVML_SUCCESS && m2.total == 4 * GiB,
          "NVML v2");
    CHECK(nvmlDeviceGetHandleByIndex_v2(1, &dev) == NVML_SUCCESS &&
          nvmlDeviceGetMemoryInfo(dev, &m) == NVML_SUCCESS && m.total == 80 * GiB,
          "NVML device 1 unlimited");
    kill(helper, SIGKILL);
    waitpid(helper, NULL, 0);
    CU_OK(cuMemFree_v2(p));
    printf("hook_meminfo: ok\n");
    return 0;
}
