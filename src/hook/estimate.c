/* See estimate.h for the rule and what it costs. */
#include "hook/estimate.h"

/* Longer than any kernel (11.6 days): sums of a window cannot overflow. */
#define LONGEST_NS 1000000000000000ll

int64_t estimate_learn(struct estimate_window *w, int64_t ns, bool *own)
{
    ns = ns < 0 ? 0 : ns > LONGEST_NS ? LONGEST_NS : ns;
    w->sample[w->next] = ns;
    w->next = (w->next + 1) % ESTIMATE_WINDOW;
    if (w->count < ESTIMATE_WINDOW)
        w->count++;

    int64_t shortest = ns;
    for (uint32_t i = 0; i < w->count; i++)
        if (w->sample[i] < shortest)
            shortest = w->sample[i];
    int64_t bound = shortest * ESTIMATE_STRETCH;

    int64_t kept_sum = 0, all_sum = 0;
    uint32_t kept = 0;
    for (uint32_t i = 0; i < w->count; i++) {
        all_sum += w->sample[i];
        if (w->sample[i] <= bound) {
            kept_sum += w->sample[i];
            kept++;
        }
    }
    /* The stretched ones at most half: a tie goes to the shorter, so that a
     * new key's first launch, which may load its module, is not what the
     * next ones are charged. */
    if (2 * kept >= w->count) {
        *own = ns <= bound;
        return kept_sum / kept;
    }
    *own = true;
    return all_sum / w->count;
}
