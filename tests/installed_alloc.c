/* Helper of package_install: a CUDA program on the simulated GPU, run with
 * the installed libvgpu.so preloaded and CUDA_DEVICE_MEMORY_LIMIT=1g.
 * Allocates argv[1] MiB, checks that cuMemGetInfo shows the limit and that
 * 1 GiB more is refused, creates the file argv[2] and waits to be killed,
 * so that the installed vgpuctl can read the region meanwhile. */
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "fakegpu_util.h"

#define MiB (1ull << 20)

int main(int argc, char **argv)
{
    CHECK(argc == 3, "usage: installed_alloc MIB READY_FILE");
    fakegpu_context(0);
    CUdeviceptr mine, more;
    CU_OK(cuMemAlloc(&mine, strtoull(argv[1], NULL, 10) * MiB));
    size_t free_b, total;
    CU_OK(cuMemGetInfo(&free_b, &total));
    CHECK(total == 1024 * MiB, "cuMemGetInfo total %zu: the 1 GiB limit", total);
    CHECK(cuMemAlloc(&more, 1024 * MiB) == CUDA_ERROR_OUT_OF_MEMORY,
          "1 GiB more is refused");
    FILE *f = fopen(argv[2], "w");
    CHECK(f != NULL, "ready file");
    fclose(f);
    for (;;)
        pause();
}
