/* A launch's GPU time, predicted from its last measurements (gputime.c).
 *
 * On a GPU time-sliced between processes, a measured launch that another
 * context preempts is measured with the other's work inside it: on an H100
 * a 250 us kernel beside a second container measured 500 us (one of the
 * other's kernels) or 2.7 ms (a whole time slice) in 6-10 % of samples,
 * in runs of up to three in a row. Those are not this container's GPU
 * time. A real change of duration (the same kernel given more work) is.
 *
 * The rule: of the last ESTIMATE_WINDOW measurements, those longer than
 * ESTIMATE_STRETCH times the shortest are taken as stretched by another
 * context, and the estimate is the mean of the others; unless the long
 * ones are more than half of the window and the measurements over that
 * bound more than half of the last ESTIMATE_HISTORY too: then they are the
 * kernel's own durations, and the estimate is the mean of the whole
 * window. So a kernel whose durations vary within 2x is charged their
 * mean, and a change within 2x moves the mean measurement by measurement.
 * A kernel that becomes more than 2x longer for good is charged as before
 * for 7 measurements (each covering the launches since the previous one),
 * its new duration from the 8th, when the new ones fill the window; where
 * its old duration still comes in between, until the new one is more than
 * half of the history (one in three old: from the 19th; one in eight: the
 * 14th). One that becomes more than 2x shorter is charged more than it
 * uses for 3 measurements, its new duration from the 4th. What it costs:
 * a kernel that is more than 2x as long as usual in at most half of the
 * window, or of the history, is charged as if it never were (3x as long
 * in 55 % of its launches at random: charged 73 % of what it ran).
 * Why 2x: the other context's single kernel inside ours doubles a
 * measurement (514 us for 247 us on that H100); with 3x those were kept,
 * and on that trace (tests/gputime_estimate.c) the mean charged 7 % too
 * much (265 us a launch), with 2x 1 % (249 us); the median of three used
 * before charged 26 % too much, following two stretched ones in a row.
 * Why a history of 24: on the same H100 a week later the other's kernels
 * and slices came in runs, up to seven of eight measurements in a row;
 * decided on the last 8 alone (as before), they were taken as the
 * kernel's own and charged 336 us a launch of 241 us (the second trace in
 * the test), and the 70 % container sat idle 200-600 ms at a time paying
 * for them. Over 24 they stay under half: 242 us (over 16: 258 us).
 *
 * No lock, no allocation: the caller keeps one per key per thread. */
#ifndef VGPU_HOOK_ESTIMATE_H
#define VGPU_HOOK_ESTIMATE_H

#include <stdbool.h>
#include <stdint.h>

#define ESTIMATE_WINDOW 8   /* measurements averaged */
#define ESTIMATE_HISTORY 24 /* measurements that tell stretched ones */
#define ESTIMATE_STRETCH 2  /* see "Why 2x" */

struct estimate_window {
    int64_t sample[ESTIMATE_HISTORY]; /* ring, oldest overwritten */
    uint32_t count;                   /* measurements held, up to HISTORY */
    uint32_t next;                    /* where the next one goes */
};

/* Take measurement `ns` (>= 0). Returns the new estimate; *own says whether
 * `ns` itself counts as this context's time (false: stretched by another,
 * the caller charges the estimate for it instead). */
int64_t estimate_learn(struct estimate_window *w, int64_t ns, bool *own);

#endif
