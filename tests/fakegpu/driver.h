/* What the simulated driver's files share (cuda_fake.c: contexts and plain
 * memory; streams.c: streams, events and pools; vmm.c: virtual memory). */
#ifndef FAKEGPU_DRIVER_H
#define FAKEGPU_DRIVER_H

#include <cuda.h>
#include <stdint.h>

#include "allocs.h"

#define KIND(k) (1 << (k))

/* cuda_fake.c */
CUresult fg_need_device(int ordinal);
/* The current context's ordinal, -1 with none. */
int fg_current_ordinal(void);
/* Take bytes of kind on a physical device and record a fresh address. */
CUresult fg_allocate(uint64_t *dptr, uint64_t bytes, int physical, int kind);
/* Free key if its kind is one of kinds (a KIND() mask). */
CUresult fg_free(uint64_t key, int kinds);

/* streams.c: a pool allocation freed (back to its pool's cache); every
 * pool shrinks to its release threshold (a synchronization); the pools
 * of a physical device lose everything (a context reset). */
void fg_pool_free(const struct fg_alloc *a);
void fg_pools_sync(void);
void fg_pools_reset(int physical);

#endif
