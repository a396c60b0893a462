/* Stream-ordered pools (cuMemAllocAsync and friends): what a pool holds is
 * charged, not only what is allocated from it. */
#ifndef VGPU_HOOK_POOLS_H
#define VGPU_HOOK_POOLS_H

#include <stdint.h>

#include "hook/ledger.h"

/* An allocation of a pool was freed by the driver (e.pool != 0): it went
 * back to its pool's cache, which stays charged until the driver releases
 * it (a synchronization, a trim, the pool's destruction). */
void pools_freed(const struct ledger_entry *e);

/* Give back what this process's pools on dev cache (cuMemPoolTrimTo) and
 * uncharge it; returns the bytes uncharged. For a charge that would fail. */
uint64_t pools_give_back(int dev);

/* The driver freed everything on dev (a context reset): the pools there
 * hold nothing any more. */
void pools_drop_device(int dev);

#endif
