/* The spatial compute mode (VGPU_SM_MODE=spatial) on the simulated GPU, one
 * case per behaviour (argv[1]), a device of 132 SMs in groups of 8 and a
 * compute limit of 25 %: 33 SMs, rounded up to 40. Shares are in simulated
 * GPU time (the work done, as if on the whole device, over wall time).
 *   share:    full-GPU kernels on the green context: the budget holds the
 *             cap in SM-time (each launch charged 40/132 of the device time
 *             it held): a share of 25 within 3 points, not 40/132 = 30.3;
 *             the budget is charged about the work done, and launches are
 *             measured (event calls), as in time mode;
 *   share30:  a limit of 30 % on the same 40 SMs: 30 within 3 points;
 *   retain:   the runtime's path (cuDevicePrimaryCtxRetain, directly or
 *             through cuGetProcAddress) gets a green context of 40 SMs, the
 *             same one at every retain, gone after the last release; a
 *             device without a limit gets its primary context;
 *   memory:   the region charges one context, as the driver holds one;
 *   fallback: cuGreenCtxCreate fails: one line, and the time cap holds;
 *   bogus:    VGPU_SM_MODE=bogus: one line, and the time cap holds;
 *   late:     a retain while no limit is in force (default policy, switch
 *             0) gets the primary context; the switch is set, a later
 *             retain makes the green context: launches on either are held
 *             to the cap (charged in full: the process is not confined);
 *   mixed:    two processes of one container, one confined, one on a
 *             context of its own: the container is held to the cap;
 *   lower:    the monitor lowers sm_limit from 50 to 10 while the green
 *             context (72 SMs) lives: the share follows, to 10;
 *   release:  the release of a retain that was handed the primary context
 *             leaves the green context to the retain that holds it;
 *   reset:    after a reset, a release of a retain from before it leaves
 *             the green context made since to its holder; the last release
 *             of all lets the primary go. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>

#include "compute_util.h"

#define WINDOW 2.0
#define CAP 25
#define OFF_SM_LIMIT 1728 /* HAMi v1 layout: device 0's sm_limit */

static void limit_env(const char *mode)
{
    setenv("VGPU_SM_MODE", mode, 1);
    setenv("CUDA_DEVICE_SM_LIMIT", "25", 1);
    setenv("GPU_CORE_UTILIZATION_POLICY", "force", 1);
}

static unsigned sms_of(CUcontext ctx)
{
    CUdevResource r;
    CU_OK(cuCtxGetDevResource(ctx, &r, CU_DEV_RESOURCE_TYPE_SM));
    return r.sm.smCount;
}

static void share_at(int cap)
{
    limit_env("spatial");
    struct tenant t = TENANT(0, cap, "force", WORK_ASYNC, 500);
    struct run *run = run_tenants(&t, 1, WINDOW);
    double s = share(run, 1, 0);
    uint64_t charged, waited;
    budget_stats(0, &charged, &waited);
    printf("spatial, limit %d %% on 40 of 132 SMs: share %.1f %%, GPU work "
           "%.1f ms, charged %.1f ms, %llu event calls\n", cap, s,
           (double)run->t[0].gpu_ns / 1e6, (double)charged / 1e6,
           (unsigned long long)run->t[0].event_calls);
    CHECK(s >= cap - 3 && s <= cap + 3, "share %.1f within 3 points of %d", s, cap);
    /* In SM-time: about the work done, far from the 132/40 times as much
     * device time the partition held. */
    CHECK(charged > run->t[0].gpu_ns / 2 && charged < run->t[0].gpu_ns * 2,
          "charged %llu ns in SM-time, about the work %llu ns",
          (unsigned long long)charged, (unsigned long long)run->t[0].gpu_ns);
    CHECK(run->t[0].event_calls > 0, "launches measured as in time mode");
}

static void case_share(void)
{
    share_at(CAP);
    printf("share: ok\n");
}

static void case_share30(void)
{
    share_at(30);
    printf("share30: ok\n");
}

typedef CUresult (*getproc_fn)(const char *, void **, int, cuuint64_t,
                               CUdriverProcAddressQueryResult *);
typedef CUresult (*retain_fn)(CUcontext *, CUdevice);

