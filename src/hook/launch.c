/* The launch hooks: every way a kernel or a graph is launched passes here
 * (exported names, dlsym, cuGetProcAddress: see procaddr.c), and is
 *  1. held while HAMi's monitor says so (recent_kernel < 0), then marked
 *     (recent_kernel = 2, last_kernel_time), as HAMi-core does;
 *  2. when its GPU has a compute limit (CUDA_DEVICE_SM_LIMIT, under
 *     GPU_CORE_UTILIZATION_POLICY): held while the container's budget for
 *     that GPU is in debt, then charged an estimate of its GPU time, kept
 *     true by measuring a sample of launches on the device (gputime.c, the
 *     budget itself in src/region/sm_budget.c).
 * Nothing is taken on this path but atomics on the region and driver calls.
 * Without a region (the file unusable) a configured limit still holds, on
 * this process alone (fail closed).
 *
 * Cost. What the caps depend on (the region's sm_limit and
 * utilization_switch, the policy) is read at most every GATE_NS by
 * whichever launch comes first, and cached in `gate`, as are the marks of
 * step 1: with no limit set, a launch costs a coarse clock read and three
 * loads (the gate's time, the monitor's recent_kernel, the gate's
 * verdict). So the monitor's hold stops the next launch, recent_kernel = 2
 * and last_kernel_time are written at most every GATE_NS (the monitor
 * reads seconds and decrements recent_kernel every 5 s), and a cap written
 * into the region applies within GATE_NS. A limited launch adds
 * cuStreamGetDevice on an explicit stream, else cuCtxGetDevice (neither
 * where the driver shows one device),
 * cuStreamIsCapturing only while a graph capture is open in the process
 * (capture.c), a look at the budget (refilled at most every
 * VGPU_SM_REFILL_NS unless it is empty) and its charge; the event calls
 * of a measured launch are made for one launch in many (gputime.c).
 * In spatial mode (VGPU_SM_MODE=spatial, spatial.c) launches are limited
 * and cost the same; their GPU time is charged in SM-time (limiter_charge). */
#define _GNU_SOURCE
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "atomic.h"
#include "clock.h"
#include "hook/account.h"
#include "hook/graphmem.h"
#include "hook/limiter.h"
#include "hook/real.h"
#include "hook/spatial.h"
#include "log.h"
#include "vgpu/config.h"
#include "vgpu/sm_budget.h"

#define EXPORT __attribute__((visibility("default")))
#define HOLD_SLICE_NS 20000000ull   /* re-read cap and policy this often */
#define GATE_NS 10000000ull         /* re-read the region's flags this often */
#define MONITOR_POLL_NS 10000000ull /* recent_kernel < 0: look again */
#define UTIL_WINDOW_NS 1000000000ull

static struct {
    bool off;                      /* CUDA_DISABLE_CONTROL=true */
    enum vgpu_core_policy policy;
    uint32_t env_pct[VGPU_MAX_DEVICES];
    uint64_t resume_ns;            /* VGPU_SM_RESUME_MS */
} cfg;
static pthread_once_t cfg_once = PTHREAD_ONCE_INIT;
/* The budget of a process with no region: itself alone. */
static struct vgpu_sm_budget alone[VGPU_MAX_DEVICES];

/* What launches obey, as last read (see the header). Written by any
 * thread's refresh, read by every launch. */
static struct {
    uint64_t until;                  /* coarse ns until which it stands */
    struct vgpu_region *region;      /* account_region(), once read */
    uint32_t cap[VGPU_MAX_DEVICES];  /* percent; 0: not limited */
    bool limited;                    /* some cap is set */
    bool one_device;                 /* the driver shows one: ordinal 0 */
} gate;

static void read_config(void)
{
    const char *off = vgpu_env(VGPU_ENV_DISABLE_CONTROL);
    cfg.off = off != NULL && strcmp(off, "true") == 0;
    cfg.policy = vgpu_config_core_policy();
    vgpu_config_sm_limits(cfg.env_pct);
    cfg.resume_ns = vgpu_config_sm_resume_ns();
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000ull),
                          (long)(ns % 1000000000ull)};
    nanosleep(&ts, NULL);
}

/* dev's cap in percent for this launch under the policy; 0: not limited. */
static uint32_t cap_of(struct vgpu_region *r, int dev)
{
    if (cfg.policy == VGPU_CORE_DISABLE || dev < 0 || dev >= VGPU_MAX_DEVICES)
        return 0;
    if (r == NULL)
        return cfg.env_pct[dev];
    if (cfg.policy == VGPU_CORE_DEFAULT && vgpu_region_utilization_switch(r) != 1)
        return 0;
    if (vgpu_region_sm_limit_damaged(r, dev)) {
        /* Not "none": this process's own cap holds (fail closed). */
        static int said;
        if (!atomic_load_n(&said, RELAXED) && !atomic_xchg(&said, 1, RELAXED))
            log_warn("the region's compute limit for device %d is not a "
                     "percentage; CUDA_DEVICE_SM_LIMIT (%u %%) applies", dev,
                     cfg.env_pct[dev]);
        return cfg.env_pct[dev];
    }
    return vgpu_region_sm_limit(r, dev);
}

