/* VMM physical memory lives until its last handle or mapping goes, not
 * until cuMemRelease (1 GiB limit, the driver's ledger as the judge):
 *  - released while mapped: still held, still charged, until the unmap;
 *  - imported (a second handle) and kept after the first is released;
 *  - a handle retained from a mapped address;
 *  - one unmap over two mappings;
 *  - a handle's value handed out again by the driver to another thread's
 *    cuMemCreate while the release that freed it is still in our hook;
 *  - a release the driver refuses: the handle still holds its memory. */
#include <pthread.h>

#include "hook_util.h"

static CUmemAllocationProp prop;

static void check_peak(const char *when)
{
    CHECK(fakegpu_device_peak(0) <= GiB, "%s: the driver held %llu MiB > 1 GiB",
          when, (unsigned long long)(fakegpu_device_peak(0) / MiB));
}

static void over_limit_refused(const char *when)
{
    CUmemGenericAllocationHandle h;
    CHECK(cuMemCreate(&h, 512 * MiB, &prop, 0) == CUDA_ERROR_OUT_OF_MEMORY,
          "%s: 768 MiB live, 512 more refused", when);
    check_peak(when);
}

static void released_while_mapped(CUdeviceptr va)
{
    CUmemGenericAllocationHandle h;
    CU_OK(cuMemCreate(&h, 768 * MiB, &prop, 0));
    CU_OK(cuMemMap(va, 768 * MiB, 0, h, 0));
    CU_OK(cuMemRelease(h));
    CHECK(region_used(0) == 768 * MiB, "released but mapped: still charged");
    over_limit_refused("released while mapped");
    CU_OK(cuMemUnmap(va, 768 * MiB));
    CHECK(region_used(0) == 0 && fakegpu_process_used(0) == 0, "unmapped: gone");
}

static void imported(void)
{
    CUmemGenericAllocationHandle h, imp;
    uint64_t shared = 0;
    CU_OK(cuMemCreate(&h, 768 * MiB, &prop, 0));
    CU_OK(cuMemExportToShareableHandle(&shared, h,
                                       CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
    CU_OK(cuMemImportFromShareableHandle(&imp, (void *)(uintptr_t)shared,
                                         CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR));
    CHECK(region_used(0) == 768 * MiB, "an import is the same memory: once");
    CU_OK(cuMemRelease(h));
    CHECK(region_used(0) == 768 * MiB, "the exporter released, the import holds it");
    over_limit_refused("import kept");
    CU_OK(cuMemRelease(imp));
    CHECK(region_used(0) == 0 && fakegpu_process_used(0) == 0, "last handle: gone");
}

static void retained(CUdeviceptr va)
{
    CUmemGenericAllocationHandle h, again;
    CU_OK(cuMemCreate(&h, 768 * MiB, &prop, 0));
    CU_OK(cuMemMap(va, 768 * MiB, 0, h, 0));
    CU_OK(cuMemRetainAllocationHandle(&again, (void *)(uintptr_t)(va + MiB)));
    CU_OK(cuMemUnmap(va, 768 * MiB));
    CU_OK(cuMemRelease(h));
    CHECK(region_used(0) == 768 * MiB, "the retained handle holds it");
    over_limit_refused("retained");
    CU_OK(cuMemRelease(again));
    CHECK(region_used(0) == 0 && fakegpu_process_used(0) == 0, "retained: gone");
}

static void two_mappings_one_unmap(CUdeviceptr va)
{
    CUmemGenericAllocationHandle h1, h2;
    CU_OK(cuMemCreate(&h1, 256 * MiB, &prop, 0));
    CU_OK(cuMemCreate(&h2, 256 * MiB, &prop, 0));
    CU_OK(cuMemMap(va, 256 * MiB, 0, h1, 0));
    CU_OK(cuMemMap(va + 256 * MiB, 256 * MiB, 0, h2, 0));
    CU_OK(cuMemRelease(h1));
    CU_OK(cuMemRelease(h2));
    CHECK(region_used(0) == 512 * MiB, "both mapped: both charged");
    CU_OK(cuMemUnmap(va, 512 * MiB));
    CHECK(region_used(0) == 0 && fakegpu_process_used(0) == 0, "one unmap, both gone");
}

static CUcontext ctx;
static CUmemGenericAllocationHandle reused;
static int release_returned; /* set by the releasing thread */
static int created_first;    /* the creation returned before the release */

static void *create_during_release(void *released)
{
    CU_OK(cuCtxSetCurrent(ctx));
    /* The driver has released the handle (and its memory) and sleeps. */
    for (int i = 0; i < 10000 && fakegpu_process_used(0) != 0; i++)
        usleep(1000);
    CU_OK(cuMemCreate(&reused, 256 * MiB, &prop, 0));
    __atomic_store_n(&created_first, !__atomic_load_n(&release_returned, __ATOMIC_ACQUIRE),
                     __ATOMIC_RELEASE);
    CHECK(reused == *(CUmemGenericAllocationHandle *)released,
          "the driver handed the released value out again");
    return NULL;
}

/* The driver may give a released handle's value to the next creation, on
 * any thread, before the release returns: the hook must have let go of
 * the old memory's record by then, or the new memory's reference lands on
 * it (the old one freed under it, the new one never uncharged). */
static void value_reused_during_release(void)
{
    CUmemGenericAllocationHandle h;
    CU_OK(cuMemCreate(&h, 512 * MiB, &prop, 0));
    setenv("FAKEGPU_VMM_RELEASE_DELAY_US", "1000000", 1); /* before the thread */
    pthread_t t;
    CHECK(pthread_create(&t, NULL, create_during_release, &h) == 0, "thread");
    CU_OK(cuMemRelease(h));
    __atomic_store_n(&release_returned, 1, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    unsetenv("FAKEGPU_VMM_RELEASE_DELAY_US");
    CHECK(__atomic_load_n(&created_first, __ATOMIC_ACQUIRE),
          "the creation came while the release was still in the driver");
    CHECK(region_used(0) == 256 * MiB, "the new memory charged, the old not: %llu MiB",
          (unsigned long long)(region_used(0) / MiB));
    CU_OK(cuMemRelease(reused));
    CHECK(region_used(0) == 0 && fakegpu_process_used(0) == 0,
          "reused value released: region %llu MiB, driver %llu MiB",
          (unsigned long long)(region_used(0) / MiB),
          (unsigned long long)(fakegpu_process_used(0) / MiB));
}

static void release_refused(void)
{
    CUmemGenericAllocationHandle h;
    CU_OK(cuMemCreate(&h, 768 * MiB, &prop, 0));
    setenv("FAKEGPU_FAIL", "cuMemRelease", 1);
    CHECK(cuMemRelease(h) == CUDA_ERROR_UNKNOWN, "the driver refuses the release");
    unsetenv("FAKEGPU_FAIL");
    CHECK(region_used(0) == 768 * MiB, "refused: still charged");
    over_limit_refused("release refused");
    CU_OK(cuMemRelease(h));
    CHECK(region_used(0) == 0 && fakegpu_process_used(0) == 0, "released: gone");
}

int main(void)
{
    hook_fresh(1, "8g", "1g");
    ctx = fakegpu_context(0);
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = 0;
    CUdeviceptr va;
    CU_OK(cuMemAddressReserve(&va, GiB, 0, 0, 0));
    released_while_mapped(va);
    imported();
    retained(va);
    two_mappings_one_unmap(va);
    CU_OK(cuMemAddressFree(va, GiB));
    value_reused_during_release();
    release_refused();
    printf("hook_vmm_lifetime: ok\n");
    return 0;
}
