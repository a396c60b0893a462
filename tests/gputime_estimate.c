/* The launch-time estimator (src/hook/estimate.c): what a launch is charged
 * from its key's last measurements. One case per behaviour; each prints
 * what it found and fails with the figure that broke it. */
#include <stdio.h>
#include <stdlib.h>

#include "hook/estimate.h"

static int failures;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                        \
            printf(__VA_ARGS__);                                               \
            printf("\n");                                                      \
            failures++;                                                        \
        }                                                                      \
    } while (0)

/* Measured on an H100 (driver 580, CUDA 13.0), in us: a 70 % container's
 * 247 us spin kernel, one measurement per ~53 launches, while a 30 %
 * container ran the same kernel on the same GPU. The long ones are the
 * other container's kernels (514: one of them) and time slices (2.7 ms)
 * inside ours. */
static const int beside_another[] = {
    317, 251, 250, 255, 249, 248, 246, 246, 247, 246, 246, 247, 246, 246, 246,
    246, 246, 246, 246, 246, 247, 248, 248, 249, 249, 249, 249, 517, 266, 254,
    275, 262, 254, 250, 248, 249, 243, 246, 246, 246, 513, 246, 246, 246, 246,
    247, 246, 246, 246, 246, 246, 246, 246, 246, 246, 246, 246, 247, 246, 246,
    2724, 514, 514, 246, 246, 246, 246, 247, 246, 247, 246, 248, 2725, 248,
    250, 250, 251, 252, 251, 518, 250, 249, 248, 246, 246, 246, 246, 247, 247,
    246, 247, 275, 257, 774, 259, 253, 249, 246, 244, 245, 247, 246, 247, 247,
    246, 246, 247, 246, 246, 246, 246, 247, 246, 246, 246, 2728, 514, 246,
    246, 246, 246, 243, 247, 248, 248, 246, 246, 246, 246, 246, 246, 246,
    2726, 2725, 2705, 250, 250, 251, 248, 249, 249, 248, 248, 248, 259, 252,
    249, 275, 257, 251, 248, 249, 249, 246, 248, 246, 247, 246, 246, 246, 246,
    246, 246, 246, 246, 246, 246, 246, 246, 246, 246, 246, 246, 246, 247,
    2725, 515, 246, 246, 245, 246, 246, 251, 247, 247, 246, 246, 247, 247,
    249, 518, 252, 251, 252, 250, 249, 253, 248, 247, 246, 246, 248, 514, 248,
    246, 247, 246, 246, 247, 246, 248, 249, 249, 250, 683, 682, 681, 249, 516,
    248, 247, 251, 245, 245, 245, 245, 246, 246, 246, 246, 246, 246, 248, 248,
    248, 249, 2750, 2737, 248, 246, 248, 247, 246, 247, 246, 246, 246, 247,
    247, 248, 249, 248,
};

/* The same workload on an H100 a week later (2026-12-07, the 70 %
 * container's 241 us kernel, measured every 10-30 ms beside the 30 % one):
 * here the other's kernels (506) and slices (2.7 ms) came in runs, up to
 * seven of eight measurements in a row. Taken then as the kernel's own
 * durations (the rule decided on the last 8 alone), they charged 336 us a
 * launch in this replay; the GPU sat at 30 % busy for 200-600 ms at a time
 * while the 70 % container waited out the debt. */
static const int beside_another_in_runs[] = {
    243, 242, 241, 242, 246, 241, 241, 242, 241, 242, 242, 242, 242, 241, 242,
    241, 241, 240, 2726, 241, 506, 506, 505, 505, 505, 240, 240, 240, 240,
    240, 243, 241, 241, 507, 2739, 2751, 2634, 2790, 670, 242, 242, 242, 242,
    242, 243, 2750, 243, 244, 244, 244, 243, 243, 243, 243, 243, 241, 241,
    242, 241, 241, 241, 241, 241, 242, 241, 240, 241, 241, 241, 241, 241, 242,
    242, 242, 242, 243, 243, 243, 243, 243, 244, 244, 244, 244, 674, 244, 243,
    243, 246, 246, 244, 241, 241, 241, 240, 241, 241, 241, 241, 241, 240, 240,
    240, 241, 241, 242, 2739, 241, 243, 244, 243, 242, 244, 244, 241, 2726,
    241, 2725, 506, 241, 506, 2738, 508, 243, 243, 243, 243, 242, 242, 243,
    243, 242, 242, 242, 242, 243, 242, 241, 242, 241, 241, 241, 2729, 241,
    240, 240, 240, 241, 241, 241, 240, 240, 240, 240, 240, 240, 240, 241, 241,
    240, 241, 240, 240, 240, 240, 241, 241, 241, 241, 242, 241, 242, 242, 243,
    242, 242, 241, 242, 242, 240, 241, 240, 239, 239, 240, 241, 240, 240, 240,
    239, 2726, 2726, 241, 240, 240, 240, 240, 241, 242, 242, 241, 243, 241,
    242, 242, 243, 243, 242, 242, 242, 242, 241, 241, 242, 242, 242, 242, 241,
    2739, 507, 240, 2726, 2726, 2726, 506, 2729, 506, 241, 2726, 241, 241,
    241, 241, 242, 242, 240, 241,
};

