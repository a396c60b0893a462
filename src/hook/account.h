/* The hooks' view of the region: reserve before the driver call, settle
 * after it, release at free. Devices are CUDA ordinals of this process. */
#ifndef VGPU_HOOK_ACCOUNT_H
#define VGPU_HOOK_ACCOUNT_H

#include <stdbool.h>
#include <stdint.h>

#include <cuda.h>

#include "hook/ledger.h"
#include "vgpu/region.h"

/* The region, attached on first use; NULL when not limiting. */
struct vgpu_region *account_region(void);

/* For processes that only look (NVML): this process's region if it has
 * attached, else the file read without taking a slot, else NULL. */
struct vgpu_region *account_region_view(void);

/* dev's limit in r (0: none). With no region: the environment's limit for a
 * process that only asks (NVML) and never attached, else none. */
uint64_t account_limit(struct vgpu_region *r, int dev);

/* CUDA device dev's UUID as NVML writes it ("GPU-xxxxxxxx-..."). */
bool account_uuid_text(int dev, char text[48]);

/* The current context's device, or -1 (no context: not accounted). */
int account_current_device(void);

/* Reserve bytes on dev. False: over the limit, the caller returns
 * CUDA_ERROR_OUT_OF_MEMORY without calling the driver. dev < 0: nothing
 * is accounted and true is returned. */
bool account_reserve(int dev, uint64_t bytes);

/* After the driver chose the size (pitch): move a reservation of `reserved`
 * bytes to `actual`. False: the larger size is over the limit. */
bool account_adjust(int dev, uint64_t reserved, uint64_t actual);

/* After the driver call (always, once per successful reserve): ok records key in the ledger; !ok rolls back. */
void account_settle(int dev, uint64_t bytes, bool ok, enum ledger_space space,
                    uint64_t key);

/* The driver freed everything on dev (a context reset): forget and return
 * every charge this process recorded there. */
void account_forget_device(int dev);

/* Free key with the driver (free_fn(key, arg)), then return its bytes.
 * The ledger entry is taken first, so two racing frees of one key never
 * uncharge twice; if the driver refuses the free, the entry goes back.
 * Keys never charged pass through untouched. */
typedef CUresult (*driver_free_fn)(uint64_t key, void *arg);
CUresult account_free(enum ledger_space space, uint64_t key,
                      driver_free_fn free_fn, void *arg);

#endif
