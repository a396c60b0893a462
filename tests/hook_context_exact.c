/* Contexts are reserved before the driver creates them, so the memory the
 * simulated driver holds (its ledger's peak) never passes the limit:
 * cuCtxCreate (every version) and green contexts past the limit are refused
 * without being created, eight processes starting together cannot all get
 * a context, and the context size measured after a reset with VMM memory
 * alive is the context's alone. Contexts take 256 MiB here. */
#include <limits.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "hook_util.h"

#define CTX (256 * MiB)

static void fresh(const char *limit)
{
    hook_fresh(1, "8g", limit);
    char n[32];
    snprintf(n, sizeof n, "%llu", (unsigned long long)CTX);
    setenv("FAKEGPU_CTX_BYTES", n, 1);
    unsetenv("VGPU_CONTEXT_BYTES"); /* the size is measured, not told */
}

static CUresult create(CUcontext *ctx, int version)
{
    switch (version % 4) {
    case 0: return cuCtxCreate(ctx, 0, 0);
    case 1: return cuCtxCreate_v2(ctx, 0, 0);
    case 2: return cuCtxCreate_v3(ctx, NULL, 0, 0, 0);
    default: return cuCtxCreate_v4(ctx, NULL, 0, 0);
    }
}

static void created_contexts(void)
{
    fresh("1g");
    CU_OK(cuInit(0));
    CUcontext ctx[12];
    int made = 0;
    for (int i = 0; i < 12; i++) {
        CUresult rc = create(&ctx[made], i);
        CHECK(rc == CUDA_SUCCESS || rc == CUDA_ERROR_OUT_OF_MEMORY,
              "cuCtxCreate returned %d", (int)rc);
        made += rc == CUDA_SUCCESS;
    }
    printf("  cuCtxCreate x12: %d made, driver peak %llu MiB, limit 1024\n",
           made, (unsigned long long)(fakegpu_device_peak(0) / MiB));
    CHECK(fakegpu_device_peak(0) <= GiB, "the driver held more than the limit");
    CHECK(made == 4, "four 256 MiB contexts fit in 1 GiB: %d", made);
    CHECK(region_used(0) == 4 * CTX, "each counted: %llu",
          (unsigned long long)region_used(0));
    for (int i = made - 1; i >= 0; i--)
        CU_OK(cuCtxDestroy_v2(ctx[i]));
    CHECK(region_used(0) == 0 && fakegpu_device_used(0) == 0,
          "destroy returns them");
}

static void green_contexts(void)
{
    fresh("1g");
    CU_OK(cuInit(0));
    CUgreenCtx g[12];
    int made = 0;
    for (int i = 0; i < 12; i++) {
        CUresult rc = cuGreenCtxCreate(&g[made], NULL, 0, CU_GREEN_CTX_DEFAULT_STREAM);
        CHECK(rc == CUDA_SUCCESS || rc == CUDA_ERROR_OUT_OF_MEMORY,
              "cuGreenCtxCreate returned %d", (int)rc);
        made += rc == CUDA_SUCCESS;
    }
    printf("  cuGreenCtxCreate x12: %d made, driver peak %llu MiB\n", made,
           (unsigned long long)(fakegpu_device_peak(0) / MiB));
    CHECK(fakegpu_device_peak(0) <= GiB, "the driver held more than the limit");
    CHECK(made == 4, "four fit: %d", made);
    CUcontext as_ctx;
    CU_OK(cuCtxFromGreenCtx(&as_ctx, g[0]));
    CHECK(region_used(0) == 4 * CTX, "naming one as a CUcontext charges nothing");
    for (int i = 0; i < made; i++)
        CU_OK(cuGreenCtxDestroy(g[i]));
    CHECK(region_used(0) == 0 && fakegpu_device_used(0) == 0,
          "destroy returns them");
}

/* Eight processes wait at a gate, then each retains its primary context and
 * (if chunks) takes 64 MiB chunks until refused, and holds them until all
 * are done. Returns how many got their context. */
