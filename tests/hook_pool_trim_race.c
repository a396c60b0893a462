/* A trim of a pool's cache that races a stream-ordered allocation from it
 * (1 GiB limit, a pool keeping everything, the driver's ledger the judge).
 * The simulated driver waits FAKEGPU_POOL_DELAY_US in each pool allocation
 * before it takes memory and in cuMemPoolTrimTo after it gave some back, so
 * that each interleaving happens every time:
 *  1. an allocation that the pool's cache holds is in flight when a plain
 *     cuMemAlloc at the limit makes vgpu trim the pool: had the trim gone
 *     ahead, the driver would take a whole new 32 MiB chunk for it, beyond
 *     the charge;
 *  2. a pool allocation comes while vgpu's trim is in the driver: it must
 *     not count on the cache that the trim is giving back.
 * Refusals are expected; the driver holding more than 1 GiB is not. */
#include <pthread.h>
#include <unistd.h>

#include "hook_util.h"

#define DELAY_US "300000" /* 0.3 s: each step below starts 0.1 s apart */

static CUcontext ctx;
static CUstream stream;

struct job {
    useconds_t wait_us; /* before the allocation */
    uint64_t bytes;
    CUdeviceptr ptr;
    CUresult rc;
};

static void *pool_alloc(void *arg)
{
    struct job *j = arg;
    CU_OK(cuCtxSetCurrent(ctx));
    usleep(j->wait_us);
    j->rc = cuMemAllocAsync(&j->ptr, j->bytes, stream);
    return NULL;
}

static void check_peak(const char *when)
{
    CHECK(fakegpu_device_peak(0) <= GiB, "%s: the driver held %llu KiB > 1 GiB",
          when, (unsigned long long)(fakegpu_device_peak(0) >> 10));
    CHECK(region_used(0) >= fakegpu_process_used(0), "%s: region %llu < driver %llu",
          when, (unsigned long long)region_used(0),
          (unsigned long long)fakegpu_process_used(0));
}

/* A 20 MiB pool allocation from another thread after wait_us, and a plain
 * 2 MiB one at the limit (which makes vgpu trim the pool) from this one
 * after plain_us. */
static void race(const char *name, useconds_t wait_us, useconds_t plain_us)
{
    struct job j = {wait_us, 20 * MiB, 0, CUDA_SUCCESS};
    pthread_t t;
    setenv("FAKEGPU_POOL_DELAY_US", DELAY_US, 1); /* before its threads start */
    CHECK(pthread_create(&t, NULL, pool_alloc, &j) == 0, "thread");
    usleep(plain_us);
    CUdeviceptr q = 0;
    CUresult rc = cuMemAlloc_v2(&q, 2 * MiB);
    CHECK(rc == CUDA_SUCCESS || rc == CUDA_ERROR_OUT_OF_MEMORY, "plain rc %d", (int)rc);
    pthread_join(t, NULL);
    unsetenv("FAKEGPU_POOL_DELAY_US");
    CHECK(j.rc == CUDA_SUCCESS || j.rc == CUDA_ERROR_OUT_OF_MEMORY, "pool rc %d",
          (int)j.rc);
    printf("%s: pool %s, plain %s, driver peak %llu KiB\n", name,
           j.rc ? "refused" : "ok", rc ? "refused" : "ok",
           (unsigned long long)(fakegpu_device_peak(0) >> 10));
    check_peak(name);
    if (j.rc == CUDA_SUCCESS)
        CU_OK(cuMemFreeAsync(j.ptr, stream));
    if (rc == CUDA_SUCCESS)
        CU_OK(cuMemFree_v2(q));
    CU_OK(cuStreamSynchronize(stream));
}

/* The pool reserves 128 MiB with 100 MiB of it live (charged 128 MiB), and
 * plain memory brings the charge to 1023 MiB. */
static void fill(CUmemoryPool pool, CUdeviceptr *live, CUdeviceptr *plain)
{
    CU_OK(cuMemPoolTrimTo(pool, 0));
    CU_OK(cuMemAllocAsync(live, 100 * MiB, stream));
    CU_OK(cuStreamSynchronize(stream));
    CU_OK(cuMemAlloc_v2(plain, 895 * MiB));
    CHECK(region_used(0) == 1023 * MiB && fakegpu_process_used(0) == 1023 * MiB,
          "filled: region %llu MiB, driver %llu MiB",
          (unsigned long long)(region_used(0) / MiB),
          (unsigned long long)(fakegpu_process_used(0) / MiB));
}

int main(void)
{
    hook_fresh(1, "8g", "1g");
    unsetenv("FAKEGPU_POOL_DELAY_US");
    ctx = fakegpu_context(0);
    CU_OK(cuStreamCreate(&stream, 0));
    CUmemoryPool pool;
    CU_OK(cuDeviceGetDefaultMemPool(&pool, 0));
    cuuint64_t keep_all = UINT64_MAX;
    CU_OK(cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &keep_all));
    CUdeviceptr live, plain;

    /* 1: the pool allocation (a cache hit, charged nothing more) is in the
     * driver from 0 s to 0.3 s; the plain one comes at 0.1 s. */
    fill(pool, &live, &plain);
    race("trim during a cache hit", 0, 100000);
    CU_OK(cuMemFreeAsync(live, stream));
    CU_OK(cuMemFree_v2(plain));

    /* 2: vgpu's trim is in the driver from 0 s to 0.3 s; the pool
     * allocation comes at 0.1 s. */
    fill(pool, &live, &plain);
    race("allocation during a trim", 100000, 0);
    CU_OK(cuMemFreeAsync(live, stream));
    CU_OK(cuMemFree_v2(plain));

    CU_OK(cuMemPoolTrimTo(pool, 0));
    CHECK(region_used(0) == 0 && fakegpu_process_used(0) == 0, "all returned");
    CU_OK(cuStreamDestroy_v2(stream));
    printf("hook_pool_trim_race: ok\n");
    return 0;
}