/* What a run of `n` measurements is charged per launch on average, each
 * covering `covered` launches charged the estimate before it. */
static double charged_per_launch(const int *us, int n, int covered)
{
    struct estimate_window w = {0};
    int64_t estimate = 0;
    double total = 0;
    for (int i = 0; i < n; i++) {
        bool own;
        int64_t ns = (int64_t)us[i] * 1000;
        int64_t next = estimate_learn(&w, ns, &own);
        /* The launches it covers at the new estimate, itself as measured
         * unless stretched (gputime.c's settle). */
        total += (double)next * covered + (double)(own ? ns : next);
        estimate = next;
    }
    (void)estimate;
    return total / ((double)n * (covered + 1));
}

static void beside_another_context(void)
{
    int n = (int)(sizeof beside_another / sizeof beside_another[0]);
    double each = charged_per_launch(beside_another, n, 53) / 1000;
    printf("beside another container: %.1f us charged per 247 us launch\n", each);
    /* The time slices and the other's single kernels inside ours (2.1x)
     * are left out (estimate.h). The median of three used before charged
     * 312 us, the mean within 3x of the shortest 265 us. */
    CHECK(each < 247 * 1.03, "%.1f us charged per launch of 247 us", each);
    CHECK(each > 247 * 0.95, "%.1f us charged per launch of 247 us", each);
}

static void in_runs(void)
{
    int n = (int)(sizeof beside_another_in_runs / sizeof beside_another_in_runs[0]);
    double each = charged_per_launch(beside_another_in_runs, n, 58) / 1000;
    printf("beside another container, stretches in runs: %.1f us charged per "
           "241 us launch\n", each);
    CHECK(each < 241 * 1.03, "%.1f us charged per launch of 241 us", each);
    CHECK(each > 241 * 0.95, "%.1f us charged per launch of 241 us", each);
}

/* A kernel whose own durations vary within 2x: charged their mean. */
static void varying_within_twice(void)
{
    int us[4000];
    unsigned x = 12345;
    double sum = 0;
    for (int i = 0; i < 4000; i++) {
        x = x * 1103515245u + 12345u;
        us[i] = (x >> 16) % 3 == 0 ? 190 : 100; /* a third are 1.9x */
        sum += us[i];
    }
    double mean = sum / 4000;
    double each = charged_per_launch(us, 4000, 0) / 1000;
    printf("varying 100/190 us: %.1f us charged, mean %.1f\n", each, mean);
    CHECK(each > mean * 0.97 && each < mean * 1.03, "%.1f charged, mean %.1f",
          each, mean);
}

static int64_t learn_us(struct estimate_window *w, int us, bool *own)
{
    return estimate_learn(w, (int64_t)us * 1000, own) / 1000;
}

/* More than 2x longer for good: charged as before while any of the last
 * eight is short (a run of stretched ones looks the same), the new
 * duration once they fill the window. */
static void becomes_longer(void)
{
    struct estimate_window w = {0};
    bool own;
    for (int i = 0; i < 24; i++)
        learn_us(&w, 100, &own);
    int64_t e[9];
    for (int i = 1; i <= 8; i++)
        e[i] = learn_us(&w, 400, &own);
    printf("100 us becomes 400 us: estimates %lld %lld %lld ... %lld\n",
           (long long)e[1], (long long)e[5], (long long)e[7], (long long)e[8]);
    CHECK(e[7] == 100, "after 7 of 400 us: %lld", (long long)e[7]);
    CHECK(e[8] == 400 && own, "after 8 of 400 us: %lld, own %d", (long long)e[8], own);
}

