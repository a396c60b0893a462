/* A context's size: known, assumed, or measured across its creation. */
#include "hook/ctxcharge.h"

#include <time.h>

#include "atomic.h"
#include "clock.h"
#include "hook/account.h"
#include "log.h"
#include "vgpu/config.h"

/* Reserved before any measurement, and an upper bound on purpose: the first
 * creations that can be measured shrink to the real size (an H100's is
 * 518 MiB with driver 580), which always succeeds. A guess below the real
 * size must grow after the creation, and when processes start together
 * their guesses have filled the limit by then: every one of them was
 * refused (8 racing processes under 4 GiB on the H100 got no context at
 * all with a 512 MiB guess). */
#define CONTEXT_GUESS (1024ull << 20)

/* Recorded for a context measured to take nothing (the simulated GPU's),
 * since 0 in the region means "not measured yet". */
#define MEASURED_ZERO VGPU_CONTEXT_ZERO

static uint64_t assumed_size(struct vgpu_region *r, int dev)
{
    uint64_t bytes = CONTEXT_GUESS;
    const char *text = vgpu_env(VGPU_ENV_CONTEXT_BYTES);
    if (text != NULL && !vgpu_parse_size(text, &bytes)) {
        static int warned;
        if (!atomic_xchg(&warned, 1, RELAXED)) /* relaxed: only picks who logs */
            log_warn("VGPU_CONTEXT_BYTES=%s is not a size: 1g is assumed", text);
        bytes = CONTEXT_GUESS;
    }
    /* More than the limit would refuse every first context forever: the
     * measurement that corrects the guess would never run. */
    uint64_t limit = vgpu_region_limit(r, dev);
    return limit > 0 && bytes > limit ? limit : bytes;
}

static uint64_t known_size(uint64_t known)
{
    return known == MEASURED_ZERO ? 0 : known;
}

/* The context did not fit while guesses may be held: processes starting
 * together hold guesses that shrink to the real size once their creations
 * are measured, and a creation that began before the size was published
 * holds its guess until it ends (the driver serializes creations). Wait
 * for the figure, then for room at that size, until the deadline (no
 * lock: polls of the region every millisecond), so that a context that
 * fits is not refused for the guesses' sake. */
static bool charge_when_settled(struct ctx_charge *cc, struct vgpu_region *r,
                                int dev, uint64_t deadline)
{
    const struct timespec ms = {0, 1000 * 1000};
    do {
        nanosleep(&ms, NULL);
        uint64_t known = vgpu_region_context_bytes(r, dev);
        if (known != 0 &&
            charge_begin(&cc->c, dev, known_size(known), VGPU_CHARGE_CONTEXT))
            return true;
    } while (clock_ns(CLOCK_MONOTONIC) < deadline);
    return false;
}

/* Refused at first: wait while the size is unknown or guesses of it may
 * still be held (bounded both ways). */
static bool charge_after_refusal(struct ctx_charge *cc, struct vgpu_region *r,
                                 int dev, uint64_t known)
{
    if (charge_nested() || r == NULL)
        return false;
    uint64_t now = clock_ns(CLOCK_MONOTONIC);
    uint64_t deadline = now + CTX_MEASUREMENT_WAIT_NS;
    if (known != 0) {
        /* A mark past the bound is from before this boot (the file
         * outlived it) or damage: no guess of now can be held that long. */
        uint64_t until = vgpu_region_guesses_until(r, dev);
        if (until <= now || until > deadline)
            return false; /* no guess can be held: it does not fit */
        deadline = until;
    }
    return charge_when_settled(cc, r, dev, deadline);
}

/* The size is not known: measure this creation if no other process of
 * the region is measuring one (a claim), else create with the guess and
 * take the measured size afterwards (ctx_charge_end, ctx_charge_settle):
 * one measurer's NVML readings instead of every starter's. */
static void claim_or_guess(struct ctx_charge *cc, struct vgpu_region *r, int dev)
{
    cc->claim = vgpu_region_claim_context(r, dev);
    cc->guess = cc->claim == 0;
    if (cc->guess)
        return;
    vgpu_region_process_mark(r, dev, &cc->mine);
    cc->quiet = releases_mark(&cc->releases);
    cc->measuring = nvml_list_read(dev, &cc->before);
    if (!cc->measuring) {
        vgpu_region_unclaim_context(r, dev, cc->claim); /* the next may */
        cc->claim = 0;
        static int warned;
        if (!atomic_xchg(&warned, 1, RELAXED)) /* relaxed: picks who logs */
            log_warn("a context's memory cannot be measured (NVML does not answer): "
                     "%llu MiB is counted for each (VGPU_CONTEXT_BYTES)",
                     (unsigned long long)(cc->c.bytes >> 20));
    }
}