static int racing_contexts(uint64_t ctx_bytes, uint64_t limit, bool chunks)
{
    char text[32];
    snprintf(text, sizeof text, "%llu", (unsigned long long)limit);
    fresh(text);
    /* A real context takes ~100 ms; and its size, unknown until the first
     * one is measured, may be more than the guess reserved for it (an
     * H100's 518 MiB was, against a 512 MiB guess: all 8 were refused). */
    setenv("FAKEGPU_CTX_DELAY_MS", "20", 1);
    char n[32];
    snprintf(n, sizeof n, "%llu", (unsigned long long)ctx_bytes);
    setenv("FAKEGPU_CTX_BYTES", n, 1);
    int go[2], hold[2], done[2];
    CHECK(pipe(go) == 0 && pipe(hold) == 0 && pipe(done) == 0, "pipes");
    pid_t kids[8];
    for (int i = 0; i < 8; i++) {
        kids[i] = fork();
        CHECK(kids[i] >= 0, "fork");
        if (kids[i] > 0)
            continue;
        close(go[1]);
        close(hold[1]);
        close(done[0]);
        char c;
        CHECK(read(go[0], &c, 1) == 0, "start together");
        CU_OK(cuInit(0));
        CUcontext ctx;
        bool got = cuDevicePrimaryCtxRetain(&ctx, 0) == CUDA_SUCCESS;
        if (got) {
            CU_OK(cuCtxSetCurrent(ctx));
            CUdeviceptr p;
            while (chunks && cuMemAlloc_v2(&p, 64 * MiB) == CUDA_SUCCESS)
                ;
        }
        close(done[1]); /* this one is done taking */
        CHECK(read(hold[0], &c, 1) == 0, "hold until all are done");
        _exit(got ? 0 : 10);
    }
    close(go[0]);
    close(hold[0]);
    close(done[1]);
    close(go[1]); /* go */
    char c;
    CHECK(read(done[0], &c, 1) == 0, "all done"); /* every writer closed */
    /* Still in hold's read: they keep what they took. */
    uint64_t held = fakegpu_device_used(0), peak = fakegpu_device_peak(0);
    close(hold[1]);
    int contexts = 0;
    for (int i = 0; i < 8; i++) {
        int status;
        CHECK(waitpid(kids[i], &status, 0) == kids[i] && WIFEXITED(status) &&
                  (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 10),
              "child %d", i);
        contexts += WEXITSTATUS(status) == 0;
    }
    printf("  8 racing processes, %llu MiB contexts%s: %d contexts, driver held "
           "%llu MiB, peak %llu MiB, limit %llu\n",
           (unsigned long long)(ctx_bytes / MiB), chunks ? " and chunks" : "",
           contexts, (unsigned long long)(held / MiB),
           (unsigned long long)(peak / MiB), (unsigned long long)(limit / MiB));
    CHECK(peak <= limit, "the driver held more than the limit");
    CHECK(!chunks || held >= limit - 64 * MiB,
          "the limit is used, not wasted: %llu MiB", (unsigned long long)(held / MiB));
    unsetenv("FAKEGPU_CTX_DELAY_MS");
    return contexts;
}

/* The measured size stays the context's own when this process holds VMM
 * memory across a reset (the driver keeps it; NVML counts it). */
