/* The compute limit's budget in the region: a token bucket per GPU, in
 * GPU-nanoseconds, refilled at cap x wall time by whichever process looks
 * first, drawn on by every process of the container.
 *
 * Ordering: all relaxed. The bucket is two independent words, each changed
 * only by atomic read-modify-writes, and nothing else is published through
 * them. refilled_at's compare-and-swap hands each interval of wall time
 * (last, now] to exactly one process, which then adds its tokens with one
 * more read-modify-write on tokens; a charge is one atomic subtraction. A
 * process killed between the two refill steps loses at most that
 * interval's tokens (the container runs slower, never faster).
 */
#include <time.h>

#include "atomic.h"
#include "clock.h"
#include "region_internal.h"

static int64_t ceiling(uint32_t pct)
{
    return VGPU_SM_BURST_NS / 100 * (int64_t)pct;
}

static void refill(struct vgpu_sm_budget *b, uint32_t pct, uint64_t now)
{
    uint64_t last = atomic_load_n(&b->refilled_at, RELAXED);
    if (last > now + (uint64_t)VGPU_SM_BURST_NS) {
        /* Ahead of the caller's reading: the reading may be stale (its
         * thread was off the CPU between reading the clock and this, while
         * another process refilled): then nothing is wrong, and the debt
         * stays. Ahead of the clock now too: a time from before this boot
         * (the file outlived it) or garbage: start again, empty, rather
         * than wait for that time to come. */
        if (last > clock_ns(CLOCK_MONOTONIC) + (uint64_t)VGPU_SM_BURST_NS &&
            atomic_cas(&b->refilled_at, &last, now, RELAXED, RELAXED))
            atomic_store_n(&b->tokens, 0, RELAXED);
        return;
    }
    if (last >= now) {
        /* Refilled just ahead of us: nothing to add, but a damaged level
         * above the ceiling is brought down, so that charges drain it. */
        int64_t cur = atomic_load_n(&b->tokens, RELAXED), max = ceiling(pct);
        while (cur > max && !atomic_cas(&b->tokens, &cur, max, RELAXED, RELAXED))
            ;
        return;
    }
    if (!atomic_cas(&b->refilled_at, &last, now, RELAXED, RELAXED))
        return; /* another process credits this interval */
    if (last == 0)
        return; /* a new bucket starts empty: no burst at start */
    /* Enough wall time, at any cap of 1 % or more, to go from the deepest
     * debt to a full bucket (so a debt is repaid by the wait computed for
     * it, in one refill); more would be clamped anyway. */
    const uint64_t most =
        100 * (uint64_t)(VGPU_SM_MAX_DEBT_NS + VGPU_SM_BURST_NS);
    uint64_t elapsed = now - last < most ? now - last : most;
    int64_t add = (int64_t)elapsed / 100 * (int64_t)pct +
                  (int64_t)(elapsed % 100) * (int64_t)pct / 100;
    int64_t max = ceiling(pct);
    int64_t cur = atomic_load_n(&b->tokens, RELAXED);
    int64_t next;
    do {
        next = cur > max - add ? max : cur + add; /* no overflow on a damaged file */
        if (next < -VGPU_SM_MAX_DEBT_NS) /* a damaged file: bounded wait */
            next = -VGPU_SM_MAX_DEBT_NS;
        if (next == cur)
            return;
    } while (!atomic_cas(&b->tokens, &cur, next, RELAXED, RELAXED));
}

/* GPU-ns the bucket must hold before a paused container resumes. */
static int64_t resume_level(uint32_t pct, uint64_t resume_ns)
{
    int64_t max = ceiling(pct);
    return resume_ns < (uint64_t)max ? (int64_t)resume_ns : max;
}

uint64_t vgpu_sm_budget_wait(struct vgpu_sm_budget *b, uint32_t pct,
                             uint64_t resume_ns, uint64_t now_ns)
{
    if (b == NULL || pct == 0 || pct >= 100)
        return 0;
    refill(b, pct, now_ns);
    /* Relaxed: paused orders nothing; a process that reads it stale
     * launches once more or waits once more (a timing, never the limit,
     * which the tokens keep). */
    int64_t tokens = atomic_load_n(&b->tokens, RELAXED);
    uint64_t paused = atomic_load_n(&b->paused, RELAXED);
    if (tokens <= 0 && paused == 0)
        atomic_store_n(&b->paused, paused = 1, RELAXED);
    if (paused == 0)
        return 0;
    int64_t level = resume_level(pct, resume_ns);
    if (tokens >= level) {
        atomic_store_n(&b->paused, 0, RELAXED);
        return 0;
    }
    /* A damaged file's debt counts as the deepest a bucket keeps (a refill
     * that returned early did not clamp it), so the wait is bounded and
     * its arithmetic cannot overflow. */
    if (tokens < -VGPU_SM_MAX_DEBT_NS)
        tokens = -VGPU_SM_MAX_DEBT_NS;
    /* The bucket fills at pct/100 GPU-ns per wall ns (rounded up, so that
     * it holds the level after the wait). */
    return ((uint64_t)(level - tokens) * 100 + pct - 1) / pct;
}

