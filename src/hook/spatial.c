/* The spatial compute mode (VGPU_SM_MODE=spatial).
 *
 * With a compute limit of p % on a device, the first retain of its primary
 * context in this process (the runtime's path: cudaSetDevice, the first
 * CUDA call of PyTorch, JAX, CuPy) also makes a green context holding
 * ceil(p % of the SMs), rounded up to the device's SM alignment and at
 * least its smallest partition, and every retain hands that back instead
 * of the primary context: the runtime makes it current and all its work
 * runs on those SMs. The partition is the cap: launches there do not draw
 * on the GPU-time budget (launch.c asks spatial_confines()).
 *
 * The green context is made with the driver's own functions, not through
 * our hooks: it is no second context to charge. The driver's green context
 * retains the primary context and shares its memory, so the primary
 * context, charged at its retain (context.c), is all there is to count.
 * It lives while this process holds retains that were handed it, and is
 * destroyed at the last of their releases, or before a reset.
 *
 * Fail closed: where a step fails (a driver without green contexts, a
 * split refused) one line says so and the device keeps the GPU-time
 * budget; the retain itself never fails because of this mode.
 *
 * Threads: one lock around everything but spatial_confines(), which reads
 * a flag. Fork: a child holds none of its parent's green contexts (the
 * driver's are not its own): it forgets them, and the lock is held across
 * the fork so that the child's is free. */
#include "hook/spatial.h"

#include <pthread.h>

#include "atomic.h"
#include "hook/limiter.h"
#include "hook/real.h"
#include "log.h"
#include "vgpu/config.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
/* This thread holds `lock` (and calls the driver under it): a driver that
 * retains or releases the primary context through its exported functions
 * meets our hooks again, and those nested calls pass through. */
static __thread bool inside;
static struct partition {
    CUgreenCtx green;  /* NULL: none */
    CUcontext ctx;     /* green, named as a context: what retains get */
    unsigned retains;  /* retains of this process that were handed ctx */
    bool given_up;     /* no green context here: the time budget holds */
    bool foreign;      /* the program made a context of its own here */
    bool confined;     /* green && !foreign; read without the lock */
} parts[VGPU_MAX_DEVICES];

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

/* With `lock` held: publish whether dev's launches are confined, and have
 * the next launch read it. */
static void publish(struct partition *p)
{
    /* Relaxed: a flag read by the launch gate's refresh; it orders nothing
     * (the gate re-reads it at the latest GATE_NS later). */
    atomic_store_n(&p->confined, p->green != NULL && !p->foreign, RELAXED);
    limiter_reread();
}

bool spatial_confines(int dev)
{
    return atomic_load_n(&parts[dev].confined, RELAXED); /* see publish() */
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
                        const CUdevResource *all, unsigned sms, CUresult *rc,
                        unsigned *made)
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
    if ((*rc = REAL(cuCtxFromGreenCtx)(&p->ctx, green)) != CUDA_SUCCESS) {
        REAL(cuGreenCtxDestroy)(green);
        return "cuCtxFromGreenCtx";
    }
    p->green = green;
    *made = part.sm.smCount;
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
    unsigned sms = sms_for(&all.sm, pct), made = 0;
    if (sms >= all.sm.smCount) {
        log_info("device %d: VGPU_SM_MODE=spatial: %u %% of %u SMs rounds up "
                 "to all of them; the compute limit holds as GPU time", dev,
                 pct, all.sm.smCount);
        return;
    }
    const char *failed = make(p, dev, &all, sms, &rc, &made);
    if (failed != NULL) {
        log_warn("device %d: VGPU_SM_MODE=spatial: %s failed (%d); the "
                 "compute limit holds as GPU time", dev, failed, rc);
        return;
    }
    p->given_up = false;
    log_info("device %d: VGPU_SM_MODE=spatial: the runtime's context runs on "
             "%u of %u SMs (compute limit %u %%)", dev, made, all.sm.smCount,
             pct);
}

void spatial_retained(CUcontext *pctx, CUdevice dev)
{
    if (!spatial(dev))
        return;
    uint32_t pct = limiter_cap(dev);
    if (pct == 0)
        return;
    pthread_once(&fork_once, register_fork);
    lock_in();
    struct partition *p = &parts[dev];
    if (p->green == NULL && !p->given_up && !p->foreign) {
        partition(p, dev, pct);
        publish(p);
    }
    if (p->green != NULL) {
        p->retains++;
        *pctx = p->ctx;
    }
    unlock_out();
}

/* With `lock` held. */
static void destroy(struct partition *p)
{
    if (p->green != NULL)
        REAL(cuGreenCtxDestroy)(p->green);
    p->green = NULL;
    p->ctx = NULL;
    p->retains = 0;
    publish(p);
}

void spatial_released(CUdevice dev)
{
    if (!spatial(dev))
        return;
    lock_in();
    struct partition *p = &parts[dev];
    if (p->retains > 0 && --p->retains == 0)
        destroy(p); /* its own retain of the primary goes with it */
    unlock_out();
}

void spatial_reset(CUdevice dev)
{
    if (!spatial(dev))
        return;
    lock_in();
    if (parts[dev].green != NULL)
        destroy(&parts[dev]);
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
                 "context of its own; the compute limit holds as GPU time "
                 "there", dev);
    p->foreign = true;
    publish(p);
    unlock_out();
}
