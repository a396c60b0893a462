/* The spatial compute mode (VGPU_SM_MODE=spatial) on the simulated GPU, one
 * case per behaviour (argv[1]), a device of 132 SMs in groups of 8 and a
 * compute limit of 25 %: 33 SMs, rounded up to 40.
 *   share:    full-GPU kernels run at 40/132 of the device's speed (within
 *             3 points, in simulated GPU time), and draw nothing on the
 *             GPU-time budget (no charge, no event call);
 *   retain:   the runtime's path (cuDevicePrimaryCtxRetain, directly or
 *             through cuGetProcAddress) gets a green context of 40 SMs, the
 *             same one at every retain, gone after the last release; a
 *             device without a limit gets its primary context;
 *   memory:   the region charges one context, as the driver holds one;
 *   fallback: cuGreenCtxCreate fails: one line, and the time cap holds;
 *   bogus:    VGPU_SM_MODE=bogus: one line, and the time cap holds. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>

#include "compute_util.h"

#define WINDOW 2.0
#define CAP 25
#define SPATIAL_SHARE (100.0 * 40 / 132)

static void limit_env(const char *mode)
{
    setenv("VGPU_SM_MODE", mode, 1);
    setenv("CUDA_DEVICE_SM_LIMIT", "25", 1);
    setenv("GPU_CORE_UTILIZATION_POLICY", "force", 1);
}

/* stderr into a file (this process's and its children's log lines). */
static const char *log_path(void)
{
    static char path[512];
    snprintf(path, sizeof path, "%s.log", getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE"));
    return path;
}

static int stderr_to_log(void)
{
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    int fd = open(log_path(), O_CREAT | O_TRUNC | O_WRONLY, 0600);
    CHECK(saved >= 0 && fd >= 0, "log file");
    dup2(fd, STDERR_FILENO);
    close(fd);
    return saved;
}

static void stderr_back(int saved)
{
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
}

/* Lines of the log holding `text`; each printed. */
static int log_lines(const char *text)
{
    FILE *f = fopen(log_path(), "r");
    CHECK(f != NULL, "log readable");
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, text)) {
            printf("log: %s", line);
            n++;
        }
    fclose(f);
    return n;
}

static unsigned sms_of(CUcontext ctx)
{
    CUdevResource r;
    CU_OK(cuCtxGetDevResource(ctx, &r, CU_DEV_RESOURCE_TYPE_SM));
    return r.sm.smCount;
}

static void case_share(void)
{
    limit_env("spatial");
    struct tenant t = TENANT(0, CAP, "force", WORK_ASYNC, 500);
    struct run *run = run_tenants(&t, 1, WINDOW);
    double s = share(run, 1, 0);
    uint64_t charged, waited;
    budget_stats(0, &charged, &waited);
    printf("spatial, limit %d %%: share %.1f %% (40 of 132 SMs: %.1f %%), "
           "charged %llu ns, %llu event calls\n", CAP, s, SPATIAL_SHARE,
           (unsigned long long)charged,
           (unsigned long long)run->t[0].event_calls);
    CHECK(s >= SPATIAL_SHARE - 3 && s <= SPATIAL_SHARE + 3,
          "share %.1f within 3 points of %.1f", s, SPATIAL_SHARE);
    CHECK(charged == 0 && waited == 0 && run->t[0].event_calls == 0,
          "the partition is the cap: no budget, no measurement");
    printf("share: ok\n");
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
    CHECK(log_lines("runs on 40 of 132 SMs") == 1, "one line says so");
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
    CU_OK(cuDevicePrimaryCtxReset_v2(0)); /* destroys it before the reset */
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
    else
        CHECK(false, "unknown case %s", c);
    return 0;
}
