/* NVML's utilization from the simulated devices' timelines (exec.c): the
 * share of the last second the device was busy, all processes together. */
#include <stddef.h>
#include <time.h>

#include "fakegpu.h"
#include "nvml_decl.h"

#define EXPORT __attribute__((visibility("default")))

static uint64_t recent_busy_ns(int dev)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    struct fg_timeline *t = &fg_state()->timeline[dev];
    uint64_t cur = now / FG_UTIL_BUCKET_NS, sum = 0;
    /* The last FG_UTIL_BUCKETS - 1 whole buckets (the current one is not
     * over yet). */
    for (int b = 0; b < FG_UTIL_BUCKETS; b++) {
        uint64_t tag = __atomic_load_n(&t->bucket_tag[b], __ATOMIC_RELAXED);
        if (tag + FG_UTIL_BUCKETS > cur && tag < cur)
            sum += __atomic_load_n(&t->bucket_ns[b], __ATOMIC_RELAXED);
    }
    return sum;
}

typedef struct {
    unsigned int gpu;
    unsigned int memory;
} fg_nvml_utilization;

EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d,
                                                  fg_nvml_utilization *u)
{
    int i = (int)((uintptr_t)d - 1);
    if (u == NULL || i < 0 || i >= (int)fg_state()->device_count)
        return NVML_ERROR_INVALID_ARGUMENT;
    uint64_t pct = recent_busy_ns(i) * 100 /
                   ((FG_UTIL_BUCKETS - 1) * FG_UTIL_BUCKET_NS);
    u->gpu = pct > 100 ? 100 : (unsigned int)pct;
    u->memory = 0;
    return NVML_SUCCESS;
}
