/* A context's charge: what creating a context (primary, created or green)
 * reserves before the driver is asked. Its size comes from the region,
 * where the first process that could measure it recorded it; until then it
 * is VGPU_CONTEXT_BYTES or 1 GiB (at most the limit; a creation for which
 * that guess does not fit waits, at most 10 s, for another process's
 * measurement and reserves the real size), and the creation
 * is measured through NVML (this process's usage after less before, so
 * neither other processes, nor this process's other contexts, nor memory
 * that outlived a reset enter the figure) and the reservation corrected. */
#ifndef VGPU_HOOK_CTXCHARGE_H
#define VGPU_HOOK_CTXCHARGE_H

#include <stdbool.h>
#include <stdint.h>

#include <cuda.h>

#include "hook/charge.h"
#include "hook/nvml_self.h"

struct ctx_charge {
    struct charge c;
    bool measuring;          /* the size is not known: measure this one */
    uint64_t mine;           /* this process's charged total at begin */
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

#endif
