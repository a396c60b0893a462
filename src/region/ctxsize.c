/* A context's size per device, and the claim on its measurement.
 *
 * ext->context_bytes[dev] holds one of:
 *   0                    not known, nobody measuring;
 *   a size (< 2^63)      measured; UINT64_MAX (VGPU_CONTEXT_ZERO): measured
 *                        to take nothing;
 *   a claim (bit 63)     one process is measuring (see claim_word).
 * A claim lives in the size's own word so that publishing the size ends the
 * claim in the same store, and the layout stays version 3. A claim is not a
 * size: vgpu_region_context_bytes reads it as 0, and copies of the sizes
 * (local.c, failover.c) take sizes only (region_context_size).
 *
 * A claim lapses, and may be taken over by the next creator, when its
 * process is dead (its slot released, reclaimed, or no longer locked: the
 * kernel drops a killed process's lock) or after CLAIM_TTL_MS however
 * alive it is (stopped, or stuck in the driver). Nothing waits on a claim:
 * the others create with an assumed size meanwhile (ctxcharge.c).
 *
 * Every access to the word is relaxed: the word is the whole message (a
 * size, or who measures); it publishes nothing else. */
#include "atomic.h"
#include "clock.h"
#include "locks.h"
#include "region_internal.h"

#define CLAIM_BIT (1ull << 63)
#define CLAIM_SLOT_SHIFT 52 /* 11 bits: slot + 1 (0: the claimer has none) */
#define CLAIM_GEN_SHIFT 40  /* 12 bits: the slot's generation, low bits */
#define CLAIM_GEN_MASK 0xfffull
#define CLAIM_MS_MASK ((1ull << 40) - 1) /* CLOCK_MONOTONIC ms, low 40 bits */

/* A measurement is a context's creation (0.1-0.5 s on an H100, seconds
 * when dozens of processes create at once) between two NVML readings. */
#define CLAIM_TTL_MS 5000

_Static_assert(VGPU_MAX_SLOTS + 1 < (1 << 11), "slot + 1 fits, never all ones");

static bool is_claim(uint64_t v)
{
    return (v & CLAIM_BIT) != 0 && v != VGPU_CONTEXT_ZERO;
}

uint64_t region_context_size(uint64_t v)
{
    return is_claim(v) ? 0 : v;
}

static uint64_t now_ms(void)
{
    return clock_ns(CLOCK_MONOTONIC) / 1000000ull;
}

/* Slot + 1, its generation and the time: never UINT64_MAX (the slot field
 * is never all ones), never 0 (bit 63). */
static uint64_t claim_word(const struct vgpu_region *r)
{
    int slot = atomic_load_n(&r->slot, RELAXED); /* inside the gate: stable */
    uint64_t gen = 0;
    if (slot >= 0 && slot < VGPU_MAX_SLOTS) /* our own slot's word: stable */
        gen = SLOT_GEN(atomic_load_n(&r->ext->slots[slot].word, RELAXED));
    else
        slot = -1;
    return CLAIM_BIT | (uint64_t)(slot + 1) << CLAIM_SLOT_SHIFT |
           (gen & CLAIM_GEN_MASK) << CLAIM_GEN_SHIFT | (now_ms() & CLAIM_MS_MASK);
}

/* Is the claim v still its measurer's? Time first (a clock read), then
 * the slot (loads, and a lock query only where the slot is busy). */
static bool claim_alive(const struct vgpu_region *r, uint64_t v)
{
    /* Modulo 2^40: a stamp from "the future" (another time namespace, a
     * damaged file) is as old as can be, never alive for ever. */
    if (((now_ms() - v) & CLAIM_MS_MASK) >= CLAIM_TTL_MS)
        return false;
    int slot = (int)((v >> CLAIM_SLOT_SHIFT) & 0x7ff) - 1;
    if (slot < 0)
        return true; /* its process had no slot: the time alone */
    if (slot >= VGPU_MAX_SLOTS)
        return false; /* not a slot: damaged */
    if (slot == atomic_load_n(&r->slot, RELAXED))
        return true; /* another thread of this process measures */
    /* Relaxed: a hint; stale, it errs towards "alive", which the time
     * bounds. Released, reclaimed or claimed again since: not the claimer. */
    uint64_t word = atomic_load_n(&r->ext->slots[slot].word, RELAXED);
    if (SLOT_STATE(word) != SLOT_BUSY ||
        (SLOT_GEN(word) & CLAIM_GEN_MASK) != ((v >> CLAIM_GEN_SHIFT) & CLAIM_GEN_MASK))
        return false;
    /* Killed and not yet reclaimed: the kernel dropped its lock. (A local
     * region has no file and no peers: a claim there is ours or stale.) */
    return r->fd >= 0 && byte_locked_elsewhere(r->fd, LOCK_SLOT(slot));
}