bool vgpu_sm_budget_ready(const struct vgpu_sm_budget *b, uint64_t coarse_ns)
{
    if (b == NULL || atomic_load_n(&b->tokens, RELAXED) <= 0 ||
        atomic_load_n(&b->paused, RELAXED) != 0)
        return false;
    /* Signed: the coarse clock lags the precise one refills are stamped
     * with by up to a tick; a refill time further ahead is damage (the
     * wait's refill deals with it), not freshness. */
    int64_t since = (int64_t)(coarse_ns - atomic_load_n(&b->refilled_at, RELAXED));
    return since < VGPU_SM_REFILL_NS && since > -VGPU_SM_REFILL_NS;
}

void vgpu_sm_budget_charge(struct vgpu_sm_budget *b, int64_t ns)
{
    if (b == NULL || ns == 0)
        return;
    atomic_sub(&b->tokens, ns, RELAXED);
    if (ns > 0)
        atomic_add(&b->charged_ns, (uint64_t)ns, RELAXED);
}

void vgpu_sm_budget_waited(struct vgpu_sm_budget *b, uint64_t ns)
{
    if (b != NULL)
        atomic_add(&b->waited_ns, ns, RELAXED);
}

uint64_t vgpu_sm_budget_charged(const struct vgpu_sm_budget *b)
{
    return b ? atomic_load_n(&b->charged_ns, RELAXED) : 0;
}

/* ---- The region's fields ---- */

static bool mapped(const struct vgpu_region *r, int dev)
{
    return r != NULL && r->base != NULL && dev >= 0 && dev < VGPU_MAX_DEVICES;
}

struct vgpu_sm_budget *vgpu_region_sm_budget(struct vgpu_region *r, int dev)
{
    return mapped(r, dev) ? &r->ext->sm[dev] : NULL;
}

uint32_t vgpu_region_sm_limit(const struct vgpu_region *r, int dev)
{
    if (!mapped(r, dev))
        return 0;
    /* Relaxed: the monitor may rewrite it at any time; any recent value. */
    uint64_t pct = atomic_load_n(&r->hami->sm_limit[dev], RELAXED);
    return pct >= 100 ? 0 : (uint32_t)pct;
}

bool vgpu_region_sm_limit_damaged(const struct vgpu_region *r, int dev)
{
    /* Relaxed: as in vgpu_region_sm_limit. */
    return mapped(r, dev) && atomic_load_n(&r->hami->sm_limit[dev], RELAXED) > 100;
}

int32_t vgpu_region_utilization_switch(const struct vgpu_region *r)
{
    /* Relaxed: a flag the monitor flips; any recent value. */
    return mapped(r, 0) ? atomic_load_n(&r->hami->utilization_switch, RELAXED) : 0;
}

int32_t vgpu_region_recent_kernel(const struct vgpu_region *r)
{
    /* Relaxed: the monitor's hold flag; any recent value. */
    return mapped(r, 0) ? atomic_load_n(&r->hami->recent_kernel, RELAXED) : 0;
}

void vgpu_region_kernel_ran(struct vgpu_region *r, int64_t now_s)
{
    if (!mapped(r, 0))
        return;
    /* Relaxed: values for the monitor, ordering nothing. Stored only when
     * they change, so that launches do not bounce the cache line. */
    struct hami_region *h = r->hami;
    if (atomic_load_n(&h->recent_kernel, RELAXED) != 2)
        atomic_store_n(&h->recent_kernel, 2, RELAXED);
    if (atomic_load_n(&h->last_kernel_time, RELAXED) != now_s)
        atomic_store_n(&h->last_kernel_time, now_s, RELAXED);
}

void vgpu_region_set_sm_util(struct vgpu_region *r, int dev, uint64_t pct)
{
    if (!mapped(r, dev) || r->slot < 0)
        return;
    /* Relaxed: a metric for the monitor, ordering nothing. */
    atomic_store_n(&r->hami->procs[r->slot].device_util[dev].sm_util, pct,
                   RELAXED);
}
