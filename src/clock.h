/* Time for bounds and rates: one monotonic clock reader for the library. */
#ifndef VGPU_CLOCK_H
#define VGPU_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Nanoseconds on clock id: CLOCK_MONOTONIC for bounds and measured waits,
 * CLOCK_MONOTONIC_COARSE (a few ms of resolution, no system call cost on
 * most kernels) for rate limits read on hot paths. */
static inline uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#endif