static void reset_with_live_vmm(void)
{
    fresh("4g");
    CU_OK(cuInit(0));
    CUcontext ctx;
    setenv("FAKEGPU_FAIL", "nvmlDeviceGetComputeRunningProcesses", 1);
    CU_OK(cuDevicePrimaryCtxRetain(&ctx, 0)); /* not measurable: assumed */
    unsetenv("FAKEGPU_FAIL");
    CU_OK(cuCtxSetCurrent(ctx));
    CUmemAllocationProp prop = {.type = CU_MEM_ALLOCATION_TYPE_PINNED,
                                .location = {CU_MEM_LOCATION_TYPE_DEVICE, 0}};
    CUmemGenericAllocationHandle h;
    CU_OK(cuMemCreate(&h, GiB, &prop, 0));
    CU_OK(cuDevicePrimaryCtxReset_v2(0));
    CHECK(region_used(0) == GiB, "VMM memory outlives the reset: %llu MiB",
          (unsigned long long)(region_used(0) / MiB));
    CU_OK(cuDevicePrimaryCtxRetain(&ctx, 0)); /* measured now */
    uint64_t measured = region_context_bytes(0);
    printf("  reset with 1 GiB of VMM alive: context measured %llu MiB\n",
           (unsigned long long)(measured / MiB));
    CHECK(measured == CTX, "the context's size, unpolluted");
    CHECK(region_used(0) == GiB + CTX, "VMM + context");
    CU_OK(cuMemRelease(h));
    CU_OK(cuDevicePrimaryCtxRelease_v2(0)); /* a reset keeps the retains */
    CU_OK(cuDevicePrimaryCtxRelease_v2(0));
    CHECK(region_used(0) == 0 && fakegpu_device_used(0) == 0, "all returned");
}

/* In a container with its own pid namespace (and /proc) NVML's pids are
 * the host's: the first process finds itself as the pid that appeared
 * across its context's creation. Run under unshare by own_pid_namespace. */
static void other_pid_namespace(void)
{
    CHECK(vgpu_host_pid() == 0, "the host's pid is hidden here");
    fresh("4g");
    setenv("FAKEGPU_NVML_PID_OFFSET", "100000", 1);
    CU_OK(cuInit(0));
    CUcontext ctx;
    CU_OK(cuDevicePrimaryCtxRetain(&ctx, 0));
    uint64_t measured = region_context_bytes(0);
    printf("  own pid namespace: context measured %llu MiB\n",
           (unsigned long long)(measured / MiB));
    CHECK(measured == CTX, "measured through the pid NVML gave this process");
    CHECK(region_used(0) == CTX, "and charged at that size");
    unsetenv("FAKEGPU_NVML_PID_OFFSET");
}

static char self_exe[4096];

static void own_pid_namespace(void)
{
    if (system("unshare --pid --fork --mount-proc true 2>/dev/null") != 0) {
        printf("  own pid namespace: skipped (unshare --pid not permitted here)\n");
        return;
    }
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "unshare --pid --fork --mount-proc %s pidns-inner",
             self_exe);
    CHECK(system(cmd) == 0, "the scenario in its own pid namespace");
}

static void in_child(void (*scenario)(void))
{
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        scenario();
        fflush(stdout);
        _exit(0);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
              WEXITSTATUS(status) == 0, "scenario failed");
}

/* Contexts smaller than the guess reserved for them, and one as large as
 * an H100's (518 MiB), which the guess must cover too. */
static void racing_small_contexts(void) { racing_contexts(CTX, GiB, true); }
static void racing_h100_contexts(void) { racing_contexts(518 * MiB, 4 * GiB, true); }

/* Eight contexts that fit are all created, although the guesses reserved
 * while their size is unknown do not all fit at once. */
static void racing_contexts_that_fit(void)
{
    int made = racing_contexts(CTX, 4 * GiB, false);
    CHECK(made == 8, "all 8 contexts fit in 4 GiB: %d made", made);
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        void (*run)(void);
    } scenarios[] = {{"created", created_contexts}, {"green", green_contexts},
                     {"race", racing_small_contexts}, {"race518", racing_h100_contexts},
                     {"racefit", racing_contexts_that_fit},
                     {"reset", reset_with_live_vmm},
                     {"pidns", own_pid_namespace}};
    CHECK(realpath("/proc/self/exe", self_exe) != NULL, "own path");
    if (argc == 2 && strcmp(argv[1], "pidns-inner") == 0) {
        other_pid_namespace();
        return 0;
    }
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++)
        if (argc < 2 || strcmp(argv[1], scenarios[i].name) == 0)
            in_child(scenarios[i].run);
    printf("hook_context_exact: ok\n");
    return 0;
}
