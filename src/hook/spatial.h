/* The spatial compute mode (VGPU_SM_MODE=spatial): a limited device's
 * primary context, as the runtime retains it, is handed out as a green
 * context on that share of the device's SMs, and launches proved to run
 * there are charged in SM-time (spatial.c). */
#ifndef VGPU_HOOK_SPATIAL_H
#define VGPU_HOOK_SPATIAL_H

#include <stdbool.h>
#include <stdint.h>

#include <cuda.h>

/* After the driver retained dev's primary context into *pctx: in spatial
 * mode with a compute limit on dev, replace it by this process's green
 * context (made at the first retain). Never fails: where no green context
 * can be had, *pctx is left alone and dev's launches are charged in full.
 * Every retain counts, whatever it was handed. */
void spatial_retained(CUcontext *pctx, CUdevice dev);

/* After the driver released dev's primary context: the release that ends
 * this process's retains of it destroys the green context. */
void spatial_released(CUdevice dev);

/* After the driver reset dev's primary context (it worked): the green
 * context, made on the state the reset destroyed, goes; the retains stay
 * counted (a reset releases none), and the next retain makes a new one. */
void spatial_reset(CUdevice dev);

/* The program created a context of its own on dev (cuCtxCreate, its own
 * green context): launches there are not confined, so from now on every
 * launch on dev is charged in full. */
void spatial_foreign(CUdevice dev);

/* ns of dev's GPU time as SM-time: ns x the green context's share of the
 * SMs while this process's launches on dev are confined to it, else ns
 * (limiter_charge: every charge of the GPU-time budget; one relaxed load). */
int64_t spatial_sm_time(int dev, int64_t ns);

/* Whether dev's launches are charged as confined (one relaxed load). */
bool spatial_confined(int dev);

/* A limited launch into stream on a confined device: unless its context
 * (a created stream's own, else the current one) is the green context,
 * nothing proves the launch runs on its SMs, and from now on every launch
 * on dev is charged in full (one line says so). */
void spatial_check_launch(int dev, CUstream stream);

/* cuCtxSetCurrent and cuCtxPushCurrent (hooked here) make the green
 * context current where the program names the primary context it stands
 * for. */

/* Whether this thread is in a driver call of spatial.c: a driver that
 * retains or releases the primary context for the green context (its own
 * retain) through its exported functions meets our hooks; context.c passes
 * those calls through, as they are not the program's. */
bool spatial_nested(void);

#endif
