/* Helpers for tests of libvgpu.so on the simulated GPU. Each test runs with
 * LD_PRELOAD=libvgpu.so, its own FAKEGPU_STATE and region file. */
#ifndef HOOK_UTIL_H
#define HOOK_UTIL_H

#include <fcntl.h>

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

/* The context size the region publishes for dev (0: not known yet;
 * UINT64_MAX: measured to take nothing), read from the file. */
static inline uint64_t region_context_bytes(int dev)
{
    struct vgpu_region *r =
        vgpu_region_open_existing(getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE"));
    CHECK(r != NULL, "region file readable");
    uint64_t bytes = vgpu_region_context_bytes(r, dev);
    vgpu_region_detach(r);
    return bytes;
}

/* stderr into a file (this process's and its children's log lines). */
static inline const char *log_path(void)
{
    static char path[512];
    snprintf(path, sizeof path, "%s.log", getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE"));
    return path;
}

static inline int stderr_to_log(void)
{
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    int fd = open(log_path(), O_CREAT | O_TRUNC | O_WRONLY, 0600);
    CHECK(saved >= 0 && fd >= 0, "log file");
    dup2(fd, STDERR_FILENO);
    close(fd);
    return saved;
}

static inline void stderr_back(int saved)
{
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
}

/* Lines of the log holding `text`; each printed. */
static inline int log_lines(const char *text)
{
    FILE *f = fopen(log_path(), "r");
    CHECK(f != NULL, "log readable");
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, text)) {
            printf("log: %s", line);
            n++;
        }
    fclose(f);
    return n;
}

#endif
