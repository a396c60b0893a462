/* Process slots: claimed with a file lock and a compare-and-swap, never under
 * a global lock; found dead by the kernel having dropped the owner's lock;
 * reclaimed exactly once, by whoever takes that lock next.
 *
 * Invariant: a slot's state word changes only while its byte lock is held
 * (claim, release, reclaim), so holding the lock makes the holder the only
 * writer of that slot's ownership.
 */
#include <string.h>
#include <unistd.h>

#include "atomic.h"
#include "locks.h"
#include "log.h"
#include "region_internal.h"

static void raise_procnum(struct hami_region *h, int slot)
{
    /* The monitor reads procs[0, procnum); relaxed: procnum orders nothing,
     * it only bounds the monitor's scan and never shrinks while attached. */
    int32_t cur = atomic_load_n(&h->procnum, RELAXED);
    while (cur < slot + 1 &&
           !atomic_cas(&h->procnum, &cur, slot + 1, RELAXED, RELAXED))
        ;
}

static bool take_free_slot(struct vgpu_region *r, int i)
{
    struct vgpu_slot_ext *s = &r->ext->slots[i];
    /* Relaxed: a hint only; the state is read again under the lock. */
    if (SLOT_STATE(atomic_load_n(&s->word, RELAXED)) != SLOT_FREE)
        return false;
    if (!byte_lock(r->fd, LOCK_SLOT(i), BYTE_WRITE, false))
        return false; /* another attacher or a reclaimer is on it */
    /* Acquire: pairs with the release that freed the slot, so the emptied
     * counters are seen before we reuse them. */
    uint64_t word = atomic_load_n(&s->word, ACQUIRE);
    if (SLOT_STATE(word) != SLOT_FREE) {
        byte_unlock(r->fd, LOCK_SLOT(i));
        return false;
    }
    /* Busy first: if we die before the fields below are written, the slot
     * is busy with a dropped lock and is reclaimed (zeroed) like any other. */
    atomic_store_n(&s->word, SLOT_WORD(SLOT_GEN(word) + 1, SLOT_BUSY), RELAXED);
    s->pid = (int32_t)getpid();
    /* Relaxed: for the monitor, which reads them without ordering. */
    struct hami_slot *hs = &r->hami->procs[i];
    atomic_store_n(&hs->pid, (int32_t)getpid(), RELAXED);
    atomic_store_n(&hs->hostpid, proc_host_pid(), RELAXED);
    raise_procnum(r->hami, i);
    return true;
}

int slot_claim(struct vgpu_region *r)
{
    /* Concurrent attachers start at different slots, so a storm of them
     * rarely tries the same lock twice. Relaxed: only a hint. */
    uint32_t start = atomic_add(&r->ext->slot_cursor, 1, RELAXED);
    for (int n = 0; n < VGPU_MAX_SLOTS; n++) {
        int i = (int)((start + (uint32_t)n) % VGPU_MAX_SLOTS);
        if (take_free_slot(r, i))
            return i;
    }
    return -1;
}

void slot_empty_counters(struct vgpu_region *r, int i)
{
    struct hami_slot *hs = &r->hami->procs[i];
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        struct hami_device_memory *m = &hs->used[d];
        /* Exchange makes this idempotent: a second reclaimer (after one that
         * died half-way) finds 0 and subtracts nothing. Subtract from the
         * device only after: dying in between leaks upward, never downward. */
        uint64_t total = atomic_xchg(&m->total, 0, RELAXED);
        atomic_store_n(&m->data_size, 0, RELAXED);
        atomic_store_n(&m->context_size, 0, RELAXED);
        atomic_store_n(&m->module_size, 0, RELAXED);
        if (total != 0 && r->ops->device_counters)
            atomic_sub(&r->ext->dev[d].used, total, RELAXED);
    }
}

static void empty_slot(struct vgpu_region *r, int i, uint64_t word)
{
    struct vgpu_slot_ext *s = &r->ext->slots[i];
    /* Relaxed: only the holder of the slot's lock writes the word. */
    atomic_store_n(&s->word, SLOT_WORD(SLOT_GEN(word), SLOT_RECLAIMING), RELAXED);
    slot_empty_counters(r, i);
    struct hami_slot *hs = &r->hami->procs[i];
    atomic_store_n(&hs->pid, 0, RELAXED);
    atomic_store_n(&hs->hostpid, 0, RELAXED);
    s->pid = 0;
    s->start_time = 0;
    /* Release: the next claimer (acquire in take_free_slot) sees the slot
     * empty before it sees it free. */
    atomic_store_n(&s->word, SLOT_WORD(SLOT_GEN(word), SLOT_FREE), RELEASE);
}

