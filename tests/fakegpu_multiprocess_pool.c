/* Device memory is one pool across processes: 8 processes race 64 MiB
 * allocations into a 1 GiB device; exactly 16 succeed in all, NVML reports
 * each process's usage with its pid and the device total, and everything
 * returns when they free. */
#include <sys/mman.h>

#include "fakegpu_util.h"
#include "nvml_decl.h"

nvmlReturn_t nvmlInit_v2(void);
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int, nvmlDevice_t *);
nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t, nvmlMemory_v2_t *);
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t, unsigned int *,
                                                     nvmlProcessInfo_t *);

#define PROCS 8
#define CHUNK (64ull << 20)

struct shared {
    int got[PROCS];
    int pid[PROCS];
    int ready;
    int release;
};

static void child(int idx, struct shared *sh)
{
    fakegpu_context(0);
    CUdeviceptr p[32];
    int n = 0;
    while (n < 32 && cuMemAlloc_v2(&p[n], CHUNK) == CUDA_SUCCESS)
        n++;
    sh->got[idx] = n;
    sh->pid[idx] = getpid();
    __atomic_add_fetch(&sh->ready, 1, __ATOMIC_SEQ_CST);
    while (!__atomic_load_n(&sh->release, __ATOMIC_SEQ_CST))
        usleep(1000);
    for (int i = 0; i < n; i++)
        CU_OK(cuMemFree_v2(p[i]));
    _exit(0);
}

int main(void)
{
    fakegpu_fresh(1, "1g");
    struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    for (int i = 0; i < PROCS; i++)
        if (fork() == 0)
            child(i, sh);
    double deadline = now_seconds() + 30;
    while (__atomic_load_n(&sh->ready, __ATOMIC_SEQ_CST) < PROCS)
        CHECK(now_seconds() < deadline, "children did not finish allocating");

    int total = 0, holders = 0;
    for (int i = 0; i < PROCS; i++) {
        total += sh->got[i];
        holders += sh->got[i] > 0;
    }
    CHECK(total == 16, "exactly 1 GiB / 64 MiB = 16 chunks in all, got %d", total);

    nvmlDevice_t dev;
    CHECK(nvmlInit_v2() == NVML_SUCCESS, "nvml init");
    CHECK(nvmlDeviceGetHandleByIndex_v2(0, &dev) == NVML_SUCCESS, "handle");
    nvmlMemory_v2_t mem = {.version = nvmlMemory_v2};
    CHECK(nvmlDeviceGetMemoryInfo_v2(dev, &mem) == NVML_SUCCESS, "meminfo");
    CHECK(mem.used == 16 * CHUNK && mem.free == 0, "NVML used %llu", mem.used);
    nvmlProcessInfo_t infos[PROCS];
    unsigned int count = 0;
    CHECK(nvmlDeviceGetComputeRunningProcesses_v3(dev, &count, infos) ==
              NVML_ERROR_INSUFFICIENT_SIZE && count == (unsigned)holders,
          "a buffer too small says how many are needed (%u of %d)", count, holders);
    count = PROCS;
    CHECK(nvmlDeviceGetComputeRunningProcesses_v3(dev, &count, infos) == NVML_SUCCESS &&
              count == (unsigned)holders, "one entry per process holding memory");
    for (unsigned int k = 0; k < count; k++) {
        int i = 0;
        while (i < PROCS && sh->pid[i] != (int)infos[k].pid)
            i++;
        CHECK(i < PROCS, "pid %u is one of ours", infos[k].pid);
        CHECK(infos[k].usedGpuMemory == (unsigned long long)sh->got[i] * CHUNK,
              "pid %u uses %llu", infos[k].pid, infos[k].usedGpuMemory);
    }
    __atomic_store_n(&sh->release, 1, __ATOMIC_SEQ_CST);
    CHECK(wait_children(PROCS) == 0, "a child failed");
    CHECK(nvmlDeviceGetMemoryInfo_v2(dev, &mem) == NVML_SUCCESS && mem.used == 0,
          "all freed");
    CHECK(fakegpu_device_peak(0) == 16 * CHUNK, "peak");
    printf("fakegpu_multiprocess_pool: ok\n");
    return 0;
}
