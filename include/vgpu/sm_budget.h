/* The compute limit's shared budget: one token bucket per GPU and container,
 * kept in the region, counted in GPU-nanoseconds.
 *
 * Every process of the container refills the bucket at cap x wall time and
 * draws on it with the GPU time its launches actually used (measured by the
 * hooks from the device). A launch may start while the bucket holds tokens;
 * its time is charged afterwards, so the bucket can go into debt, and the
 * next launches wait until the debt is paid back and the resume level
 * (VGPU_SM_RESUME_NS unless VGPU_SM_RESUME_MS says otherwise) more
 * has come in (the bucket is then "paused"). Over any long window the
 * container's GPU time is therefore at most cap x window plus one burst
 * (VGPU_SM_BURST_NS x cap), busy or idle GPU alike: a hard cap.
 *
 * No lock: the level and the refill time are two words changed by atomic
 * read-modify-writes only (see sm_budget.c for the ordering argument).
 */
#ifndef VGPU_SM_BUDGET_H
#define VGPU_SM_BUDGET_H

#include <stdbool.h>
#include <stdint.h>

/* Tokens a bucket keeps while its container does not use them: this much
 * wall time at the cap (250 ms at 30 % = 75 ms of GPU time). Larger absorbs
 * the scheduling delays of launching threads on a busy host (tokens not
 * used in time are lost); smaller bounds the burst after idling. */
#define VGPU_SM_BURST_NS 250000000ll

/* The deepest debt a bucket keeps (a damaged file cannot hold launches for
 * longer than this much GPU time at the cap). */
#define VGPU_SM_MAX_DEBT_NS 60000000000ll

/* After a hold, launches resume only once the bucket holds this much GPU
 * time (or its ceiling, if smaller): the container then runs in stretches
 * of at least this long and is held for RESUME / cap, instead of
 * alternating every refill. Each hold lets the GPU switch to another
 * context and back, and leaves it idle between the last queued work and
 * the first launch after the hold: both cost the container time it was
 * charged nothing for, so frequent holds deliver less than the cap (on an
 * H100, 30 % + 70 % containers together got 28.5 + 55.4 % resuming at
 * every refill; the 70 % one 60.2-62.9 % at 2 ms and 64.3-64.9 % at 8 ms,
 * three interleaved rounds, BENCHMARKS.md §9). 8 ms keeps a 30 %
 * container's holds near 27 ms and a 10 % one's at 72 ms, inside any
 * window a share is judged over; a tenant that needs shorter holds sets
 * VGPU_SM_RESUME_MS (vgpu/config.h), per process, without a rebuild. */
#define VGPU_SM_RESUME_NS 8000000ll

struct vgpu_sm_budget {
    int64_t tokens;        /* GPU-ns the container may still use; < 0: debt */
    uint64_t refilled_at;  /* CLOCK_MONOTONIC ns of the last refill; 0: never */
    uint64_t charged_ns;   /* GPU-ns charged ever (statistic) */
    uint64_t waited_ns;    /* wall ns launches were held (statistic) */
    uint64_t paused;       /* 1: held until the bucket holds the resume level
                            * (0 in files made before it: not paused) */
    uint64_t pad[3];       /* one cache line per device */
};

/* How long a launch must wait, in ns, before it may start on budget b with
 * cap percent pct (1..99) at monotonic time now_ns: 0 = go now. Refills
 * the bucket first. A paused bucket resumes once it holds resume_ns of
 * GPU time, or its ceiling if that is less. */
uint64_t vgpu_sm_budget_wait(struct vgpu_sm_budget *b, uint32_t pct,
                             uint64_t resume_ns, uint64_t now_ns);

/* The launch path's first look: true when b holds tokens, is not paused and was refilled
 * less than VGPU_SM_REFILL_NS before coarse_ns (CLOCK_MONOTONIC_COARSE), so
 * that a launch may go without a refill (one load of the bucket's line);
 * false: ask vgpu_sm_budget_wait. Tokens not yet added are added by the
 * next refill (it counts from the last one): they come late, never lost. */
#define VGPU_SM_REFILL_NS 1000000ll
bool vgpu_sm_budget_ready(const struct vgpu_sm_budget *b, uint64_t coarse_ns);

/* Charge ns of GPU time (negative: give back an over-estimate). */
void vgpu_sm_budget_charge(struct vgpu_sm_budget *b, int64_t ns);

/* Record that launches were held for ns (statistic). */
void vgpu_sm_budget_waited(struct vgpu_sm_budget *b, uint64_t ns);

/* Read the statistics (relaxed: any recent value). */
uint64_t vgpu_sm_budget_charged(const struct vgpu_sm_budget *b);

/* ---- The region's side (sm_budget.c) ---- */

struct vgpu_region;

/* dev's budget in the region; NULL without a region or for a bad dev. */
struct vgpu_sm_budget *vgpu_region_sm_budget(struct vgpu_region *r, int dev);

/* dev's cap in percent as the region holds it (HAMi's sm_limit, written
 * from CUDA_DEVICE_SM_LIMIT when the file is created; the monitor may
 * rewrite it): 0 = none; 100 and above read as none. */
uint32_t vgpu_region_sm_limit(const struct vgpu_region *r, int dev);
/* The region holds no percentage for dev (over 100: damage), so what it
 * says must not be taken for "none" by a process that has a cap. */
bool vgpu_region_sm_limit_damaged(const struct vgpu_region *r, int dev);

/* HAMi's monitor fields: utilization_switch (1: the GPU is shared, limit),
 * recent_kernel (< 0: hold launches), and what launches write back. */
int32_t vgpu_region_utilization_switch(const struct vgpu_region *r);
int32_t vgpu_region_recent_kernel(const struct vgpu_region *r);
/* A launch runs: recent_kernel = 2, last_kernel_time = now_s (seconds). */
void vgpu_region_kernel_ran(struct vgpu_region *r, int64_t now_s);
/* This process's utilization of dev in percent (its slot's sm_util). */
void vgpu_region_set_sm_util(struct vgpu_region *r, int dev, uint64_t pct);

#endif