static int primary_active(int dev)
{
    unsigned flags;
    int active;
    CU_OK(cuDevicePrimaryCtxGetState(dev, &flags, &active));
    return active;
}

static void case_retain(void)
{
    hook_fresh(2, "8g", NULL);
    limit_env("spatial");
    setenv("CUDA_DEVICE_SM_LIMIT_1", "100", 1); /* device 1: none */
    int saved = stderr_to_log();
    CU_OK(cuInit(0));
    CUcontext ctx, again, other;
    CU_OK(cuDevicePrimaryCtxRetain(&ctx, 0));
    stderr_back(saved);
    CHECK(sms_of(ctx) == 40, "the runtime's context has 40 SMs: %u", sms_of(ctx));
    CHECK(log_lines("a green context of 40 of 132 SMs") == 1, "one line says so");
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    getproc_fn getproc = (getproc_fn)dlsym(cuda, "cuGetProcAddress_v2");
    void *fn = NULL;
    CU_OK(getproc("cuDevicePrimaryCtxRetain", &fn, 13000, 0, NULL));
    CU_OK(((retain_fn)fn)(&again, 0));
    CHECK(again == ctx, "every retain gets the same green context");
    CU_OK(cuCtxSetCurrent(ctx));
    CUdevice dev = -1;
    CU_OK(cuCtxGetDevice(&dev));
    CHECK(dev == 0, "current, it is device 0's");
    CU_OK(cuDevicePrimaryCtxRetain(&other, 1));
    CHECK(sms_of(other) == 132, "no limit on device 1: its primary context");
    CU_OK(cuDevicePrimaryCtxRelease_v2(0));
    CHECK(primary_active(0), "retained once more: the primary lives");
    CU_OK(cuDevicePrimaryCtxRelease_v2(0));
    CHECK(!primary_active(0), "the last release destroys the green context "
          "and with it the primary");
    CU_OK(cuDevicePrimaryCtxRetain(&ctx, 0));
    CHECK(sms_of(ctx) == 40, "retained again: a green context again");
    CU_OK(cuDevicePrimaryCtxReset_v2(0)); /* and the green context after it */
    CU_OK(cuDevicePrimaryCtxRetain(&again, 0));
    CHECK(sms_of(again) == 40, "after a reset: a green context again");
    CU_OK(cuDevicePrimaryCtxRelease_v2(1));
    printf("retain: ok\n");
}

static void case_memory(void)
{
    hook_fresh(1, "8g", "1g");
    setenv("FAKEGPU_CTX_BYTES", "268435456", 1);
    limit_env("spatial");
    CU_OK(cuInit(0));
    CUcontext ctx;
    CU_OK(cuDevicePrimaryCtxRetain(&ctx, 0));
    CHECK(sms_of(ctx) == 40, "a green context: %u SMs", sms_of(ctx));
    CU_OK(cuCtxSetCurrent(ctx));
    printf("region %llu MiB, driver %llu MiB\n",
           (unsigned long long)(region_used(0) / MiB),
           (unsigned long long)(fakegpu_device_used(0) / MiB));
    CHECK(region_used(0) == 256 * MiB && fakegpu_device_used(0) == 256 * MiB,
          "one context charged, one held by the driver");
    CUdeviceptr p;
    CU_OK(cuMemAlloc_v2(&p, 512 * MiB));
    CHECK(region_used(0) == 768 * MiB, "its memory counts as the primary's");
    CHECK(cuMemAlloc_v2(&p, 300 * MiB) == CUDA_ERROR_OUT_OF_MEMORY,
          "and the limit holds");
    CU_OK(cuMemFree_v2(p));
    CU_OK(cuDevicePrimaryCtxRelease_v2(0));
    CHECK(region_used(0) == 0 && fakegpu_device_used(0) == 0,
          "the last release returns the one context");
    printf("memory: ok\n");
}

/* The share of one tenant under the time cap, its stderr in the log. */
static void time_cap_holds(void)
{
    int saved = stderr_to_log();
    struct tenant t = TENANT(0, CAP, "force", WORK_ASYNC, 200);
    struct run *run = run_tenants(&t, 1, WINDOW);
    stderr_back(saved);
    expect_share(run, 1, 0, CAP);
}

