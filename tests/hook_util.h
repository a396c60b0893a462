/* Helpers for tests of libvgpu.so on the simulated GPU. Each test runs with
 * LD_PRELOAD=libvgpu.so, its own FAKEGPU_STATE and region file. */
#ifndef HOOK_UTIL_H
#define HOOK_UTIL_H

#include "fakegpu_util.h"
#include "vgpu/region.h"

#define MiB (1ull << 20)
#define GiB (1ull << 30)

/* Fresh simulated machine and region, with a limit for every device. */
static inline void hook_fresh(int devices, const char *memory, const char *limit)
{
    fakegpu_fresh(devices, memory);
    const char *region = getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE");
    CHECK(region != NULL, "CUDA_DEVICE_MEMORY_SHARED_CACHE must be set");
    unlink(region);
    if (limit)
        setenv("CUDA_DEVICE_MEMORY_LIMIT", limit, 1);
    CHECK(getenv("LD_PRELOAD") && strstr(getenv("LD_PRELOAD"), "libvgpu"),
          "run with LD_PRELOAD=libvgpu.so");
}

/* Bytes the region counts on dev, read from the file as vgpuctl would. */
static inline uint64_t region_used(int dev)
{
    struct vgpu_region *r =
        vgpu_region_open_existing(getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE"));
    CHECK(r != NULL, "region file readable");
    uint64_t used = vgpu_region_used(r, dev);
    vgpu_region_detach(r);
    return used;
}

#endif