static struct vgpu_sm_budget *budget_of(struct vgpu_region *r, int dev)
{
    if (r != NULL)
        return vgpu_region_sm_budget(r, dev);
    static int said;
    /* Relaxed: only picks who logs; the load keeps launches from writing. */
    if (!atomic_load_n(&said, RELAXED) && !atomic_xchg(&said, 1, RELAXED))
        log_warn("no region: the compute limit (CUDA_DEVICE_SM_LIMIT) is "
                 "enforced on this process alone");
    return &alone[dev];
}

/* HAMi's priority protocol: a lower-priority container's launches wait
 * while the monitor holds recent_kernel below 0. */
static void monitor_gate(struct vgpu_region *r)
{
    while (vgpu_region_recent_kernel(r) < 0)
        sleep_ns(MONITOR_POLL_NS);
    vgpu_region_kernel_ran(r, (int64_t)time(NULL));
}

/* Read what launches obey, after any hold of the monitor's; `gate` stands
 * until GATE_NS from now. */
static void refresh(uint64_t now)
{
    pthread_once(&cfg_once, read_config);
    if (cfg.off) {
        atomic_store_n(&gate.limited, false, RELAXED);
        atomic_store_n(&gate.until, UINT64_MAX, RELEASE); /* see below */
        return;
    }
    struct vgpu_region *r = account_region();
    if (r != NULL) {
        monitor_gate(r);
        now = clock_ns(CLOCK_MONOTONIC_COARSE); /* after any hold */
    }
    atomic_store_n(&gate.region, r, RELAXED); /* the same pointer ever after */
    bool any = false;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        uint32_t pct = cap_of(r, d);
        atomic_store_n(&gate.cap[d], pct, RELAXED);
        any |= pct != 0;
    }
    atomic_store_n(&gate.limited, any, RELAXED);
    int count = 0;
    if (any && REAL(cuDeviceGetCount) != NULL &&
        REAL(cuDeviceGetCount)(&count) != CUDA_SUCCESS)
        count = 0;
    atomic_store_n(&gate.one_device, count == 1, RELAXED);
    /* Release: a launch that reads this `until` (acquire, in enter) reads
     * the caps stored above, or newer ones. */
    atomic_store_n(&gate.until, now + GATE_NS, RELEASE);
}

/* Hold until dev's budget may be drawn on. */
static void budget_gate(struct vgpu_region *r, int dev, uint64_t now)
{
    if (vgpu_sm_budget_ready(budget_of(r, dev), now))
        return;
    gputime_flush(); /* the budget as it is, before waiting on it */
    for (;;) {
        uint32_t pct = cap_of(r, dev);
        struct vgpu_sm_budget *b = budget_of(r, dev);
        uint64_t wait = vgpu_sm_budget_wait(b, pct, cfg.resume_ns,
                                            clock_ns(CLOCK_MONOTONIC));
        if (wait == 0)
            return;
        if (wait > HOLD_SLICE_NS)
            wait = HOLD_SLICE_NS;
        sleep_ns(wait);
        vgpu_sm_budget_waited(b, wait);
    }
}

/* The device a launch runs on: an explicit stream's (a CUkernel launched
 * on it runs in the stream's context, whatever is current, if anything),
 * else the current context's. */
static bool launch_device(CUstream stream, CUdevice *dev)
{
    bool explicit = stream != NULL && stream != CU_STREAM_LEGACY &&
                    stream != CU_STREAM_PER_THREAD;
    if (explicit && REAL(cuStreamGetDevice) != NULL &&
        REAL(cuStreamGetDevice)(stream, dev) == CUDA_SUCCESS)
        return true;
    return REAL(cuCtxGetDevice) != NULL && REAL(cuCtxGetDevice)(dev) == CUDA_SUCCESS;
}

