/* One charge transaction around every driver call that takes device memory,
 * as Linux's page_counter try_charge/cancel:
 *
 *     struct charge c;
 *     if (!charge_begin(&c, dev, bytes, VGPU_CHARGE_DATA))
 *         return CUDA_ERROR_OUT_OF_MEMORY;    (the driver is never asked)
 *     CUresult rc = REAL(cuMemAlloc_v2)(&p, bytes);
 *     charge_end(&c, rc == CUDA_SUCCESS, SPACE_POINTER, p);
 *
 * Between begin and end the bytes are reserved in the region (so racing
 * callers cannot all pass the limit) and this thread is "in the driver": a
 * driver that calls its own exported functions (cuMemAlloc through
 * cuMemAlloc_v2) meets our hooks again, and those nested calls are not
 * charged a second time. Every begin that returned true is followed by
 * exactly one end on the same thread. */
#ifndef VGPU_HOOK_CHARGE_H
#define VGPU_HOOK_CHARGE_H

#include <stdbool.h>
#include <stdint.h>

#include <cuda.h>

#include "hook/ledger.h"
#include "vgpu/region.h"

struct charge {
    int dev;                    /* CUDA ordinal; -1: not accounted */
    uint64_t bytes;             /* reserved now */
    enum vgpu_charge_kind kind; /* the slot's counter it goes to */
};

/* Reserve bytes of kind on dev and enter the driver. False: over the limit;
 * the caller refuses with CUDA_ERROR_OUT_OF_MEMORY without calling the
 * driver (and does not call charge_end). dev < 0, no region, or a call
 * nested in one of ours: nothing is reserved and true is returned. */
bool charge_begin(struct charge *c, int dev, uint64_t bytes,
                  enum vgpu_charge_kind kind);

/* The driver chose the size (a pitch): move the reservation to bytes.
 * False: the larger size is over the limit (the reservation is unchanged). */
bool charge_resize(struct charge *c, uint64_t bytes);

/* Leave the driver. ok: the reservation is kept and recorded under
 * (space, key) for the free (SPACE_NONE: the caller keeps it); !ok: it is
 * rolled back. */
void charge_end(struct charge *c, bool ok, enum ledger_space space,
                uint64_t key);

/* Free key with the driver (free_fn(key, arg)), then return its bytes.
 * The ledger entry is taken first, so two racing frees of one key never
 * uncharge twice; if the driver refuses the free, the entry goes back.
 * Keys never charged pass through untouched. */
typedef CUresult (*driver_free_fn)(uint64_t key, void *arg);
CUresult charge_free(enum ledger_space space, uint64_t key,
                     driver_free_fn free_fn, void *arg);

/* Releases: driver calls that give charged memory back. The memory leaves
 * NVML's figure when the driver frees it and is uncharged after the call
 * returns, so a context's measurement (NVML's growth across a creation,
 * published for the whole container) is void if a release was in flight
 * when it was marked or began before it ended: the guess stays (an
 * over-count). The reconciliation does not wait for them (reconcile.c says
 * why). release_begin before the driver call, release_end after the
 * uncharge, on the same thread; a thread cancelled or longjmp'd out in
 * between leaves every later measurement of the process void.
 * Counted: frees of charged memory (charge_free), VMM releases and unmaps,
 * primary context releases and resets, pool trims and destruction, graph
 * memory trims and executable graphs destroyed. Not counted: what a
 * synchronization releases of a pool's cache above its release threshold
 * (bracketing every synchronization would void readings for as long as a
 * thread waits on the GPU); that cache is uncharged at the next settle. */
void release_begin(void);
void release_end(void);
/* Mark now; false if a release is in flight (the reading would be void). */
bool releases_mark(uint64_t *mark);
/* No release began since the mark. */
bool releases_none_since(uint64_t mark);
/* In a fork child: the parent's releases in flight are not the child's. */
void releases_reset_after_fork(void);

/* The driver freed everything of a context on dev (a reset): forget and
 * return every data charge this process recorded there. */
void charge_drop_device(int dev);

/* The body of a hook that creates one object taking `bytes` of `kind` on
 * the current device with `call`: reserve, call the driver, settle, and
 * record the object under (space, key) for its free; `key` is read only
 * when the driver succeeded. Returns the driver's answer from the hook. */
#define CHARGED_CALL(kind, bytes, call, space, key)                            \
    do {                                                                       \
        struct charge c_;                                                      \
        if (!charge_begin(&c_, account_current_device(), (bytes),              \
                          (kind)))                                             \
            return CUDA_ERROR_OUT_OF_MEMORY;                                   \
        CUresult rc_ = (call);                                                 \
        charge_end(&c_, rc_ == CUDA_SUCCESS, (space),                          \
                   rc_ == CUDA_SUCCESS ? (uint64_t)(key) : 0);                 \
        return rc_;                                                            \
    } while (0)

/* True while this thread is inside a driver call made by one of our hooks. */
bool charge_nested(void);

#endif
