/* CUDA_DISABLE_CONTROL=true: libvgpu loads and intercepts but enforces and
 * shows nothing: over-limit allocations succeed, the physical memory is
 * shown, no region file is made. A region file made world-writable (a
 * tenant switching the limit off) gets its mode set back, one warning, and
 * the limit holds. */
#include <sys/stat.h>

#include "hook_util.h"

static void expect_unlimited(const char *what)
{
    fakegpu_context(0);
    CUdeviceptr p;
    CU_OK(cuMemAlloc_v2(&p, 2 * GiB));
    size_t free_b, total;
    CU_OK(cuMemGetInfo_v2(&free_b, &total));
    CHECK(total == 8 * GiB, "%s: physical total shown, got %zu", what, total);
    CU_OK(cuMemFree_v2(p));
}

static void expect_limited(const char *what)
{
    fakegpu_context(0);
    CUdeviceptr p;
    CHECK(cuMemAlloc_v2(&p, 2 * GiB) == CUDA_ERROR_OUT_OF_MEMORY,
          "%s: the limit holds", what);
    size_t free_b, total;
    CU_OK(cuMemGetInfo_v2(&free_b, &total));
    CHECK(total == 1 * GiB, "%s: the limit shown, got %zu", what, total);
}

int main(int argc, char **argv)
{
    const char *region = getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE");
    if (argc == 2 && strcmp(argv[1], "refused") == 0) {
        expect_limited("world-writable region");
        struct stat st;
        CHECK(stat(region, &st) == 0 && (st.st_mode & 022) == 0,
              "others may no longer write the file");
        printf("hook_disabled (world-writable file): ok\n");
        return 0;
    }
    hook_fresh(1, "8g", "1g");
    setenv("CUDA_DISABLE_CONTROL", "true", 1);
    expect_unlimited("CUDA_DISABLE_CONTROL");
    CHECK(access(region, F_OK) != 0, "no region file made");
    printf("hook_disabled (control off): ok\n");

    /* A world-writable region file. Run again in a fresh process. */
    unsetenv("CUDA_DISABLE_CONTROL");
    FILE *f = fopen(region, "w");
    CHECK(f != NULL, "create");
    fclose(f);
    CHECK(chmod(region, 0666) == 0, "chmod");
    fflush(stdout);
    execl("/proc/self/exe", argv[0], "refused", (char *)NULL);
    return 1;
}