void slot_release(struct vgpu_region *r)
{
    int i = r->slot;
    if (i < 0)
        return;
    empty_slot(r, i, atomic_load_n(&r->ext->slots[i].word, RELAXED)); /* ours */
    byte_unlock(r->fd, LOCK_SLOT(i));
    r->slot = -1;
}

bool slot_owner_alive(struct vgpu_region *r, int i)
{
    if (i == r->slot)
        return true; /* our own lock never conflicts with ourselves */
    return byte_locked_elsewhere(r->fd, LOCK_SLOT(i));
}

bool slot_try_reclaim(struct vgpu_region *r, int i)
{
    struct vgpu_slot_ext *s = &r->ext->slots[i];
    /* Relaxed: a hint; a busy slot is read again under its lock. */
    if (i == r->slot || SLOT_STATE(atomic_load_n(&s->word, RELAXED)) == SLOT_FREE)
        return false;
    if (!byte_lock(r->fd, LOCK_SLOT(i), BYTE_WRITE, false))
        return false; /* its owner is alive (or another reclaimer is here) */
    /* Acquire: see whatever the last lock holder wrote to this slot. */
    uint64_t word = atomic_load_n(&s->word, ACQUIRE);
    bool dead = SLOT_STATE(word) != SLOT_FREE;
    if (dead) {
        log_info("reclaiming slot %d of dead pid %d", i, (int)s->pid);
        empty_slot(r, i, word);
        atomic_add(&r->ext->reclaims, 1, RELAXED); /* statistic */
    }
    byte_unlock(r->fd, LOCK_SLOT(i));
    return dead;
}

void slots_reclaim_window(struct vgpu_region *r, int count)
{
    /* A few slots per attach, round robin, so that every slot is looked at
     * now and then without making attach cost O(slots). */
    uint32_t start = atomic_add(&r->ext->slot_cursor, (uint32_t)count, RELAXED);
    for (int n = 0; n < count; n++)
        slot_try_reclaim(r, (int)((start + (uint32_t)n) % VGPU_MAX_SLOTS));
}

int vgpu_region_reclaim(struct vgpu_region *r)
{
    /* An inspector (vgpuctl) joins as a reader for the duration, so that a
     * process alone cannot heal (zero the counters) under its feet. An
     * attached process already holds it; re-taking it is a no-op. */
    bool inspector = !r->holds_attach;
    if (inspector && !byte_lock(r->fd, LOCK_ATTACH, BYTE_READ, true))
        return 0;
    /* Every slot, not only [0, procnum): a claimer may die between marking
     * its slot busy and raising procnum. Free slots cost one load each. */
    int reclaimed = 0;
    for (int i = 0; i < VGPU_MAX_SLOTS; i++)
        reclaimed += slot_try_reclaim(r, i);
    if (inspector)
        byte_unlock(r->fd, LOCK_ATTACH);
    return reclaimed;
}

void region_heal(struct vgpu_region *r)
{
    /* No process holds the attach lock for reading, so every busy slot is
     * dead: reclaim them all, then whatever the devices still count is the
     * in-flight charges of processes killed mid-charge. */
    for (int i = 0; i < VGPU_MAX_SLOTS; i++)
        slot_try_reclaim(r, i);
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        /* Relaxed: alone, nobody else charges (the attach lock is ours). */
        uint64_t leaked = atomic_xchg(&r->ext->dev[d].used, 0, RELAXED);
        if (leaked != 0) {
            log_info("healed %llu bytes on device %d left by processes killed "
                     "while charging", (unsigned long long)leaked, d);
            atomic_add(&r->ext->heals, 1, RELAXED); /* statistic */
        }
    }
    atomic_store_n(&r->hami->procnum, 0, RELAXED);
    if (r->ops->init)
        r->ops->init(r); /* a dead holder's semaphore or rwlock, reset */
}