/* More than 2x longer for good, its old duration still one launch in
 * three: followed once the new one is most of the history (the 19th
 * measurement), never left at the old one. */
static void longer_with_old_between(void)
{
    struct estimate_window w = {0};
    bool own;
    for (int i = 0; i < 24; i++)
        learn_us(&w, 100, &own);
    int first = 0;
    int64_t e = 0;
    for (int i = 1; i <= 24; i++) {
        int us = i % 3 == 0 ? 100 : 400;
        e = learn_us(&w, us, &own);
        if (first == 0 && us == 400 && own)
            first = i;
    }
    printf("100 us becomes 400 us in 2 of 3: its own from measurement %d, "
           "estimate %lld us\n", first, (long long)e);
    CHECK(first > 0 && first <= 19, "400 us its own from measurement %d", first);
    CHECK(e > 250, "estimate %lld us", (long long)e);
}

/* Sometimes longer, in most of the window and of the history: its own
 * durations, charged their mean. */
static void mostly_longer(void)
{
    struct estimate_window w = {0};
    bool own;
    int64_t e = 0;
    for (int i = 0; i < 24; i++) /* 100 us, then 400 in 3 of 5 */
        e = learn_us(&w, i % 5 < 3 ? 400 : 100, &own);
    printf("400 us in 3 of 5 launches, else 100 us: estimate %lld us\n", (long long)e);
    CHECK(e > 250 && own, "estimate %lld us, own %d", (long long)e, own);
}

/* More than 2x shorter for good: followed once the new ones are half. */
static void becomes_shorter(void)
{
    struct estimate_window w = {0};
    bool own;
    for (int i = 0; i < 8; i++)
        learn_us(&w, 400, &own);
    int64_t e[5];
    for (int i = 1; i <= 4; i++)
        e[i] = learn_us(&w, 100, &own);
    printf("400 us becomes 100 us: estimates %lld %lld %lld %lld\n", (long long)e[1],
           (long long)e[2], (long long)e[3], (long long)e[4]);
    CHECK(e[3] > 100 && e[3] <= 400, "after 3 of 100 us: %lld", (long long)e[3]);
    CHECK(e[4] == 100 && own, "after 4 of 100 us: %lld, own %d", (long long)e[4], own);
}

/* A new key's first launch may load its module: 10 ms, then 100 us. */
static void first_launch_loads(void)
{
    struct estimate_window w = {0};
    bool own;
    int64_t e = learn_us(&w, 10000, &own);
    CHECK(e == 10000 && own, "first measurement: estimate %lld", (long long)e);
    e = learn_us(&w, 100, &own);
    printf("first launch 10 ms, then 100 us: estimate %lld us\n", (long long)e);
    CHECK(e == 100, "estimate %lld us after 10 ms and 100 us", (long long)e);
}

/* A stretched measurement is charged the estimate, not itself. */
static void stretched_is_not_own(void)
{
    struct estimate_window w = {0};
    bool own;
    for (int i = 0; i < 8; i++)
        learn_us(&w, 250, &own);
    int64_t e = learn_us(&w, 2700, &own);
    printf("a 2.7 ms measurement among 250 us ones: estimate %lld us, own %d\n",
           (long long)e, own);
    CHECK(e == 250 && !own, "estimate %lld us, own %d", (long long)e, own);
}

/* Nonsense from the driver: no overflow, no negative estimate. */
static void bad_measurements(void)
{
    struct estimate_window w = {0};
    bool own;
    int64_t e = estimate_learn(&w, -5, &own);
    CHECK(e == 0, "negative measurement: estimate %lld", (long long)e);
    for (int i = 0; i < 8; i++)
        e = estimate_learn(&w, INT64_MAX, &own);
    CHECK(e > 0, "huge measurements: estimate %lld", (long long)e);
}

int main(void)
{
    beside_another_context();
    in_runs();
    varying_within_twice();
    becomes_longer();
    mostly_longer();
    longer_with_old_between();
    becomes_shorter();
    first_launch_loads();
    stretched_is_not_own();
    bad_measurements();
    if (failures)
        printf("%d failure(s)\n", failures);
    return failures ? 1 : 0;
}
