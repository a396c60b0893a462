/* Contexts take device memory (518 MiB on an H100 with driver 580): primary
 * contexts (cuDevicePrimaryCtxRetain, which the runtime uses for its
 * implicit context), created ones (cuCtxCreate, every version) and green
 * ones (cuGreenCtxCreate). Each reserves its size (ctxcharge.h) before the
 * driver creates it and is refused with CUDA_ERROR_OUT_OF_MEMORY, never
 * created, when it does not fit; destroying it returns the size. A primary
 * context is charged at the retain that creates it and returned at the
 * last release or a reset (which also frees what was allocated in it).
 * cuCtxFromGreenCtx only names a green context as a CUcontext: nothing new
 * is allocated, nothing is charged. In spatial mode (spatial.c) a retain
 * hands out a green context that vgpu made with the driver's own
 * functions: it shares the primary context's memory and is not charged;
 * the primary context is. The driver's own retain and release of the
 * primary for that green context are not the program's: not counted. */
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "atomic.h"
#include "clock.h"
#include "hook/account.h"
#include "hook/charge.h"
#include "hook/ctxcharge.h"
#include "hook/real.h"
#include "hook/reconcile.h"
#include "hook/spatial.h"

#define EXPORT __attribute__((visibility("default")))

/* ---- Primary contexts ---- */

/* Held across the retain that creates a primary context, so that two
 * threads of this process do not both charge it. Nested driver calls never
 * take it (they pass through before). */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static __thread bool in_retain; /* this thread holds `lock` in a retain */
static struct primary {
    unsigned retains;
    bool live;        /* created and charged, not reset or released since */
    bool guess;       /* charged at the guess: the size was not known yet */
    uint64_t charged;
} primaries[VGPU_MAX_DEVICES];

/* Primary contexts charged at the guess, so that the look before every
 * charge is one load. Written under `lock`; read without it (relaxed: a
 * hint; stale, it costs a trylock or delays a settle to the next look).
 * guess_pid: the process that charged them (a fork child's copies are not
 * its charges); guess_ns: when the last was taken. */
static int guesses;
static pid_t guess_pid;
static uint64_t guess_ns;

/* With `lock` held. */
static void guess_clear(struct primary *p)
{
    if (p->guess) {
        p->guess = false;
        atomic_store_n(&guesses, guesses - 1, RELAXED); /* a hint, see above */
    }
}

/* With `lock` held: settle what can be. */
static void settle_locked(void)
{
    bool mine = guess_pid == getpid();
    for (int d = 0; d < VGPU_MAX_DEVICES && guesses > 0; d++) {
        struct primary *p = &primaries[d];
        if (p->guess && (!mine || ctx_charge_settle(d, &p->charged)))
            guess_clear(p);
    }
}

bool ctx_guesses_settle(void)
{
    if (atomic_load_n(&guesses, RELAXED) == 0) /* a hint, see above */
        return false;
    if (pthread_mutex_trylock(&lock) != 0)
        return true; /* a retain is under way (maybe ours): look later */
    settle_locked();
    /* Fast looks at a pending guess last as long as a creation waits for a
     * measurement after the guess was taken. */
    bool recent = guesses > 0 &&
                  clock_ns(CLOCK_MONOTONIC) - guess_ns < CTX_MEASUREMENT_WAIT_NS;
    pthread_mutex_unlock(&lock);
    return recent;
}

/* With `lock` held: is some process measuring a pending guess's size? */
static bool measuring(void)
{
    struct vgpu_region *r = account_region();
    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
        if (primaries[d].guess && vgpu_region_context_measuring(r, d))
            return true;
    return false;
}

int ctx_guesses_pending(void)
{
    return atomic_load_n(&guesses, RELAXED); /* a hint, see above */
}

bool ctx_guesses_wait(int had)
{
    if (had == 0 || in_retain)
        return false; /* a retain waits its own way (ctxcharge.c) */
    const struct timespec ms = {0, 1000 * 1000};
    uint64_t deadline = clock_ns(CLOCK_MONOTONIC) + CTX_MEASUREMENT_WAIT_NS;
    for (;;) {
        pthread_mutex_lock(&lock); /* held briefly, never across a wait */
        settle_locked();
        bool settled = guesses < had; /* by us, or the watcher meanwhile */
        bool wait = !settled && guess_pid == getpid() && measuring();
        pthread_mutex_unlock(&lock);
        if (settled)
            return true;
        if (!wait || clock_ns(CLOCK_MONOTONIC) >= deadline)
            return false;
        nanosleep(&ms, NULL);
    }
}

static void release_primary(uint64_t dev)
{
    REAL(cuDevicePrimaryCtxRelease_v2)((CUdevice)dev);
}

static bool accounted(CUdevice dev)
{
    return !charge_nested() && dev >= 0 && dev < VGPU_MAX_DEVICES &&
           account_region() != NULL;
}

