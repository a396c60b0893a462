/* The spatial compute mode (VGPU_SM_MODE=spatial).
 *
 * With a compute limit of p % on a device, the first retain of its primary
 * context in this process (the runtime's path: cudaSetDevice, the first
 * CUDA call of PyTorch, JAX, CuPy) also makes a green context holding
 * ceil(p % of the SMs), rounded up to the device's SM alignment and at
 * least its smallest partition, and every retain hands that back instead
 * of the primary context; cuCtxSetCurrent and cuCtxPushCurrent given the
 * primary make the green context current instead. Handing it out is not
 * proof that the work runs there: on an H100 with CUDA 13 the runtime's
 * work ran in its primary context on every SM, though its retain got the
 * green context and the runtime fetched both functions above through
 * cuGetProcAddress (it makes the primary current by a way of its own).
 * So each limited launch checks that its context is the green one
 * (spatial_check_launch), else the device is charged in full: for runtime
 * programs, time mode.
 *
 * The partition isolates; the GPU-time budget still holds the cap (launch.c
 * as in time mode), in SM-time: while every context of this process on the
 * device is the green one, a launch's GPU time is charged as the share of
 * the SMs it had (spatial_sm_time: 10 ms on 40 of 132 SMs is 40/132 of
 * 10 ms). So the cap holds exactly (not rounded up to whole SM groups),
 * follows the region's sm_limit when the monitor changes it, and holds
 * across processes that are confined and processes that are not. Where
 * this process is not wholly confined (a retain was handed the primary
 * context, the program made a context of its own, no green context could
 * be made, a launch ran in another context) the charge is the full GPU time: fail closed, a confined launch
 * may then be over-charged, never under-charged.
 *
 * The green context is made with the driver's own functions, not through
 * our hooks: it is no second context to charge. The driver's green context
 * retains the primary context and shares its memory, so the primary
 * context, charged at its retain (context.c), is all there is to count;
 * the driver's own retain and release of the primary for it are not the
 * program's (spatial_nested). It lives while this process holds retains
 * of the primary context, whichever they were handed, and is destroyed at
 * the last of their releases, or after a reset.
 *
 * Fail closed: where a step fails (a driver without green contexts, a
 * split refused) one line says so and launches are charged in full; the
 * retain itself never fails because of this mode.
 *
 * Threads: one lock around everything but spatial_sm_time(), which reads
 * one word. Fork: a child holds none of its parent's green contexts or
 * retains (the driver's are not its own): it forgets them, and the lock is
 * held across the fork so that the child's is free. */
#include "hook/spatial.h"

#include <pthread.h>

#include "atomic.h"
#include "hook/limiter.h"
#include "hook/real.h"
#include "log.h"
#include "vgpu/config.h"

#define EXPORT __attribute__((visibility("default")))

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
/* This thread holds `lock` (and calls the driver under it): a driver that
 * retains or releases the primary context through its exported functions
 * meets our hooks again, and those nested calls pass through. */
static __thread bool inside;
static struct partition {
    CUgreenCtx green;  /* NULL: none */
    CUcontext ctx;     /* green, named as a context: what retains get;
                        * read without the lock (spatial_current) */
    CUcontext primary; /* the primary context it stands for, likewise */
    unsigned sms, all; /* its SMs, of all the device's */
    unsigned retains;  /* this process's retains of the primary, any */
    bool plain;        /* a retain since retains was 0 got the primary */
    bool given_up;     /* no green context here: charged in full */
    bool foreign;      /* the program made a context of its own here */
    bool strayed;      /* a limited launch ran in another context */
    uint32_t share;    /* sms << 16 | all while confined, else 0; read
                        * without the lock (spatial_sm_time) */
} parts[VGPU_MAX_DEVICES];

bool spatial_nested(void)
{
    return inside;
}

static bool spatial(CUdevice dev)
{
    return !inside && vgpu_config_sm_mode() == VGPU_SM_SPATIAL && dev >= 0 &&
           dev < VGPU_MAX_DEVICES;
}

static void lock_in(void)
{
    pthread_mutex_lock(&lock);
    inside = true;
}

static void unlock_out(void)
{
    inside = false;
    pthread_mutex_unlock(&lock);
}

static void fork_prepare(void) { pthread_mutex_lock(&lock); }
static void fork_parent(void) { pthread_mutex_unlock(&lock); }

static void fork_child(void)
{
    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
        parts[d] = (struct partition){0};
    pthread_mutex_unlock(&lock);
}

