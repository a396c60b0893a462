/* The compute limit (CUDA_DEVICE_SM_LIMIT) on the simulated GPU, one case
 * per behaviour (argv[1]); shares are measured in simulated GPU time
 * (tests/fakegpu/exec.c) over a short window, and must be within 3 points
 * of the cap. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>

#include "compute_util.h"

#define WINDOW 2.0

/* Launches are measured on a sample only (src/hook/gputime.c): over many
 * launches, at most one in four records events (a measured launch records
 * two), beside a constant for a key's first launches and aged estimates. */
static void expect_sampled(const struct tenant *t)
{
    printf("%llu launches, %llu event records, %llu event calls\n",
           (unsigned long long)t->launches, (unsigned long long)t->records,
           (unsigned long long)t->event_calls);
    if (t->launches < 1000) { /* a loaded host: too few to tell */
        printf("too few launches to check sampling\n");
        return;
    }
    CHECK(t->records <= t->launches / 4 + 256, "sampled: %llu event records "
          "for %llu launches", (unsigned long long)t->records,
          (unsigned long long)t->launches);
}

static void one(const char *name, int cap, enum work work, uint32_t us,
                bool many)
{
    struct tenant t = TENANT(0, cap, "force", work, us);
    struct run *run = run_tenants(&t, 1, WINDOW);
    expect_share(run, 1, 0, cap);
    if (many)
        expect_sampled(&run->t[0]);
    printf("%s: ok\n", name);
}

static void case_containers(int n, const int *caps)
{
    struct tenant t[MAX_TENANTS];
    for (int i = 0; i < n; i++)
        t[i] = TENANT(i, caps[i], "force", WORK_ASYNC, 200);
    struct run *run = run_tenants(t, n, WINDOW);
    for (int i = 0; i < n; i++)
        expect_share(run, n, i, caps[i]);
}

/* Three processes of one container draw on one budget: together at the
 * cap, whatever each one gets. */
static void case_processes(void)
{
    struct tenant t[3];
    for (int i = 0; i < 3; i++)
        t[i] = TENANT(0, 40, "force", i == 1 ? WORK_SYNC_EACH : WORK_ASYNC, 300);
    struct run *run = run_tenants(t, 3, WINDOW);
    expect_share(run, 3, 0, 40);
}

/* Whether launches were limited under a policy, with the region's
 * utilization_switch set to `on` by the "monitor" before they start. */
