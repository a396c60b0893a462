/* cuMemAllocAsync allocates from its device's current pool, and another
 * thread may make another pool current at any time (cuDeviceSetMemPool).
 * vgpu charges one pool for the allocation, so the driver must allocate
 * from that pool, not from whichever is current when the driver reads it:
 * otherwise the charge lands on a pool that did not grow (and is settled
 * back to nothing) while the other grows uncharged. The simulated driver
 * waits FAKEGPU_GET_POOL_DELAY_US in cuDeviceGetMemPool after reading the
 * current pool, and this thread switches pools meanwhile (1 GiB limit; the
 * driver's ledger is the judge). */
#include <pthread.h>
#include <unistd.h>

#include "hook_util.h"

static CUcontext ctx;
static CUstream stream;
static int switched; /* the other pool is current; atomic */

struct job {
    CUdeviceptr ptr;
    CUresult rc;
    int switched_before_return;
};

static void *allocate(void *arg)
{
    struct job *j = arg;
    CU_OK(cuCtxSetCurrent(ctx));
    j->rc = cuMemAllocAsync(&j->ptr, 512 * MiB, stream);
    j->switched_before_return = __atomic_load_n(&switched, __ATOMIC_ACQUIRE);
    return NULL;
}

static void check_charged(const char *when)
{
    CHECK(region_used(0) >= fakegpu_process_used(0),
          "%s: the driver holds %llu MiB, the region charges %llu MiB", when,
          (unsigned long long)(fakegpu_process_used(0) / MiB),
          (unsigned long long)(region_used(0) / MiB));
    CHECK(fakegpu_device_peak(0) <= GiB, "%s: the driver held %llu MiB > 1 GiB",
          when, (unsigned long long)(fakegpu_device_peak(0) / MiB));
}

/* Where the stream's device cannot be asked (a driver before CUDA 12.8
 * lacks cuStreamGetDevice), it is guessed as the current context's: the
 * driver must then still choose the pool, on the stream's own device. */
static void stream_of_another_device(void)
{
    CUcontext c0 = fakegpu_context(0);
    fakegpu_context(1); /* current now */
    CUstream s1;
    CU_OK(cuStreamCreate(&s1, 0)); /* device 1's */
    CU_OK(cuCtxSetCurrent(c0));
    setenv("FAKEGPU_FAIL", "cuStreamGetDevice", 1);
    CUdeviceptr p;
    CU_OK(cuMemAllocAsync(&p, 256 * MiB, s1));
    unsetenv("FAKEGPU_FAIL");
    CHECK(fakegpu_device_used(1) >= 256 * MiB && fakegpu_device_used(0) == 0,
          "allocated on the stream's device: device 0 %llu MiB, device 1 %llu MiB",
          (unsigned long long)(fakegpu_device_used(0) / MiB),
          (unsigned long long)(fakegpu_device_used(1) / MiB));
    CU_OK(cuMemFreeAsync(p, s1));
    CU_OK(cuStreamSynchronize(s1));
    CU_OK(cuStreamDestroy_v2(s1));
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "guessed") == 0) {
        hook_fresh(2, "8g", "4g");
        stream_of_another_device();
        printf("hook_pool_current guessed: ok\n");
        return 0;
    }
    hook_fresh(1, "8g", "1g");
    unsetenv("FAKEGPU_GET_POOL_DELAY_US");
    ctx = fakegpu_context(0);
    CU_OK(cuStreamCreate(&stream, 0));
    CUmemoryPool first, other;
    CU_OK(cuDeviceGetDefaultMemPool(&first, 0));
    CUmemPoolProps props;
    memset(&props, 0, sizeof props);
    props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    props.location.id = 0;
    CU_OK(cuMemPoolCreate(&other, &props));

    setenv("FAKEGPU_GET_POOL_DELAY_US", "500000", 1); /* before the thread */
    struct job j = {0, CUDA_SUCCESS, 0};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, allocate, &j) == 0, "thread");
    usleep(100000); /* the allocation is in cuDeviceGetMemPool's delay */
    CU_OK(cuDeviceSetMemPool(0, other));
    __atomic_store_n(&switched, 1, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    unsetenv("FAKEGPU_GET_POOL_DELAY_US");
    CHECK(j.switched_before_return, "the switch came while the allocation was in vgpu");
    CU_OK(j.rc);
    check_charged("after the switch");

    /* With the first allocation charged, 768 MiB more is over the limit. */
    CUdeviceptr more;
    CHECK(cuMemAllocAsync(&more, 768 * MiB, stream) == CUDA_ERROR_OUT_OF_MEMORY,
          "512 + 768 MiB over a 1 GiB limit");
    check_charged("over the limit");

    CU_OK(cuMemFreeAsync(j.ptr, stream));
    CU_OK(cuStreamSynchronize(stream));
    CU_OK(cuDeviceSetMemPool(0, first));
    CU_OK(cuMemPoolDestroy(other));
    CU_OK(cuMemPoolTrimTo(first, 0));
    CHECK(region_used(0) == 0 && fakegpu_process_used(0) == 0,
          "all returned: region %llu MiB, driver %llu MiB",
          (unsigned long long)(region_used(0) / MiB),
          (unsigned long long)(fakegpu_process_used(0) / MiB));
    CU_OK(cuStreamDestroy_v2(stream));
    printf("hook_pool_current: ok\n");
    return 0;
}
