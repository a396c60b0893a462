/* What the host sees a container hold: NVML's per-process used memory on
 * GPU 0, summed over the processes, sampled every 20 ms from a process that
 * has no vgpu (run it without LD_PRELOAD). The GPU machine runs nothing
 * else, so "every compute process on the GPU" is the container's processes;
 * summing them also needs no pid translation inside a pid namespace.
 *
 *   nvml_sampler OUT STOP   rewrite OUT every sample with "now_mib N" and
 *                           "peak_mib N" until the file STOP exists
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "nvml_decl.h"

#define MiB (1ull << 20)
#define MAX_PROCS 256

typedef nvmlReturn_t (*init_fn)(void);
typedef nvmlReturn_t (*handle_fn)(unsigned int, nvmlDevice_t *);
typedef nvmlReturn_t (*procs_fn)(nvmlDevice_t, unsigned int *, nvmlProcessInfo_t *);

static unsigned long long held_bytes(procs_fn procs, nvmlDevice_t dev)
{
    nvmlProcessInfo_t info[MAX_PROCS];
    unsigned int n = MAX_PROCS;
    if (procs(dev, &n, info) != NVML_SUCCESS)
        return 0;
    unsigned long long sum = 0;
    for (unsigned int i = 0; i < n; i++)
        if (info[i].usedGpuMemory != ~0ull) /* NVML_VALUE_NOT_AVAILABLE */
            sum += info[i].usedGpuMemory;
    return sum;
}

static void write_figures(const char *out, unsigned long long now,
                          unsigned long long peak)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return;
    fprintf(f, "now_mib %llu\npeak_mib %llu\n", now / MiB, peak / MiB);
    fclose(f);
    rename(tmp, out); /* readers see one whole sample or the previous one */
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: nvml_sampler OUT STOP\n");
        return 2;
    }
    void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    if (lib == NULL) {
        fprintf(stderr, "nvml_sampler: %s\n", dlerror());
        return 1;
    }
    init_fn init = (init_fn)dlsym(lib, "nvmlInit_v2");
    handle_fn handle = (handle_fn)dlsym(lib, "nvmlDeviceGetHandleByIndex_v2");
    procs_fn procs = (procs_fn)dlsym(lib, "nvmlDeviceGetComputeRunningProcesses_v3");
    nvmlDevice_t dev;
    if (!init || !handle || !procs || init() != NVML_SUCCESS ||
        handle(0, &dev) != NVML_SUCCESS) {
        fprintf(stderr, "nvml_sampler: NVML unusable\n");
        return 1;
    }
    unsigned long long peak = 0;
    const struct timespec period = {0, 20 * 1000 * 1000};
    while (access(argv[2], F_OK) != 0) {
        unsigned long long now = held_bytes(procs, dev);
        if (now > peak)
            peak = now;
        write_figures(argv[1], now, peak);
        nanosleep(&period, NULL);
    }
    return 0;
}
