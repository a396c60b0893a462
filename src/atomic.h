/* Atomics on plain integers of the mapped region.
 *
 * The region's fields are plain uint64_t/uint32_t so that their offsets match
 * HAMi's C and Go readers exactly; every access that can race goes through
 * these wrappers (GCC/Clang __atomic builtins, understood by TSan).
 * Each caller that passes an order other than relaxed says why at the call.
 */
#ifndef VGPU_ATOMIC_H
#define VGPU_ATOMIC_H

#include <stdbool.h>
#include <stdint.h>

#define RELAXED __ATOMIC_RELAXED
#define ACQUIRE __ATOMIC_ACQUIRE
#define RELEASE __ATOMIC_RELEASE
#define ACQ_REL __ATOMIC_ACQ_REL

#define atomic_load_n(p, order) __atomic_load_n((p), (order))
#define atomic_store_n(p, v, order) __atomic_store_n((p), (v), (order))
#define atomic_add(p, v, order) __atomic_fetch_add((p), (v), (order))
#define atomic_sub(p, v, order) __atomic_fetch_sub((p), (v), (order))
#define atomic_xchg(p, v, order) __atomic_exchange_n((p), (v), (order))
#define atomic_or(p, v, order) __atomic_fetch_or((p), (v), (order))
#define atomic_and(p, v, order) __atomic_fetch_and((p), (v), (order))
/* Weak CAS: *expected is refreshed on failure, as C11's compare_exchange. */
#define atomic_cas(p, expected, desired, success, failure)                     \
    __atomic_compare_exchange_n((p), (expected), (desired), true, (success),   \
                                (failure))

/* Raise *p to at least v (peak tracking); relaxed: a statistic, orders nothing. */
static inline void atomic_max_u64(uint64_t *p, uint64_t v)
{
    uint64_t cur = atomic_load_n(p, RELAXED);
    while (cur < v && !atomic_cas(p, &cur, v, RELAXED, RELAXED))
        ;
}

#endif
