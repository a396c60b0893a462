/* A context's size is measured as this process's growth in NVML across its
 * creation, valid only if no charge of the process moved meanwhile. A free
 * on another thread leaves NVML's figure when the driver frees it, but its
 * uncharge comes after the driver returns: a creation measured across the
 * driver's half of a free saw the process shrink, and published a size
 * short by the freed bytes (here 0: "measured to take nothing") for every
 * process of the container. The simulated driver returns from a free
 * FAKEGPU_FREE_DELAY_US after the memory is gone, and takes
 * FAKEGPU_CTX_DELAY_MS to create a context; contexts take 256 MiB. */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "hook_util.h"

#define CTX (256 * MiB)

static CUcontext primary;
static CUdeviceptr held;
static int free_called, free_returned; /* atomics */

static void *free_meanwhile(void *arg)
{
    (void)arg;
    CU_OK(cuCtxSetCurrent(primary));
    usleep(50000); /* the creation's first reading of NVML is taken */
    __atomic_store_n(&free_called, 1, __ATOMIC_RELEASE);
    CU_OK(cuMemFree_v2(held));
    __atomic_store_n(&free_returned, 1, __ATOMIC_RELEASE);
    return NULL;
}

int main(void)
{
    hook_fresh(1, "8g", "4g");
    char n[32];
    snprintf(n, sizeof n, "%llu", (unsigned long long)CTX);
    setenv("FAKEGPU_CTX_BYTES", n, 1);
    unsetenv("VGPU_CONTEXT_BYTES"); /* the size is measured, not told */
    setenv("VGPU_RECONCILE_MS", "100000", 1);
    CU_OK(cuInit(0));
    setenv("FAKEGPU_FAIL", "nvmlDeviceGetComputeRunningProcesses", 1);
    CU_OK(cuDevicePrimaryCtxRetain(&primary, 0)); /* not measurable: unknown */
    unsetenv("FAKEGPU_FAIL");
    CHECK(region_context_bytes(0) == 0, "the size is not known yet");
    CU_OK(cuCtxSetCurrent(primary));
    CU_OK(cuMemAlloc_v2(&held, GiB));

    setenv("FAKEGPU_FREE_DELAY_US", "500000", 1); /* before the thread */
    setenv("FAKEGPU_CTX_DELAY_MS", "200", 1);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, free_meanwhile, NULL) == 0, "thread");
    CUcontext second;
    CU_OK(cuCtxCreate_v2(&second, 0, 0)); /* measured across the free */
    CHECK(__atomic_load_n(&free_called, __ATOMIC_ACQUIRE) &&
              !__atomic_load_n(&free_returned, __ATOMIC_ACQUIRE),
          "the free was in the driver while the context was created");
    pthread_join(t, NULL);
    unsetenv("FAKEGPU_FREE_DELAY_US");
    unsetenv("FAKEGPU_CTX_DELAY_MS");

    uint64_t size = region_context_bytes(0);
    printf("published context size: %llu bytes\n", (unsigned long long)size);
    /* UINT64_MAX in the region: "measured to take nothing". */
    CHECK(size == 0 || size == CTX,
          "published %s for a 256 MiB context (unknown or exact expected)",
          size == UINT64_MAX ? "\"measured to take nothing\"" : "another size");
    CHECK(region_used(0) >= fakegpu_process_used(0),
          "the driver holds %llu MiB, the region charges %llu MiB",
          (unsigned long long)(fakegpu_process_used(0) / MiB),
          (unsigned long long)(region_used(0) / MiB));
    CU_OK(cuCtxDestroy_v2(second));
    CU_OK(cuDevicePrimaryCtxRelease_v2(0));
    CHECK(region_used(0) == 0 && fakegpu_process_used(0) == 0,
          "all returned: region %llu MiB, driver %llu MiB",
          (unsigned long long)(region_used(0) / MiB),
          (unsigned long long)(fakegpu_process_used(0) / MiB));
    printf("hook_context_free_race: ok\n");
    return 0;
}
