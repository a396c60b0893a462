/* The driver's own memory (here 300 MiB of code loaded lazily at the
 * first cuModuleGetFunction, which no hook sees) is charged by the
 * reconciliation, from NVML. Three threads allocate and free 2 MiB in a
 * loop, each free staying 20 ms in the driver (a real cuMemFree waits for
 * the device), so a free is nearly always in flight: the reconciliation
 * must still run (a version that voided its rounds while a free was in
 * flight granted 700 MiB next to 400 under a 1 GiB limit, 20 times of 20).
 * The driver's ledger is the judge: it never holds more than the limit. */
#include <pthread.h>
#include <unistd.h>

#include "cubin_image.h"
#include "hook_util.h"

static CUcontext primary;
static int stop; /* atomic */

static void *churn(void *arg)
{
    (void)arg;
    CU_OK(cuCtxSetCurrent(primary));
    while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
        CUdeviceptr p;
        CUresult rc = cuMemAlloc_v2(&p, 2 * MiB);
        CHECK(rc == CUDA_SUCCESS || rc == CUDA_ERROR_OUT_OF_MEMORY, "churn rc %d", (int)rc);
        if (rc == CUDA_SUCCESS)
            CU_OK(cuMemFree_v2(p));
    }
    return NULL;
}

int main(void)
{
    hook_fresh(1, "8g", "1g");
    setenv("VGPU_RECONCILE_MS", "0", 1);
    char lazy[32];
    snprintf(lazy, sizeof lazy, "%llu", 300 * MiB);
    setenv("FAKEGPU_LAZY_CODE_BYTES", lazy, 1);
    setenv("FAKEGPU_FREE_DELAY_US", "20000", 1); /* before the threads */
    CU_OK(cuInit(0));
    CU_OK(cuDevicePrimaryCtxRetain(&primary, 0));
    CU_OK(cuCtxSetCurrent(primary));
    size_t size;
    void *image = cubin_build(0, &size);
    CUmodule m;
    CU_OK(cuModuleLoadData(&m, image));
    free(image);
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        CHECK(pthread_create(&t[i], NULL, churn, NULL) == 0, "thread");
        usleep(7000); /* their frees overlap */
    }
    CUfunction f;
    CU_OK(cuModuleGetFunction(&f, m, "_Z1kPf")); /* 300 MiB the hooks do not see */
    int granted = 0;
    for (int i = 0; i < 20; i++) {
        CUdeviceptr a, b;
        CU_OK(cuMemAlloc_v2(&a, 100 * MiB));
        usleep(100000);
        CUresult rc = cuMemAlloc_v2(&b, 700 * MiB);
        CHECK(rc == CUDA_SUCCESS || rc == CUDA_ERROR_OUT_OF_MEMORY, "rc %d", (int)rc);
        if (rc == CUDA_SUCCESS) {
            granted++;
            CU_OK(cuMemFree_v2(b));
        }
        CU_OK(cuMemFree_v2(a));
    }
    __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    unsetenv("FAKEGPU_FREE_DELAY_US");
    printf("700 MiB next to 100 MiB and 300 MiB of code: granted %d of 20; driver "
           "peak %llu MiB (limit 1024)\n", granted,
           (unsigned long long)(fakegpu_device_peak(0) / MiB));
    CHECK(fakegpu_device_peak(0) <= GiB, "the driver held %llu MiB > 1 GiB",
          (unsigned long long)(fakegpu_device_peak(0) / MiB));
    CU_OK(cuModuleUnload(m));
    CU_OK(cuDevicePrimaryCtxRelease_v2(0));
    printf("hook_reconcile_churn: ok\n");
    return 0;
}