static bool limited_under(const char *policy, int on, double *s)
{
    struct tenant t = TENANT(0, 30, policy, WORK_ASYNC, 200);
    /* The region exists before the tenant starts: created here, as a first
     * process of the container would, then the monitor's switch written. */
    unlink(container_path(0));
    /* In a child: a process with a limit starts the region's watcher
     * thread, and this one must stay single-threaded for the tenant it
     * forks next (ThreadSanitizer cannot start threads after a fork of a
     * multi-threaded process). */
    if (fork() == 0) {
        struct vgpu_attach_options o;
        vgpu_attach_options_from_env(&o);
        o.path = container_path(0);
        o.sm_limits[0] = 30;
        struct vgpu_region *r = vgpu_region_attach(&o);
        vgpu_region_detach(r);
        _exit(r == NULL);
    }
    CHECK(wait_children(1) == 0, "region created");
    int fd = open(container_path(0), O_RDWR);
    int32_t v = on;
    CHECK(pwrite(fd, &v, 4, OFF_UTIL_SWITCH) == 4, "switch written");
    close(fd);
    struct run *run = mmap(NULL, sizeof *run, PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    run->t[0] = t;
    run->window = 1.0;
    run->start = now_seconds() + 3600;
    if (fork() == 0)
        tenant_main(run, 0);
    while (__atomic_load_n(&run->ready, __ATOMIC_SEQ_CST) < 1)
        usleep(1000);
    run->start = now_seconds() + 0.05;
    CHECK(wait_children(1) == 0, "tenant failed");
    *s = share(run, 1, 0);
    uint64_t charged, waited;
    budget_stats(0, &charged, &waited);
    printf("policy %s, switch %d: share %.1f %%, charged %llu ns, held %llu ns\n",
           policy ? policy : "(unset)", on, *s, (unsigned long long)charged,
           (unsigned long long)waited);
    return charged > 0;
}

static void case_policy(void)
{
    double s;
    CHECK(limited_under(NULL, 1, &s), "unset policy: limited while the switch is 1");
    CHECK(s <= 30 + 3, "share %.1f within the cap", s);
    CHECK(!limited_under(NULL, 0, &s), "unset policy: not limited, switch 0");
    CHECK(!limited_under("default", 0, &s), "default: not limited, switch 0");
    CHECK(limited_under("force", 0, &s), "force: limited whatever the switch");
    CHECK(s <= 30 + 3, "force: share %.1f within the cap", s);
    CHECK(!limited_under("disable", 1, &s), "disable: never limited");
    CHECK(!limited_under("DISABLE", 1, &s), "values in any case, as HAMi-core");
    printf("policy: ok\n");
}

/* No CUDA_DEVICE_SM_LIMIT: nothing measured, nothing held. */
static void case_nolimit(void)
{
    struct tenant t = TENANT(0, 0, "force", WORK_ASYNC, 200);
    struct run *run = run_tenants(&t, 1, 0.5);
    uint64_t charged, waited;
    budget_stats(0, &charged, &waited);
    CHECK(run->t[0].gpu_ns > 0, "kernels ran");
    CHECK(charged == 0 && waited == 0, "no limit: charged %llu, held %llu",
          (unsigned long long)charged, (unsigned long long)waited);
    CHECK(run->t[0].event_calls == 0, "no limit: %llu event calls for %llu "
          "launches", (unsigned long long)run->t[0].event_calls,
          (unsigned long long)run->t[0].launches);
    printf("nolimit: ok (share %.1f %%)\n", share(run, 1, 0));
}

/* HAMi's monitor holds launches with recent_kernel = -1 and releases them
 * with 0; a launch that runs sets it to 2 and stamps last_kernel_time. */
struct held { volatile int launched; CUcontext ctx; };

static void *launcher(void *arg)
{
    struct held *h = arg;
    CU_OK(cuCtxSetCurrent(h->ctx));
    uint32_t us = 10;
    void *params[] = {&us};
    CU_OK(cuLaunchKernel((CUfunction)1, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
    __atomic_store_n(&h->launched, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void case_recent_kernel(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s", container_path(0));
    setenv("CUDA_DEVICE_MEMORY_SHARED_CACHE", path, 1);
    unlink(path);
    CUcontext ctx = fakegpu_context(0); /* attaches the region */
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0, "region open");
    int32_t v = -1;
    CHECK(pwrite(fd, &v, 4, OFF_RECENT_KERNEL) == 4, "hold written");
    struct held h = {0, ctx};
    pthread_t th;
    pthread_create(&th, NULL, launcher, &h);
    usleep(300000);
    CHECK(!__atomic_load_n(&h.launched, __ATOMIC_SEQ_CST),
          "recent_kernel -1 holds the launch");
    CHECK(fakegpu_launched_ns(0) == 0, "nothing reached the device");
    v = 0;
    CHECK(pwrite(fd, &v, 4, OFF_RECENT_KERNEL) == 4, "release written");
    pthread_join(th, NULL);
    CHECK(fakegpu_launched_ns(0) > 0, "the launch ran once released");
    int32_t rk = 0;
    int64_t when = 0;
    CHECK(pread(fd, &rk, 4, OFF_RECENT_KERNEL) == 4 && rk == 2,
          "recent_kernel set to 2 by the launch (%d)", rk);
    CHECK(pread(fd, &when, 8, OFF_LAST_KERNEL_TIME) == 8 &&
          when >= (int64_t)time(NULL) - 5 && when <= (int64_t)time(NULL),
          "last_kernel_time is now (%lld)", (long long)when);
    close(fd);
    printf("recent_kernel: ok\n");
}

/* Every launch function, found every way a program finds it, is limited:
 * two 1 ms launches through it add at least the first one's measured time
 * to the container's budget. */
typedef CUresult (*launch_fn)(CUfunction, unsigned, unsigned, unsigned,
                              unsigned, unsigned, unsigned, unsigned, CUstream,
                              void **, void **);
typedef CUresult (*launch_ex_fn)(const CUlaunchConfig *, CUfunction, void **,
                                 void **);
typedef CUresult (*coop_fn)(CUfunction, unsigned, unsigned, unsigned, unsigned,
                            unsigned, unsigned, unsigned, CUstream, void **);
typedef CUresult (*graph_fn)(CUgraphExec, CUstream);
typedef CUresult (*getproc_fn)(const char *, void **, int, cuuint64_t,
                               CUdriverProcAddressQueryResult *);

enum kind { KERNEL, KERNEL_EX, COOPERATIVE, GRAPH };

static void launch_via(enum kind k, void *fn, CUgraphExec graph)
{
    uint32_t us = 1000;
    void *params[] = {&us};
    CUlaunchConfig cfg = {.gridDimX = 1, .gridDimY = 1, .gridDimZ = 1,
                          .blockDimX = 1, .blockDimY = 1, .blockDimZ = 1};
    CUfunction f = (CUfunction)1;
    switch (k) {
    case KERNEL: CU_OK(((launch_fn)fn)(f, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL)); break;
    case KERNEL_EX: CU_OK(((launch_ex_fn)fn)(&cfg, f, params, NULL)); break;
    case COOPERATIVE: CU_OK(((coop_fn)fn)(f, 1, 1, 1, 1, 1, 1, 0, NULL, params)); break;
    case GRAPH: CU_OK(((graph_fn)fn)(graph, NULL)); break;
    }
    CU_OK(cuCtxSynchronize());
}

static void case_paths(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s", container_path(0));
    setenv("CUDA_DEVICE_MEMORY_SHARED_CACHE", path, 1);
    setenv("CUDA_DEVICE_SM_LIMIT", "90", 1);
    setenv("GPU_CORE_UTILIZATION_POLICY", "force", 1);
    unlink(path);
    fakegpu_context(0);
    CUgraphExec graph = graph_of(1, 1000);
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    getproc_fn getproc = (getproc_fn)dlsym(cuda, "cuGetProcAddress_v2");
    const struct { const char *name; enum kind kind; void *direct; bool pt; } fns[] = {
        {"cuLaunchKernel", KERNEL, (void *)cuLaunchKernel, false},
        {"cuLaunchKernel_ptsz", KERNEL, (void *)cuLaunchKernel_ptsz, true},
        {"cuLaunchKernelEx", KERNEL_EX, (void *)cuLaunchKernelEx, false},
        {"cuLaunchKernelEx_ptsz", KERNEL_EX, (void *)cuLaunchKernelEx_ptsz, true},
        {"cuLaunchCooperativeKernel", COOPERATIVE, (void *)cuLaunchCooperativeKernel, false},
        {"cuLaunchCooperativeKernel_ptsz", COOPERATIVE,
         (void *)cuLaunchCooperativeKernel_ptsz, true},
        {"cuGraphLaunch", GRAPH, (void *)cuGraphLaunch, false},
        {"cuGraphLaunch_ptsz", GRAPH, (void *)cuGraphLaunch_ptsz, true},
    };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        char base[64];
        snprintf(base, sizeof base, "%s", fns[i].name);
        char *suffix = strstr(base, "_ptsz");
        if (suffix)
            *suffix = '\0';
        void *by_getproc = NULL;
        CU_OK(getproc(base, &by_getproc, 13000,
                      fns[i].pt ? CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM
                                : CU_GET_PROC_ADDRESS_DEFAULT, NULL));
        void *ways[] = {fns[i].direct, dlsym(cuda, fns[i].name), by_getproc};
        const char *how[] = {"direct", "dlsym", "cuGetProcAddress"};
        for (int w = 0; w < 3; w++) {
            CHECK(ways[w] != NULL, "%s found by %s", fns[i].name, how[w]);
            uint64_t before, after, held;
            budget_stats(0, &before, &held);
            launch_via(fns[i].kind, ways[w], graph);
            launch_via(fns[i].kind, ways[w], graph);
            budget_stats(0, &after, &held);
            CHECK(after - before >= 900000, "%s by %s: %llu ns charged",
                  fns[i].name, how[w], (unsigned long long)(after - before));
        }
    }
    CU_OK(cuGraphExecDestroy(graph));
    printf("paths: ok\n");
}

/* Launches into a capturing stream run nothing: not held, not charged; the
 * captured graph is charged when it is launched. */
static void case_capture(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s", container_path(0));
    setenv("CUDA_DEVICE_MEMORY_SHARED_CACHE", path, 1);
    setenv("CUDA_DEVICE_SM_LIMIT", "10", 1);
    unlink(path);
    fakegpu_context(0);
    CUstream s;
    CU_OK(cuStreamCreate(&s, 0));
    /* Into debt first: 100 ms at 10 % would hold the next launch 1 s. */
    uint32_t us = 100000, tiny = 1;
    void *params[] = {&us}, *tiny_params[] = {&tiny};
    CU_OK(cuLaunchKernel((CUfunction)1, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
    CU_OK(cuStreamSynchronize(s));
    CU_OK(cuLaunchKernel((CUfunction)1, 1, 1, 1, 1, 1, 1, 0, s, tiny_params, NULL));
    CU_OK(cuStreamSynchronize(s));
    uint64_t charged0, held0, ran0 = fakegpu_launched_ns(0);
    budget_stats(0, &charged0, &held0);
    CHECK(charged0 >= 100000000, "in debt (%llu)", (unsigned long long)charged0);
    CU_OK(cuStreamBeginCapture_v2(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
    us = 1000;
    for (int i = 0; i < 50; i++)
        CU_OK(cuLaunchKernel((CUfunction)1, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
    CUgraph g;
    CU_OK(cuStreamEndCapture(s, &g));
    uint64_t charged, held;
    budget_stats(0, &charged, &held);
    CHECK(charged == charged0 && held == held0 && fakegpu_launched_ns(0) == ran0,
          "capturing: nothing ran, charged %llu more, held %llu ns more",
          (unsigned long long)(charged - charged0),
          (unsigned long long)(held - held0));
    CUgraphExec exec;
    CU_OK(cuGraphInstantiateWithFlags(&exec, g, 0));
    CU_OK(cuGraphLaunch(exec, s));
    CU_OK(cuStreamSynchronize(s));
    CU_OK(cuGraphLaunch(exec, s)); /* reaps the first: charges its 50 ms */
    budget_stats(0, &charged, &held);
    CHECK(charged >= charged0 + 50000000, "the captured graph's launch is "
          "charged (%llu)", (unsigned long long)(charged - charged0));
    CU_OK(cuGraphExecDestroy(exec));
    CU_OK(cuGraphDestroy(g));
    CU_OK(cuStreamDestroy_v2(s));
    printf("capture: ok\n");
}

/* A kernel's first launch loads it on the host (CUDA's lazy loading, 50 ms
 * here: FAKEGPU_LOAD_US), while the GPU has already passed the start event
 * of that measured launch: the load is not GPU time, and must not be
 * charged (on an H100 it held a 90 % container 6.9 ms). */
static void case_lazyload(void)
{
    setenv("CUDA_DEVICE_MEMORY_SHARED_CACHE", container_path(0), 1);
    unlink(container_path(0));
    setenv("CUDA_DEVICE_SM_LIMIT", "50", 1);
    setenv("FAKEGPU_LOAD_US", "50000", 1);
    fakegpu_context(0);
    CUstream s;
    CU_OK(cuStreamCreate(&s, 0));
    uint32_t us = 100;
    void *params[] = {&us};
    for (int i = 0; i < 3; i++) { /* each reaps the one before */
        CU_OK(cuLaunchKernel((CUfunction)7, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
        CU_OK(cuStreamSynchronize(s));
    }
    CU_OK(cuCtxSynchronize());
    uint64_t charged, held;
    budget_stats(0, &charged, &held);
    printf("3 launches of 100 us, the first loading 50 ms: %llu us charged, "
           "held %llu us\n", (unsigned long long)(charged / 1000),
           (unsigned long long)(held / 1000));
    CHECK(charged < 10000000, "the load was charged: %llu ns",
          (unsigned long long)charged);
    CHECK(charged >= 100000, "the launches were charged: %llu ns",
          (unsigned long long)charged);
    CU_OK(cuStreamDestroy_v2(s));
    printf("lazyload: ok\n");
}

/* This process alone in a fresh container region, capped at pct % always,
 * its log lines in log_path() from its first CUDA call (*saved: stderr, for
 * stderr_back). Returns a stream to launch on. */
static CUstream alone_under(const char *pct, int *saved)
{
    setenv("CUDA_DEVICE_MEMORY_SHARED_CACHE", container_path(0), 1);
    unlink(container_path(0));
    setenv("CUDA_DEVICE_SM_LIMIT", pct, 1);
    setenv("GPU_CORE_UTILIZATION_POLICY", "force", 1);
    *saved = stderr_to_log();
    fakegpu_context(0);
    CUstream s;
    CU_OK(cuStreamCreate(&s, 0));
    return s;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* VGPU_SM_RESUME_MS: after a hold, launches resume once the budget holds
 * that much GPU time. A 30 % container of 1 ms kernels, synchronized each:
 * with the default (8 ms) its holds are about 30 ms; with 60 ms, over 200
 * ms (the median hold is checked, so a late wake-up on a loaded host does
 * not decide). Either way the cap holds, and a value that does not parse
 * is one line and the default. */
static void case_resume(const char *value, bool long_holds)
{
    setenv("VGPU_SM_RESUME_MS", value, 1);
    int saved;
    CUstream s = alone_under("30", &saved);
    uint32_t us = 1000;
    void *params[] = {&us};
    double holds[4096];
    int n = 0;
    double began = now_seconds();
    while (now_seconds() - began < 1.5 && n < 4096) {
        double t0 = now_seconds();
        CU_OK(cuLaunchKernel((CUfunction)7, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
        double t = now_seconds() - t0;
        if (t > 0.0005) /* held */
            holds[n++] = t;
        CU_OK(cuStreamSynchronize(s));
    }
    CU_OK(cuCtxSynchronize());
    double elapsed = now_seconds() - began;
    stderr_back(saved);
    uint64_t charged, held;
    budget_stats(0, &charged, &held);
    qsort(holds, (size_t)n, sizeof holds[0], by_value);
    double median = n ? holds[n / 2] : 0;
    printf("VGPU_SM_RESUME_MS=%s: %d holds, median %.1f ms; charged %.1f ms "
           "in %.0f ms\n", value, n, median * 1e3, (double)charged / 1e6,
           elapsed * 1e3);
    CHECK(n >= 2, "held at all: %d holds", n);
    CHECK((double)charged <= 0.30 * elapsed * 1e9 + 3e6, /* one kernel past */
          "the cap holds: %.1f ms charged in %.0f ms", (double)charged / 1e6,
          elapsed * 1e3);
    if (long_holds)
        CHECK(median >= 0.150, "held for the level: median %.1f ms",
              median * 1e3);
    else
        CHECK(median < 0.100, "the default level: median %.1f ms",
              median * 1e3);
    int warned = log_lines("VGPU_SM_RESUME_MS=");
    CHECK(warned == (strcmp(value, "bogus") == 0), "%d lines about the value",
          warned);
    CU_OK(cuStreamDestroy_v2(s));
    printf("resume %s: ok\n", value);
}

/* The end of a run under alone_under: its launches done, stderr back, its
 * log (LIBCUDA_LOG_LEVEL=3: a line per measurement) open to read. */
static FILE *trace_of(CUstream s, int saved)
{
    CU_OK(cuStreamDestroy_v2(s));
    CU_OK(cuCtxSynchronize());
    stderr_back(saved);
    FILE *f = fopen(log_path(), "r");
    CHECK(f != NULL, "log readable");
    return f;
}

/* LIBCUDA_LOG_LEVEL=3 (set by ctest for this case: the level is read when
 * the library loads) prints each measurement and its estimate: the lines
 * come, and a 100 us kernel is measured as at least that. */
static void case_trace(void)
{
    int saved;
    CUstream s = alone_under("50", &saved);
    uint32_t us = 100;
    void *params[] = {&us};
    for (int i = 0; i < 20; i++) {
        CU_OK(cuLaunchKernel((CUfunction)7, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
        CU_OK(cuStreamSynchronize(s));
    }
    FILE *f = trace_of(s, saved);
    char line[1024];
    int n = 0;
    long long least = -1;
    while (fgets(line, sizeof line, f)) {
        const char *m = strstr(line, " measured ");
        long long ns;
        if (m == NULL || sscanf(m, " measured %lld ns", &ns) != 1)
            continue;
        if (n++ == 0)
            printf("log: %s", line);
        least = least < 0 || ns < least ? ns : least;
    }
    fclose(f);
    CHECK(n >= 1, "measurements in the log: %d", n);
    CHECK(least >= 90000, "a 100 us kernel measured %lld ns", least);
    printf("trace: %d measurements, the shortest %lld ns: ok\n", n, least);
}

/* The gaps between measured launches vary (src/hook/gputime.c draws each
 * in [EVERY / 2, EVERY * 3 / 2), EVERY 128): fixed ones can fall in step
 * with a neighbour's cycle. Read from the trace (LIBCUDA_LOG_LEVEL=3, as
 * case_trace): each measurement says how many launches before it were
 * charged the estimate. Fewer than half may be the fixed gap's 127, none
 * over 191. (A gap cut short by the measurement's age limit is shorter:
 * a loaded host makes more of them, never one longer.) */
static void case_sampling(void)
{
    int saved;
    CUstream s = alone_under("90", &saved);
    uint32_t us = 2;
    void *params[] = {&us};
    for (int i = 0; i < 4000; i++) {
        CU_OK(cuLaunchKernel((CUfunction)7, 2, 1, 1, 1, 1, 1, 0, s, params, NULL));
        if (i % 100 == 99)
            CU_OK(cuStreamSynchronize(s));
    }
    FILE *f = trace_of(s, saved);
    char line[1024];
    int n = 0, fixed = 0, most = 0;
    unsigned first = 0;
    bool varied = false;
    while (fgets(line, sizeof line, f)) {
        const char *m = strstr(line, " estimate ");
        unsigned before;
        if (m == NULL || sscanf(m, " estimate %*d ns, %u before it", &before) != 1 ||
            before == 0) /* a key's first launches */
            continue;
        if (n++ == 0)
            first = before;
        varied |= before != first;
        fixed += before == 127;
        most = (int)before > most ? (int)before : most;
    }
    fclose(f);
    printf("sampling: %d gaps, %d of them 127, the longest %d\n", n, fixed, most);
    CHECK(n >= 10, "measurements in the log: %d", n);
    CHECK(varied && 2 * fixed < n, "gaps vary: %d of %d are 127", fixed, n);
    CHECK(most <= 191, "the longest gap %d launches", most);
    printf("sampling: ok\n");
}

/* Charges kept back by a thread (src/hook/gputime.c batches them) reach
 * the budget when it exits, and when a process calls exit(): threads and
 * a process that each launch less than a batch, then end, leave the
 * container charged with what they ran (within 5 %: event times are
 * floats). */
static void *few_launches(void *arg)
{
    CU_OK(cuCtxSetCurrent((CUcontext)arg));
    uint32_t us = 20;
    void *params[] = {&us};
    for (int i = 0; i < 3; i++)
        CU_OK(cuLaunchKernel((CUfunction)1, 1, 1, 1, 1, 1, 1, 0, NULL, params,
                             NULL));
    CU_OK(cuCtxSynchronize());
    return NULL;
}

static void case_exits(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s", container_path(0));
    setenv("CUDA_DEVICE_MEMORY_SHARED_CACHE", path, 1);
    setenv("CUDA_DEVICE_SM_LIMIT", "90", 1);
    setenv("GPU_CORE_UTILIZATION_POLICY", "force", 1);
    unlink(path);
    pid_t pid = fork();
    if (pid == 0) { /* a process that launches, then calls exit() */
        few_launches(fakegpu_context(0));
        exit(0);
    }
    CHECK(wait_children(1) == 0, "the process launched");
    uint64_t charged, held;
    budget_stats(0, &charged, &held);
    printf("a process's 60 us: %llu ns charged at its exit\n",
           (unsigned long long)charged);
    CHECK(charged >= 57000, "exit() charges what was kept back (%llu ns)",
          (unsigned long long)charged);
    CUcontext ctx = fakegpu_context(0);
    pthread_t th[8];
    for (int i = 0; i < 8; i++)
        pthread_create(&th[i], NULL, few_launches, ctx);
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    uint64_t after;
    budget_stats(0, &after, &held);
    printf("8 threads' 480 us: %llu ns charged at their exits\n",
           (unsigned long long)(after - charged));
    CHECK(after - charged >= 8 * 57000, "thread exits charge what was kept "
          "back (%llu ns)", (unsigned long long)(after - charged));
    printf("exits: ok\n");
}

/* Fail closed: the region file cannot be used (a directory stands at its
 * path). With a memory limit too, the process counts in a region of its
 * own; with only the compute limit, in a budget of its own: either way its
 * launches stay under the cap. */
static void case_failclosed(void)
{
    for (int with_memory = 0; with_memory < 2; with_memory++) {
        if (with_memory)
            setenv("CUDA_DEVICE_MEMORY_LIMIT", "4g", 1);
        rmdir(container_path(0));
        unlink(container_path(0));
        CHECK(mkdir(container_path(0), 0700) == 0, "a directory at the path");
        struct tenant t = TENANT(0, 30, "force", WORK_ASYNC, 200);
        struct run *run = run_tenants(&t, 1, 1.0);
        double s = share(run, 1, 0);
        printf("unusable region, %s: share %.1f %% (cap 30 %%)\n",
               with_memory ? "memory limit too (local region)"
                           : "compute limit only (own budget)", s);
        CHECK(s <= 30 + 3, "limited without the region: share %.1f", s);
        rmdir(container_path(0));
    }
    printf("failclosed: ok\n");
}

/* The deprecated launch entry points the driver still exports: a grid
 * launch is held to the cap like any other (before: not hooked, 100 % of
 * the GPU under a 10 % cap), and the multi-device cooperative launch is
 * refused while a cap is set. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static void case_legacy(void)
{
    int saved;
    CUstream s = alone_under("10", &saved);
    setenv("FAKEGPU_KERNEL_US", "500", 1);
    double began = now_seconds();
    while (now_seconds() - began < 1.5)
        CU_OK(cuLaunchGridAsync((CUfunction)1, 1, 1, s));
    CU_OK(cuCtxSynchronize());
    double end = (double)fakegpu_work_end_ns() / 1e9;
    double share = 100.0 * (double)fakegpu_launched_ns(0) / 1e9 / (end - began);
    uint32_t us = 500;
    void *params[] = {&us};
    CUDA_LAUNCH_PARAMS lp = {.function = (CUfunction)1, .gridDimX = 1, .gridDimY = 1,
                             .gridDimZ = 1, .blockDimX = 1, .blockDimY = 1,
                             .blockDimZ = 1, .hStream = s, .kernelParams = params};
    CUresult multi = cuLaunchCooperativeKernelMultiDevice(&lp, 1, 0);
    stderr_back(saved);
    unsetenv("FAKEGPU_KERNEL_US");
    printf("cuLaunchGridAsync under a 10 %% cap: %.1f %% of the GPU; "
           "cuLaunchCooperativeKernelMultiDevice: %d\n", share, (int)multi);
    CHECK(share <= 13.0, "the cap holds for cuLaunchGridAsync: %.1f %%", share);
    CHECK(multi == CUDA_ERROR_NOT_SUPPORTED, "multi-device launch refused: %d",
          (int)multi);
    CHECK(log_lines("cuLaunchCooperativeKernelMultiDevice refused") == 1, "one line");
    CU_OK(cuStreamDestroy_v2(s));
    printf("legacy: ok\n");
}
#pragma GCC diagnostic pop

/* A kernel launched on an explicit stream runs in the stream's context,
 * whatever is current: with device 1's context current, or none, launches
 * on a stream of device 0 are held to device 0's cap (before: 100 % of
 * device 0 under a 10 % cap, charged nothing). Device 1 has no cap. */
static CUstream of_device0;
static double began_other;

static void *launch_on_device0(void *current)
{
    if (current != NULL)
        CU_OK(cuCtxSetCurrent(current));
    uint32_t us = 200;
    void *params[] = {&us};
    began_other = now_seconds();
    while (now_seconds() - began_other < 1.5)
        CU_OK(cuLaunchKernel((CUfunction)1, 1, 1, 1, 1, 1, 1, 0, of_device0, params,
                             NULL));
    CU_OK(cuStreamSynchronize(of_device0));
    return NULL;
}

static void case_other_context(bool none_current)
{
    int saved;
    setenv("CUDA_DEVICE_SM_LIMIT_1", "100", 1);
    of_device0 = alone_under("10", &saved); /* device 0's context current */
    CUcontext device1 = fakegpu_context(1);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, launch_on_device0,
                         none_current ? NULL : device1) == 0, "thread");
    pthread_join(t, NULL);
    stderr_back(saved);
    double end = (double)fakegpu_work_end_ns() / 1e9;
    double share = 100.0 * (double)fakegpu_launched_ns(0) / 1e9 / (end - began_other);
    printf("%s, a stream of device 0, 10 %% cap: %.1f %% of device 0\n",
           none_current ? "no current context" : "device 1 current", share);
    CHECK(share <= 13.0, "device 0's cap holds: %.1f %%", share);
    printf("%s: ok\n", none_current ? "nocontext" : "otherdev");
}

/* A region whose sm_limit holds no percentage (250: damage) is not read
 * as "no limit" by a process whose own cap is 30 % (before: 100 %). */
static void case_damaged_limit(void)
{
    int saved;
    CUstream s = alone_under("30", &saved);
    uint32_t us = 200;
    void *params[] = {&us};
    CU_OK(cuLaunchKernel((CUfunction)1, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
    int fd = open(container_path(0), O_RDWR);
    CHECK(fd >= 0, "region file");
    uint64_t bad = 250;
    CHECK(pwrite(fd, &bad, sizeof bad, OFF_SM_LIMIT) == (ssize_t)sizeof bad, "write");
    close(fd);
    usleep(20000); /* the gate reads the region again within 10 ms */
    double began = now_seconds();
    uint64_t ns0 = fakegpu_launched_ns(0);
    while (now_seconds() - began < 1.5)
        CU_OK(cuLaunchKernel((CUfunction)1, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
    CU_OK(cuCtxSynchronize());
    stderr_back(saved);
    double end = (double)fakegpu_work_end_ns() / 1e9;
    double share = 100.0 * (double)(fakegpu_launched_ns(0) - ns0) / 1e9 / (end - began);
    printf("sm_limit damaged (250), own cap 30 %%: %.1f %% of the GPU\n", share);
    CHECK(share <= 33.0, "the process's own cap holds: %.1f %%", share);
    CHECK(log_lines("is not a percentage") == 1, "one line");
    CU_OK(cuStreamDestroy_v2(s));
    printf("damaged_limit: ok\n");
}

int main(int argc, char **argv)
{
    const char *c0 = argc > 1 ? argv[1] : "";
    hook_fresh(strcmp(c0, "otherdev") == 0 || strcmp(c0, "nocontext") == 0 ? 2 : 1,
               "8g", NULL);
    const char *c = argc > 1 ? argv[1] : "paths";
    if (strcmp(c, "long") == 0)
        one("long kernels, synchronized after each", 30, WORK_SYNC_EACH, 2000,
            false);
    else if (strcmp(c, "short") == 0)
        one("short kernels, asynchronous", 30, WORK_ASYNC, 25, true);
    else if (strcmp(c, "tiny") == 0)
        one("5 us kernels, asynchronous", 30, WORK_ASYNC, 5, true);
    else if (strcmp(c, "change") == 0)
        one("kernels twice as long from mid-run", 30, WORK_CHANGE, 50, true);
    else if (strcmp(c, "graph") == 0)
        one("graph replay", 40, WORK_GRAPH, 50, true);
    else if (strcmp(c, "two") == 0)
        case_containers(2, (const int[]){30, 50});
    else if (strcmp(c, "three") == 0)
        case_containers(3, (const int[]){20, 30, 40});
    else if (strcmp(c, "processes") == 0)
        case_processes();
    else if (strcmp(c, "policy") == 0)
        case_policy();
    else if (strcmp(c, "nolimit") == 0)
        case_nolimit();
    else if (strcmp(c, "failclosed") == 0)
        case_failclosed();
    else if (strcmp(c, "exits") == 0)
        case_exits();
    else if (strcmp(c, "lazyload") == 0)
        case_lazyload();
    else if (strcmp(c, "resume") == 0)
        case_resume("60", true);
    else if (strcmp(c, "resume_bogus") == 0)
        case_resume("bogus", false);
    else if (strcmp(c, "trace") == 0)
        case_trace();
    else if (strcmp(c, "sampling") == 0)
        case_sampling();
    else if (strcmp(c, "capture") == 0)
        case_capture();
    else if (strcmp(c, "paths") == 0)
        case_paths();
    else if (strcmp(c, "recent_kernel") == 0)
        case_recent_kernel();
    else if (strcmp(c, "legacy") == 0)
        case_legacy();
    else if (strcmp(c, "otherdev") == 0)
        case_other_context(false);
    else if (strcmp(c, "nocontext") == 0)
        case_other_context(true);
    else if (strcmp(c, "damaged_limit") == 0)
        case_damaged_limit();
    else
        CHECK(false, "unknown case %s", c);
    return 0;
}
