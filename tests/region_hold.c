/* Helper of vgpuctl_cli: attach to $CUDA_DEVICE_MEMORY_SHARED_CACHE with a
 * 1 GiB limit, charge argv[1] MiB on device 0, create the file argv[2],
 * and wait to be killed. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "vgpu/region.h"

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    struct vgpu_attach_options o;
    vgpu_attach_options_from_env(&o);
    o.limits[0] = 1ull << 30;
    o.device_count = 1;
    struct vgpu_region *r = vgpu_region_attach(&o);
    if (r == NULL ||
        !vgpu_region_try_charge(r, 0, strtoull(argv[1], NULL, 10) << 20,
                                VGPU_CHARGE_DATA))
        return 1;
    FILE *f = fopen(argv[2], "w");
    if (f)
        fclose(f);
    for (;;)
        pause();
}
