/* Arrays are charged at least what the driver takes for them (1 GiB
 * limit; the simulated driver sizes mip levels by halving every extent,
 * and 16-bit normalized formats at 2 bytes a channel). Before: mip levels
 * were charged 4/3 of the first (right for 2D only: a 1D array's levels
 * add up to twice the first), and 16-bit normalized formats 1 byte a
 * channel; the driver then held 1535 and 2048 MiB under the 1 GiB limit. */
#include "hook_util.h"

static void check(const char *what, int made)
{
    printf("%-40s %d made: driver holds %llu MiB, region counts %llu MiB\n", what,
           made, (unsigned long long)(fakegpu_process_used(0) / MiB),
           (unsigned long long)(region_used(0) / MiB));
    CHECK(fakegpu_process_used(0) <= GiB && fakegpu_device_peak(0) <= GiB,
          "%s: the driver holds more than the limit", what);
    CHECK(region_used(0) >= fakegpu_process_used(0), "%s: charged less than held",
          what);
}

int main(void)
{
    hook_fresh(1, "16g", "1g");
    fakegpu_context(0);

    /* 1D layered, float4, 16384 wide, 1024 layers (256 MiB at level 0),
     * 15 levels: 512 MiB less 16 KiB each. */
    CUDA_ARRAY3D_DESCRIPTOR m = {.Width = 16384, .Height = 0, .Depth = 1024,
                                 .Format = CU_AD_FORMAT_FLOAT, .NumChannels = 4,
                                 .Flags = CUDA_ARRAY3D_LAYERED};
    CUmipmappedArray mip[8];
    int n = 0;
    while (n < 8 && cuMipmappedArrayCreate(&mip[n], &m, 15) == CUDA_SUCCESS)
        n++;
    check("1D-layered mipmapped arrays", n);
    while (n)
        CU_OK(cuMipmappedArrayDestroy(mip[--n]));

    /* 2D mipmapped, 3D mipmapped: within their bound too. */
    CUDA_ARRAY3D_DESCRIPTOR m2 = {.Width = 8192, .Height = 8192, .Depth = 0,
                                  .Format = CU_AD_FORMAT_FLOAT, .NumChannels = 1};
    while (n < 8 && cuMipmappedArrayCreate(&mip[n], &m2, 14) == CUDA_SUCCESS)
        n++;
    check("2D mipmapped arrays (256 MiB level 0)", n);
    while (n)
        CU_OK(cuMipmappedArrayDestroy(mip[--n]));

    /* 2D arrays of a 16-bit, 4-channel normalized format: 512 MiB each. */
    CUDA_ARRAY_DESCRIPTOR a = {.Width = 8192, .Height = 8192,
                               .Format = CU_AD_FORMAT_UNORM_INT16X4, .NumChannels = 4};
    CUarray arr[8];
    while (n < 8 && cuArrayCreate_v2(&arr[n], &a) == CUDA_SUCCESS)
        n++;
    check("UNORM_INT16X4 8192x8192 arrays", n);
    while (n)
        CU_OK(cuArrayDestroy(arr[--n]));

    /* The pre-3.2 entry points, as cuGetProcAddress hands them to a program
     * asking for version 2000 (and dlsym by their plain names): charged
     * too. Before: passed through, 2048 MiB held with nothing counted. */
    typedef CUresult (*pitch_v1)(CUdeviceptr_v1 *, unsigned int *, unsigned int,
                                 unsigned int, unsigned int);
    typedef CUresult (*array_v1)(CUarray *, const CUDA_ARRAY_DESCRIPTOR_v1 *);
    typedef CUresult (*array3d_v1)(CUarray *, const CUDA_ARRAY3D_DESCRIPTOR_v1 *);
    pitch_v1 pitch = NULL;
    array_v1 create = NULL;
    array3d_v1 create3d = NULL;
    CU_OK(cuGetProcAddress("cuMemAllocPitch", (void **)&pitch, 2000, 0));
    CU_OK(cuGetProcAddress("cuArrayCreate", (void **)&create, 2000, 0));
    CU_OK(cuGetProcAddress("cuArray3DCreate", (void **)&create3d, 2000, 0));
    CUdeviceptr_v1 p[8];
    unsigned int row;
    while (n < 8 && pitch(&p[n], &row, 16384, 32768, 4) == CUDA_SUCCESS)
        n++;
    check("cuMemAllocPitch v1 (512 MiB each)", n);
    while (n)
        CU_OK(cuMemFree(p[--n]));
    CUDA_ARRAY_DESCRIPTOR_v1 a1 = {.Width = 8192, .Height = 8192,
                                   .Format = CU_AD_FORMAT_FLOAT, .NumChannels = 4};
    while (n < 8 && create(&arr[n], &a1) == CUDA_SUCCESS)
        n++;
    check("cuArrayCreate v1 (1 GiB each)", n);
    while (n)
        CU_OK(cuArrayDestroy(arr[--n]));
    CUDA_ARRAY3D_DESCRIPTOR_v1 a3 = {.Width = 1024, .Height = 1024, .Depth = 128,
                                     .Format = CU_AD_FORMAT_FLOAT, .NumChannels = 1};
    while (n < 8 && create3d(&arr[n], &a3) == CUDA_SUCCESS)
        n++;
    check("cuArray3DCreate v1 (512 MiB each)", n);
    while (n)
        CU_OK(cuArrayDestroy(arr[--n]));
    CHECK(region_used(0) == 0 && fakegpu_process_used(0) == 0, "all returned");
    printf("hook_array_sizes: ok\n");
    return 0;
}