/* The retain, charged at the one that creates the context. */
static CUresult retain_accounted(CUcontext *pctx, CUdevice dev)
{
    pthread_mutex_lock(&lock);
    in_retain = true;
    struct primary *p = &primaries[dev];
    CUresult rc;
    if (p->live) {
        rc = REAL(cuDevicePrimaryCtxRetain)(pctx, dev);
    } else {
        struct ctx_charge cc;
        rc = CUDA_ERROR_OUT_OF_MEMORY;
        if (ctx_charge_begin(&cc, dev)) {
            rc = REAL(cuDevicePrimaryCtxRetain)(pctx, dev);
            rc = ctx_charge_end(&cc, rc, SPACE_NONE, 0, release_primary,
                                (uint64_t)dev);
        }
        if (rc == CUDA_SUCCESS) {
            p->live = true;
            p->charged = cc.c.dev >= 0 ? cc.c.bytes : 0;
            if (cc.guess && cc.c.dev >= 0) {
                if (guess_pid != getpid()) /* a fork child's copies */
                    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
                        guess_clear(&primaries[d]);
                p->guess = true;
                guess_pid = getpid();
                guess_ns = clock_ns(CLOCK_MONOTONIC);
                atomic_store_n(&guesses, guesses + 1, RELAXED); /* a hint */
            }
        }
    }
    if (rc == CUDA_SUCCESS)
        p->retains++;
    bool guessed = p->guess;
    in_retain = false;
    pthread_mutex_unlock(&lock);
    if (guessed)
        reconcile_wake(); /* it settles the guess when the size comes */
    return rc;
}

EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
    NEED(cuDevicePrimaryCtxRetain);
    if (spatial_nested()) /* the driver's, for the green context it makes */
        return REAL(cuDevicePrimaryCtxRetain)(pctx, dev);
    CUresult rc = accounted(dev) ? retain_accounted(pctx, dev)
                                 : REAL(cuDevicePrimaryCtxRetain)(pctx, dev);
    if (rc == CUDA_SUCCESS)
        spatial_retained(pctx, dev); /* VGPU_SM_MODE=spatial: a green one */
    return rc;
}

static void released(CUdevice dev, bool reset)
{
    pthread_mutex_lock(&lock);
    struct primary *p = &primaries[dev];
    if (!reset && p->retains > 0)
        p->retains--;
    if (reset || p->retains == 0) {
        if (p->charged > 0)
            vgpu_region_uncharge(account_region(), dev, p->charged,
                                 VGPU_CHARGE_CONTEXT);
        p->charged = 0;
        p->live = false;
        guess_clear(p);
    }
    pthread_mutex_unlock(&lock);
    if (reset) /* the driver freed every allocation of the context */
        charge_drop_device(dev);
}

/* Call the driver's release or reset, then account for it if it worked. */
static CUresult after(CUresult (*real)(CUdevice), CUdevice dev, bool reset)
{
    if (real == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (spatial_nested()) /* the driver's, for the green context it destroys */
        return real(dev);
    bool ours = accounted(dev);
    release_begin(); /* the context's memory may go (see charge.h) */
    CUresult rc = real(dev);
    if (rc == CUDA_SUCCESS && reset)
        spatial_reset(dev);
    else if (rc == CUDA_SUCCESS)
        spatial_released(dev);
    if (rc == CUDA_SUCCESS && ours)
        released(dev, reset);
    release_end();
    return rc;
}

EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev)
{
    return after(REAL(cuDevicePrimaryCtxRelease_v2), dev, false);
}

EXPORT CUresult cuDevicePrimaryCtxRelease(CUdevice dev)
{
    return after(REAL(cuDevicePrimaryCtxRelease), dev, false);
}

EXPORT CUresult cuDevicePrimaryCtxReset_v2(CUdevice dev)
{
    return after(REAL(cuDevicePrimaryCtxReset_v2), dev, true);
}

EXPORT CUresult cuDevicePrimaryCtxReset(CUdevice dev)
{
    return after(REAL(cuDevicePrimaryCtxReset), dev, true);
}

/* ---- Created contexts ---- */

/* cuCtxCreate contexts alive (a hint: 0 skips the lookup below). */
static int created_alive;

uint64_t account_created_context(void)
{
    CUcontext cur = NULL;
    struct ledger_entry e;
    if (atomic_load_n(&created_alive, RELAXED) == 0 || /* a hint */
        REAL(cuCtxGetCurrent) == NULL || REAL(cuCtxGetCurrent)(&cur) != CUDA_SUCCESS ||
        cur == NULL || !ledger_get(SPACE_CONTEXT, (uint64_t)(uintptr_t)cur, &e))
        return 0;
    return (uint64_t)(uintptr_t)cur;
}

/* ctx was destroyed: what was made in it went with it. */
static void created_destroyed(uint64_t ctx)
{
    uint64_t bytes[VGPU_MAX_DEVICES][LEDGER_KINDS];
    memset(bytes, 0, sizeof bytes);
    ledger_drop_context(ctx, bytes);
    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
        for (int k = 0; k < LEDGER_KINDS; k++)
            if (bytes[d][k] > 0)
                vgpu_region_uncharge(account_region(), d, bytes[d][k],
                                     (enum vgpu_charge_kind)k);
}

