/* The compute budget's token bucket, alone, at chosen times: a new bucket
 * starts empty, refills at cap x wall time up to the burst, debt makes
 * launches wait exactly until it is repaid and the resume level has come
 * in, and not before (other processes included), each interval is credited once,
 * and a damaged or stale bucket never holds launches without bound. */
#include <stdint.h>

#include "testutil.h"
#include "vgpu/sm_budget.h"

#define MS 1000000ull
#define R (2000000ll) /* a resume level (ns); the figures below are for 2 ms */

int main(void)
{
    struct vgpu_sm_budget b = {0};
    uint64_t t = 1000 * MS;
    CHECK(vgpu_sm_budget_wait(&b, 0, R, t) == 0, "no cap: never waits");
    CHECK(vgpu_sm_budget_wait(&b, 100, R, t) == 0, "100 %%: never waits");
    CHECK(vgpu_sm_budget_wait(&b, 30, R, t) > 0, "a new bucket starts empty");
    CHECK(b.tokens == 0 && b.refilled_at == t, "started at t");
    CHECK(!vgpu_sm_budget_ready(&b, t + 1 * MS), "paused: not ready");
    CHECK(vgpu_sm_budget_wait(&b, 30, R, t + 1 * MS) > 0,
          "0.3 ms in: below the resume level, still held");
    CHECK(b.tokens > 0 && !vgpu_sm_budget_ready(&b, t + 1 * MS),
          "tokens but paused: another process's first look holds it too");
    CHECK(vgpu_sm_budget_wait(&b, 30, R, t + 10 * MS) == 0, "10 ms later: go");
    CHECK(vgpu_sm_budget_ready(&b, t + 10 * MS), "resumed: ready");
    CHECK(b.tokens == (int64_t)(3 * MS), "10 ms at 30 %% = 3 ms (%lld)",
          (long long)b.tokens);
    CHECK(vgpu_sm_budget_wait(&b, 30, R, t + 10 * MS) == 0 && b.tokens == (int64_t)(3 * MS),
          "the same interval is not credited twice");
    vgpu_sm_budget_charge(&b, 9 * MS); /* a 9 ms kernel: 6 ms of debt */
    uint64_t wait = vgpu_sm_budget_wait(&b, 30, R, t + 10 * MS);
    uint64_t want = (6 * MS + R) * 100 / 30;
    CHECK(wait >= want && wait <= want + 10, "6 ms of debt and the resume "
          "level at 30 %% = %llu ns of waiting (%llu)",
          (unsigned long long)want, (unsigned long long)wait);
    CHECK(vgpu_sm_budget_wait(&b, 30, R, t + 10 * MS + wait / 2) > 0,
          "repaid but below the resume level: held");
    CHECK(vgpu_sm_budget_wait(&b, 30, R, t + 10 * MS + wait + 10) == 0,
          "resumed after it (10 ns for the refills' rounding)");
    CHECK(b.tokens >= R, "resumed holding the level");
    CHECK(vgpu_sm_budget_charged(&b) == 9 * MS, "charged counted");
    /* Idle for a minute: at most the burst is kept. */
    vgpu_sm_budget_wait(&b, 30, R, t + 60000 * MS);
    CHECK(b.tokens == VGPU_SM_BURST_NS / 100 * 30, "burst kept: %lld",
          (long long)b.tokens);
    /* Overcharged estimates come back. */
    vgpu_sm_budget_charge(&b, -5 * MS);
    CHECK(b.tokens == VGPU_SM_BURST_NS / 100 * 30 + (int64_t)(5 * MS), "refund");
    /* A damaged or stale file: refill time far ahead, enormous debt. */
    struct vgpu_sm_budget bad = {.tokens = INT64_MIN / 2, .refilled_at = UINT64_MAX - 5};
    CHECK(vgpu_sm_budget_wait(&bad, 50, R, t) == 0 || bad.tokens == 0,
          "a refill time from the future starts the bucket again");
    CHECK(bad.refilled_at == t && bad.tokens == 0, "reset to now, empty");
    bad.tokens = INT64_MIN / 2;
    wait = vgpu_sm_budget_wait(&bad, 50, R, t + MS);
    CHECK(wait <= (uint64_t)(VGPU_SM_MAX_DEBT_NS + R) * 2 + 10,
          "debt bounded: wait %llu ns", (unsigned long long)wait);
    /* A 1 % cap's ceiling (2.5 ms) is above the level; a tiny one resumes
     * at its ceiling rather than never. */
    struct vgpu_sm_budget low = {0};
    vgpu_sm_budget_wait(&low, 1, R, t);
    wait = vgpu_sm_budget_wait(&low, 1, R, t);
    CHECK(wait > 0 && wait <= (uint64_t)VGPU_SM_BURST_NS + 100,
          "1 %%: the hold ends within one burst (%llu)", (unsigned long long)wait);
    CHECK(vgpu_sm_budget_wait(&low, 1, R, t + wait) == 0, "and then goes");
    /* Another resume level (VGPU_SM_RESUME_MS): the same debt is held
     * until that much more has come in; 0 resumes as soon as it is paid;
     * one above the cap's ceiling resumes at the ceiling. */
    uint64_t levels[] = {0, 20 * MS, 250 * MS};
    for (int i = 0; i < 3; i++) {
        struct vgpu_sm_budget c = {0};
        vgpu_sm_budget_wait(&c, 30, levels[i], t); /* starts empty */
        vgpu_sm_budget_wait(&c, 30, levels[i], t + 100 * MS); /* 30 ms in */
        uint64_t level = levels[i] < 75 * MS ? levels[i] : 75 * MS;
        vgpu_sm_budget_charge(&c, 36 * MS); /* 6 ms of debt */
        wait = vgpu_sm_budget_wait(&c, 30, levels[i], t + 100 * MS);
        want = (6 * MS + level) * 100 / 30;
        CHECK(wait >= want && wait <= want + 10, "resume level %llu ms: "
              "waits %llu ns (%llu)", (unsigned long long)(levels[i] / MS),
              (unsigned long long)want, (unsigned long long)wait);
        CHECK(vgpu_sm_budget_wait(&c, 30, levels[i], t + 100 * MS + wait + 10) == 0,
              "then goes (level %llu ms)", (unsigned long long)(levels[i] / MS));
    }
    /* A damaged file whose refill time is just ahead (the refill returns
     * before clamping) and whose debt is the most negative: held, for at
     * most the deepest debt, at any level; no overflow (UBSan would say). */
    for (int i = 0; i < 3; i++) {
        struct vgpu_sm_budget d = {.tokens = INT64_MIN, .refilled_at = t + 1000,
                                   .paused = 1};
        wait = vgpu_sm_budget_wait(&d, 30, levels[i], t);
        CHECK(wait > 0 && wait <= (uint64_t)(VGPU_SM_MAX_DEBT_NS + 75 * MS) * 100 / 30 + 10,
              "damaged debt at level %llu ms: held %llu ns",
              (unsigned long long)(levels[i] / MS), (unsigned long long)wait);
    }
    /* Tokens at the top of int64 (damaged): the refill clamps to the
     * ceiling without overflowing. */
    struct vgpu_sm_budget top = {.tokens = INT64_MAX, .refilled_at = t};
    CHECK(vgpu_sm_budget_wait(&top, 30, R, t + 10 * MS) == 0 &&
          top.tokens == VGPU_SM_BURST_NS / 100 * 30, "a full-scale level is "
          "clamped to the ceiling: %lld", (long long)top.tokens);
    /* A caller whose clock reading is stale (its thread was off the CPU
     * for more than a burst between reading the clock and looking, as
     * under CPU throttling) while another process refilled meanwhile: the
     * newer refill time is not garbage, and the debt stays. */
    struct vgpu_sm_budget late = {0};
    vgpu_sm_budget_wait(&late, 10, R, t);               /* starts empty */
    vgpu_sm_budget_wait(&late, 10, R, t + 1000 * MS);   /* 100 ms in */
    vgpu_sm_budget_charge(&late, 10 * 1000 * MS);       /* 10 s of debt */
    int64_t debt = late.tokens;
    wait = vgpu_sm_budget_wait(&late, 10, R, t + 10 * MS); /* read 990 ms ago */
    CHECK(late.tokens == debt && debt < -9900 * (int64_t)MS &&
              late.refilled_at == t + 1000 * MS,
          "a stale reading erases nothing: tokens %lld, refilled at +%llu ms",
          (long long)late.tokens, (unsigned long long)((late.refilled_at - t) / MS));
    CHECK(wait >= 99000 * MS, "still held for the debt (10 s at 10 %%): %llu ns",
          (unsigned long long)wait);
    /* A damaged bucket, tokens enormous and refilled "in the future": not
     * ready (its refill time is no tick of this clock), and the wait
     * starts it again, empty. */
    struct vgpu_sm_budget far = {.tokens = 1000000000000000000ll,
                                 .refilled_at = t + (1ull << 62)};
    CHECK(!vgpu_sm_budget_ready(&far, t), "a refill time far ahead is not fresh");
    CHECK(vgpu_sm_budget_wait(&far, 30, R, t) > 0 && far.tokens == 0,
          "started again, empty: %lld", (long long)far.tokens);
    /* Enormous tokens refilled just ahead (the refill returns at once):
     * clamped to the ceiling, so charges drain them. */
    struct vgpu_sm_budget near = {.tokens = 1000000000000000000ll,
                                  .refilled_at = t + 100 * MS};
    vgpu_sm_budget_wait(&near, 30, R, t);
    CHECK(near.tokens <= VGPU_SM_BURST_NS / 100 * 30, "clamped: %lld",
          (long long)near.tokens);
    printf("region_sm_budget: ok\n");
    return 0;
}
