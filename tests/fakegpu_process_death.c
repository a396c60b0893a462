/* A process that dies (SIGKILL, no cleanup) has its device memory freed, as
 * the real driver does, detected without its help. */
#include <signal.h>

#include "fakegpu_util.h"
#include "nvml_decl.h"

nvmlReturn_t nvmlInit_v2(void);
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int, nvmlDevice_t *);
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t, nvmlMemory_t *);

#define GiB (1ull << 30)

int main(void)
{
    fakegpu_fresh(1, "4g");
    int ready[2];
    CHECK(pipe(ready) == 0, "pipe");
    pid_t pid = fork();
    if (pid == 0) {
        fakegpu_context(0);
        CUdeviceptr p;
        CU_OK(cuMemAlloc_v2(&p, 3 * GiB));
        CHECK(write(ready[1], "x", 1) == 1, "signal");
        pause();
        _exit(0);
    }
    char c;
    CHECK(read(ready[0], &c, 1) == 1, "child allocated");
    nvmlDevice_t dev;
    nvmlMemory_t mem;
    CHECK(nvmlInit_v2() == NVML_SUCCESS, "init");
    CHECK(nvmlDeviceGetHandleByIndex_v2(0, &dev) == NVML_SUCCESS, "handle");
    CHECK(nvmlDeviceGetMemoryInfo(dev, &mem) == NVML_SUCCESS && mem.used == 3 * GiB,
          "child's memory is in use: %llu", mem.used);

    fakegpu_context(0);
    CUdeviceptr p;
    CHECK(cuMemAlloc_v2(&p, 2 * GiB) == CUDA_ERROR_OUT_OF_MEMORY,
          "the live child's memory is not ours to take");
    kill(pid, SIGKILL);
    CHECK(waitpid(pid, NULL, 0) == pid, "wait");
    CHECK(nvmlDeviceGetMemoryInfo(dev, &mem) == NVML_SUCCESS && mem.used == 0,
          "dead child's memory freed: %llu used", mem.used);
    CU_OK(cuMemAlloc_v2(&p, 4 * GiB));
    CU_OK(cuMemFree_v2(p));
    printf("fakegpu_process_death: ok\n");
    return 0;
}
