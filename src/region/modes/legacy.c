/* "legacy": HAMi-core as it is. One process-shared semaphore (10 s x 30
 * tries) around every attach, charge, uncharge and usage read; the start-up
 * lock file polled with sleep(1..5 s), 20 tries; the limit checked by a
 * locked sum over all slots, then the driver call, then a locked add.
 * "timeouts" (the seed's Option 1): the same with 1 s, 2 s, 2 s... waits
 * (5 tries), lock-file sleeps of 100-500 ms (10 tries), and 0-50 ms of
 * start jitter. */
#include "seed.h"

#include "../../atomic.h"

struct legacy_policy {
    const struct sem_policy *sem;
    const struct lockfile_policy *lockfile;
};

static const struct legacy_policy legacy = {&seed_sem_legacy, &seed_lockfile_legacy};

static const struct sem_policy timeouts_sem = {5, {1000, 2000, 2000, 2000, 2000}};
static const struct lockfile_policy timeouts_lockfile = {10, 100, 500, 50};
static const struct legacy_policy timeouts = {&timeouts_sem, &timeouts_lockfile};

static const struct legacy_policy *policy_of(const struct vgpu_region *r)
{
    return r->ext->mode == MODE_TIMEOUTS ? &timeouts : &legacy;
}

/* Per-process start-up work (the slot) under the lock file and the
 * semaphore, as HAMi-core does it. */
static void slots_enter(struct vgpu_region *r)
{
    seed_slots_enter(r, policy_of(r)->sem, policy_of(r)->lockfile);
}

static uint64_t locked_sum(struct vgpu_region *r, int dev)
{
    bool locked = seed_sem_lock(r, policy_of(r)->sem);
    uint64_t used = region_slots_sum(r, dev);
    if (locked)
        seed_sem_unlock(r);
    return used;
}

static bool try_charge(struct vgpu_region *r, int dev, uint64_t bytes,
                       enum vgpu_charge_kind kind)
{
    (void)kind;
    uint64_t limit = atomic_load_n(&r->hami->limit[dev], RELAXED);
    return !charge_exceeds(locked_sum(r, dev), bytes, limit); /* check... */
}

static void settle(struct vgpu_region *r, int dev, uint64_t bytes,
                   enum vgpu_charge_kind kind, bool ok)
{
    if (!ok)
        return;
    bool locked = seed_sem_lock(r, policy_of(r)->sem); /* ...then act */
    slot_add(r, dev, bytes, kind);
    if (locked)
        seed_sem_unlock(r);
}

static void uncharge(struct vgpu_region *r, int dev, uint64_t bytes,
                     enum vgpu_charge_kind kind)
{
    bool locked = seed_sem_lock(r, policy_of(r)->sem);
    slot_sub(r, dev, bytes, kind);
    if (locked)
        seed_sem_unlock(r);
}

static uint64_t used(const struct vgpu_region *r, int dev)
{
    return locked_sum((struct vgpu_region *)r, dev);
}

static void hold(struct vgpu_region *r)
{
    seed_sem_lock(r, policy_of(r)->sem);
}

#define LEGACY_OPS(mode_name)                                                  \
    {                                                                          \
        .name = mode_name, .init = seed_sem_init, .slots_enter = slots_enter,  \
        .slots_exit = seed_slots_exit, .hold = hold, .try_charge = try_charge, \
        .settle = settle, .uncharge = uncharge, .used = used,                  \
    }

const struct region_mode_ops mode_legacy_ops = LEGACY_OPS("legacy");
const struct region_mode_ops mode_timeouts_ops = LEGACY_OPS("timeouts");