static void register_fork(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* With `lock` held: publish the share of the SMs dev's launches are
 * charged for: the partition's while all of this process's contexts there
 * are the green one, else all of them. */
static void publish(struct partition *p)
{
    /* partition() makes none on more SMs than the word holds. */
    bool confined = p->green != NULL && !p->plain && !p->foreign && !p->strayed;
    /* Relaxed: one word, both counts together; it orders nothing. A charge
     * that reads the old word is scaled as a moment earlier: at most what
     * a thread keeps back (gputime.c) is charged at the old share. */
    atomic_store_n(&p->share, confined ? p->sms << 16 | p->all : 0, RELAXED);
}

int64_t spatial_sm_time(int dev, int64_t ns)
{
    uint32_t share = atomic_load_n(&parts[dev].share, RELAXED); /* publish() */
    if (share == 0)
        return ns;
    return ns * (int64_t)(share >> 16) / (int64_t)(share & 0xffff);
}

/* The SMs a partition of pct % of sm takes: rounded up to whole groups of
 * co-scheduled SMs, at least the smallest partition. */
static unsigned sms_for(const CUdevSmResource *sm, uint32_t pct)
{
    unsigned group = sm->smCoscheduledAlignment ? sm->smCoscheduledAlignment : 1;
    unsigned n = (sm->smCount * pct + 99) / 100;
    n = (n + group - 1) / group * group;
    return n < sm->minSmPartitionSize ? sm->minSmPartitionSize : n;
}

/* Make p's green context of `sms` of the SMs in all: NULL, or the driver
 * function that failed (*rc its answer). */
static const char *make(struct partition *p, CUdevice dev,
                        const CUdevResource *all, unsigned sms, CUresult *rc)
{
    CUdevResource part;
    unsigned groups = 1;
    CUdevResourceDesc desc;
    CUgreenCtx green;
    *rc = REAL(cuDevSmResourceSplitByCount)(&part, &groups, all, NULL, 0, sms);
    if (*rc == CUDA_SUCCESS && groups != 1)
        *rc = CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION;
    if (*rc != CUDA_SUCCESS)
        return "cuDevSmResourceSplitByCount";
    if ((*rc = REAL(cuDevResourceGenerateDesc)(&desc, &part, 1)) != CUDA_SUCCESS)
        return "cuDevResourceGenerateDesc";
    *rc = REAL(cuGreenCtxCreate)(&green, desc, dev, CU_GREEN_CTX_DEFAULT_STREAM);
    if (*rc != CUDA_SUCCESS)
        return "cuGreenCtxCreate";
    CUcontext ctx;
    if ((*rc = REAL(cuCtxFromGreenCtx)(&ctx, green)) != CUDA_SUCCESS) {
        REAL(cuGreenCtxDestroy)(green);
        return "cuCtxFromGreenCtx";
    }
    /* Release: a thread that reads ctx (spatial_current, acquire) finds
     * the green context made and the primary it stands for stored. */
    atomic_store_n(&p->ctx, ctx, RELEASE);
    p->green = green;
    p->sms = part.sm.smCount;
    p->all = all->sm.smCount;
    return NULL;
}

static bool driver_has_green_contexts(void)
{
    return REAL(cuDeviceGetDevResource) && REAL(cuDevSmResourceSplitByCount) &&
           REAL(cuDevResourceGenerateDesc) && REAL(cuGreenCtxCreate) &&
           REAL(cuCtxFromGreenCtx) && REAL(cuGreenCtxDestroy);
}

/* With `lock` held, once per device until it works or gives up: dev's
 * green context for pct %, or one line saying why the time budget holds. */
static void partition(struct partition *p, CUdevice dev, uint32_t pct)
{
    p->given_up = true; /* unless it works */
    if (!driver_has_green_contexts()) {
        log_warn("device %d: VGPU_SM_MODE=spatial: the driver has no green "
                 "contexts; the compute limit holds as GPU time", dev);
        return;
    }
    CUdevResource all;
    CUresult rc = REAL(cuDeviceGetDevResource)(dev, &all, CU_DEV_RESOURCE_TYPE_SM);
    if (rc != CUDA_SUCCESS) {
        log_warn("device %d: VGPU_SM_MODE=spatial: cuDeviceGetDevResource "
                 "failed (%d); the compute limit holds as GPU time", dev, rc);
        return;
    }
    unsigned sms = sms_for(&all.sm, pct);
    if (sms >= all.sm.smCount || all.sm.smCount > 0xffff) { /* see publish() */
        log_info("device %d: VGPU_SM_MODE=spatial: %u %% of %u SMs rounds up "
                 "to all of them; the compute limit holds as GPU time", dev,
                 pct, all.sm.smCount);
        return;
    }
    const char *failed = make(p, dev, &all, sms, &rc);
    if (failed != NULL) {
        log_warn("device %d: VGPU_SM_MODE=spatial: %s failed (%d); the "
                 "compute limit holds as GPU time", dev, failed, rc);
        return;
    }
    p->given_up = false;
    log_info("device %d: VGPU_SM_MODE=spatial: a green context of %u of %u "
             "SMs (compute limit %u %%); a launch outside it is charged in "
             "full", dev, p->sms, p->all, pct);
}

void spatial_retained(CUcontext *pctx, CUdevice dev)
{
    if (!spatial(dev))
        return;
    uint32_t pct = limiter_cap(dev);
    pthread_once(&fork_once, register_fork);
    lock_in();
    struct partition *p = &parts[dev];
    p->retains++;
    if (pct != 0 && p->green == NULL && !p->given_up && !p->foreign) {
        atomic_store_n(&p->primary, *pctx, RELAXED); /* see make() */
        partition(p, dev, pct);
    }
    if (pct != 0 && p->green != NULL)
        *pctx = p->ctx;
    else
        p->plain = true; /* the primary runs on every SM: charge in full */
    publish(p);
    unlock_out();
}

/* With `lock` held. */
static void destroy(struct partition *p)
{
    if (p->green != NULL)
        REAL(cuGreenCtxDestroy)(p->green); /* and its retain of the primary */
    p->green = NULL;
    atomic_store_n(&p->ctx, NULL, RELAXED); /* see spatial_current */
    atomic_store_n(&p->primary, NULL, RELAXED);
}

void spatial_released(CUdevice dev)
{
    if (!spatial(dev))
        return;
    lock_in();
    struct partition *p = &parts[dev];
    /* Never below 0: a release of a retain we did not see (none on the
     * runtime's path) is the driver's to judge, not ours to count. */
    if (p->retains > 0 && --p->retains == 0) {
        destroy(p);
        p->plain = false; /* no retain handed the primary is held */
    }
    publish(p);
    unlock_out();
}

/* The reset destroyed the primary context's state, which the green context
 * shares (its memory, its modules): the green context does not go on as if
 * whole. Its own retain of the primary, which the reset left, goes with it.
 * Only once the driver's reset worked: a failed one leaves the green
 * context to its holders. The retains stay counted: a reset releases none,
 * and the releases of their holders may still come. */
void spatial_reset(CUdevice dev)
{
    if (!spatial(dev))
        return;
    lock_in();
    destroy(&parts[dev]);
    publish(&parts[dev]);
    unlock_out();
}

void spatial_foreign(CUdevice dev)
{
    if (!spatial(dev))
        return;
    lock_in();
    struct partition *p = &parts[dev];
    if (!p->foreign && p->green != NULL)
        log_info("device %d: VGPU_SM_MODE=spatial: the program made a "
                 "context of its own; its launches there are charged in "
                 "full GPU time", dev);
    p->foreign = true;
    publish(p);
    unlock_out();
}

/* A context the program makes current: where it is a confined device's
 * primary context, its green context instead (the runtime may make the
 * primary current by its own handle, not the one a retain handed it). Read
 * without the lock: a green context destroyed meanwhile is one whose
 * retains have all been released, and a program that makes the primary
 * current after that has no primary context either. */
static CUcontext spatial_current(CUcontext ctx)
{
    if (ctx == NULL || inside || vgpu_config_sm_mode() != VGPU_SM_SPATIAL)
        return ctx;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        /* Acquire: pairs with the release in make(). */
        CUcontext green = atomic_load_n(&parts[d].ctx, ACQUIRE);
        if (green != NULL && atomic_load_n(&parts[d].primary, RELAXED) == ctx)
            return green;
    }
    return ctx;
}