static void enter(struct launch_ticket *t, CUstream stream, uintptr_t key,
                  CUfunction func)
{
    t->state = TICKET_FREE;
    uint64_t now = clock_ns(CLOCK_MONOTONIC_COARSE);
    /* Acquire: pairs with the release in refresh(). */
    uint64_t until = atomic_load_n(&gate.until, ACQUIRE);
    struct vgpu_region *r = atomic_load_n(&gate.region, RELAXED);
    if (now >= until || (r != NULL && vgpu_region_recent_kernel(r) < 0))
        refresh(now); /* the monitor holds us: at once */
    if (!atomic_load_n(&gate.limited, RELAXED))
        return;
    CUdevice dev = 0; /* with one device, no need to ask */
    if (!atomic_load_n(&gate.one_device, RELAXED) &&
        (!launch_device(stream, &dev) || dev < 0 || dev >= VGPU_MAX_DEVICES))
        return;
    if (atomic_load_n(&gate.cap[dev], RELAXED) == 0)
        return;
    if (spatial_confined(dev))
        spatial_check_launch(dev, stream); /* nothing else proves it confined */
    t->dev = dev;
    t->stream = stream;
    t->key = key;
    t->func = func;
    t->now = now;
    if (!gputime_prepare(t)) /* when it measures, charges what finished first */
        return;
    budget_gate(account_region(), dev, now);
    gputime_start(t);
}

uint32_t limiter_cap(int dev)
{
    pthread_once(&cfg_once, read_config);
    return cfg.off ? 0 : cap_of(account_region(), dev);
}

void limiter_charge(int dev, int64_t ns)
{
    if (dev < 0 || dev >= VGPU_MAX_DEVICES)
        return;
    /* Confined to a share of the SMs (spatial mode): that share of the
     * time. Every charge and correction of gputime.c passes here. */
    ns = spatial_sm_time(dev, ns);
    vgpu_sm_budget_charge(budget_of(account_region(), dev), ns);
}

/* This process's utilization per device over ~1 s windows, for the slot's
 * sm_util. Relaxed: statistics; the CAS on `since` picks the one thread
 * that closes a window. */
static uint64_t util_ns[VGPU_MAX_DEVICES];
static uint64_t util_since[VGPU_MAX_DEVICES];

void limiter_measured(int dev, uint64_t ns)
{
    if (dev < 0 || dev >= VGPU_MAX_DEVICES)
        return;
    atomic_add(&util_ns[dev], ns, RELAXED);
    uint64_t now = clock_ns(CLOCK_MONOTONIC);
    uint64_t since = atomic_load_n(&util_since[dev], RELAXED);
    if (since != 0 && now - since < UTIL_WINDOW_NS)
        return;
    if (!atomic_cas(&util_since[dev], &since, now, RELAXED, RELAXED))
        return;
    uint64_t used = atomic_xchg(&util_ns[dev], 0, RELAXED);
    if (since != 0)
        vgpu_region_set_sm_util(account_region(), dev,
                                used * 100 / (now - since));
}

/* What predicts a launch's GPU time: the function and its sizes, or the
 * graph (gputime.c keys its estimates by it; never 0). */
static uintptr_t kernel_key(CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                            unsigned bx, unsigned by, unsigned bz)
{
    uint64_t grid = (uint64_t)gx * gy * gz, block = (uint64_t)bx * by * bz;
    uint64_t k = (uint64_t)(uintptr_t)f ^ (grid * 0xC2B2AE3D27D4EB4Full) ^
                 (block * 0x165667B19E3779F9ull);
    return (uintptr_t)(k | 1);
}

static uintptr_t config_key(const CUlaunchConfig *c, CUfunction f)
{
    return kernel_key(f, c->gridDimX, c->gridDimY, c->gridDimZ, c->blockDimX,
                      c->blockDimY, c->blockDimZ);
}

static uintptr_t graph_key(CUgraphExec g)
{
    return (uintptr_t)g * 2 + 2; /* apart from kernel keys, which are odd */
}

/* The body of every launch hook: `stream` as the driver will read it. */
#define LIMITED(stream, key, func, call)                                       \
    do {                                                                       \
        struct launch_ticket t_;                                               \
        enter(&t_, (stream), (key), (func));                                   \
        CUresult rc_ = (call);                                                 \
        gputime_end(&t_, rc_ == CUDA_SUCCESS);                                 \
        return rc_;                                                            \
    } while (0)

/* In a _ptsz variant the NULL stream is this thread's default stream. */
static CUstream per_thread(CUstream s)
{
    return s ? s : CU_STREAM_PER_THREAD;
}

EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy,
                               unsigned int gz, unsigned int bx,
                               unsigned int by, unsigned int bz,
                               unsigned int shmem, CUstream s, void **params,
                               void **extra)
{
    NEED(cuLaunchKernel);
    LIMITED(s, kernel_key(f, gx, gy, gz, bx, by, bz), f,
            REAL(cuLaunchKernel)(f, gx, gy, gz, bx, by, bz, shmem, s,
                                    params, extra));
}

EXPORT CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned int gx,
                                    unsigned int gy, unsigned int gz,
                                    unsigned int bx, unsigned int by,
                                    unsigned int bz, unsigned int shmem,
                                    CUstream s, void **params, void **extra)
{
    NEED(cuLaunchKernel_ptsz);
    LIMITED(per_thread(s), kernel_key(f, gx, gy, gz, bx, by, bz), f,
            REAL(cuLaunchKernel_ptsz)(f, gx, gy, gz, bx, by, bz, shmem, s,
                                      params, extra));
}

EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfig *config, CUfunction f,
                                 void **params, void **extra)
{
    NEED(cuLaunchKernelEx);
    if (config == NULL)
        return REAL(cuLaunchKernelEx)(config, f, params, extra);
    LIMITED(config->hStream, config_key(config, f), f,
            REAL(cuLaunchKernelEx)(config, f, params, extra));
}

EXPORT CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *config,
                                      CUfunction f, void **params, void **extra)
{
    NEED(cuLaunchKernelEx_ptsz);
    if (config == NULL)
        return REAL(cuLaunchKernelEx_ptsz)(config, f, params, extra);
    LIMITED(per_thread(config->hStream), config_key(config, f), f,
            REAL(cuLaunchKernelEx_ptsz)(config, f, params, extra));
}

EXPORT CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned int gx,
                                          unsigned int gy, unsigned int gz,
                                          unsigned int bx, unsigned int by,
                                          unsigned int bz, unsigned int shmem,
                                          CUstream s, void **params)
{
    NEED(cuLaunchCooperativeKernel);
    LIMITED(s, kernel_key(f, gx, gy, gz, bx, by, bz), f,
            REAL(cuLaunchCooperativeKernel)(f, gx, gy, gz, bx, by, bz, shmem,
                                            s, params));
}

EXPORT CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned int gx,
                                               unsigned int gy, unsigned int gz,
                                               unsigned int bx, unsigned int by,
                                               unsigned int bz,
                                               unsigned int shmem, CUstream s,
                                               void **params)
{
    NEED(cuLaunchCooperativeKernel_ptsz);
    LIMITED(per_thread(s), kernel_key(f, gx, gy, gz, bx, by, bz), f,
            REAL(cuLaunchCooperativeKernel_ptsz)(f, gx, gy, gz, bx, by, bz,
                                                 shmem, s, params));
}

EXPORT CUresult cuGraphLaunch(CUgraphExec exec, CUstream s)
{
    NEED(cuGraphLaunch);
    LIMITED(s, graph_key(exec), NULL, graphmem_launch(exec, s, REAL(cuGraphLaunch)));
}

EXPORT CUresult cuGraphLaunch_ptsz(CUgraphExec exec, CUstream s)
{
    NEED(cuGraphLaunch_ptsz);
    LIMITED(per_thread(s), graph_key(exec), NULL,
            graphmem_launch(exec, s, REAL(cuGraphLaunch_ptsz)));
}

/* ---- The deprecated entry points the driver still exports ---- */

/* Block shape and parameters set beforehand (cuFuncSetBlockShape,
 * cuParamSet*): the key has the grid only; the measurements tell sizes. */
EXPORT CUresult cuLaunch(CUfunction f)
{
    NEED(cuLaunch);
    LIMITED(NULL, kernel_key(f, 1, 1, 1, 0, 0, 0), f, REAL(cuLaunch)(f));
}

EXPORT CUresult cuLaunchGrid(CUfunction f, int w, int h)
{
    NEED(cuLaunchGrid);
    LIMITED(NULL, kernel_key(f, (unsigned)w, (unsigned)h, 1, 0, 0, 0), f,
            REAL(cuLaunchGrid)(f, w, h));
}

EXPORT CUresult cuLaunchGridAsync(CUfunction f, int w, int h, CUstream s)
{
    NEED(cuLaunchGridAsync);
    LIMITED(s, kernel_key(f, (unsigned)w, (unsigned)h, 1, 0, 0, 0), f,
            REAL(cuLaunchGridAsync)(f, w, h, s));
}

/* Kernels on several devices' streams in one call: not measured one by
 * one here, so refused while any device has a compute limit (fail closed:
 * CUDA_ERROR_NOT_SUPPORTED, which the call may return anyway; one line). */
EXPORT CUresult cuLaunchCooperativeKernelMultiDevice(CUDA_LAUNCH_PARAMS *list,
                                                     unsigned int n,
                                                     unsigned int flags)
{
    NEED(cuLaunchCooperativeKernelMultiDevice);
    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
        if (limiter_cap(d) > 0) {
            static int said;
            if (!atomic_xchg(&said, 1, RELAXED)) /* relaxed: picks who logs */
                log_warn("cuLaunchCooperativeKernelMultiDevice refused: a compute "
                         "limit is set (CUDA_DEVICE_SM_LIMIT); launch each "
                         "kernel with cuLaunchCooperativeKernel");
            return CUDA_ERROR_NOT_SUPPORTED;
        }
    return REAL(cuLaunchCooperativeKernelMultiDevice)(list, n, flags);
}
