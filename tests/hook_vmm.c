/* Virtual memory management as PyTorch's expandable segments and NCCL use
 * it: cuMemCreate charges its device, address reservations and mappings do
 * not, cuMemRelease returns; host locations are not device memory. */
#include "hook_util.h"

int main(void)
{
    hook_fresh(2, "8g", "1g");
    fakegpu_context(0);
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof prop);
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = 1;
    size_t g;
    CU_OK(cuMemGetAllocationGranularity(&g, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
    CUmemGenericAllocationHandle h1, h2, h3;
    CU_OK(cuMemCreate(&h1, 256 * g, &prop, 0)); /* 512 MiB on device 1 */
    CHECK(region_used(1) == 256 * g && region_used(0) == 0, "charged to its location");
    CUdeviceptr va;
    CU_OK(cuMemAddressReserve(&va, 512 * g, 0, 0, 0));
    CU_OK(cuMemMap(va, 256 * g, 0, h1, 0));
    CUmemAccessDesc access = {.location = prop.location,
                              .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
    CU_OK(cuMemSetAccess(va, 256 * g, &access, 1));
    CHECK(region_used(1) == 256 * g, "mapping takes nothing more");
    CHECK(cuMemCreate(&h2, 512 * g, &prop, 0) == CUDA_ERROR_OUT_OF_MEMORY,
          "over the limit");
    CHECK(fakegpu_device_used(1) == 256 * g, "the driver never saw it");
    CU_OK(cuMemCreate(&h2, 256 * g, &prop, 0));
    CHECK(region_used(1) == 512 * g, "exactly the limit");
    CU_OK(cuMemUnmap(va, 256 * g));
    CU_OK(cuMemRelease(h1));
    CU_OK(cuMemRelease(h2));
    CHECK(region_used(1) == 0, "released");
    CU_OK(cuMemAddressFree(va, 512 * g));

    prop.location.type = CU_MEM_LOCATION_TYPE_HOST;
    prop.location.id = 0;
    CUresult rc = cuMemCreate(&h3, 256 * g, &prop, 0);
    CHECK(region_used(0) == 0 && region_used(1) == 0,
          "host location not charged (driver said %d)", (int)rc);
    if (rc == CUDA_SUCCESS)
        CU_OK(cuMemRelease(h3));
    printf("hook_vmm: ok\n");
    return 0;
}
