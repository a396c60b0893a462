/* A context's charge: what creating a context (primary, created or green)
 * reserves before the driver is asked. Its size comes from the region,
 * where the first process that could measure it recorded it; until then it
 * is VGPU_CONTEXT_BYTES or 1 GiB (at most the limit; a creation for which
 * that guess does not fit waits, at most 10 s, for another process's
 * measurement and reserves the real size).
 *
 * One process of the region measures (it claims the measurement, see
 * vgpu_region_claim_context): its creation is measured through NVML (this
 * process's usage after less before, so neither other processes, nor this
 * process's other contexts, nor memory that outlived a reset enter the
 * figure), published, and its reservation corrected. The others create
 * meanwhile with the guess and never read NVML: at the end of their
 * creation they take the published size if it is there; if not, their
 * primary contexts take it later (ctx_guesses_settle: before this
 * process's next charge, and from the reconciliation's thread), while
 * created and green contexts keep the guess until destroyed. A measurer
 * that fails gives the claim up; one killed or stopped loses it (dead
 * slot, or a few seconds), and the next creator measures. */
#ifndef VGPU_HOOK_CTXCHARGE_H
#define VGPU_HOOK_CTXCHARGE_H

#include <stdbool.h>
#include <stdint.h>

#include <cuda.h>

#include "hook/charge.h"
#include "hook/nvml_self.h"

/* A creation that begins before the size is known waits for it, and holds
 * its guess, at most this long (the region's guess mark): a context takes
 * 0.1-0.5 s to create on an H100, and the driver serializes creations (32
 * processes starting together took 7 s in all). */
#define CTX_MEASUREMENT_WAIT_NS (10000ull * 1000 * 1000)

struct ctx_charge {
    struct charge c;
    bool measuring;          /* the size is not known: measure this one */
    bool guess;              /* not known, another measures: charged the guess */
    uint64_t claim;          /* our claim on the measurement (0: none) */
    struct vgpu_process_mark mine; /* this process's charges at begin */
    bool quiet;              /* no release in flight at begin (charge.h) */
    uint64_t releases;       /* the releases' mark at begin */
    struct nvml_list before; /* NVML's list before the creation */
};

/* Reserve a context's size on dev. False: it does not fit; refuse with
 * CUDA_ERROR_OUT_OF_MEMORY without creating it. */
bool ctx_charge_begin(struct ctx_charge *cc, int dev);

/* After the driver's answer rc: measure if needed, correct the reservation
 * (undo(arg) destroys the context and CUDA_ERROR_OUT_OF_MEMORY is returned
 * when the measured size does not fit), settle, and record the charge under
 * (space, key) for the destroy (space 0: the caller keeps it). Returns the
 * creation's result; cc->c.bytes is what stays charged. */
CUresult ctx_charge_end(struct ctx_charge *cc, CUresult rc,
                        enum ledger_space space, uint64_t key,
                        void (*undo)(uint64_t arg), uint64_t arg);

/* A context of dev charged *charged bytes at the guess (cc->guess still
 * true after ctx_charge_end): once the size is published, move the charge
 * to it (a larger size only if it fits: else the reconciliation sees the
 * rest) and return true; false while it is not known. */
bool ctx_charge_settle(int dev, uint64_t *charged);

/* This process's primary contexts still charged at the guess take the
 * published size (context.c). Cheap when there is none (one load); never
 * waits (a thread inside a retain skips). Returns true while some guess is
 * still pending and recent (the caller may look again soon). */
bool ctx_guesses_settle(void);

/* How many of this process's primary contexts are charged at the guess
 * (a hint: read before a charge, for ctx_guesses_wait). */
int ctx_guesses_pending(void);

/* A charge of this process was refused while `had` of its primary
 * contexts were charged at the guess: settle them, waiting for the
 * measurement while another process's claim on it is alive (polls every
 * millisecond, at most 10 s), and return true if one came down since
 * (try the charge again). False at once where there was none, or on the
 * thread of a retain (it waits its own way). */
bool ctx_guesses_wait(int had);

#endif
