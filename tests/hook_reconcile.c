/* What the driver holds beyond the hooks' charges (here: code the simulated
 * driver loads lazily at a module's first cuModuleGetFunction, which no
 * hook sees) is reconciled from NVML's per-process figure: the region's
 * count and the driver's ledger then agree within 2 % of the limit, and an
 * allocation that would cross the limit once reconciled is refused, so the
 * ledger's peak never passes it. Also in a pid namespace of its own, where
 * the process learns its NVML pid with a probe allocation. */
#include <limits.h>
#include <sys/wait.h>

#include "cubin_image.h"
#include "hook_util.h"

static void agree(const char *when)
{
    uint64_t region = region_used(0), driver = fakegpu_device_used(0);
    uint64_t gap = region > driver ? region - driver : driver - region;
    printf("  %s: region %llu MiB, driver %llu MiB, gap %llu KiB\n", when,
           (unsigned long long)(region / MiB), (unsigned long long)(driver / MiB),
           (unsigned long long)(gap >> 10));
    CHECK(gap <= GiB / 50, "the region and the driver agree within 2 %% of the limit");
}

static void scenario(void)
{
    hook_fresh(1, "8g", "1g");
    setenv("VGPU_RECONCILE_MS", "0", 1); /* at every charge near the limit */
    char lazy[32];
    snprintf(lazy, sizeof lazy, "%llu", 300 * MiB);
    setenv("FAKEGPU_LAZY_CODE_BYTES", lazy, 1);
    fakegpu_context(0);
    size_t size;
    void *image = cubin_build(0, &size);
    CUmodule m;
    CU_OK(cuModuleLoadData(&m, image));
    free(image);
    CUfunction f;
    CU_OK(cuModuleGetFunction(&f, m, "_Z1kPf")); /* 300 MiB of code, unseen */
    CUdeviceptr a, b;
    CU_OK(cuMemAlloc_v2(&a, 100 * MiB));
    CU_OK(cuMemAlloc_v2(&b, 2 * MiB)); /* reconciled by now */
    agree("after lazy code");
    CHECK(cuMemAlloc_v2(&b, 700 * MiB) == CUDA_ERROR_OUT_OF_MEMORY,
          "100 MiB + 300 MiB of code + 700 MiB is past 1 GiB");
    printf("  driver peak %llu MiB, limit 1024\n",
           (unsigned long long)(fakegpu_device_peak(0) / MiB));
    CHECK(fakegpu_device_peak(0) <= GiB, "the driver held more than the limit");
    CU_OK(cuModuleUnload(m));
    CU_OK(cuMemAlloc_v2(&b, 2 * MiB)); /* reconciled again */
    agree("after unload");
    /* At rest, with no charge to trigger it: the process's own thread. */
    image = cubin_build(0, &size);
    CU_OK(cuModuleLoadData(&m, image));
    free(image);
    CU_OK(cuModuleGetFunction(&f, m, "_Z1kPf"));
    for (int i = 0; i < 500 && region_used(0) < fakegpu_device_used(0) - GiB / 50; i++)
        usleep(10000);
    agree("at rest");
    CU_OK(cuModuleUnload(m));
    CU_OK(cuMemFree_v2(a));
    CU_OK(cuMemFree_v2(b));
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "pidns") == 0) {
        CHECK(vgpu_host_pid() == 0, "the host's pid is hidden here");
        setenv("FAKEGPU_NVML_PID_OFFSET", "100000", 1);
        scenario();
        printf("hook_reconcile (own pid namespace): ok\n");
        return 0;
    }
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        scenario();
        exit(0);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
              WEXITSTATUS(status) == 0, "scenario");
    if (system("unshare --pid --fork --mount-proc true 2>/dev/null") != 0) {
        printf("own pid namespace: skipped (unshare --pid not permitted here)\n");
    } else {
        char self[PATH_MAX], cmd[PATH_MAX + 64];
        CHECK(realpath("/proc/self/exe", self) != NULL, "own path");
        snprintf(cmd, sizeof cmd, "unshare --pid --fork --mount-proc %s pidns", self);
        fflush(stdout);
        CHECK(system(cmd) == 0, "the scenario in its own pid namespace");
    }
    printf("hook_reconcile: ok\n");
    return 0;
}
