/* A process that only asks NVML (nvidia-smi in the container) sees the
 * limit before any CUDA process has created the region, sees what the CUDA
 * processes use once they have, and takes no slot of the region itself. */
#include "hook_util.h"
#include "nvml_decl.h"

nvmlReturn_t nvmlInit_v2(void);
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int, nvmlDevice_t *);
nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t, nvmlMemory_v2_t *);

static nvmlMemory_v2_t query(void)
{
    nvmlDevice_t dev;
    nvmlMemory_v2_t m = {.version = nvmlMemory_v2};
    CHECK(nvmlDeviceGetHandleByIndex_v2(0, &dev) == NVML_SUCCESS &&
          nvmlDeviceGetMemoryInfo_v2(dev, &m) == NVML_SUCCESS, "nvml");
    return m;
}

int main(void)
{
    hook_fresh(1, "80g", "2g");
    const char *path = getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE");
    CHECK(nvmlInit_v2() == NVML_SUCCESS, "init");
    nvmlMemory_v2_t m = query();
    CHECK(m.total == 2 * GiB && m.used == 0, "before any CUDA process: the "
          "configured limit (total %llu)", m.total);
    CHECK(access(path, F_OK) != 0, "asking created no region file");

    int ready[2], done[2];
    CHECK(pipe(ready) == 0 && pipe(done) == 0, "pipes");
    pid_t pid = fork();
    if (pid == 0) {
        fakegpu_context(0);
        CUdeviceptr p;
        CU_OK(cuMemAlloc_v2(&p, 512 * MiB));
        CHECK(write(ready[1], "x", 1) == 1, "ready");
        char c;
        CHECK(read(done[0], &c, 1) == 1, "done");
        CU_OK(cuMemFree_v2(p));
        exit(0);
    }
    char c;
    CHECK(read(ready[0], &c, 1) == 1, "child allocated");
    m = query();
    CHECK(m.total == 2 * GiB && m.used == 512 * MiB && m.free == 1536 * MiB &&
          m.reserved == 0, "NVML: total %llu used %llu free %llu", m.total,
          m.used, m.free);
    struct vgpu_region *r = vgpu_region_open_existing(path);
    CHECK(vgpu_region_live_count(r) == 1, "only the CUDA process holds a slot");
    CHECK(write(done[1], "x", 1) == 1, "release");
    CHECK(wait_children(1) == 0, "child");
    CHECK(query().used == 0, "back to zero");
    vgpu_region_detach(r);
    printf("hook_nvml_only: ok\n");
    return 0;
}