bool ctx_charge_begin(struct ctx_charge *cc, int dev)
{
    struct vgpu_region *r = account_region();
    uint64_t known = charge_nested() ? 0 : vgpu_region_context_bytes(r, dev);
    uint64_t bytes = known != 0 ? known_size(known) : assumed_size(r, dev);
    cc->measuring = cc->guess = false;
    cc->claim = 0;
    if (!charge_begin(&cc->c, dev, bytes, VGPU_CHARGE_CONTEXT))
        return charge_after_refusal(cc, r, dev, known);
    if (known == 0 && cc->c.dev >= 0) {
        /* Held until this creation ends and a while after (see
         * ctx_charge_settle's callers): within the bound, by design. */
        vgpu_region_note_guess(r, dev, clock_ns(CLOCK_MONOTONIC) + CTX_MEASUREMENT_WAIT_NS);
        claim_or_guess(cc, r, dev);
    }
    return true;
}

/* This process's growth on dev across the creation, if it can be told
 * apart: our pid known or learned, no other charge of this process moved
 * meanwhile, and no memory of it left the driver uncharged yet (a release
 * in flight: NVML would show the process shrunk by it). */
static bool measure(struct ctx_charge *cc, uint64_t *bytes)
{
    int dev = cc->c.dev;
    struct nvml_list after;
    if (!nvml_list_read(dev, &after) ||
        !vgpu_region_process_unmoved(account_region(), dev, &cc->mine) ||
        !cc->quiet || !releases_none_since(cc->releases))
        return false;
    uint64_t was = 0, now = 0;
    if (!nvml_self_pid_known() && !nvml_self_learn(&cc->before, &after, 0))
        return false; /* others came too: cannot tell which one is this */
    nvml_self_used(&after, &now); /* absent: holds nothing */
    nvml_self_used(&cc->before, &was);
    *bytes = now > was ? now - was : 0;
    return true;
}

CUresult ctx_charge_end(struct ctx_charge *cc, CUresult rc,
                        enum ledger_space space, uint64_t key,
                        void (*undo)(uint64_t arg), uint64_t arg)
{
    struct vgpu_region *r = account_region();
    uint64_t bytes = cc->c.bytes;
    if (rc == CUDA_SUCCESS && cc->measuring && measure(cc, &bytes)) {
        vgpu_region_set_context_bytes(r, cc->c.dev,
                                      bytes > 0 ? bytes : MEASURED_ZERO);
        cc->claim = 0; /* ended by the size */
    } else if (rc == CUDA_SUCCESS && cc->guess) {
        /* Measured by another process meanwhile? Else the guess stays
         * until ctx_charge_settle finds the size. */
        uint64_t known = vgpu_region_context_bytes(r, cc->c.dev);
        cc->guess = known == 0;
        if (known != 0)
            bytes = known_size(known);
    }
    if (cc->claim != 0) /* failed, or not measurable: the next may */
        vgpu_region_unclaim_context(r, cc->c.dev, cc->claim);
    if (rc == CUDA_SUCCESS && !charge_resize(&cc->c, bytes)) {
        undo(arg); /* larger than reserved, and that does not fit */
        rc = CUDA_ERROR_OUT_OF_MEMORY;
    }
    charge_end(&cc->c, rc == CUDA_SUCCESS, space, key);
    return rc;
}

bool ctx_charge_settle(int dev, uint64_t *charged)
{
    struct vgpu_region *r = account_region();
    uint64_t known = vgpu_region_context_bytes(r, dev);
    if (known == 0)
        return false;
    uint64_t size = known_size(known);
    if (size < *charged)
        vgpu_region_uncharge(r, dev, *charged - size, VGPU_CHARGE_CONTEXT);
    /* Larger than the guess (VGPU_CONTEXT_BYTES set too low): charged if
     * it fits; what does not is the reconciliation's (NVML shows it). */
    else if (size > *charged &&
             !vgpu_region_try_charge(r, dev, size - *charged, VGPU_CHARGE_CONTEXT))
        return true;
    *charged = size;
    return true;
}
