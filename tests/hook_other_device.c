/* Stream-ordered allocations are charged to the device that gives the
 * memory, whatever the current context (1 GiB limit per device, the
 * driver's ledger as the judge): on a stream of another device, from a
 * pool of another device, and from a thread with no current context. */
#include <pthread.h>

#include "hook_util.h"

static CUstream s1;
static CUmemoryPool pool1;

static void check_peaks(const char *when)
{
    for (int d = 0; d < 2; d++)
        CHECK(fakegpu_device_peak(d) <= GiB,
              "%s: the driver held %llu MiB > 1 GiB on device %d", when,
              (unsigned long long)(fakegpu_device_peak(d) / MiB), d);
}

static void *no_context(void *arg)
{
    CUdeviceptr *p = arg;
    CUcontext none;
    CU_OK(cuCtxGetCurrent(&none));
    CHECK(none == NULL, "a new thread has no current context");
    CHECK(cuMemAllocAsync(p, 512 * MiB, s1) == CUDA_ERROR_OUT_OF_MEMORY,
          "no context: charged to the stream's device and refused");
    CHECK(cuMemAllocFromPoolAsync(p, 512 * MiB, pool1, s1) == CUDA_ERROR_OUT_OF_MEMORY,
          "no context: charged to the pool's device and refused");
    CU_OK(cuMemAllocAsync(p, 128 * MiB, s1));
    return NULL;
}

int main(void)
{
    hook_fresh(2, "8g", "1g");
    CUcontext c0 = fakegpu_context(0);
    CUcontext c1 = fakegpu_context(1);
    CU_OK(cuStreamCreate(&s1, 0)); /* device 1's */
    CU_OK(cuDeviceGetDefaultMemPool(&pool1, 1));
    CUdeviceptr held, p, q;
    CU_OK(cuMemAlloc_v2(&held, 768 * MiB)); /* on device 1 */
    CU_OK(cuCtxSetCurrent(c0));

    CHECK(cuMemAllocAsync(&p, 512 * MiB, s1) == CUDA_ERROR_OUT_OF_MEMORY,
          "device 1's stream: charged to device 1 and refused");
    check_peaks("other device's stream");
    CHECK(cuMemAllocFromPoolAsync(&p, 512 * MiB, pool1, NULL) == CUDA_ERROR_OUT_OF_MEMORY,
          "device 1's pool on device 0's stream: charged to device 1, refused");
    check_peaks("other device's pool");
    CU_OK(cuMemAllocAsync(&p, 128 * MiB, s1));
    CHECK(region_used(1) == 896 * MiB && region_used(0) == 0,
          "charged to device 1: %llu MiB, device 0: %llu MiB",
          (unsigned long long)(region_used(1) / MiB),
          (unsigned long long)(region_used(0) / MiB));

    pthread_t t;
    CHECK(pthread_create(&t, NULL, no_context, &q) == 0, "thread");
    pthread_join(t, NULL);
    check_peaks("no current context");
    CHECK(region_used(1) == GiB, "the thread's allocation charged to device 1");

    CU_OK(cuMemFreeAsync(q, s1));
    CU_OK(cuMemFreeAsync(p, s1));
    CU_OK(cuStreamSynchronize(s1));
    CU_OK(cuCtxSetCurrent(c1));
    CU_OK(cuMemFree_v2(held));
    CHECK(region_used(1) == 0 && region_used(0) == 0, "all returned");
    CU_OK(cuStreamDestroy_v2(s1));
    printf("hook_other_device: ok\n");
    return 0;
}
