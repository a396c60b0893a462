/* A module's static device data is reserved before the driver loads it:
 * a module whose __device__ globals do not fit is refused without being
 * loaded, and data allocated after a module counts the module too, so the
 * simulated driver's ledger peak never passes the limit. Images: a cubin
 * file (cuModuleLoad, cuLibraryLoadFromFile), a cubin in memory
 * (cuModuleLoadData(Ex)), a fatbin container (cuModuleLoadFatBinary) and
 * the runtime's wrapper of one (cuLibraryLoadData). */
#include "cubin_image.h"
#include "hook_util.h"

static char path[4096];

static void write_cubin(uint64_t global)
{
    size_t size;
    void *image = cubin_build(global, &size);
    snprintf(path, sizeof path, "%s.cubin", getenv("FAKEGPU_STATE"));
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(image, 1, size, f) == size && fclose(f) == 0, "cubin file");
    free(image);
}

static void peak_within(const char *what)
{
    printf("  %s: driver peak %llu MiB, limit 1024\n", what,
           (unsigned long long)(fakegpu_device_peak(0) / MiB));
    CHECK(fakegpu_device_peak(0) <= GiB, "the driver held more than the limit");
}

int main(void)
{
    hook_fresh(1, "8g", "1g");
    setenv("VGPU_CONTEXT_BYTES", "0", 1);
    fakegpu_context(0);

    /* Module statics, then a big allocation. */
    write_cubin(600 * MiB);
    CUmodule m;
    CU_OK(cuModuleLoad(&m, path));
    CHECK(region_used(0) == 600 * MiB + CUBIN_EXTRA, "the statics are counted: %llu",
          (unsigned long long)region_used(0));
    CUdeviceptr p;
    CHECK(cuMemAlloc_v2(&p, 600 * MiB) == CUDA_ERROR_OUT_OF_MEMORY,
          "module + 600 MiB is past 1 GiB");
    CU_OK(cuMemAlloc_v2(&p, 400 * MiB));
    peak_within("600 MiB of module statics, then cuMemAlloc");
    CU_OK(cuMemFree_v2(p));
    CU_OK(cuModuleUnload(m));
    CHECK(region_used(0) == 0 && fakegpu_device_used(0) == 0, "unload returns them");

    /* A module too big is never loaded. */
    size_t size;
    void *image = cubin_build(2 * GiB, &size);
    CHECK(cuModuleLoadData(&m, image) == CUDA_ERROR_OUT_OF_MEMORY,
          "2 GiB of statics under 1 GiB");
    CHECK(cuModuleLoadDataEx(&m, image, 0, NULL, NULL) == CUDA_ERROR_OUT_OF_MEMORY,
          "the same through cuModuleLoadDataEx");
    CHECK(fakegpu_device_used(0) == 0, "not loaded");
    free(image);
    image = cubin_build(300 * MiB, &size);
    CU_OK(cuModuleLoadDataEx(&m, image, 0, NULL, NULL));
    CHECK(region_used(0) == 300 * MiB + CUBIN_EXTRA, "in memory: counted");
    CU_OK(cuModuleUnload(m));
    free(image);

    /* Fatbin containers: the largest cubin is reserved (the driver loads
     * the one for its device). */
    const uint64_t globals[2] = {64 * MiB, 700 * MiB};
    const unsigned arch[2] = {80, 90};
    void *fatbin = fatbin_build(globals, arch, &size);
    CU_OK(cuModuleLoadFatBinary(&m, fatbin));
    CHECK(region_used(0) == 700 * MiB + CUBIN_EXTRA, "the fatbin's cubin: %llu",
          (unsigned long long)region_used(0));
    CHECK(cuMemAlloc_v2(&p, 400 * MiB) == CUDA_ERROR_OUT_OF_MEMORY,
          "fatbin statics + 400 MiB is past 1 GiB");
    struct { uint32_t magic, version; const void *data, *unused; } wrapper = {
        0x466243B1u, 1, fatbin, NULL};
    CUlibrary lib;
    CHECK(cuLibraryLoadData(&lib, &wrapper, NULL, NULL, 0, NULL, NULL, 0) ==
              CUDA_ERROR_OUT_OF_MEMORY, "a second copy does not fit");
    peak_within("fatbin statics, then cuMemAlloc and a library");
    CU_OK(cuModuleUnload(m));
    CU_OK(cuLibraryLoadData(&lib, &wrapper, NULL, NULL, 0, NULL, NULL, 0));
    CHECK(region_used(0) == 700 * MiB + CUBIN_EXTRA, "the library's statics");
    CU_OK(cuLibraryUnload(lib));
    free(fatbin);

    write_cubin(900 * MiB);
    CU_OK(cuLibraryLoadFromFile(&lib, path, NULL, NULL, 0, NULL, NULL, 0));
    CHECK(cuMemAlloc_v2(&p, 200 * MiB) == CUDA_ERROR_OUT_OF_MEMORY,
          "library statics + 200 MiB is past 1 GiB");
    CU_OK(cuLibraryUnload(lib));
    CHECK(region_used(0) == 0 && fakegpu_device_used(0) == 0, "all returned");
    peak_within("all");
    unlink(path);
    printf("hook_module_exact: ok\n");
    return 0;
}
