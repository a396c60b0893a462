/* Reconciliation with the driver's own figure: what NVML attributes to this
 * process on a device, beyond what the hooks charged (code loaded lazily,
 * images that could not be read, the driver's own growth), is charged to
 * this process's slot as module bytes, and given back when it shrinks.
 * Off the hot path: at most every VGPU_RECONCILE_MS (100 ms), only when the
 * device's usage is near its limit (three quarters) or a second has passed,
 * never before the first interval after this process's first charge (so
 * never on the application's first CUDA call); at rest, by a thread of the
 * process (started at its first charge) every five intervals. In a pid namespace that
 * hides the host's pids, this process's pid in NVML is learned once with a
 * probe allocation: the one pid that grew by it. */
#ifndef VGPU_HOOK_RECONCILE_H
#define VGPU_HOOK_RECONCILE_H

#include <stdbool.h>
#include <stdint.h>

/* Called before bytes are charged on dev. False: what NVML says this
 * process holds beyond its charges does not fit under the limit with
 * them: the charge must be refused. */
bool reconcile_before_charge(int dev, uint64_t bytes);

/* Wake this process's reconciliation thread now (a context was charged
 * at the guess: it settles it as soon as the size is measured). */
void reconcile_wake(void);

#endif
