#include "vgpu/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atomic.h"
#include "log.h"

const struct vgpu_env_var vgpu_env_vars[VGPU_ENV_COUNT] = {
    [VGPU_ENV_MEMORY_LIMIT] = {"CUDA_DEVICE_MEMORY_LIMIT", NULL, true,
        "device-memory limit for every device, e.g. 4g or 4096m; "
        "CUDA_DEVICE_MEMORY_LIMIT_<i> sets device i"},
    [VGPU_ENV_SHARED_CACHE] = {"CUDA_DEVICE_MEMORY_SHARED_CACHE",
        "/tmp/cudevshr.cache", true,
        "path of the container's shared region file"},
    [VGPU_ENV_LOG_LEVEL] = {"LIBCUDA_LOG_LEVEL", "2", true,
        "0 errors, 1 warnings, 2 info, 3 debug"},
    [VGPU_ENV_REGION_MODE] = {"VGPU_REGION_MODE", "default", true,
        "synchronization mode used when the region is created"},
    [VGPU_ENV_SM_LIMIT] = {"CUDA_DEVICE_SM_LIMIT", NULL, false,
        "SM utilization limit in percent (stored, not enforced yet)"},
    [VGPU_ENV_OVERSUBSCRIBE] = {"CUDA_OVERSUBSCRIBE", NULL, false,
        "allow allocations past the limit into host memory (not yet)"},
    [VGPU_ENV_DISABLE_CONTROL] = {"CUDA_DISABLE_CONTROL", NULL, true,
        "\"true\": load but enforce nothing"},
    [VGPU_ENV_CORE_POLICY] = {"GPU_CORE_UTILIZATION_POLICY", NULL, false,
        "default/force/disable SM limiting policy (not yet)"},
    [VGPU_ENV_TASK_PRIORITY] = {"CUDA_TASK_PRIORITY", NULL, false,
        "task priority written to the region (not yet)"},
    [VGPU_ENV_ACTIVE_OOM_KILLER] = {"ACTIVE_OOM_KILLER", NULL, false,
        "kill processes over the limit (not yet)"},
    [VGPU_ENV_LEGACY_WORK] = {"VGPU_LEGACY_STARTUP_WORK_MS", "0", true,
        "benchmarks: milliseconds of start-up work the seed's modes do under "
        "their lock file (HAMi-core's host-PID detection)"},
    [VGPU_ENV_CONTEXT_BYTES] = {"VGPU_CONTEXT_BYTES", NULL, true,
        "device memory a context is assumed to take until one is measured "
        "through NVML, and where it cannot be (default 512m, e.g. 416m)"},
};

const char *vgpu_env(enum vgpu_env_id id)
{
    const char *value = getenv(vgpu_env_vars[id].name);
    if (value == NULL || value[0] == '\0')
        return vgpu_env_vars[id].default_value;
    return value;
}

int vgpu_config_log_level(void)
{
    /* Cached: logging must stay cheap. Relaxed: a racing first read only
     * parses the same variable twice. */
    static int cached = -1;
    int level = atomic_load_n(&cached, RELAXED);
    if (level >= 0)
        return level;
    const char *text = vgpu_env(VGPU_ENV_LOG_LEVEL);
    char *end = NULL;
    long parsed = strtol(text, &end, 10);
    level = (end != text && *end == '\0' && parsed >= 0) ? (int)parsed : 2;
    atomic_store_n(&cached, level, RELAXED);
    return level;
}

static uint64_t suffix_multiplier(char c)
{
    switch (c) {
    case 'k': case 'K': return 1ull << 10;
    case 'm': case 'M': return 1ull << 20;
    case 'g': case 'G': return 1ull << 30;
    case 't': case 'T': return 1ull << 40;
    default: return 0;
    }
}

bool vgpu_parse_size(const char *text, uint64_t *bytes)
{
    if (text == NULL || text[0] < '0' || text[0] > '9')
        return false;
    errno = 0;
    char *end = NULL;
    unsigned long long number = strtoull(text, &end, 10);
    if (errno != 0)
        return false;
    uint64_t multiplier = 1;
    if (*end != '\0') {
        multiplier = suffix_multiplier(*end);
        if (multiplier == 0 || end[1] != '\0')
            return false;
    }
    if (number > UINT64_MAX / multiplier)
        return false;
    *bytes = number * multiplier;
    return true;
}

static uint64_t limit_from(const char *name, uint64_t fallback)
{
    const char *text = getenv(name);
    if (text == NULL || text[0] == '\0')
        return fallback;
    uint64_t bytes;
    if (!vgpu_parse_size(text, &bytes)) {
        log_warn("%s=\"%.64s\" is not a size (e.g. 4g, 4096m); "
                 "that limit is ignored", name, text);
        return fallback;
    }
    return bytes;
}

void vgpu_config_limits(uint64_t limits[VGPU_MAX_DEVICES])
{
    const char *base = vgpu_env_vars[VGPU_ENV_MEMORY_LIMIT].name;
    uint64_t all = limit_from(base, 0);
    for (int i = 0; i < VGPU_MAX_DEVICES; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s_%d", base, i);
        limits[i] = limit_from(name, all);
    }
}
