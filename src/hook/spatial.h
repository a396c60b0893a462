/* The spatial compute mode (VGPU_SM_MODE=spatial): a limited device's
 * primary context, as the runtime retains it, is handed out as a green
 * context on that share of the device's SMs (spatial.c). */
#ifndef VGPU_HOOK_SPATIAL_H
#define VGPU_HOOK_SPATIAL_H

#include <stdbool.h>

#include <cuda.h>

/* After the driver retained dev's primary context into *pctx: in spatial
 * mode with a compute limit on dev, replace it by this process's green
 * context (made at the first retain). Never fails: where no green context
 * can be had, *pctx is left alone and the GPU-time budget holds. */
void spatial_retained(CUcontext *pctx, CUdevice dev);

/* After the driver released dev's primary context: the last release of
 * those that were handed the green context destroys it. */
void spatial_released(CUdevice dev);

/* Before the driver resets dev's primary context: destroy the green one. */
void spatial_reset(CUdevice dev);

/* The program created a context of its own on dev (cuCtxCreate, its own
 * green context): launches there are not confined, so from now on every
 * launch on dev draws on the GPU-time budget. */
void spatial_foreign(CUdevice dev);

/* Whether dev's launches are confined to this process's green context,
 * so that the GPU-time budget does not apply (read by every launch gate
 * refresh: one relaxed load). */
bool spatial_confines(int dev);

#endif
