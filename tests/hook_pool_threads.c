/* Threads allocate and free from one pool that keeps everything (release
 * threshold UINT64_MAX) and with plain cuMemAlloc, near a 1 GiB limit: the
 * driver's ledger never holds more than the limit, and once the pool is
 * trimmed everything comes back. Refusals are expected; overshoot is not. */
#include <pthread.h>

#include "hook_util.h"

#define THREADS 4
#define ROUNDS 300

static CUcontext ctx;
static CUmemoryPool pool;

static void *worker(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
    CU_OK(cuCtxSetCurrent(ctx));
    CUstream s;
    CU_OK(cuStreamCreate(&s, 0));
    CUdeviceptr held[8] = {0};
    for (int i = 0; i < ROUNDS; i++) {
        int slot = (int)(rng_next(&seed) % 8);
        if (held[slot]) {
            CU_OK(slot % 2 ? cuMemFreeAsync(held[slot], s) : cuMemFree_v2(held[slot]));
            held[slot] = 0;
            continue;
        }
        uint64_t bytes = (1 + rng_next(&seed) % 160) * MiB + rng_next(&seed) % 4096;
        CUresult rc = slot % 2 ? cuMemAllocAsync(&held[slot], bytes, s)
                               : cuMemAlloc_v2(&held[slot], bytes);
        CHECK(rc == CUDA_SUCCESS || rc == CUDA_ERROR_OUT_OF_MEMORY, "rc %d", (int)rc);
        if (rc != CUDA_SUCCESS)
            held[slot] = 0;
        if (i % 50 == 0)
            CU_OK(cuStreamSynchronize(s));
    }
    for (int slot = 0; slot < 8; slot++)
        if (held[slot])
            CU_OK(slot % 2 ? cuMemFreeAsync(held[slot], s) : cuMemFree_v2(held[slot]));
    CU_OK(cuStreamDestroy_v2(s));
    return NULL;
}

int main(void)
{
    hook_fresh(1, "8g", "1g");
    ctx = fakegpu_context(0);
    CU_OK(cuDeviceGetDefaultMemPool(&pool, 0));
    cuuint64_t keep_all = UINT64_MAX;
    CU_OK(cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &keep_all));
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(i + 1)) == 0, "thread");
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    printf("driver peak %llu MiB\n", (unsigned long long)(fakegpu_device_peak(0) / MiB));
    CHECK(fakegpu_device_peak(0) <= GiB, "the driver held %llu MiB > 1 GiB",
          (unsigned long long)(fakegpu_device_peak(0) / MiB));
    CHECK(region_used(0) >= fakegpu_process_used(0), "region %llu < driver %llu",
          (unsigned long long)region_used(0),
          (unsigned long long)fakegpu_process_used(0));
    CU_OK(cuMemPoolTrimTo(pool, 0));
    CHECK(region_used(0) == 0 && fakegpu_process_used(0) == 0,
          "all returned: region %llu, driver %llu",
          (unsigned long long)region_used(0),
          (unsigned long long)fakegpu_process_used(0));
    printf("hook_pool_threads: ok\n");
    return 0;
}
