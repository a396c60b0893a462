/* The simulated driver behaves like the real one for the calls vgpu uses:
 * devices (CUDA_VISIBLE_DEVICES honoured), contexts, every allocation family,
 * exact out-of-memory at the pool's size, fault injection, context delay. */
#include "fakegpu_util.h"

#define MiB (1ull << 20)

static void test_devices(void)
{
    int count;
    CU_OK(cuDeviceGetCount(&count));
    CHECK(count == 2, "CUDA_VISIBLE_DEVICES=3,1 shows 2 devices, got %d", count);
    char name[128];
    CU_OK(cuDeviceGetName(name, sizeof name, 0));
    CHECK(strstr(name, "H100") != NULL, "name %s", name);
    CUuuid uuid;
    CU_OK(cuDeviceGetUuid_v2(&uuid, 0));
    CHECK((unsigned char)uuid.bytes[15] == 0x03, "ordinal 0 is physical 3");
    CU_OK(cuDeviceGetUuid_v2(&uuid, 1));
    CHECK((unsigned char)uuid.bytes[15] == 0x01, "ordinal 1 is physical 1");
    size_t total;
    CU_OK(cuDeviceTotalMem_v2(&total, 0));
    CHECK(total == 1024 * MiB, "total %zu", total);
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 2) == CUDA_ERROR_INVALID_DEVICE, "ordinal 2 invisible");
    char bus[32];
    CU_OK(cuDeviceGetPCIBusId(bus, sizeof bus, 0));
    CHECK(strlen(bus) > 8, "pci bus id");
}

static void test_plain_and_oom(void)
{
    CUdeviceptr a, b, c;
    size_t free_b, total;
    CU_OK(cuMemAlloc_v2(&a, 512 * MiB));
    CU_OK(cuMemAlloc_v2(&b, 512 * MiB));
    CHECK(cuMemAlloc_v2(&c, 1) == CUDA_ERROR_OUT_OF_MEMORY, "exact OOM at the pool size");
    CU_OK(cuMemGetInfo_v2(&free_b, &total));
    CHECK(free_b == 0 && total == 1024 * MiB, "free %zu total %zu", free_b, total);
    CHECK(fakegpu_device_used(3) == 1024 * MiB, "ledger device 3");
    CHECK(fakegpu_process_used(3) == 1024 * MiB, "ledger process");
    CHECK(fakegpu_device_used(1) == 0, "device 1 untouched");
    CHECK(a != b && a != 0, "distinct addresses");
    CUdeviceptr base;
    size_t size;
    CU_OK(cuMemGetAddressRange_v2(&base, &size, b + 4096));
    CHECK(base == b && size == 512 * MiB, "address range");
    CU_OK(cuMemFree_v2(a));
    CHECK(cuMemFree_v2(a) == CUDA_ERROR_INVALID_VALUE, "double free is an error");
    CU_OK(cuMemFree_v2(0));
    CU_OK(cuMemAlloc_v2(&c, 512 * MiB));
    CHECK(c != a, "addresses are never reused");
    CU_OK(cuMemFree_v2(b));
    CU_OK(cuMemFree_v2(c));

    size_t pitch;
    CU_OK(cuMemAllocPitch_v2(&a, &pitch, 1000, 100, 4));
    CHECK(pitch == 1024 && fakegpu_process_used(3) == 1024 * 100, "pitch");
    CU_OK(cuMemFree_v2(a));
    CU_OK(cuMemAllocManaged(&a, 2048 * MiB, CU_MEM_ATTACH_GLOBAL));
    CHECK(fakegpu_process_used(3) == 0, "managed memory is not taken from the device");
    CU_OK(cuMemFree_v2(a));
}

static void test_async_and_pools(void)
{
    CUstream s;
    CUdeviceptr a, b;
    CUmemoryPool pool;
    CU_OK(cuStreamCreate(&s, 0));
    CU_OK(cuMemAllocAsync(&a, 100 * MiB, s));
    CU_OK(cuDeviceGetDefaultMemPool(&pool, 0));
    CU_OK(cuMemAllocFromPoolAsync(&b, 50 * MiB, pool, s));
    /* one pool, grown by whole 32 MiB chunks: 100 MiB takes 128, 150 takes 160 */
    CHECK(fakegpu_process_used(3) == 160 * MiB, "async: %llu MiB",
          (unsigned long long)(fakegpu_process_used(3) / MiB));
    CU_OK(cuMemFreeAsync(a, s));
    CU_OK(cuMemFreeAsync_ptsz(b, s));
    CU_OK(cuStreamSynchronize(s));
    CU_OK(cuStreamDestroy_v2(s));
    CHECK(fakegpu_process_used(3) == 0, "async freed");
}

