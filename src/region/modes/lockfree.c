/* The seed's lock-free options, all check-then-act on an O(processes) sum:
 *  "per-process" (Option 2): atomic per-process counters, lock-free
 *     own-slot updates and sum; start-up keeps HAMi-core's lock file and
 *     semaphore (10 s x 30) around slot management;
 *  "atomics" (Option 4): the same, with only the semaphore around slot
 *     add/remove;
 *  "seqlock" (Option 4+): atomics plus a per-slot sequence counter: the
 *     writer makes it odd, updates, makes it even; a reader retries a slot
 *     while it is odd or changed, at most 100 times, then takes what it read. */
#include "seed.h"

#include "../../atomic.h"

static void per_process_enter(struct vgpu_region *r)
{
    seed_slots_enter(r, &seed_sem_legacy, &seed_lockfile_legacy);
}

static void sem_enter(struct vgpu_region *r)
{
    seed_slots_enter(r, &seed_sem_legacy, NULL);
}

static bool try_charge_sum(struct vgpu_region *r, int dev, uint64_t bytes,
                           enum vgpu_charge_kind kind)
{
    (void)kind;
    uint64_t limit = atomic_load_n(&r->hami->limit[dev], RELAXED);
    return !charge_exceeds(region_slots_sum(r, dev), bytes, limit);
}

static void settle_add(struct vgpu_region *r, int dev, uint64_t bytes,
                       enum vgpu_charge_kind kind, bool ok)
{
    if (ok)
        slot_add(r, dev, bytes, kind);
}

static uint64_t used_sum(const struct vgpu_region *r, int dev)
{
    return region_slots_sum(r, dev);
}

const struct region_mode_ops mode_per_process_ops = {
    .name = "per-process", .init = seed_sem_init,
    .slots_enter = per_process_enter, .slots_exit = seed_slots_exit,
    .try_charge = try_charge_sum, .settle = settle_add, .uncharge = slot_sub,
    .used = used_sum,
};

const struct region_mode_ops mode_atomics_ops = {
    .name = "atomics", .init = seed_sem_init,
    .slots_enter = sem_enter, .slots_exit = seed_slots_exit,
    .try_charge = try_charge_sum, .settle = settle_add, .uncharge = slot_sub,
    .used = used_sum,
};

/* ---- seqlock ---- */

#define SEQ_RETRIES 100

static uint64_t *seq_of(const struct vgpu_region *r, int slot)
{
    return &r->ext->slots[slot].pad2[0];
}

static void seq_write(struct vgpu_region *r, int dev, uint64_t bytes,
                      enum vgpu_charge_kind kind, bool add)
{
    /* The per-kind counter is for the monitor only: no reader of this mode
     * sums it. A removal takes from it first, so that the total loses only
     * what this kind held (never below zero). */
    struct hami_device_memory *m = &r->hami->procs[r->slot].used[dev];
    uint64_t *part = kind == VGPU_CHARGE_CONTEXT ? &m->context_size
                     : kind == VGPU_CHARGE_MODULE ? &m->module_size
                                                  : &m->data_size;
    if (!add)
        bytes = counter_sub_clamped(part, bytes);
    uint64_t *seq = seq_of(r, r->slot);
    atomic_add(seq, 1, RELAXED); /* odd: a write is under way */
    /* The total changes with release: a reader that acquires the new total
     * also sees the odd sequence (or a later one) when it reads it again. */
    uint64_t *total = &m->total;
    uint64_t cur = atomic_load_n(total, RELAXED);
    uint64_t next;
    do /* a removal stops at zero */
        next = add ? cur + bytes : cur - (cur < bytes ? cur : bytes);
    while (!atomic_cas(total, &cur, next, RELEASE, RELAXED));
    atomic_add(seq, 1, RELEASE); /* even, after the total: the write is done */
    if (add)
        atomic_add(part, bytes, RELAXED);
}

static void seq_settle(struct vgpu_region *r, int dev, uint64_t bytes,
                       enum vgpu_charge_kind kind, bool ok)
{
    if (ok)
        seq_write(r, dev, bytes, kind, true);
}

static void seq_uncharge(struct vgpu_region *r, int dev, uint64_t bytes,
                         enum vgpu_charge_kind kind)
{
    seq_write(r, dev, bytes, kind, false);
}

static uint64_t seq_read_slot(const struct vgpu_region *r, int slot, int dev)
{
    const uint64_t *total = &r->hami->procs[slot].used[dev].total;
    uint64_t value = 0;
    for (int i = 0; i < SEQ_RETRIES; i++) {
        /* Acquire on both loads: the value is read after the first sequence
         * read, and the second sequence read after the value. */
        uint64_t before = atomic_load_n(seq_of(r, slot), ACQUIRE);
        value = atomic_load_n(total, ACQUIRE);
        uint64_t after = atomic_load_n(seq_of(r, slot), RELAXED);
        if (before == after && (before & 1) == 0)
            return value;
    }
    return value; /* best effort after 100 tries, as the seed specifies */
}

static uint64_t seq_sum(const struct vgpu_region *r, int dev)
{
    uint64_t sum = 0;
    int n = atomic_load_n(&r->hami->procnum, RELAXED);
    for (int i = 0; i < n && i < VGPU_MAX_SLOTS; i++)
        sum += seq_read_slot(r, i, dev);
    return sum;
}

static bool seq_try_charge(struct vgpu_region *r, int dev, uint64_t bytes,
                           enum vgpu_charge_kind kind)
{
    (void)kind;
    uint64_t limit = atomic_load_n(&r->hami->limit[dev], RELAXED);
    return !charge_exceeds(seq_sum(r, dev), bytes, limit);
}

const struct region_mode_ops mode_seqlock_ops = {
    .name = "seqlock", .init = seed_sem_init,
    .slots_enter = sem_enter, .slots_exit = seed_slots_exit,
    .try_charge = seq_try_charge, .settle = seq_settle, .uncharge = seq_uncharge,
    .used = seq_sum,
};
