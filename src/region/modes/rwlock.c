/* "rwlock" (the seed's Option 3): the semaphore only around slot
 * management, with 2 s x 3 waits; a process-shared rwlock in the file for
 * the runtime, taken with a 100 ms timeout (then the operation goes on
 * unlocked: fail fast rather than hang): read lock for usage sums, write
 * lock to add or remove. Still check (read) then act (write). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "seed.h"
#include "../../atomic.h"
#include "../../log.h"

#define RW_TIMEOUT_MS 100

_Static_assert(sizeof(pthread_rwlock_t) <= VGPU_MODE_AREA, "rwlock fits");

static const struct sem_policy rwlock_sem = {3, {2000, 2000, 2000}};

static pthread_rwlock_t *rw_of(const struct vgpu_region *r)
{
    return (pthread_rwlock_t *)(void *)r->ext->mode_area;
}

static void init(struct vgpu_region *r)
{
    seed_sem_init(r);
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_rwlock_init(rw_of(r), &attr);
    pthread_rwlockattr_destroy(&attr);
}

static void slots_enter(struct vgpu_region *r)
{
    seed_slots_enter(r, &rwlock_sem, NULL);
}

static struct timespec soon(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += RW_TIMEOUT_MS * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static bool lock(const struct vgpu_region *r, bool write)
{
    struct timespec ts = soon();
    int rc = write ? pthread_rwlock_timedwrlock(rw_of(r), &ts)
                   : pthread_rwlock_timedrdlock(rw_of(r), &ts);
    if (rc == 0)
        return true;
    static int warned;
    if (!atomic_xchg(&warned, 1, RELAXED))
        log_warn("runtime lock not obtained in %d ms; going on without it",
                 RW_TIMEOUT_MS);
    return false;
}

static uint64_t used(const struct vgpu_region *r, int dev)
{
    bool locked = lock(r, false);
    uint64_t sum = region_slots_sum(r, dev);
    if (locked)
        pthread_rwlock_unlock(rw_of(r));
    return sum;
}

static bool try_charge(struct vgpu_region *r, int dev, uint64_t bytes,
                       enum vgpu_charge_kind kind)
{
    (void)kind;
    uint64_t limit = atomic_load_n(&r->hami->limit[dev], RELAXED);
    return !charge_exceeds(used(r, dev), bytes, limit);
}

static void add(struct vgpu_region *r, int dev, uint64_t bytes,
                enum vgpu_charge_kind kind, bool plus)
{
    bool locked = lock(r, true);
    if (plus)
        slot_add(r, dev, bytes, kind);
    else
        slot_sub(r, dev, bytes, kind);
    if (locked)
        pthread_rwlock_unlock(rw_of(r));
}

static void settle(struct vgpu_region *r, int dev, uint64_t bytes,
                   enum vgpu_charge_kind kind, bool ok)
{
    if (ok)
        add(r, dev, bytes, kind, true);
}

static void uncharge(struct vgpu_region *r, int dev, uint64_t bytes,
                     enum vgpu_charge_kind kind)
{
    add(r, dev, bytes, kind, false);
}

static void hold(struct vgpu_region *r)
{
    lock(r, true);
}

const struct region_mode_ops mode_rwlock_ops = {
    .name = "rwlock", .init = init, .slots_enter = slots_enter,
    .slots_exit = seed_slots_exit, .hold = hold, .try_charge = try_charge,
    .settle = settle, .uncharge = uncharge, .used = used,
};