EXPORT CUresult cuCtxSetCurrent(CUcontext ctx)
{
    NEED(cuCtxSetCurrent);
    return REAL(cuCtxSetCurrent)(spatial_current(ctx));
}

EXPORT CUresult cuCtxPushCurrent_v2(CUcontext ctx)
{
    NEED(cuCtxPushCurrent_v2);
    return REAL(cuCtxPushCurrent_v2)(spatial_current(ctx));
}

bool spatial_confined(int dev)
{
    return atomic_load_n(&parts[dev].share, RELAXED) != 0; /* publish() */
}

/* The context whose work a launch into `stream` is: a created stream's
 * own, the current one for the default streams; NULL if unknown. */
static CUcontext launch_context(CUstream stream)
{
    CUcontext c = NULL;
    CUresult rc = CUDA_ERROR_NOT_SUPPORTED;
    if (stream == NULL || stream == CU_STREAM_LEGACY || stream == CU_STREAM_PER_THREAD) {
        if (REAL(cuCtxGetCurrent))
            rc = REAL(cuCtxGetCurrent)(&c);
    } else if (REAL(cuStreamGetCtx)) {
        rc = REAL(cuStreamGetCtx)(stream, &c);
    }
    return rc == CUDA_SUCCESS ? c : NULL;
}

void spatial_check_launch(int dev, CUstream stream)
{
    CUcontext cur = launch_context(stream);
    /* Acquire: pairs with the release in make(). */
    if (cur != NULL && cur == atomic_load_n(&parts[dev].ctx, ACQUIRE))
        return;
    lock_in();
    struct partition *p = &parts[dev];
    if (!p->strayed && p->green != NULL)
        log_warn("device %d: VGPU_SM_MODE=spatial: a launch ran in context "
                 "%p, not the green context %p (primary %p; the CUDA "
                 "runtime makes its own current): from now on every launch "
                 "there is charged in full GPU time, as in time mode", dev,
                 (void *)cur, (void *)p->ctx, (void *)p->primary);
    p->strayed = p->green != NULL; /* else nothing is confined anyway */
    publish(p);
    unlock_out();
}