static void case_fallback(void)
{
    limit_env("spatial");
    setenv("FAKEGPU_FAIL", "cuGreenCtxCreate", 1);
    time_cap_holds();
    CHECK(log_lines("VGPU_SM_MODE") == 1, "one line");
    CHECK(log_lines("cuGreenCtxCreate failed") == 1, "saying what failed");
    CU_OK(cuInit(0));
    CUcontext ctx;
    CU_OK(cuDevicePrimaryCtxRetain(&ctx, 0));
    CHECK(sms_of(ctx) == 132, "the primary context, on all SMs");
    printf("fallback: ok\n");
}

static void case_bogus(void)
{
    limit_env("bogus");
    time_cap_holds();
    CHECK(log_lines("VGPU_SM_MODE") == 1, "one line");
    CHECK(log_lines("VGPU_SM_MODE=\"bogus\" is not time or spatial; using time") == 1,
          "saying what is used");
    printf("bogus: ok\n");
}

/* ---- A limit that changes, processes not confined, releases ---- */

static void region_write(off_t off, const void *v, size_t n)
{
    int fd = open(getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE"), O_RDWR);
    CHECK(fd >= 0 && pwrite(fd, v, n, off) == (ssize_t)n, "region written");
    close(fd);
}

static void switch_to(int32_t on)
{
    region_write(OFF_UTIL_SWITCH, &on, sizeof on);
}

/* The container's region, made with limit pct on device 0 as a first
 * process would: in a child, so that this one stays single-threaded for
 * what it forks later (see hook_compute.c). */
static void make_region(uint32_t pct)
{
    const char *path = getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE");
    unlink(path);
    if (fork() == 0) {
        struct vgpu_attach_options o;
        vgpu_attach_options_from_env(&o);
        o.path = path;
        o.sm_limits[0] = pct;
        struct vgpu_region *r = vgpu_region_attach(&o);
        vgpu_region_detach(r);
        _exit(r == NULL);
    }
    CHECK(wait_children(1) == 0, "region created");
}

/* Kernels of 500 us into stream s (NULL: the current context's) for
 * secs: the share of the device they got. */
static double run_in(CUstream s, double secs)
{
    uint32_t us = 500;
    void *params[] = {&us};
    uint64_t ns0 = fakegpu_launched_ns(0);
    double began = now_seconds();
    while (now_seconds() < began + secs)
        CU_OK(cuLaunchKernel((CUfunction)1, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
    CU_OK(cuStreamSynchronize(s));
    double ended = (double)fakegpu_work_end_ns() / 1e9;
    return 100.0 * (double)(fakegpu_launched_ns(0) - ns0) / 1e9 / (ended - began);
}

/* The same on ctx, made current. */
static double run_on(CUcontext ctx, double secs)
{
    CU_OK(cuCtxSetCurrent(ctx));
    return run_in(NULL, secs);
}

static void spatial_env(int cap, const char *policy)
{
    char pct[16];
    snprintf(pct, sizeof pct, "%d", cap);
    setenv("VGPU_SM_MODE", "spatial", 1);
    setenv("CUDA_DEVICE_SM_LIMIT", pct, 1);
    setenv("GPU_CORE_UTILIZATION_POLICY", policy, 1);
}

static void case_late(void)
{
    spatial_env(CAP, "default");
    make_region(CAP);
    switch_to(0);
    CU_OK(cuInit(0));
    CUcontext prim, green;
    CU_OK(cuDevicePrimaryCtxRetain(&prim, 0));
    CHECK(sms_of(prim) == 132, "no limit in force: the primary context");
    switch_to(1);
    CU_OK(cuDevicePrimaryCtxRetain(&green, 0));
    CHECK(sms_of(green) == 40, "limited now: the green context");
    double on_prim = run_on(prim, 1.0), on_green = run_on(green, 1.0);
    printf("late: primary %.1f %%, green %.1f %% (cap %d %%)\n", on_prim,
           on_green, CAP);
    CHECK(on_prim <= CAP + 3, "the primary context's share %.1f within the "
          "cap", on_prim);
    CHECK(on_green <= CAP + 3, "the green context's share %.1f within the "
          "cap", on_green);
    printf("late: ok\n");
}

/* A process confined at the cap: its retain's green context, on 40 SMs. */
static CUcontext confined_process(void)
{
    spatial_env(CAP, "force");
    make_region(CAP);
    CU_OK(cuInit(0));
    CUcontext green;
    CU_OK(cuDevicePrimaryCtxRetain(&green, 0));
    CHECK(sms_of(green) == 40, "the green context");
    return green;
}

/* The runtime may make its primary context current by the primary's own
 * handle: through cuCtxSetCurrent or cuCtxPushCurrent (hooked: the green
 * context is made current instead), or by a way no hook sees (then the
 * launches run on every SM, and they are charged in full: one line). */
static void case_substitute(void)
{
    CUcontext green = confined_process(), cur;
    CU_OK(fakegpu_primary_current_unhooked(0));
    CU_OK(cuCtxGetCurrent(&cur));
    CUcontext primary = cur;
    CHECK(primary != green && sms_of(primary) == 132, "the primary, behind our back");
    CU_OK(cuCtxSetCurrent(primary));
    CU_OK(cuCtxGetCurrent(&cur));
    CHECK(cur == green, "cuCtxSetCurrent(primary) made the green context current");
    CU_OK(cuCtxPushCurrent_v2(primary));
    CU_OK(cuCtxGetCurrent(&cur));
    CHECK(cur == green, "cuCtxPushCurrent(primary) pushed the green context");
    CU_OK(cuCtxPopCurrent_v2(&cur));
    printf("substitute: ok\n");
}

/* Launches into `stream` (NULL: the current context's) for 2 s, found
 * outside the green context: charged in full, and one line says so. */
static void expect_charged_in_full(CUstream stream, const char *what)
{
    int saved = stderr_to_log();
    double got = run_in(stream, 2.0);
    stderr_back(saved);
    printf("%s: share %.1f %% (cap %d %%)\n", what, got, CAP);
    CHECK(got <= CAP + 3, "charged in full: share %.1f within the cap", got);
    CHECK(log_lines("not the green context") == 1, "one line says so");
}

static void case_stray(void)
{
    confined_process();
    CU_OK(fakegpu_primary_current_unhooked(0));
    expect_charged_in_full(NULL, "stray: launches on the primary context, "
                                 "made current behind vgpu's back");
    printf("stray: ok\n");
}

/* A stream made while the primary context was current (behind vgpu's
 * back) keeps its work there, on every SM, though the green context is
 * current when it is launched into: charged in full, one line. */
static void case_stream(void)
{
    CUcontext green = confined_process();
    CU_OK(fakegpu_primary_current_unhooked(0));
    CUstream s;
    CU_OK(cuStreamCreate(&s, 0));
    CU_OK(cuCtxSetCurrent(green));
    expect_charged_in_full(s, "stream: a stream of the primary context, "
                              "launched into with the green one current");
    printf("stream: ok\n");
}

/* Process i of case_mixed: 0 confined (the runtime's path), 1 on a context
 * of its own; each launches 2 s from `start`. */
static void mixed_process(struct tenant *t, int i, double start)
{
    CUcontext ctx = fakegpu_context(0);
    if (i == 1)
        CU_OK(cuCtxCreate_v2(&ctx, 0, 0));
    CHECK(sms_of(ctx) == (i == 0 ? 40u : 132u), "process %d's SMs", i);
    uint32_t us = 500;
    void *params[] = {&us};
    while (now_seconds() < start)
        usleep(100);
    t->began = now_seconds();
    while (now_seconds() < start + WINDOW)
        CU_OK(cuLaunchKernel((CUfunction)1, 1, 1, 1, 1, 1, 1, 0, NULL, params,
                             NULL));
    CU_OK(cuCtxSynchronize());
    t->ended = (double)fakegpu_work_end_ns() / 1e9;
    t->gpu_ns = fakegpu_launched_ns(0);
    _exit(0);
}

static void case_mixed(void)
{
    spatial_env(CAP, "force");
    make_region(CAP);
    struct run *run = mmap(NULL, sizeof *run, PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(run != MAP_FAILED, "mmap");
    double start = now_seconds() + 0.5;
    for (int i = 0; i < 2; i++)
        if (fork() == 0)
            mixed_process(&run->t[i], i, start);
    CHECK(wait_children(2) == 0, "a process failed");
    double s = share(run, 2, 0);
    printf("mixed: container %.1f %% (cap %d %%)\n", s, CAP);
    CHECK(s <= CAP + 3, "the container's share %.1f within the cap", s);
    printf("mixed: ok\n");
}

static void case_lower(void)
{
    spatial_env(50, "force");
    make_region(50);
    CU_OK(cuInit(0));
    CUcontext green;
    CU_OK(cuDevicePrimaryCtxRetain(&green, 0));
    CHECK(sms_of(green) == 72, "50 %%: 72 SMs, %u", sms_of(green));
    uint64_t ten = 10;
    region_write(OFF_SM_LIMIT, &ten, sizeof ten); /* as the monitor */
    double s = run_on(green, 1.0);
    printf("lower: share %.1f %% with sm_limit 10\n", s);
    CHECK(s <= 10 + 3, "share %.1f within the lowered cap", s);
    printf("lower: ok\n");
}

static void case_release(void)
{
    spatial_env(CAP, "default");
    make_region(CAP);
    switch_to(0);
    CU_OK(cuInit(0));
    CUcontext prim, green, again;
    CU_OK(cuDevicePrimaryCtxRetain(&prim, 0));
    switch_to(1);
    CU_OK(cuDevicePrimaryCtxRetain(&green, 0));
    CHECK(sms_of(green) == 40, "the green context");
    CU_OK(cuDevicePrimaryCtxRelease_v2(0)); /* the primary's holder */
    CHECK(sms_of(green) == 40, "the green context lives for its holder");
    CU_OK(cuDevicePrimaryCtxRetain(&again, 0));
    CHECK(again == green, "and is handed out again");
    CU_OK(cuDevicePrimaryCtxRelease_v2(0));
    CU_OK(cuDevicePrimaryCtxRelease_v2(0));
    CHECK(!primary_active(0), "the last release lets the primary go");
    printf("release: ok\n");
}

static void case_reset(void)
{
    spatial_env(CAP, "force");
    make_region(CAP);
    CU_OK(cuInit(0));
    CUcontext a, b, b2, c;
    CU_OK(cuDevicePrimaryCtxRetain(&a, 0));
    CU_OK(cuDevicePrimaryCtxRetain(&b, 0));
    CHECK(a == b && sms_of(a) == 40, "one green context");
    CU_OK(cuDevicePrimaryCtxReset_v2(0)); /* b's */
    CU_OK(cuDevicePrimaryCtxRetain(&b2, 0));
    CHECK(sms_of(b2) == 40, "after the reset, a green context");
    CU_OK(cuDevicePrimaryCtxRelease_v2(0)); /* a's, from before the reset */
    CHECK(sms_of(b2) == 40, "it lives for its holder");
    CU_OK(cuDevicePrimaryCtxRetain(&c, 0));
    CHECK(c == b2, "and is handed out again");
    for (int i = 0; i < 3; i++) /* b's, b2's and c's */
        CU_OK(cuDevicePrimaryCtxRelease_v2(0));
    CHECK(!primary_active(0), "the last release lets the primary go");
    printf("reset: ok\n");
}

int main(int argc, char **argv)
{
    hook_fresh(1, "8g", NULL);
    const char *c = argc > 1 ? argv[1] : "retain";
    if (strcmp(c, "share") == 0)
        case_share();
    else if (strcmp(c, "retain") == 0)
        case_retain();
    else if (strcmp(c, "memory") == 0)
        case_memory();
    else if (strcmp(c, "fallback") == 0)
        case_fallback();
    else if (strcmp(c, "bogus") == 0)
        case_bogus();
    else if (strcmp(c, "share30") == 0)
        case_share30();
    else if (strcmp(c, "late") == 0)
        case_late();
    else if (strcmp(c, "mixed") == 0)
        case_mixed();
    else if (strcmp(c, "lower") == 0)
        case_lower();
    else if (strcmp(c, "release") == 0)
        case_release();
    else if (strcmp(c, "reset") == 0)
        case_reset();
    else if (strcmp(c, "substitute") == 0)
        case_substitute();
    else if (strcmp(c, "stray") == 0)
        case_stray();
    else if (strcmp(c, "stream") == 0)
        case_stream();
    else
        CHECK(false, "unknown case %s", c);
    return 0;
}
