/* The launch hooks: every way a kernel or a graph is launched passes here
 * (exported names, dlsym, cuGetProcAddress: see procaddr.c), and is
 *  1. held while HAMi's monitor says so (recent_kernel < 0), then marked
 *     (recent_kernel = 2, last_kernel_time), as HAMi-core does;
 *  2. when its GPU has a compute limit (CUDA_DEVICE_SM_LIMIT, under
 *     GPU_CORE_UTILIZATION_POLICY): held while the container's budget for
 *     that GPU is in debt, then measured on the device and charged
 *     (gputime.c, the budget itself in src/region/sm_budget.c).
 * Nothing is taken on this path but atomics on the region and driver calls.
 * Without a region (the file unusable) a configured limit still holds, on
 * this process alone (fail closed). */
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
#include "log.h"
#include "vgpu/config.h"
#include "vgpu/sm_budget.h"

#define EXPORT __attribute__((visibility("default")))
#define HOLD_SLICE_NS 20000000ull   /* re-read cap and policy this often */
#define MONITOR_POLL_NS 10000000ull /* recent_kernel < 0: look again */
#define UTIL_WINDOW_NS 1000000000ull

static struct {
    bool off;                      /* CUDA_DISABLE_CONTROL=true */
    enum vgpu_core_policy policy;
    uint32_t env_pct[VGPU_MAX_DEVICES];
    bool env_any;
} cfg;
static pthread_once_t cfg_once = PTHREAD_ONCE_INIT;
/* The budget of a process with no region: itself alone. */
static struct vgpu_sm_budget alone[VGPU_MAX_DEVICES];

static void read_config(void)
{
    const char *off = vgpu_env(VGPU_ENV_DISABLE_CONTROL);
    cfg.off = off != NULL && strcmp(off, "true") == 0;
    cfg.policy = vgpu_config_core_policy();
    vgpu_config_sm_limits(cfg.env_pct);
    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
        cfg.env_any |= cfg.env_pct[d] != 0;
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
    return vgpu_region_sm_limit(r, dev);
}

static bool any_cap(struct vgpu_region *r)
{
    if (cfg.policy == VGPU_CORE_DISABLE)
        return false;
    if (r == NULL)
        return cfg.env_any;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
        if (vgpu_region_sm_limit(r, d) != 0)
            return true;
    return false;
}

static struct vgpu_sm_budget *budget_of(struct vgpu_region *r, int dev)
{
    if (r != NULL)
        return vgpu_region_sm_budget(r, dev);
    static int said;
    if (!atomic_xchg(&said, 1, RELAXED)) /* relaxed: only picks who logs */
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

/* Hold until dev's budget may be drawn on. */
static void budget_gate(struct vgpu_region *r, int dev)
{
    for (;;) {
        uint32_t pct = cap_of(r, dev);
        struct vgpu_sm_budget *b = budget_of(r, dev);
        uint64_t wait = vgpu_sm_budget_wait(b, pct, clock_ns(CLOCK_MONOTONIC));
        if (wait == 0)
            return;
        if (wait > HOLD_SLICE_NS)
            wait = HOLD_SLICE_NS;
        sleep_ns(wait);
        vgpu_sm_budget_waited(b, wait);
    }
}

static void enter(struct launch_ticket *t, CUstream stream)
{
    memset(t, 0, sizeof *t);
    t->stream = stream;
    pthread_once(&cfg_once, read_config);
    if (cfg.off)
        return;
    struct vgpu_region *r = account_region();
    if (r != NULL)
        monitor_gate(r);
    if (!any_cap(r))
        return;
    CUdevice dev;
    if (REAL(cuCtxGetDevice) == NULL || REAL(cuCtxGetDevice)(&dev) != CUDA_SUCCESS ||
        cap_of(r, dev) == 0)
        return;
    t->dev = dev;
    if (!gputime_prepare(t)) /* also charges what finished, before deciding */
        return;
    budget_gate(r, dev);
    gputime_start(t);
}

void limiter_charge(int dev, int64_t ns)
{
    if (dev >= 0 && dev < VGPU_MAX_DEVICES)
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

/* The body of every launch hook: `stream` as the driver will read it. */
#define LIMITED(stream, call)                                                  \
    do {                                                                       \
        struct launch_ticket t_;                                               \
        enter(&t_, (stream));                                                  \
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
    LIMITED(s, REAL(cuLaunchKernel)(f, gx, gy, gz, bx, by, bz, shmem, s,
                                    params, extra));
}

EXPORT CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned int gx,
                                    unsigned int gy, unsigned int gz,
                                    unsigned int bx, unsigned int by,
                                    unsigned int bz, unsigned int shmem,
                                    CUstream s, void **params, void **extra)
{
    NEED(cuLaunchKernel_ptsz);
    LIMITED(per_thread(s), REAL(cuLaunchKernel_ptsz)(f, gx, gy, gz, bx, by, bz,
                                                     shmem, s, params, extra));
}

EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfig *config, CUfunction f,
                                 void **params, void **extra)
{
    NEED(cuLaunchKernelEx);
    if (config == NULL)
        return REAL(cuLaunchKernelEx)(config, f, params, extra);
    LIMITED(config->hStream, REAL(cuLaunchKernelEx)(config, f, params, extra));
}

EXPORT CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *config,
                                      CUfunction f, void **params, void **extra)
{
    NEED(cuLaunchKernelEx_ptsz);
    if (config == NULL)
        return REAL(cuLaunchKernelEx_ptsz)(config, f, params, extra);
    LIMITED(per_thread(config->hStream),
            REAL(cuLaunchKernelEx_ptsz)(config, f, params, extra));
}

EXPORT CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned int gx,
                                          unsigned int gy, unsigned int gz,
                                          unsigned int bx, unsigned int by,
                                          unsigned int bz, unsigned int shmem,
                                          CUstream s, void **params)
{
    NEED(cuLaunchCooperativeKernel);
    LIMITED(s, REAL(cuLaunchCooperativeKernel)(f, gx, gy, gz, bx, by, bz,
                                               shmem, s, params));
}

EXPORT CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned int gx,
                                               unsigned int gy, unsigned int gz,
                                               unsigned int bx, unsigned int by,
                                               unsigned int bz,
                                               unsigned int shmem, CUstream s,
                                               void **params)
{
    NEED(cuLaunchCooperativeKernel_ptsz);
    LIMITED(per_thread(s), REAL(cuLaunchCooperativeKernel_ptsz)(
                               f, gx, gy, gz, bx, by, bz, shmem, s, params));
}

EXPORT CUresult cuGraphLaunch(CUgraphExec exec, CUstream s)
{
    NEED(cuGraphLaunch);
    LIMITED(s, graphmem_launch(exec, s, REAL(cuGraphLaunch)));
}

EXPORT CUresult cuGraphLaunch_ptsz(CUgraphExec exec, CUstream s)
{
    NEED(cuGraphLaunch_ptsz);
    LIMITED(per_thread(s), graphmem_launch(exec, s, REAL(cuGraphLaunch_ptsz)));
}