static void test_vmm(void)
{
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof prop);
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = 1; /* ordinal 1 = physical 1 */
    size_t gran;
    CU_OK(cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
    CUmemGenericAllocationHandle h, imported;
    CHECK(cuMemCreate(&h, gran + 1, &prop, 0) == CUDA_ERROR_INVALID_VALUE,
          "size must be a multiple of the granularity");
    CU_OK(cuMemCreate(&h, 64 * gran, &prop, 0));
    CHECK(fakegpu_device_used(1) == 64 * gran, "cuMemCreate takes memory");
    CUdeviceptr va;
    CU_OK(cuMemAddressReserve(&va, 64 * gran, 0, 0, 0));
    CHECK(fakegpu_device_used(1) == 64 * gran, "reserving address space is free");
    CU_OK(cuMemMap(va, 64 * gran, 0, h, 0));
    uint64_t shared;
    CU_OK(cuMemExportToShareableHandle(&shared, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
    CU_OK(cuMemImportFromShareableHandle(&imported, (void *)(uintptr_t)shared,
                                         CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR));
    CU_OK(cuMemRelease(h));
    CU_OK(cuMemRelease(imported));
    CHECK(fakegpu_device_used(1) == 64 * gran, "still mapped: still held");
    CU_OK(cuMemUnmap(va, 64 * gran));
    CHECK(fakegpu_device_used(1) == 0, "unmapped and released: freed");
    CU_OK(cuMemAddressFree(va, 64 * gran));
}

static void test_arrays(void)
{
    CUDA_ARRAY_DESCRIPTOR d = {.Width = 1024, .Height = 1024,
                               .Format = CU_AD_FORMAT_FLOAT, .NumChannels = 4};
    CUarray arr;
    CU_OK(cuArrayCreate_v2(&arr, &d));
    CHECK(fakegpu_process_used(3) == 16 * MiB, "array bytes");
    CUDA_ARRAY3D_DESCRIPTOR d3 = {.Width = 256, .Height = 256, .Depth = 16,
                                  .Format = CU_AD_FORMAT_UNSIGNED_INT8,
                                  .NumChannels = 1};
    CUmipmappedArray mip;
    CU_OK(cuMipmappedArrayCreate(&mip, &d3, 3));
    CHECK(fakegpu_process_used(3) > 16 * MiB, "mipmapped array");
    CU_OK(cuArrayDestroy(arr));
    CU_OK(cuMipmappedArrayDestroy(mip));
    CHECK(fakegpu_process_used(3) == 0, "arrays freed");
}

static void test_faults(void)
{
    CUdeviceptr a;
    setenv("FAKEGPU_OOM_AT", "100m", 1);
    CHECK(cuMemAlloc_v2(&a, 101 * MiB) == CUDA_ERROR_OUT_OF_MEMORY,
          "FAKEGPU_OOM_AT");
    size_t free_b, total;
    CU_OK(cuMemGetInfo_v2(&free_b, &total));
    CHECK(free_b == 1024 * MiB, "OOM_AT is invisible to cuMemGetInfo");
    unsetenv("FAKEGPU_OOM_AT");
    setenv("FAKEGPU_FAIL", "cuMemAlloc:1", 1);
    CU_OK(cuMemAlloc_v2(&a, MiB));
    CHECK(cuMemAlloc_v2(&a + 0, MiB) == CUDA_ERROR_UNKNOWN, "FAKEGPU_FAIL after 1");
    unsetenv("FAKEGPU_FAIL");
    CU_OK(cuMemFree_v2(a));
}

static void test_context_delay(void)
{
    setenv("FAKEGPU_CTX_DELAY_MS", "50", 1);
    CUcontext ctx;
    double t0 = now_seconds();
    CU_OK(cuCtxCreate_v2(&ctx, 0, 1));
    double took = now_seconds() - t0;
    CHECK(took >= 0.05, "context creation delay applied (%.3f s)", took);
    unsetenv("FAKEGPU_CTX_DELAY_MS");
    CUdevice dev;
    CU_OK(cuCtxGetDevice(&dev));
    CHECK(dev == 1, "created context is current");
    CU_OK(cuCtxDestroy_v2(ctx));
}

int main(void)
{
    fakegpu_fresh(4, "1g");
    setenv("CUDA_VISIBLE_DEVICES", "3,1", 1);
    CUdeviceptr p;
    CHECK(cuMemAlloc_v2(&p, 1) == CUDA_ERROR_NOT_INITIALIZED, "before cuInit");
    fakegpu_context(0);
    test_devices();
    test_plain_and_oom();
    test_async_and_pools();
    test_vmm();
    test_arrays();
    test_faults();
    test_context_delay();
    printf("fakegpu_driver_api: ok\n");
    return 0;
}
