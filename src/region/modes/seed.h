/* What the seed's modes (legacy, timeouts, per-process, rwlock, atomics,
 * seqlock) share: HAMi-core's semaphore with timed waits, its start-up lock
 * file polled with sleeps, and the O(processes) sum over the slots. These
 * modes exist to be measured against the default one: their limit checks
 * are check-then-act, kept as the seed describes them. */
#ifndef VGPU_MODES_SEED_H
#define VGPU_MODES_SEED_H

#include <stdbool.h>
#include <stdint.h>

#include "../region_internal.h"

/* How long to wait for the semaphore: wait_ms[i] for try i, then give up
 * and go on without it (after checking whether its holder died). */
struct sem_policy {
    int tries;
    int wait_ms[32];
};

/* The start-up lock file: tries, and the random sleep between them. */
struct lockfile_policy {
    int tries;
    int sleep_min_ms;
    int sleep_max_ms;
    int jitter_max_ms; /* random delay before the first try */
};

void seed_sem_init(struct vgpu_region *r);
/* True if taken; false if every wait timed out (the caller goes on). */
bool seed_sem_lock(struct vgpu_region *r, const struct sem_policy *p);
void seed_sem_unlock(struct vgpu_region *r);

bool seed_lockfile_take(struct vgpu_region *r, const struct lockfile_policy *p);
void seed_lockfile_drop(struct vgpu_region *r);

/* region_slots_sum (region_internal.h) is HAMi-core's usage read. */

/* Around slot management (attach, detach): the lock file, when the mode
 * has one (lockfile != NULL), then the semaphore; exit gives back what
 * enter obtained. */
void seed_slots_enter(struct vgpu_region *r, const struct sem_policy *sem,
                      const struct lockfile_policy *lockfile);
void seed_slots_exit(struct vgpu_region *r);

/* HAMi-core's own timings. */
extern const struct sem_policy seed_sem_legacy;
extern const struct lockfile_policy seed_lockfile_legacy;

#endif
