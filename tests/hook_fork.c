/* After fork(), a child that uses CUDA is a process of its own in the
 * region: its own slot, its own charges, returned when it exits; the
 * parent's charges stay the parent's. */
#include "hook_util.h"

int main(void)
{
    hook_fresh(1, "8g", "1g");
    fakegpu_context(0);
    CUdeviceptr p;
    CU_OK(cuMemAlloc_v2(&p, 256 * MiB));
    pid_t pid = fork();
    if (pid == 0) {
        fakegpu_context(0);
        CUdeviceptr q;
        CU_OK(cuMemAlloc_v2(&q, 128 * MiB));
        CHECK(region_used(0) == 384 * MiB, "child sees both");
        CHECK(cuMemAlloc_v2(&q, 700 * MiB) == CUDA_ERROR_OUT_OF_MEMORY,
              "the parent's bytes count against the child");
        CHECK(cuMemFree_v2(p) == CUDA_ERROR_INVALID_VALUE,
              "the parent's pointer is not the child's to free");
        CHECK(region_used(0) == 384 * MiB, "the child cannot uncharge the parent");
        exit(0); /* without freeing q: the exit returns it */
    }
    CHECK(wait_children(1) == 0, "child failed");
    CHECK(region_used(0) == 256 * MiB, "child's memory returned at exit: %llu",
          (unsigned long long)region_used(0));
    struct vgpu_region *r =
        vgpu_region_open_existing(getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE"));
    CHECK(vgpu_region_live_count(r) == 1, "one live process");
    vgpu_region_detach(r);
    CU_OK(cuMemFree_v2(p));
    CHECK(region_used(0) == 0, "parent's returned");
    printf("hook_fork: ok\n");
    return 0;
}
