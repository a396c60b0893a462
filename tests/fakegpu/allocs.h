/* The simulated driver's per-process table of live allocations. */
#ifndef FAKEGPU_ALLOCS_H
#define FAKEGPU_ALLOCS_H

#include <stdbool.h>
#include <stdint.h>

enum fg_kind {
    FG_PLAIN,      /* cuMemAlloc, pitch, async: device memory */
    FG_MANAGED,    /* cuMemAllocManaged: not taken from the device pool */
    FG_ARRAY,      /* arrays and mipmapped arrays */
    FG_RESERVE,    /* cuMemAddressReserve: address space only */
    FG_POOL,       /* from a stream-ordered pool: its bytes are the pool's */
    FG_GRAPH,      /* a graph's allocation: its bytes are the graph pool's */
};

struct fg_alloc {
    uint64_t key;  /* device address, or the array handle */
    uint64_t size;
    int dev;       /* physical device */
    int kind;
    void *pool;    /* FG_POOL: the pool it came from */
    const void *owner; /* the context current at allocation */
};

void allocs_put(struct fg_alloc a);
/* Remove key; false if it was not there. */
bool allocs_take(uint64_t key, struct fg_alloc *out);
/* Remove every allocation on physical device dev that takes device memory;
 * returns their bytes (a pool's are its pool's, not counted here). */
uint64_t allocs_take_device(int dev);
/* Same, only the allocations made in context owner (NULL: any). */
uint64_t allocs_take_owned(int dev, const void *owner);

/* The allocation containing addr. */
bool allocs_find_range(uint64_t addr, struct fg_alloc *out);

#endif