static void destroy_created(uint64_t ctx)
{
    REAL(cuCtxDestroy_v2)((CUcontext)(uintptr_t)ctx);
}

/* The body of every cuCtxCreate: reserve, create with `call`, settle. */
#define CHARGED_CONTEXT(dev, call)                                             \
    do {                                                                       \
        struct ctx_charge cc_;                                                 \
        if (!ctx_charge_begin(&cc_, accounted(dev) ? (dev) : -1))              \
            return CUDA_ERROR_OUT_OF_MEMORY;                                   \
        CUresult rc_ = (call);                                                 \
        if (rc_ == CUDA_SUCCESS)                                               \
            spatial_foreign(dev);                                              \
        uint64_t key_ = rc_ == CUDA_SUCCESS ? (uint64_t)(uintptr_t)*pctx : 0;  \
        if (rc_ == CUDA_SUCCESS)                                               \
            atomic_add(&created_alive, 1, RELAXED); /* a hint */               \
        return ctx_charge_end(&cc_, rc_, SPACE_CONTEXT, key_,                  \
                              destroy_created, key_);                          \
    } while (0)

EXPORT CUresult cuCtxCreate(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    NEED(cuCtxCreate);
    CHARGED_CONTEXT(dev, REAL(cuCtxCreate)(pctx, flags, dev));
}

EXPORT CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    NEED(cuCtxCreate_v2);
    CHARGED_CONTEXT(dev, REAL(cuCtxCreate_v2)(pctx, flags, dev));
}

EXPORT CUresult cuCtxCreate_v3(CUcontext *pctx, CUexecAffinityParam *params,
                               int n, unsigned int flags, CUdevice dev)
{
    NEED(cuCtxCreate_v3);
    CHARGED_CONTEXT(dev, REAL(cuCtxCreate_v3)(pctx, params, n, flags, dev));
}

EXPORT CUresult cuCtxCreate_v4(CUcontext *pctx, CUctxCreateParams *params,
                               unsigned int flags, CUdevice dev)
{
    NEED(cuCtxCreate_v4);
    CHARGED_CONTEXT(dev, REAL(cuCtxCreate_v4)(pctx, params, flags, dev));
}

static CUresult real_ctx_destroy(uint64_t ctx, void *fn)
{
    return ((CUresult (*)(CUcontext))fn)((CUcontext)(uintptr_t)ctx);
}

/* The context's charge goes back, and what was made in it. */
static CUresult destroy_context(CUcontext ctx, CUresult (*real)(CUcontext))
{
    uint64_t key = (uint64_t)(uintptr_t)ctx;
    struct ledger_entry e;
    bool created = ledger_get(SPACE_CONTEXT, key, &e);
    release_begin(); /* its memory leaves the driver (see charge.h) */
    CUresult rc = charge_free(SPACE_CONTEXT, key, real_ctx_destroy, (void *)real);
    if (rc == CUDA_SUCCESS && created) {
        created_destroyed(key);
        atomic_sub(&created_alive, 1, RELAXED); /* a hint */
    }
    release_end();
    return rc;
}

EXPORT CUresult cuCtxDestroy_v2(CUcontext ctx)
{
    NEED(cuCtxDestroy_v2);
    return destroy_context(ctx, REAL(cuCtxDestroy_v2));
}

EXPORT CUresult cuCtxDestroy(CUcontext ctx)
{
    NEED(cuCtxDestroy);
    return destroy_context(ctx, REAL(cuCtxDestroy));
}

/* ---- Green contexts ---- */

static void destroy_green(uint64_t ctx)
{
    REAL(cuGreenCtxDestroy)((CUgreenCtx)(uintptr_t)ctx);
}

EXPORT CUresult cuGreenCtxCreate(CUgreenCtx *pctx, CUdevResourceDesc desc,
                                 CUdevice dev, unsigned int flags)
{
    NEED(cuGreenCtxCreate);
    struct ctx_charge cc;
    if (!ctx_charge_begin(&cc, accounted(dev) ? dev : -1))
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult rc = REAL(cuGreenCtxCreate)(pctx, desc, dev, flags);
    if (rc == CUDA_SUCCESS)
        spatial_foreign(dev); /* the program's own: not confined by us */
    uint64_t key = rc == CUDA_SUCCESS ? (uint64_t)(uintptr_t)*pctx : 0;
    return ctx_charge_end(&cc, rc, SPACE_GREEN, key, destroy_green, key);
}

static CUresult real_green_destroy(uint64_t ctx, void *unused)
{
    (void)unused;
    return REAL(cuGreenCtxDestroy)((CUgreenCtx)(uintptr_t)ctx);
}

EXPORT CUresult cuGreenCtxDestroy(CUgreenCtx ctx)
{
    NEED(cuGreenCtxDestroy);
    return charge_free(SPACE_GREEN, (uint64_t)(uintptr_t)ctx, real_green_destroy,
                       NULL);
}
