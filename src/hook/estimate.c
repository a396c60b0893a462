/* See estimate.h for the rule and what it costs. */
#include "hook/estimate.h"

/* Longer than any kernel (11.6 days): sums of a window cannot overflow. */
#define LONGEST_NS 1000000000000000ll

/* The i-th most recent measurement (0: the newest). */
static int64_t recent(const struct estimate_window *w, uint32_t i)
{
    return w->sample[(w->next + ESTIMATE_HISTORY - 1 - i) % ESTIMATE_HISTORY];
}

int64_t estimate_learn(struct estimate_window *w, int64_t ns, bool *own)
{
    ns = ns < 0 ? 0 : ns > LONGEST_NS ? LONGEST_NS : ns;
    w->sample[w->next] = ns;
    w->next = (w->next + 1) % ESTIMATE_HISTORY;
    if (w->count < ESTIMATE_HISTORY)
        w->count++;

    uint32_t n = w->count < ESTIMATE_WINDOW ? w->count : ESTIMATE_WINDOW;
    int64_t shortest = ns;
    for (uint32_t i = 0; i < n; i++)
        if (recent(w, i) < shortest)
            shortest = recent(w, i);
    int64_t bound = shortest * ESTIMATE_STRETCH;

    int64_t kept_sum = 0, all_sum = 0;
    uint32_t kept = 0, long_in_history = 0;
    for (uint32_t i = 0; i < w->count; i++) {
        int64_t x = recent(w, i);
        long_in_history += x > bound;
        if (i >= n)
            continue;
        all_sum += x;
        if (x <= bound) {
            kept_sum += x;
            kept++;
        }
    }
    /* Long ones are the kernel's own when they are more than half of the
     * window and of the history; a tie goes to the shorter, so that a new
     * key's first launch, which may load its module, is not what the next
     * ones are charged. (kept >= 1: the shortest is within the bound.) */
    if (2 * (n - kept) > n && 2 * long_in_history > w->count) {
        *own = true;
        return all_sum / n;
    }
    *own = ns <= bound;
    return kept_sum / kept;
}