/* The region's index of the process's device dev, -1 where r has no
 * mapping or dev is out of range. */
static int mapped_index(const struct vgpu_region *r, int dev)
{
    dev = region_index(r, dev); /* the process's number -> the region's */
    return r == NULL || r->base == NULL || dev < 0 || dev >= VGPU_MAX_DEVICES ? -1 : dev;
}

uint64_t vgpu_region_context_bytes(const struct vgpu_region *r, int dev)
{
    dev = mapped_index(r, dev);
    if (dev < 0)
        return 0;
    return region_context_size(atomic_load_n(&r->ext->context_bytes[dev], RELAXED));
}

void vgpu_region_set_context_bytes(struct vgpu_region *r, int dev, uint64_t bytes)
{
    dev = mapped_index(r, dev);
    if (dev >= 0 && !is_claim(bytes))
        /* Ends whatever claim is there, ours or one that took ours over
         * (that measurer then stores its own figure, or finds its claim
         * gone when it gives up). */
        atomic_store_n(&r->ext->context_bytes[dev], bytes, RELAXED);
}

/* Every caller passes now + the same bound, so the newest mark is the
 * latest one, and a mark past it is from before this boot (the file
 * outlived it) or damage: a plain store replaces either. Racing callers
 * may leave the earlier of two marks made microseconds apart. Relaxed: a
 * time mark that orders nothing; a stale read makes a refused creation
 * wait less or more, within its own bound. */
void vgpu_region_note_guess(struct vgpu_region *r, int dev, uint64_t until_ns)
{
    dev = mapped_index(r, dev);
    if (dev >= 0)
        atomic_store_n(&r->ext->dev[dev].guesses_until, until_ns, RELAXED);
}

uint64_t vgpu_region_guesses_until(const struct vgpu_region *r, int dev)
{
    dev = mapped_index(r, dev);
    return dev < 0 ? 0 : atomic_load_n(&r->ext->dev[dev].guesses_until, RELAXED);
}

/* Inside the gate (r->slot, r->fd and the mapping stay put). */
static uint64_t claim(struct vgpu_region *r, int dev)
{
    uint64_t *w = &r->ext->context_bytes[dev];
    uint64_t cur = atomic_load_n(w, RELAXED);
    for (;;) {
        if (cur != 0 && (!is_claim(cur) || claim_alive(r, cur)))
            return 0; /* known, or being measured */
        uint64_t mine = claim_word(r);
        /* A failed CAS refreshes cur: look again (weak CAS may fail
         * spuriously; then cur is what it was). */
        if (atomic_cas(w, &cur, mine, RELAXED, RELAXED))
            return mine;
    }
}

uint64_t vgpu_region_claim_context(struct vgpu_region *r, int dev)
{
    if (r == NULL || dev < 0 || dev >= VGPU_MAX_DEVICES ||
        lifecycle_enter(r) != GATE_OPEN)
        return 0;
    region_op_enter(r);
    int at = region_index(r, dev); /* inside the gate, as charges do */
    uint64_t mine = at >= 0 && at < VGPU_MAX_DEVICES ? claim(r, at) : 0;
    region_op_exit(r);
    lifecycle_leave(r);
    return mine;
}

bool vgpu_region_context_measuring(struct vgpu_region *r, int dev)
{
    if (r == NULL || dev < 0 || dev >= VGPU_MAX_DEVICES ||
        lifecycle_enter(r) != GATE_OPEN)
        return false;
    region_op_enter(r);
    int at = region_index(r, dev); /* inside the gate, as charges do */
    bool live = false;
    if (at >= 0 && at < VGPU_MAX_DEVICES) {
        uint64_t cur = atomic_load_n(&r->ext->context_bytes[at], RELAXED);
        live = is_claim(cur) && claim_alive(r, cur);
    }
    region_op_exit(r);
    lifecycle_leave(r);
    return live;
}

void vgpu_region_unclaim_context(struct vgpu_region *r, int dev, uint64_t claim_word)
{
    dev = mapped_index(r, dev);
    if (dev < 0 || !is_claim(claim_word))
        return;
    /* Only our own claim goes: one taken over, or a size stored since,
     * stays. Strong enough with a loop: a spurious failure leaves cur
     * equal to ours. */
    uint64_t cur = claim_word;
    while (!atomic_cas(&r->ext->context_bytes[dev], &cur, 0, RELAXED, RELAXED) &&
           cur == claim_word)
        ;
}

void region_context_claims_drop(struct vgpu_region *r, bool all)
{
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        uint64_t *w = &r->ext->context_bytes[d];
        uint64_t cur = atomic_load_n(w, RELAXED);
        while (is_claim(cur) && (all || !claim_alive(r, cur)) &&
               !atomic_cas(w, &cur, 0, RELAXED, RELAXED))
            ;
    }
}
