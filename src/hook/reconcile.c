/* The reconciliation: see reconcile.h. */
#include "hook/reconcile.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "atomic.h"
#include "hook/account.h"
#include "hook/nvml_self.h"
#include "hook/real.h"
#include "log.h"
#include "vgpu/config.h"

#define PROBE_BYTES (64ull << 20)

/* Per device, this process's: guarded by `lock`, except `next_ns`, read
 * without it as a hint (relaxed: a stale value only delays or repeats a
 * reconciliation that re-checks under the lock). */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t owner;                         /* the process these are for */
static uint64_t implicit[VGPU_MAX_DEVICES]; /* charged as module bytes */
static uint64_t unpaid[VGPU_MAX_DEVICES];   /* held by the driver, not yet charged */
static uint64_t next_ns[VGPU_MAX_DEVICES];  /* earliest next reading */
static uint64_t last_full_ns[VGPU_MAX_DEVICES];
static __thread int inside; /* this thread is reconciling (the probe) */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t interval_ns(void)
{
    const char *text = vgpu_env(VGPU_ENV_RECONCILE_MS);
    return (uint64_t)strtoull(text ? text : "100", NULL, 10) * 1000000ull;
}

/* A fork child starts with nothing of its parent's (its slot is new). */
static void own_state(void)
{
    if (owner != getpid()) {
        owner = getpid();
        for (int d = 0; d < VGPU_MAX_DEVICES; d++)
            implicit[d] = unpaid[d] = next_ns[d] = last_full_ns[d] = 0;
    }
}

/* Where the host's pid is hidden: the one pid that grew by a probe
 * allocation of ours (charged like any other). */
static void learn_pid(struct vgpu_region *r, int dev, struct nvml_list *l)
{
    CUdeviceptr p;
    struct nvml_list after;
    if (REAL(cuMemAlloc_v2) == NULL || REAL(cuMemFree_v2) == NULL ||
        !vgpu_region_try_charge(r, dev, PROBE_BYTES, VGPU_CHARGE_MODULE))
        return;
    if (REAL(cuMemAlloc_v2)(&p, PROBE_BYTES) == CUDA_SUCCESS) {
        if (nvml_list_read(dev, &after))
            nvml_self_learn(l, &after, PROBE_BYTES);
        REAL(cuMemFree_v2)(p);
    }
    vgpu_region_uncharge(r, dev, PROBE_BYTES, VGPU_CHARGE_MODULE);
}

/* Bring implicit[dev] to what NVML holds beyond our other charges. */
static void reconcile(struct vgpu_region *r, int dev)
{
    struct nvml_list l;
    if (!nvml_list_read(dev, &l))
        return;
    if (!nvml_self_pid_known()) {
        learn_pid(r, dev, &l);
        if (!nvml_self_pid_known() || !nvml_list_read(dev, &l))
            return;
    }
    uint64_t held = 0;
    nvml_self_used(&l, &held); /* absent: holds nothing */
    uint64_t counted = vgpu_region_process_used(r, dev) - implicit[dev];
    uint64_t target = held > counted ? held - counted : 0;
    if (target < implicit[dev]) {
        vgpu_region_uncharge(r, dev, implicit[dev] - target, VGPU_CHARGE_MODULE);
        implicit[dev] = target;
    }
    unpaid[dev] = target - implicit[dev];
}

/* Charge what is unpaid, if it fits. */
static bool pay(struct vgpu_region *r, int dev)
{
    if (unpaid[dev] == 0)
        return true;
    if (!vgpu_region_try_charge(r, dev, unpaid[dev], VGPU_CHARGE_MODULE))
        return false;
    implicit[dev] += unpaid[dev];
    unpaid[dev] = 0;
    return true;
}

bool reconcile_before_charge(int dev, uint64_t bytes)
{
    struct vgpu_region *r = account_region();
    uint64_t limit = vgpu_region_limit(r, dev);
    if (inside || r == NULL || limit == 0 || dev < 0 || dev >= VGPU_MAX_DEVICES)
        return true;
    uint64_t now = now_ns();
    if (now < atomic_load_n(&next_ns[dev], RELAXED) &&
        atomic_load_n(&unpaid[dev], RELAXED) == 0) /* hints, see above */
        return true;
    if (pthread_mutex_trylock(&lock) != 0)
        return true; /* another thread is at it */
    own_state();
    bool ok = true;
    uint64_t every = interval_ns();
    if (next_ns[dev] == 0) {
        next_ns[dev] = now + every; /* not on the first charge */
        last_full_ns[dev] = now;
    } else if (now >= next_ns[dev]) {
        bool near = vgpu_region_used(r, dev) + bytes >= limit / 4 * 3;
        if (near || now - last_full_ns[dev] >= 1000000000ull || every == 0) {
            inside = 1;
            reconcile(r, dev);
            inside = 0;
            last_full_ns[dev] = now;
        }
        atomic_store_n(&next_ns[dev], now + every, RELAXED); /* a hint */
    }
    ok = pay(r, dev);
    pthread_mutex_unlock(&lock);
    if (!ok)
        log_debug("device %d: %llu bytes held by the driver beyond the charges "
                  "do not fit: refused", dev, (unsigned long long)unpaid[dev]);
    return ok;
}
