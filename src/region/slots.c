/* Process slots: claimed with a file lock and a compare-and-swap, never under
 * a global lock; found dead by the kernel having dropped the owner's lock;
 * reclaimed exactly once, by whoever takes that lock next.
 *
 * Invariant: a slot's state word changes only while its byte lock is held
 * (claim, release, reclaim), so holding the lock makes the holder the only
 * writer of that slot's ownership.
 *
 * HAMi's node monitor sums the slots of procs[0, procnum) whose `status` is
 * not 0 (HAMi-core: 1 live, 0 free). A claim sets status 1 last, once pid
 * and the counters (zeroed by the previous release) are in place; a release
 * or reclaim sets status 0 first, before emptying. So the monitor never
 * counts a slot that is being filled in or emptied out, never reads a
 * previous owner's bytes under a new owner's status, and counts each byte
 * in one slot only (bytes never move between slots). A monitor that read
 * status 1 just before a release began may still read some counters already
 * zeroed: an under-count of a leaving process for that one read, never an
 * over-count.
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
    /* Relaxed: for the monitor, which reads them without ordering. The
     * host's pid only if this process knew it already: finding it reads
     * /proc, which stays off the first CUDA call (see proc.c). */
    struct hami_slot *hs = &r->hami->procs[i];
    atomic_store_n(&hs->pid, (int32_t)getpid(), RELAXED);
    atomic_store_n(&hs->hostpid, proc_host_pid_known(), RELAXED);
    raise_procnum(r->hami, i);
    /* Release, last: a reader that sees status 1 (acquire) sees the pid
     * above and the counters the previous release emptied. */
    atomic_store_n(&hs->status, HAMI_SLOT_LIVE, RELEASE);
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
        /* Release: a reader that sees this total zeroed (acquire) and then
         * reads status sees the 0 stored before it (empty_slot). */
        uint64_t total = atomic_xchg(&m->total, 0, RELEASE);
        if (total != 0 && r->ops->device_counters)
            device_sub(r, d, total); /* stops at zero, warns once */
        atomic_store_n(&m->data_size, 0, RELAXED);
        atomic_store_n(&m->context_size, 0, RELAXED);
        atomic_store_n(&m->module_size, 0, RELAXED);
        /* The monitor sums these over live slots too: a next owner must
         * not show this one's figures. */
        atomic_store_n(&hs->monitorused[d], 0, RELAXED);
        atomic_store_n(&hs->device_util[d].sm_util, 0, RELAXED);
    }
}

static void empty_slot(struct vgpu_region *r, int i, uint64_t word)
{
    struct vgpu_slot_ext *s = &r->ext->slots[i];
    /* Relaxed: only the holder of the slot's lock writes the word. */
    atomic_store_n(&s->word, SLOT_WORD(SLOT_GEN(word), SLOT_RECLAIMING), RELAXED);
    struct hami_slot *hs = &r->hami->procs[i];
    /* Status 0 before emptying (see the top of this file). Dying after it
     * leaves the slot reclaiming: the next reclaimer empties it again. */
    atomic_store_n(&hs->status, HAMI_SLOT_FREE, RELAXED);
    slot_empty_counters(r, i); /* its release orders the store above */
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
    atomic_store_n(&r->slot, -1, RELAXED); /* read outside gates too */
}

bool slot_owner_alive(struct vgpu_region *r, int i)
{
    if (i == r->slot)
        return true; /* our own lock never conflicts with ourselves */
    return byte_locked_elsewhere(r->fd, LOCK_SLOT(i));
}

/* The threads of a process share its slot locks (file-description
 * locks): a second thread of ours would get slot i's lock while the first
 * empties it, find it still busy, and empty it again after the first let
 * go, by then perhaps another process's new slot (region_reclaim_threads).
 * So one thread of ours at a time per slot. A fork child may inherit a bit
 * set by a thread of its parent: it leaves that slot to others, once. */
static bool reclaim_enter(struct vgpu_region *r, int i)
{
    uint64_t bit = 1ull << (i % 64);
    /* Acquire: the previous holder's writes to the slot, as its lock. */
    return !(atomic_or(&r->reclaiming[i / 64], bit, ACQUIRE) & bit);
}

static void reclaim_leave(struct vgpu_region *r, int i)
{
    /* Release: this reclaim's writes to the next thread of ours in. */
    atomic_and(&r->reclaiming[i / 64], ~(1ull << (i % 64)), RELEASE);
}

static bool reclaim_locked(struct vgpu_region *r, int i)
{
    struct vgpu_slot_ext *s = &r->ext->slots[i];
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

bool slot_try_reclaim(struct vgpu_region *r, int i)
{
    /* Relaxed: a hint; a busy slot is read again under its lock. */
    if (i == r->slot ||
        SLOT_STATE(atomic_load_n(&r->ext->slots[i].word, RELAXED)) == SLOT_FREE ||
        !reclaim_enter(r, i))
        return false;
    bool dead = reclaim_locked(r, i);
    reclaim_leave(r, i);
    return dead;
}

void slots_reclaim_window(struct vgpu_region *r, int count)
{
    /* A few slots per attach, round robin over procs[0, procnum) (where
     * the monitor looks, and where every claimed slot is but for a claimer
     * that died before raising procnum: the full scan on refusal finds
     * those), so that a container of a few processes has its dead slots
     * emptied, and out of the monitor's sums, at the next start of any of
     * its processes, without making attach cost O(slots). */
    int32_t procnum = atomic_load_n(&r->hami->procnum, RELAXED); /* a bound */
    uint32_t span = procnum > 0 && procnum <= VGPU_MAX_SLOTS ? (uint32_t)procnum : 0;
    if (span <= (uint32_t)count) {
        for (uint32_t i = 0; i < span; i++)
            slot_try_reclaim(r, (int)i);
        return;
    }
    uint32_t start = atomic_add(&r->ext->slot_cursor, (uint32_t)count, RELAXED);
    for (int n = 0; n < count; n++)
        slot_try_reclaim(r, (int)((start + (uint32_t)n) % span));
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
    /* A measurer killed mid-claim: nobody measures now (sizes stay). */
    region_context_claims_drop(r, true);
    if (r->ops->init)
        r->ops->init(r); /* a dead holder's semaphore or rwlock, reset */
}

bool region_heal_alive(struct vgpu_region *r)
{
    /* We hold the attach lock for writing: every other busy slot is dead.
     * Our own operations are paused, so our slot's totals are exact, and
     * they are all that may be counted. */
    for (int i = 0; i < VGPU_MAX_SLOTS; i++)
        slot_try_reclaim(r, i); /* skips our own */
    bool healed = false;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        /* Relaxed: nobody else charges (see above). */
        uint64_t mine = atomic_load_n(&r->hami->procs[r->slot].used[d].total,
                                      RELAXED);
        uint64_t was = atomic_xchg(&r->ext->dev[d].used, mine, RELAXED);
        if (was > mine) {
            log_info("healed %llu bytes on device %d left by processes killed "
                     "while charging (this process is alone)",
                     (unsigned long long)(was - mine), d);
            atomic_add(&r->ext->heals, 1, RELAXED); /* statistic */
            healed = true;
        }
    }
    /* Claims of the processes reclaimed above lapse with them (a thread
     * of ours may be measuring: its claim stays). */
    region_context_claims_drop(r, false);
    return healed;
}
