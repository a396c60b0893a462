/* Two processes of one container number the GPUs differently
 * (CUDA_VISIBLE_DEVICES): they share one counter and one limit per
 * physical GPU, and CUDA_DEVICE_MEMORY_LIMIT_<i> keeps naming the GPU the
 * container sees as i. 2 GPUs, 1 GiB each (512 MiB on GPU 1 in part 2);
 * the driver's ledger as the judge.
 *
 * The parent never touches CUDA: it runs itself as children, with their
 * own CUDA_VISIBLE_DEVICES (read once, at the driver's start-up). */
#include <fcntl.h>

#include "hook_util.h"

static void check_peaks(const char *when)
{
    for (int d = 0; d < 2; d++) {
        uint64_t limit = d == 1 && getenv("CUDA_DEVICE_MEMORY_LIMIT_1") ? 512 * MiB : GiB;
        CHECK(fakegpu_device_peak(d) <= limit,
              "%s: GPU %d held %llu MiB, over its limit", when, d,
              (unsigned long long)(fakegpu_device_peak(d) / MiB));
    }
}

/* Child "hold": take `mib` on its device 0, say so on fd 1, wait for EOF
 * on fd 0. Child "probe": what a second process may take. */
static int hold(long mib)
{
    CUdeviceptr p;
    fakegpu_context(0);
    CU_OK(cuMemAlloc_v2(&p, (uint64_t)mib * MiB));
    char c = 'r';
    CHECK(write(1, &c, 1) == 1, "ready");
    while (read(0, &c, 1) > 0)
        ;
    CU_OK(cuMemFree_v2(p));
    return 0;
}

static int probe(const char *what)
{
    CUdeviceptr p;
    if (strcmp(what, "both") == 0) {
        /* No renumbering: GPU 1 is shared with the holder, GPU 0 is free. */
        fakegpu_context(1);
        CHECK(cuMemAlloc_v2(&p, 768 * MiB) == CUDA_ERROR_OUT_OF_MEMORY,
              "GPU 1 holds 768 MiB of the holder: refused");
        check_peaks("same GPU, different ordinals");
        fakegpu_context(0);
        CU_OK(cuMemAlloc_v2(&p, 768 * MiB)); /* GPU 0: not the holder's */
        CU_OK(cuMemFree_v2(p));
    } else {
        /* CUDA_VISIBLE_DEVICES=1: its device 0 is GPU 1, limited to 512 MiB. */
        fakegpu_context(0);
        CHECK(cuMemAlloc_v2(&p, 600 * MiB) == CUDA_ERROR_OUT_OF_MEMORY,
              "GPU 1's own limit applies to the process's device 0");
        size_t free_b, total;
        CU_OK(cuMemGetInfo_v2(&free_b, &total));
        CHECK(total == 512 * MiB, "its device 0 shows GPU 1's limit: %zu", total);
        CU_OK(cuMemAlloc_v2(&p, 500 * MiB));
        check_peaks("per-GPU limit");
        CU_OK(cuMemFree_v2(p));
    }
    return 0;
}

static pid_t spawn(const char *self, const char *mode, const char *arg,
                   const char *visible, int *to_child, int *from_child)
{
    int in[2], out[2];
    CHECK(pipe(in) == 0 && pipe(out) == 0, "pipes");
    pid_t pid = fork();
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[1]);
        close(out[0]);
        if (visible)
            setenv("CUDA_VISIBLE_DEVICES", visible, 1);
        else
            unsetenv("CUDA_VISIBLE_DEVICES");
        execl(self, self, mode, arg, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    *to_child = in[1];
    *from_child = out[0];
    return pid;
}

static void run(const char *self, const char *probe_mode, const char *holder_visible,
                long hold_mib, const char *probe_visible)
{
    int to_holder, from_holder, to_probe, from_probe;
    char c;
    char mib[16];
    snprintf(mib, sizeof mib, "%ld", hold_mib);
    pid_t holder = spawn(self, "hold", mib, holder_visible, &to_holder, &from_holder);
    CHECK(read(from_holder, &c, 1) == 1, "the holder allocated");
    pid_t prober = spawn(self, "probe", probe_mode, probe_visible, &to_probe,
                         &from_probe);
    int status;
    CHECK(waitpid(prober, &status, 0) == prober && WIFEXITED(status) &&
          WEXITSTATUS(status) == 0, "the probe (%s) failed", probe_mode);
    close(to_holder);
    CHECK(waitpid(holder, &status, 0) == holder && WIFEXITED(status) &&
          WEXITSTATUS(status) == 0, "the holder failed");
    close(from_holder);
    close(to_probe);
    close(from_probe);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "hold") == 0)
        return hold(atol(argv[2]));
    if (argc == 3 && strcmp(argv[1], "probe") == 0)
        return probe(argv[2]);
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    CHECK(n > 0, "own path");
    self[n] = '\0';

    hook_fresh(2, "8g", "1g");
    /* The probes judge the peaks: this process never maps the ledger, as
     * each part starts from a fresh one. */
    run(self, "both", "1", 768, NULL); /* holder sees GPU 1 as device 0 */
    CHECK(region_used(0) == 0 && region_used(1) == 0, "all returned");

    hook_fresh(2, "8g", "1g");
    setenv("CUDA_DEVICE_MEMORY_LIMIT_1", "512m", 1);
    run(self, "limit", "0", 256, "1");
    CHECK(region_used(0) == 0 && region_used(1) == 0, "all returned");
    printf("hook_visible_devices: ok\n");
    return 0;
}
