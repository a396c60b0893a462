/* The hooks' view of the region: attach, devices, limits. Devices are CUDA
 * ordinals of this process. Charging is charge.h's. */
#ifndef VGPU_HOOK_ACCOUNT_H
#define VGPU_HOOK_ACCOUNT_H

#include <stdbool.h>
#include <stdint.h>

#include <cuda.h>

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

/* The current context if it is one of cuCtxCreate's (what is made in it
 * goes with it, not with a primary context's reset), else 0 (context.c).
 * One load while no such context is alive. */
uint64_t account_created_context(void);

#endif
